"""Random-weight models of each family ComfyUI runs (SDXL, SD3, Flux dev and schnell, Chroma), built from
ComfyUI's own classes with reduced configs, for callers that already run inside ComfyUI (the test pack
in tests/integration/family_pack, the family benchmark). Nothing is downloaded.

The full-size files of these families are 1.5 GB (Segmind Vega, the smallest detected SDXL relative) to
24 GB (Flux), and Flux's hidden size is fixed at 3072 by ComfyUI's detection, so a file the stock loaders
detect cannot be made small enough to sample on a CPU in a test. Instead each family's real
`comfy.supported_models` class builds its real `comfy.model_base` model (model sampling, latent format,
conditioning, the DiT or UNet blocks) with fewer and narrower blocks, seeded, inside the ComfyUI process,
and is wrapped in a stock ModelPatcher as the loaders do. Its VAE is the family's real one (the SD KL
autoencoder, 4 or 16 latent channels) with random weights, loaded through comfy.sd.VAE; the text
conditioning is random tensors of the family's shapes (no text encoder: their sizes would dominate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .random_checkpoints import SD_VAE_DDCONFIG, VAE_CONV_OUT_GAIN  # the SD KL autoencoder, decoded pixels kept unsaturated

SEED = 20241201

_SDXL_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 64,
    "num_res_blocks": [1, 1],
    "transformer_depth": [0, 1],
    "transformer_depth_output": [0, 0, 1, 1],
    "channel_mult": [1, 2],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": True,
    "context_dim": 2048,
    "num_head_channels": 32,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
_SD3_MMDIT = {
    "in_channels": 16,
    "patch_size": 2,
    "out_channels": 16,
    "depth": 2,  # hidden size 64·depth = 128, 2 heads
    "input_size": None,
    "adm_in_channels": 64,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 96, "out_features": 128}},
    "num_patches": 1024,
    "pos_embed_max_size": 32,
    "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
    "qk_norm": None,
}
_FLUX_DIT = {
    "image_model": "flux",
    "in_channels": 16,
    "patch_size": 2,
    "out_channels": 16,
    "vec_in_dim": 48,
    "context_in_dim": 96,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [8, 28, 28],  # sums to the head size, 64
    "theta": 10000,
    "qkv_bias": True,
    "guidance_embed": True,
}


@dataclass(frozen=True)
class Family:
    """One family: the supported-model class that builds it, its reduced config, and its conditioning shapes."""

    supported_model: str  # a class of comfy.supported_models
    unet_config: dict
    latent_channels: int
    context: tuple[int, int]  # (tokens, width) of the text conditioning
    pooled: int | None  # width of the pooled text vector, None when the family has none
    extra_cond: dict = field(default_factory=dict)


_CHROMA_DIT = {
    "image_model": "chroma",
    "in_channels": 64,  # 16 latent channels, 2x2 patches
    "out_channels": 64,
    "context_in_dim": 96,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [8, 28, 28],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "in_dim": 64,  # the modulation approximator's input: timestep, guidance and block-index embeddings
    "out_dim": 128,
    "hidden_dim": 256,
    "n_layers": 2,
}

FAMILIES: dict[str, Family] = {
    "sdxl": Family("SDXL", _SDXL_UNET, 4, (77, 2048), 1280, {"width": 64, "height": 64}),
    "sd3": Family("SD3", _SD3_MMDIT, 16, (16, 96), 64),
    "flux_dev": Family("Flux", _FLUX_DIT, 16, (16, 96), 48),  # guidance-distilled: FluxGuidance sets "guidance"
    "flux_schnell": Family("FluxSchnell", {**_FLUX_DIT, "guidance_embed": False}, 16, (16, 96), 48),
    # Chroma: Flux-like blocks without guidance distillation; real CFG with a negative prompt.
    "chroma": Family("Chroma", _CHROMA_DIT, 16, (16, 96), 48),  # Flux's conditioning code asks for a pooled vector; Chroma ignores it
}


def _init_randomly(module: torch.nn.Module, generator: torch.Generator) -> None:
    """N(0, 1/fan_in) weights for linear and conv layers, small biases, norms at identity. ComfyUI's
    layers skip reset_parameters, so everything else (DiT norms' `scale`, embeddings) is set here too."""
    for child in module.modules():
        for name, parameter in child.named_parameters(recurse=False):
            with torch.no_grad():
                if isinstance(child, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and name == "weight":
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter[0].numel()))
                elif name == "bias":
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
                elif isinstance(child, (torch.nn.GroupNorm, torch.nn.LayerNorm)) or name in ("scale", "weight") and parameter.dim() == 1:
                    parameter.fill_(1.0)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def build_model(family: str):
    """A ModelPatcher over the family's real model_base class with the reduced config, float32, seeded."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    spec = FAMILIES[family]
    model_config = getattr(comfy.supported_models, spec.supported_model)(dict(spec.unet_config))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, "")
    _init_randomly(model.diffusion_model, torch.Generator().manual_seed(SEED))
    model.diffusion_model.to(torch.float32)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(), offload_device=comfy.model_management.unet_offload_device()
    )


def build_vae(latent_channels: int):
    """The SD KL autoencoder with 4 (SD, SDXL) or 16 (SD3, Flux) latent channels, random, through comfy.sd.VAE."""
    import comfy.ldm.models.autoencoder
    import comfy.sd

    torch.manual_seed(SEED + latent_channels)
    autoencoder = comfy.ldm.models.autoencoder.AutoencoderKL(
        ddconfig={**SD_VAE_DDCONFIG, "z_channels": latent_channels}, embed_dim=latent_channels
    )
    _init_randomly(autoencoder, torch.Generator().manual_seed(SEED + latent_channels))
    with torch.no_grad():
        autoencoder.decoder.conv_out.weight.mul_(VAE_CONV_OUT_GAIN)
    return comfy.sd.VAE(sd=autoencoder.state_dict())


def conditioning(family: str, seed: int) -> list:
    """A CONDITIONING of the family's shapes: random text tokens and, where the family has one, a pooled vector."""
    spec = FAMILIES[family]
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn((1, *spec.context), generator=generator)
    options = dict(spec.extra_cond)
    if spec.pooled is not None:
        options["pooled_output"] = torch.randn((1, spec.pooled), generator=generator)
    return [[tokens, options]]


def tiny_decoder_state(latent_channels: int) -> dict:
    """A random TAESD decoder (comfy.taesd.taesd.Decoder) for the latent width, as its safetensors file holds it."""
    from comfy.taesd.taesd import Decoder

    torch.manual_seed(SEED + 100 + latent_channels)
    decoder = Decoder(latent_channels=latent_channels)
    _init_randomly(decoder, torch.Generator().manual_seed(SEED + 100 + latent_channels))
    return {key: value.contiguous() for key, value in decoder.state_dict().items()}


def write_tiny_decoders(folder) -> list[str]:
    """The TAESD decoder files ComfyUI's previews use for SDXL, SD3 and Flux, random, in `folder`."""
    from pathlib import Path

    from safetensors.torch import save_file

    names = {"taesdxl_decoder": 4, "taesd3_decoder": 16, "taef1_decoder": 16}
    for name, channels in names.items():
        save_file(tiny_decoder_state(channels), str(Path(folder) / f"{name}.safetensors"))
    return sorted(names)


if __name__ == "__main__":  # python -m steer.benchmarks.random_families FOLDER   (COMFYUI_PATH: a ComfyUI checkout)
    import sys

    from .random_checkpoints import comfyui_path, import_comfy

    import_comfy(comfyui_path())
    print(write_tiny_decoders(sys.argv[1]))
