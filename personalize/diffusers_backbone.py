"""The Backbone over diffusers + transformers: UNet2DConditionModel, CLIPTextModel(s),
CLIPTokenizer(s) and AutoencoderKL, for SD1.x, SD2.x and SDXL. Used for headless training on
diffusers model folders and for the unit tests on tiny configs.

- The text side is one diffusers_text.TextTower per text encoder, each with its own learned
  vector for [V] (SDXL: CLIP-L and CLIP-G, each starting from the category word in its encoder).
- SDXL's UNet takes CLIP-G's pooled vector and the size conditioning ("text_time"): the latent's
  own image size, uncropped, as original and target size, as ComfyUI's SDXL conditioning does
  for an image of that size.
- Cross-attention capture is a diffusers attention processor installed on attn2 only, for the
  duration of `attention_capture`; attn1 keeps whatever processor it had (SDPA by default).
- The UNet is trained in float32 (autocast supplies bf16/fp16 compute); the frozen text
  encoder and VAE may live in a half dtype. A CPU copy of the base UNet (in its original
  dtype, hence exact) gives the weight deltas for export.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Sequence

import torch

from ..errors import SteerError
from .backbone import EncodedPrompt, TextConditioning, token_group, vector_copies
from .diffusers_text import SDXL_KEYS, SINGLE_ENCODER_KEYS, TextTower, encode_towers, encode_towers_plain
from .latent_cache import LatentCache, sample_latents
from .ldm_names import diffusers_to_ldm_names
from .prompt import split_at_placeholder
from .regularizer import AttentionCapture, capturing_attention, merge_heads, split_heads
from .schedule import NoiseSchedule
from .stages import CROSS_ATTENTION, TOKEN, UNET

# SDXL's six size numbers (original h, w, crop top, left, target h, w) each get this many sinusoidal features.
SDXL_TIME_FEATURES = 6


class CapturingCrossAttnProcessor:
    """Cross-attention with explicit softmax probabilities, handed to an AttentionCapture.

    Same maths as diffusers' AttnProcessor2_0 except that softmax(QKᵀ·scale) is materialised
    (regularizer.capturing_attention, float32) so the [V] and category columns can be kept in the graph.
    """

    def __init__(self, capture: AttentionCapture):
        self.capture = capture

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        if encoder_hidden_states is None:
            raise RuntimeError("CapturingCrossAttnProcessor is for cross-attention (attn2) layers only")
        batch_size, key_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query, key, value = (
            split_heads(t, attn.heads) for t in (query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states))
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = merge_heads(capturing_attention(query, key, value, self.capture, attn.scale, attention_mask)).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class DiffusersBackbone:
    def __init__(
        self,
        unet,
        text_encoder,
        tokenizer,
        vae,
        scheduler,
        *,
        text_encoder_2=None,
        tokenizer_2=None,
        device: str | torch.device = "cpu",
        frozen_dtype: torch.dtype | None = None,
        identity: str = "diffusers",
    ):
        self.is_sdxl = _check_supported(unet, text_encoder, text_encoder_2, tokenizer_2)
        self.device = torch.device(device)
        if frozen_dtype is None:  # the frozen text encoders and VAE: half precision on a GPU
            frozen_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.identity = identity
        self._latents = LatentCache()
        self.schedule = NoiseSchedule(torch.as_tensor(scheduler.alphas_cumprod), scheduler.config.prediction_type)

        # Exact base weights for export, kept in the dtype they came in (fp16 stays exact).
        self._base_unet = {name: parameter.detach().to("cpu", copy=True) for name, parameter in unet.named_parameters()}
        self._ldm_names = diffusers_to_ldm_names(unet)

        self.unet = _placed(unet, self.device, torch.float32).train().requires_grad_(False)
        self.vae = _placed(vae, self.device, frozen_dtype).eval().requires_grad_(False)
        encoders = [(text_encoder, tokenizer)] + ([(text_encoder_2, tokenizer_2)] if self.is_sdxl else [])
        keys = SDXL_KEYS if self.is_sdxl else (SINGLE_ENCODER_KEYS.get(text_encoder.config.hidden_size, "clip_l"),)
        self.towers = []
        for index, (key, (encoder, encoder_tokenizer)) in enumerate(zip(keys, encoders)):
            encoder = _placed(encoder, self.device, frozen_dtype).eval().requires_grad_(False)
            width = encoder.get_input_embeddings().weight.shape[1]
            token = torch.nn.Parameter(torch.zeros(width, device=self.device, dtype=torch.float32), requires_grad=False)
            self.towers.append(
                TextTower(key, encoder, encoder_tokenizer, token, penultimate=self.is_sdxl, pooled=self.is_sdxl and index == 1)
            )
        self.text_encoder, self.tokenizer = self.towers[0].encoder, self.towers[0].tokenizer
        self._groups = {
            TOKEN: token_group({tower.key: tower.token for tower in self.towers}),
            CROSS_ATTENTION: {name: p for name, p in self.unet.named_parameters() if ".attn2." in name},
            UNET: dict(self.unet.named_parameters()),
        }

    @classmethod
    def from_pretrained(
        cls, folder: str, *, device: str | torch.device = "cpu", frozen_dtype: torch.dtype | None = None
    ) -> "DiffusersBackbone":
        """A local diffusers model folder (unet/, text_encoder/, tokenizer/, vae/, scheduler/; SDXL also
        text_encoder_2/ and tokenizer_2/). Never downloads: a name that is not a local folder is refused."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        if not os.path.isdir(folder):
            raise SteerError(f"{folder!r} is not a folder; give the path of a diffusers model folder (with unet/, text_encoder/, vae/...)")
        missing = [
            part for part in ("unet", "text_encoder", "tokenizer", "vae", "scheduler") if not os.path.isdir(os.path.join(folder, part))
        ]
        if missing:
            raise SteerError(f"{folder!r} is not a Stable Diffusion diffusers folder: it has no {', '.join(missing)} subfolder(s)")
        local = {"local_files_only": True}  # use_safetensors=True below: never fall back to pickle (.bin) weights
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, **local)
        second = {}
        if getattr(unet.config, "addition_embed_type", None) == "text_time":
            absent = [part for part in ("text_encoder_2", "tokenizer_2") if not os.path.isdir(os.path.join(folder, part))]
            if absent:
                raise SteerError(f"{folder!r} holds an SDXL UNet but no {', '.join(absent)} subfolder(s); give the whole SDXL folder")
            second = {
                "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                    folder, subfolder="text_encoder_2", use_safetensors=True, **local
                ),
                "tokenizer_2": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", **local),
            }
        return cls(
            unet,
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True, **local),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **local),
            AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, **local),
            DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **local),
            **second,
            device=device,
            frozen_dtype=frozen_dtype,
            identity=os.path.basename(os.path.normpath(folder)),
        )

    @property
    def token(self) -> torch.nn.Parameter:
        """The learned vector of a one-encoder (SD1.x/SD2.x) model."""
        if len(self.towers) != 1:
            raise AttributeError("this model has one learned vector per text encoder: use backbone.towers[i].token")
        return self.towers[0].token

    # --- parameters -------------------------------------------------------------------------

    def parameter_groups(self):
        return self._groups

    def reset_token(self, category: str) -> None:
        for tower in self.towers:
            tower.reset(category)

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        return vector_copies({tower.key: tower.token for tower in self.towers})

    def unet_weight_deltas(self) -> dict[str, torch.Tensor]:
        deltas = {}
        for name, parameter in self.unet.named_parameters():
            delta = parameter.detach().float().cpu() - self._base_unet[name].float()
            if delta.any():
                deltas[self._ldm_names[name]] = delta
        return deltas

    @property
    def base_unet(self) -> dict[str, torch.Tensor]:
        """The UNet's weights as loaded, by diffusers name (CPU, original dtype); do not modify."""
        return self._base_unet

    def restore_base_unet(self) -> None:
        """Put the loaded UNet weights back, e.g. to train another concept from the same model."""
        with torch.no_grad():
            for name, parameter in self.unet.named_parameters():
                parameter.copy_(self._base_unet[name])

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    # --- text --------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        split_at_placeholder(prompt, self.towers[0].word_ids)  # exactly one [V], followed by the category
        embeddings, pooled, (token_index,) = encode_towers(self.towers, prompt, self.device)
        return EncodedPrompt(embeddings=embeddings, pooled=pooled, token_index=token_index, category_index=token_index + 1)

    @torch.no_grad()
    def encode_concept_text(self, prompt: str) -> TextConditioning:
        """A sampling prompt with the trained token at every [V] (any number of them, or none)."""
        embeddings, pooled, _ = encode_towers(self.towers, prompt, self.device)
        return TextConditioning(embeddings, pooled).float()

    @torch.no_grad()
    def encode_text(self, prompt: str) -> TextConditioning:
        return TextConditioning(*encode_towers_plain(self.towers, prompt, self.device)).float()

    # --- images and the UNet ---------------------------------------------------------------

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.vae.config.latent_channels, size // factor, size // factor)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor + shift
        return (self.vae.decode(z).sample.float() * 0.5 + 0.5).clamp(0, 1).cpu()

    @torch.no_grad()
    def _latent_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distribution = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        return distribution.mean.float().cpu(), distribution.std.float().cpu()

    def cache_latents(self, views, batch_size: int = 8) -> int:
        """Encode a pool of views now (TrainingImages.all_views()); see latent_cache.py."""
        return self._latents.fill(views, self._latent_distribution, batch_size)

    def encode_images(self, pixels: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        # The posterior of each distinct view is computed once (latent_cache.py); the sample is fresh.
        mean, std = self._latents.distribution(pixels, self._latent_distribution)
        latents = sample_latents(mean, std, generators)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float().to(self.device)

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        added = None
        if self.is_sdxl:
            if pooled is None:
                raise ValueError("SDXL needs the pooled text vector (EncodedPrompt.pooled)")
            factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            height, width = noisy_latents.shape[-2] * factor, noisy_latents.shape[-1] * factor
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=self.device, dtype=torch.float32)
            added = {"text_embeds": pooled.to(self.device), "time_ids": time_ids.expand(noisy_latents.shape[0], -1)}
        return self.unet(
            noisy_latents.to(self.device),
            timesteps.to(self.device),
            encoder_hidden_states=text_embeddings.to(self.device),
            added_cond_kwargs=added,
        ).sample

    @contextmanager
    def attention_capture(self, capture: AttentionCapture):
        originals = self.unet.attn_processors
        capturing = CapturingCrossAttnProcessor(capture)
        self.unet.set_attn_processor(
            {name: capturing if name.endswith("attn2.processor") else processor for name, processor in originals.items()}
        )
        try:
            yield
        finally:
            self.unet.set_attn_processor(originals)


def _placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # Cast only when needed: diffusers warns on every .to(dtype), even a no-op one.
    if any(parameter.dtype != dtype for parameter in module.parameters()):
        module = module.to(dtype=dtype)
    return module.to(device)


def _check_supported(unet, text_encoder, text_encoder_2=None, tokenizer_2=None) -> bool:
    """Whether the model is SDXL (else SD1.x/SD2.x); SteerError with what to change if it is neither."""
    config = unet.config
    if not hasattr(unet, "down_blocks") or getattr(config, "cross_attention_dim", None) is None:
        raise SteerError("this model is not a Stable Diffusion UNet; AttnDreamBooth training supports SD1.x, SD2.x and SDXL")
    addition = getattr(config, "addition_embed_type", None)
    sdxl = addition == "text_time"
    if addition is not None and not sdxl:
        raise SteerError(
            f"this UNet's added conditioning ({addition!r}) is not SDXL's 'text_time'; AttnDreamBooth supports SD1.x, SD2.x and SDXL"
        )
    if sdxl and (text_encoder_2 is None or tokenizer_2 is None):
        raise SteerError("an SDXL UNet needs both text encoders: give text_encoder_2 (OpenCLIP-G with projection) and tokenizer_2")
    if not sdxl and text_encoder_2 is not None:
        raise SteerError("a second text encoder was given for a UNet that is not SDXL; SD1.x and SD2.x have one")
    width = text_encoder.config.hidden_size + (text_encoder_2.config.hidden_size if sdxl else 0)
    if config.cross_attention_dim != width:
        raise SteerError(
            f"the text encoding ({width} wide) does not match the UNet (cross-attention width {config.cross_attention_dim}); "
            "load the text encoder(s) that belong to this model"
        )
    if sdxl:
        pooled = text_encoder_2.config.projection_dim
        expected = pooled + SDXL_TIME_FEATURES * config.addition_time_embed_dim
        if config.projection_class_embeddings_input_dim != expected or not hasattr(text_encoder_2, "text_projection"):
            raise SteerError(
                f"the second text encoder's pooled vector ({pooled} wide) does not fit this SDXL UNet's added conditioning "
                f"({config.projection_class_embeddings_input_dim} = pooled + 6 × {config.addition_time_embed_dim}); load the SDXL "
                "OpenCLIP-G encoder with its projection (CLIPTextModelWithProjection)"
            )
    return sdxl
