"""ComfyUI adapter for the guidance engine: turns ComfyUI's objects into the engine's three callables.

Every ComfyUI quirk the guided sampler has to work around lives here, one function each:
- prompts run under torch.inference_mode() and weights are inference tensors;
- VAE.decode clamps, moves to the CPU and may tile under inference mode;
- the model wrapper batches CFG branches, which we may want to differentiate separately.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..errors import SteerError
from ..guidance.checkpointing import gradient_checkpointing
from ..guidance.config import GuidanceConfig
from ..guidance.losses.base import Loss
from ..guidance.memory import backward_memory
from ..guidance.noise_law import FLOW, VARIANCE_EXPLODING
from ..guidance.region import Region
from ..guidance.sampler import sample
from ..guidance.trace import GuidanceTrace
from ..safe_files import is_safetensors, read_safetensors
from .comfy_common import differentiable_clone, model_blocks, vae_decoder_checkpoint_blocks

log = logging.getLogger("steer")


def noise_law_of(model_sampling):
    """Flow models (SD3, Flux...) mix x = (1 − σ)·x0 + σ·n; every other ComfyUI model is x0 + σ·n."""
    return FLOW if isinstance(model_sampling, comfy.model_sampling.CONST) else VARIANCE_EXPLODING


LOSS_DECODERS = ("vae", "taesd")


def check_vae_matches(vae, latent_format) -> None:
    """A VAE of another latent space fails here, before sampling, not as a shape error deep in torch."""
    expected = int(latent_format.latent_channels)
    found = getattr(vae, "latent_channels", expected)
    if found != expected or getattr(vae, "latent_dim", 2) != 2:
        kind = f"{found}-channel" if getattr(vae, "latent_dim", 2) == 2 else f"{getattr(vae, 'latent_dim')}-D (video) {found}-channel"
        raise SteerError(
            f"the VAE connected to the Steer sampler is a {kind} VAE, but this model samples {expected}-channel image latents "
            f"({type(latent_format).__name__}); connect the model's own VAE (SD1.x, SD2.x, SDXL: 4 channels; SD3, Flux: 16)"
        )


def make_decoder(vae, latent_format):
    """latent (sampler space) → images (B, 3, H, W) in about [0, 1], keeping gradients.

    VAE.decode cannot be used: it clamps (zero gradient at the limits), moves to the CPU and
    falls back to inference-mode tiling on OOM. We call the decoder module directly.
    """
    first_stage = vae.first_stage_model

    def decode(latent: torch.Tensor) -> torch.Tensor:
        z = latent_format.process_out(latent).to(device=vae.device, dtype=vae.vae_dtype)
        image = first_stage.decode(z)
        if image.dim() != 4 or image.shape[1] != 3:
            raise SteerError(
                f"this VAE decodes to shape {tuple(image.shape)}, not to images; guided sampling needs an image VAE "
                "that matches the model (for example the checkpoint's own VAE)"
            )
        return (image.float() + 1.0) / 2.0

    return decode


_tiny_decoders: dict[tuple, torch.nn.Module] = {}
_tiny_decoders_lock = threading.Lock()


def tiny_decoder_file(latent_format) -> str:
    """The TAESD decoder in models/vae_approx that matches the model's latent space (the file
    ComfyUI's TAESD previews use), or a SteerError saying which file to put where."""
    name = getattr(latent_format, "taesd_decoder_name", None)
    if not name:
        raise SteerError(
            f"no tiny (TAESD) decoder exists for this model's latent space ({type(latent_format).__name__}); set loss_decoder to 'vae'"
        )
    candidates = [f for f in folder_paths.get_filename_list("vae_approx") if os.path.basename(f).startswith(f"{name}.")]
    files = [f for f in candidates if is_safetensors(f)]  # never unpickle a .pth
    if not files:
        found = f" (found only {', '.join(candidates)}: pickle files, which Steer does not load)" if candidates else ""
        raise SteerError(
            f"loss_decoder 'taesd' needs {name}.safetensors in ComfyUI/models/vae_approx, the file TAESD previews use "
            f"(github.com/madebyollin/taesd){found}; put it there, or set loss_decoder to 'vae'"
        )
    return folder_paths.get_full_path_or_raise("vae_approx", sorted(files)[0])


def make_tiny_decoder(latent_format, device: torch.device, dtype: torch.dtype):
    """Like make_decoder, with TAESD's tiny decoder: a few percent of the VAE decoder's cost.

    TAESD's decoder reads the sampler-space latent itself (ComfyUI's vae_scale/vae_shift for each
    TAESD undo process_out exactly) and outputs [0, 1]. It is built outside inference mode, so
    its weights are ordinary tensors autograd can save; it is cached per file and placement.
    """
    from comfy.taesd.taesd import Decoder

    path = tiny_decoder_file(latent_format)
    key = (path, os.path.getmtime(path), str(device), dtype)
    with _tiny_decoders_lock:
        decoder = _tiny_decoders.get(key)
        if decoder is None:
            state, _ = read_safetensors(path)
            with torch.inference_mode(False):
                channels = state["1.weight"].shape[1] if "1.weight" in state else latent_format.latent_channels
                decoder = Decoder(latent_channels=channels)
                try:
                    decoder.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
                except RuntimeError as error:
                    raise SteerError(f"{os.path.basename(path)} is not a TAESD decoder for this latent space: {error}") from None
                decoder = decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
            _tiny_decoders.clear()  # keep one: users switch models, not decoders
            _tiny_decoders[key] = decoder

    def decode(latent: torch.Tensor) -> torch.Tensor:
        return decoder(latent.to(device=device, dtype=dtype)).float()

    return decode


def positive_branch_only(model_options: dict) -> dict:
    """model_options whose gradient runs through the positive (first) cond only.

    The other branches are computed in a separate no-grad pass, so backward costs one branch,
    not the whole CFG batch. The guider's own CFG function still combines the results.
    """
    previous = model_options.get("sampler_calc_cond_batch_function")

    def calc_cond_batch(args):
        conds, x, sigma, model, options = args["conds"], args["input"], args["sigma"], args["model"], args["model_options"]

        def run(selected, x_in):
            if previous is not None:
                return previous({**args, "conds": selected, "input": x_in})
            return comfy.samplers.calc_cond_batch(model, selected, x_in, sigma, options)

        if not (torch.is_grad_enabled() and x.requires_grad) or len(conds) < 2 or conds[1] is None:
            return run(conds, x)
        positive = run([conds[0]] + [None] * (len(conds) - 1), x)[0]
        with torch.no_grad():
            others = run([None] + list(conds[1:]), x.detach())
        return [positive] + list(others[1:])

    options = dict(model_options)
    options["sampler_calc_cond_batch_function"] = calc_cond_batch
    return options


def backward_memory_of(guider, vae, latent_shape, config: GuidanceConfig, loss_decoder: str, checkpointing: bool) -> int:
    """The extra memory the guided steps' backward passes need (guidance/memory.py), for load_models_gpu."""
    base = guider.model_patcher.model
    dtype = base.manual_cast_dtype or base.get_dtype()
    branches = 1 if config.cfg_gradient == "positive" else 2
    shape = (latent_shape[0] * branches, *latent_shape[1:])
    decode = vae.memory_used_decode(latent_shape, vae.vae_dtype) if loss_decoder == "vae" else 0.0
    return backward_memory(
        shape,
        comfy.model_management.dtype_size(dtype),
        float(getattr(base, "memory_usage_factor", 1.0)),
        through_model=config.gradient_path == "through_model",
        checkpointing=checkpointing,
        vae_decode_bytes=decode,
    )


@contextlib.contextmanager
def differentiable_models(guider, vae, config: GuidanceConfig, loss_decoder: str, checkpointing: bool, latent_shape: tuple[int, ...]):
    """Loads differentiable clones of the UNet (when the gradient goes through it) and the VAE
    together, with gradient checkpointing on their blocks for the span of sampling, reserving the
    memory their backward passes need; then hands the model back to the guider's own patcher and
    restores the blocks, even on error."""
    original = guider.model_patcher
    through_model = config.gradient_path == "through_model"
    unet = differentiable_clone(original) if through_model else original
    patchers = [unet]
    blocks, in_place = model_blocks(original.model.diffusion_model) if through_model else ([], [])
    if loss_decoder == "vae":
        patchers.append(differentiable_clone(vae.patcher))
        blocks += vae_decoder_checkpoint_blocks(vae.first_stage_model)
    extra = backward_memory_of(guider, vae, latent_shape, config, loss_decoder, checkpointing)
    comfy.model_management.load_models_gpu(patchers, memory_required=extra)
    try:
        with gradient_checkpointing(blocks, enabled=checkpointing, in_place=in_place):
            yield
    finally:
        if unet is not original:
            comfy.model_management.load_models_gpu([original])


def guided_sampler_function(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    *,
    vae,
    loss: Loss,
    config: GuidanceConfig,
    trace: GuidanceTrace,
    loss_decoder: str = "vae",
    checkpointing: bool = True,
    region: Region | None = None,
    outside: str = "unguided",
):
    """A k-diffusion style sampler function for comfy.samplers.KSAMPLER."""
    extra_args = dict(extra_args or {})
    guider = model.inner_model
    base_model = guider.inner_model
    law = noise_law_of(base_model.model_sampling)
    if config.cfg_gradient == "positive":
        extra_args["model_options"] = positive_branch_only(extra_args.get("model_options", {}))
    seed = extra_args.get("seed")
    if loss_decoder == "vae":
        check_vae_matches(vae, base_model.latent_format)

    with torch.inference_mode(False), differentiable_models(guider, vae, config, loss_decoder, checkpointing, tuple(x.shape)):
        # Inputs arrive as inference tensors; clones are normal tensors autograd may save.
        x = x.clone()
        sigmas = sigmas.clone()
        if loss_decoder == "vae":
            decode = make_decoder(vae, base_model.latent_format)
        else:
            decode = make_tiny_decoder(base_model.latent_format, x.device, vae.vae_dtype)

        def denoise(x_in: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model(x_in, sigma, **extra_args)

        def on_step(i: int, x_now: torch.Tensor, x0: torch.Tensor) -> None:
            if callback is not None:
                callback({"x": x_now, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        return sample(
            denoise,
            decode,
            loss,
            x,
            sigmas,
            config,
            law=law,
            seed=seed,
            on_step=on_step,
            check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
            trace=trace,
            region=region,
            outside=outside,
        )


def make_sampler(
    vae,
    loss: Loss,
    config: GuidanceConfig,
    trace: GuidanceTrace,
    loss_decoder: str = "vae",
    checkpointing: bool = True,
    region: Region | None = None,
    outside: str = "unguided",
):
    if loss_decoder not in LOSS_DECODERS:
        raise SteerError(f"loss_decoder must be one of {LOSS_DECODERS}, got {loss_decoder!r}")
    return comfy.samplers.KSAMPLER(
        guided_sampler_function,
        extra_options={
            "vae": vae,
            "loss": loss,
            "config": config,
            "trace": trace,
            "loss_decoder": loss_decoder,
            "checkpointing": checkpointing,
            "region": region,
            "outside": outside,
        },
    )
