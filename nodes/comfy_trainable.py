"""Which ComfyUI models AttnDreamBooth can train, and what their noise schedule is: SD1.x/SD2.x
UNets (openaimodel.UNetModel) with one CLIP text encoder, and SDXL UNets (SDXL base and its
detected relatives: SSD-1B, Vega, KOALA) with CLIP-L + CLIP-G; ε or v prediction."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.clip_model
import comfy.model_base
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..errors import SteerError
from ..personalize.schedule import NoiseSchedule

SUPPORTED = "Stable Diffusion 1.x, 2.x and SDXL text-to-image UNets"
SDXL_TIME_FEATURES = 6 * 256  # model_base.SDXL: six size numbers, Timestep(256) each, after the pooled vector


@dataclass(frozen=True)
class TextEncoder:
    """One CLIP text encoder of a ComfyUI CLIP object, with what the embedding file and the token dict call it."""

    embedding_key: str  # "clip_l", "clip_h", "clip_g": the embedding file's key, as SDTokenizer reads it
    token_key: str  # "l", "h", "g": the key of this encoder's tokens in CLIP.tokenize's dict
    encoder: comfy.sd1_clip.SDClipModel
    tokenizer: comfy.sd1_clip.SDTokenizer

    @property
    def width(self) -> int:
        return self.encoder.transformer.get_input_embeddings().weight.shape[1]


def is_sdxl(model) -> bool:
    base = getattr(model, "model", None)
    return type(base) is comfy.model_base.SDXL and isinstance(getattr(base, "model_config", None), comfy.supported_models.SDXL)


def check_supported(model, clip, vae=None) -> None:
    """Raise a SteerError saying what to change unless (model, clip[, vae]) is an SD1.x, SD2.x or
    SDXL UNet with its own kind of CLIP text encoder(s)."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(model, "clone"):
        raise SteerError("the model input is not a ComfyUI MODEL; connect the MODEL output of a checkpoint loader")
    config = getattr(base, "model_config", None)
    config_name = type(config).__name__ if config is not None else type(base).__name__
    sdxl = is_sdxl(model)
    sd = type(base) is comfy.model_base.BaseModel and isinstance(config, (comfy.supported_models.SD15, comfy.supported_models.SD20))
    if (
        not (sd or sdxl)
        or not isinstance(getattr(base, "diffusion_model", None), UNetModel)
        or (sd and base.adm_channels)
        or base.concat_keys
    ):
        raise SteerError(
            f"this MODEL ({config_name}) is not supported: AttnDreamBooth training supports {SUPPORTED} (Flux, SD3, the SDXL "
            "refiner, video, inpainting, instruct-pix2pix and unCLIP models are not supported)"
        )
    prediction_type_of(model.get_model_object("model_sampling"))

    if clip is None or not hasattr(clip, "cond_stage_model") or not hasattr(clip, "tokenizer"):
        raise SteerError("the clip input is empty or not a ComfyUI CLIP; connect the CLIP output of the same checkpoint loader")
    encoders = text_encoders(model, clip)
    width = sum(encoder.width for encoder in encoders)
    context = config.unet_config.get("context_dim")
    if width != context:
        raise SteerError(
            f"the CLIP does not match the MODEL: its text embeddings are {width} wide but the UNet's cross-attention "
            f"takes {context}; connect the CLIP that belongs to this checkpoint (SD1.x: CLIP-L 768, SD2.x: OpenCLIP-H 1024, "
            "SDXL: CLIP-L + CLIP-G 2048)"
        )
    if sdxl:
        pooled = encoders[1].encoder.transformer.text_projection.weight.shape[0]
        if pooled + SDXL_TIME_FEATURES != base.adm_channels:
            raise SteerError(
                f"the CLIP does not match the MODEL: CLIP-G's pooled vector is {pooled} wide, but this SDXL UNet's added "
                f"conditioning takes {base.adm_channels} = pooled + {SDXL_TIME_FEATURES}; connect the CLIP of this checkpoint"
            )
    if vae is not None:
        first_stage = getattr(vae, "first_stage_model", None)
        channels = getattr(vae, "latent_channels", None)
        if first_stage is None or not hasattr(first_stage, "encoder") or channels != config.unet_config.get("in_channels"):
            raise SteerError(
                f"the VAE does not match the MODEL (latent channels {channels} vs the UNet's {config.unet_config.get('in_channels')}); "
                "connect the VAE of this checkpoint"
            )


def text_encoders(model, clip) -> list[TextEncoder]:
    """The CLIP's text encoders in the order their embeddings are concatenated: [CLIP-L or OpenCLIP-H]
    for SD1.x/SD2.x, [CLIP-L, CLIP-G] for SDXL."""
    return sdxl_text_encoders(clip) if is_sdxl(model) else [single_text_encoder(clip)]


def _is_clip_text_encoder(encoder) -> bool:
    return isinstance(encoder, comfy.sd1_clip.SDClipModel) and isinstance(
        getattr(encoder, "transformer", None), comfy.clip_model.CLIPTextModel
    )


def sdxl_text_encoders(clip) -> list[TextEncoder]:
    model, tokenizer = clip.cond_stage_model, clip.tokenizer
    parts = [(getattr(model, name, None), getattr(tokenizer, name, None)) for name in ("clip_l", "clip_g")]
    if (
        not isinstance(model, comfy.sdxl_clip.SDXLClipModel)
        or not isinstance(tokenizer, comfy.sdxl_clip.SDXLTokenizer)
        or not all(_is_clip_text_encoder(encoder) and isinstance(inner, comfy.sd1_clip.SDTokenizer) for encoder, inner in parts)
    ):
        raise SteerError(
            f"this CLIP ({type(model).__name__}) is not SDXL's pair of text encoders (CLIP-L and CLIP-G); connect the CLIP "
            "output of the SDXL checkpoint loader (or DualCLIPLoader with type sdxl)"
        )
    return [TextEncoder(inner.embedding_key, key, encoder, inner) for key, (encoder, inner) in zip(("l", "g"), parts)]


def single_text_encoder(clip) -> TextEncoder:
    """The one CLIP text encoder of an SD1.x/SD2.x CLIP object."""
    model, tokenizer = clip.cond_stage_model, clip.tokenizer
    model_attribute, tokenizer_attribute = getattr(model, "clip", None), getattr(tokenizer, "clip", None)
    encoder = getattr(model, model_attribute, None) if isinstance(model_attribute, str) else None
    inner_tokenizer = getattr(tokenizer, tokenizer_attribute, None) if isinstance(tokenizer_attribute, str) else None
    if (
        not isinstance(model, comfy.sd1_clip.SD1ClipModel)
        or not _is_clip_text_encoder(encoder)
        or not isinstance(inner_tokenizer, comfy.sd1_clip.SDTokenizer)
    ):
        raise SteerError(
            f"this CLIP ({type(model).__name__}) is not the single CLIP text encoder of an SD1.x/SD2.x checkpoint; "
            "AttnDreamBooth training supports SD1.x (CLIP-L) and SD2.x (OpenCLIP-H). Connect the checkpoint's own CLIP"
        )
    return TextEncoder(inner_tokenizer.embedding_key, tokenizer.clip_name, encoder, inner_tokenizer)


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
            "AttnDreamBooth training supports ε and v models on a DDPM schedule"
        )
    sigmas = getattr(model_sampling, "sigmas", None)
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete) or sigmas is None or sigmas.dim() != 1 or sigmas.numel() < 2:
        raise SteerError(f"this model's sampling ({type(model_sampling).__name__}) has no discrete DDPM schedule to train on")
    steps = model_sampling.timestep(sigmas.float()).float().cpu()
    if not torch.allclose(steps, torch.arange(sigmas.numel(), dtype=torch.float32), atol=1e-3):
        raise SteerError(
            f"this model's sampling ({type(model_sampling).__name__}) maps its σ table to other timesteps (a distilled "
            "model such as LCM or Lightning?); train on the base model instead"
        )
    return kind


def noise_schedule_of(model_sampling) -> NoiseSchedule:
    """ᾱ_t = 1 / (1 + σ_t²) (ComfyUI keeps σ_t = √((1 − ᾱ_t)/ᾱ_t))."""
    sigmas = model_sampling.sigmas.detach().double().cpu()
    return NoiseSchedule(1.0 / (1.0 + sigmas.square()), prediction_type_of(model_sampling))
