"""Which ComfyUI models AttnDreamBooth can train, and what their noise schedule is: SD1.x/SD2.x
UNets (openaimodel.UNetModel) with one CLIP text encoder, ε or v prediction."""

from __future__ import annotations

import comfy.clip_model
import comfy.model_base
import comfy.sd1_clip
import comfy.supported_models
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..errors import SteerError
from ..personalize.schedule import NoiseSchedule


def check_supported(model, clip, vae=None) -> None:
    """Raise a SteerError saying what to change unless (model, clip[, vae]) is an SD1.x or SD2.x
    UNet with its own kind of CLIP text encoder."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(model, "clone"):
        raise SteerError("the model input is not a ComfyUI MODEL; connect the MODEL output of a checkpoint loader")
    config = getattr(base, "model_config", None)
    config_name = type(config).__name__ if config is not None else type(base).__name__
    if isinstance(base, (comfy.model_base.SDXL, comfy.model_base.SDXLRefiner)):
        raise SteerError(
            "SDXL is not supported yet by AttnDreamBooth training (it needs one learned vector for CLIP-L and one for "
            "CLIP-G); use an SD1.x or SD2.x checkpoint"
        )
    if (
        type(base) is not comfy.model_base.BaseModel
        or not isinstance(config, (comfy.supported_models.SD15, comfy.supported_models.SD20))
        or not isinstance(getattr(base, "diffusion_model", None), UNetModel)
        or base.adm_channels
        or base.concat_keys
    ):
        raise SteerError(
            f"this MODEL ({config_name}) is not supported: AttnDreamBooth training supports Stable Diffusion 1.x and 2.x "
            f"text-to-image UNets (Flux, SD3, SDXL, video, inpainting and unCLIP models are not supported)"
        )
    prediction_type_of(model.get_model_object("model_sampling"))

    if clip is None or not hasattr(clip, "cond_stage_model") or not hasattr(clip, "tokenizer"):
        raise SteerError("the clip input is empty or not a ComfyUI CLIP; connect the CLIP output of the same checkpoint loader")
    encoder, tokenizer = single_text_encoder(clip)
    width = encoder.transformer.get_input_embeddings().weight.shape[1]
    context = config.unet_config.get("context_dim")
    if width != context:
        raise SteerError(
            f"the CLIP does not match the MODEL: its text embeddings are {width} wide but the UNet's cross-attention "
            f"takes {context}; connect the CLIP that belongs to this checkpoint (SD1.x: CLIP-L 768, SD2.x: OpenCLIP-H 1024)"
        )
    if vae is not None:
        first_stage = getattr(vae, "first_stage_model", None)
        channels = getattr(vae, "latent_channels", None)
        if first_stage is None or not hasattr(first_stage, "encoder") or channels != config.unet_config.get("in_channels"):
            raise SteerError(
                f"the VAE does not match the MODEL (latent channels {channels} vs the UNet's {config.unet_config.get('in_channels')}); "
                "connect the VAE of this checkpoint"
            )


def single_text_encoder(clip):
    """(SDClipModel, SDTokenizer) of a CLIP object with one CLIP text encoder (SD1.x, SD2.x)."""
    model, tokenizer = clip.cond_stage_model, clip.tokenizer
    model_attribute, tokenizer_attribute = getattr(model, "clip", None), getattr(tokenizer, "clip", None)
    encoder = getattr(model, model_attribute, None) if isinstance(model_attribute, str) else None
    inner_tokenizer = getattr(tokenizer, tokenizer_attribute, None) if isinstance(tokenizer_attribute, str) else None
    if (
        not isinstance(model, comfy.sd1_clip.SD1ClipModel)
        or not isinstance(encoder, comfy.sd1_clip.SDClipModel)
        or not isinstance(getattr(encoder, "transformer", None), comfy.clip_model.CLIPTextModel)
        or not isinstance(inner_tokenizer, comfy.sd1_clip.SDTokenizer)
    ):
        raise SteerError(
            f"this CLIP ({type(model).__name__}) is not the single CLIP text encoder of an SD1.x/SD2.x checkpoint; "
            "AttnDreamBooth training supports SD1.x (CLIP-L) and SD2.x (OpenCLIP-H). Connect the checkpoint's own CLIP"
        )
    return encoder, inner_tokenizer


def prediction_type_of(model_sampling) -> str:
    """ "epsilon" or "v_prediction" for ComfyUI's discrete DDPM samplings; SteerError otherwise."""
    ms = comfy.model_sampling
    if isinstance(model_sampling, ms.V_PREDICTION) and not isinstance(model_sampling, ms.EDM):
        kind = "v_prediction"
    elif isinstance(model_sampling, ms.EPS) and not isinstance(model_sampling, (ms.V_PREDICTION, ms.X0)):
        kind = "epsilon"
    else:
        raise SteerError(
            f"this model's sampling ({type(model_sampling).__name__}) is not ε- or v-prediction on a DDPM schedule; "
            "AttnDreamBooth training supports SD1.x/SD2.x ε and v models"
        )
    sigmas = getattr(model_sampling, "sigmas", None)
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete) or sigmas is None or sigmas.dim() != 1 or sigmas.numel() < 2:
        raise SteerError(f"this model's sampling ({type(model_sampling).__name__}) has no discrete DDPM schedule to train on")
    steps = model_sampling.timestep(sigmas.float()).float().cpu()
    if not torch.allclose(steps, torch.arange(sigmas.numel(), dtype=torch.float32), atol=1e-3):
        raise SteerError(
            f"this model's sampling ({type(model_sampling).__name__}) maps its σ table to other timesteps (a distilled "
            "model such as LCM?); train on the base SD1.x/SD2.x model instead"
        )
    return kind


def noise_schedule_of(model_sampling) -> NoiseSchedule:
    """ᾱ_t = 1 / (1 + σ_t²) (ComfyUI keeps σ_t = √((1 − ᾱ_t)/ᾱ_t))."""
    sigmas = model_sampling.sigmas.detach().double().cpu()
    return NoiseSchedule(1.0 / (1.0 + sigmas.square()), prediction_type_of(model_sampling))
