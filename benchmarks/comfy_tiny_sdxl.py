"""A tiny SDXL in ComfyUI's own classes, built from the weights of random_diffusers.random_sdxl_components,
for callers inside a ComfyUI process: the AttnDreamBooth backend parity probe and the test pack's
training node (tests/integration). Nothing is downloaded.

- The UNet is comfy.supported_models.SDXL's real comfy.model_base.SDXL (added conditioning, size
  embedder, model sampling) with a reduced config, loaded with the diffusers UNet's weights under
  personalize/ldm_names.py's names (a strict load: every name must match).
- The CLIP is ComfyUI's SDXLClipModel layout (CLIP-L and CLIP-G as SDClipModel, penultimate layer
  without the final norm, CLIP-G with its projected pooled output, pad 0) at tiny widths, with the
  stock SDXLTokenizer, so `embedding:<name>` files load through ComfyUI's own tokenizer code.
"""

from __future__ import annotations

import os

import torch

from ..personalize.ldm_names import diffusers_to_ldm_names
from .random_diffusers import SDXL_G_WIDTH, TEXT_WIDTH, random_sdxl_components

SDXL_UNET_CONFIG = {  # the layout of random_sdxl_components' UNet in ComfyUI's detected-config terms
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": SDXL_G_WIDTH + 6 * 256,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [1, 1],
    "transformer_depth": [0, 2],
    "transformer_depth_output": [0, 0, 2, 2],
    "channel_mult": [1, 4],
    "transformer_depth_middle": 2,
    "use_linear_in_transformer": True,
    "context_dim": TEXT_WIDTH + SDXL_G_WIDTH,
    "num_head_channels": 64,  # what supported_models.SDXL sets anyway
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


def comfy_tokenizer_folder() -> str:
    """ComfyUI's CLIP BPE files (the real 49408-token vocabulary); ComfyUI must be importable."""
    import comfy.sd1_clip

    return os.path.join(os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__)), "sd1_tokenizer")


def tiny_sdxl(seed: int = 0, *, sample_size: int = 4, embedding_directory=None):
    """(diffusers components, ComfyUI ModelPatcher, ComfyUI CLIP) with the same seeded random weights.
    The text encoders' weights are rounded through fp16, as ComfyUI stores text encoders; the CLIP
    reads `embedding:<name>` files from `embedding_directory`."""
    from pathlib import Path

    components = random_sdxl_components(Path(comfy_tokenizer_folder()), sample_size=sample_size, seed=seed)
    with torch.no_grad():
        for name in ("text_encoder", "text_encoder_2"):
            for parameter in components[name].parameters():
                parameter.copy_(parameter.half().float())
        for parameter in components["unet"].parameters():  # diffusers zero-initialises output layers: make every weight matter
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.05)
    clip = comfy_sdxl_clip(components["text_encoder"], components["text_encoder_2"], embedding_directory)
    return components, comfy_sdxl_model(components["unet"]), clip


def comfy_sdxl_model(unet):
    """ComfyUI's SDXL model (float32) holding the diffusers UNet's weights, as a loader makes it."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SDXL(dict(SDXL_UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    names = diffusers_to_ldm_names(unet)
    state = {names[name]: tensor.detach().clone() for name, tensor in unet.state_dict().items()}
    with torch.inference_mode():  # like a loader node: the weights become inference tensors
        model = config.get_model({}, "", device="cpu")
        missing, unexpected = model.diffusion_model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"the tiny SDXL UNet does not map onto ComfyUI's: missing {missing[:4]}, unexpected {unexpected[:4]}")
        model.diffusion_model.to(torch.float32)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(), offload_device=comfy.model_management.unet_offload_device()
    )


def _comfy_text_config(encoder) -> dict:
    config = encoder.config
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_act": config.hidden_act,
        "layer_norm_eps": config.layer_norm_eps,
        "projection_dim": config.hidden_size,  # ComfyUI's projection is square, as SDXL's CLIP-G is
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


def comfy_sdxl_clip(text_encoder, text_encoder_2, embedding_directory=None):
    """A ComfyUI CLIP with SDXLClipModel's layout at the two encoders' widths, holding their weights."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base

    l_config, g_config = _comfy_text_config(text_encoder), _comfy_text_config(text_encoder_2)

    class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
        """comfy.sdxl_clip.SDXLClipModel's two encoders with the same options, at tiny widths."""

        def __init__(self, device="cpu", dtype=None, model_options={}):
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(
                layer="hidden",
                layer_idx=-2,
                device=device,
                dtype=dtype,
                layer_norm_hidden_state=False,
                textmodel_json_config=dict(l_config),
                model_options=model_options,
            )
            self.clip_g = comfy.sd1_clip.SDClipModel(
                layer="hidden",
                layer_idx=-2,
                device=device,
                dtype=dtype,
                textmodel_json_config=dict(g_config),
                special_tokens={"start": 49406, "end": 49407, "pad": 0},
                layer_norm_hidden_state=False,
                return_projected_pooled=True,
                model_options={**model_options, "model_name": "clip_g"},
            )
            self.dtypes = {dtype}

    def hf_state(encoder):
        return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in encoder.state_dict().items()}

    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)
    with torch.inference_mode():
        clip = comfy.sd.CLIP(target, embedding_directory=embedding_directory)
        for encoder, source in ((clip.cond_stage_model.clip_l, text_encoder), (clip.cond_stage_model.clip_g, text_encoder_2)):
            missing, unexpected = encoder.load_sd(hf_state(source))
            missing = [name for name in missing if not name.endswith("text_projection.weight") or source is text_encoder_2]
            if missing or unexpected:
                raise RuntimeError(f"the tiny CLIP does not map onto ComfyUI's: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return clip
