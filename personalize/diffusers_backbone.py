"""The Backbone over diffusers + transformers: UNet2DConditionModel, CLIPTextModel,
CLIPTokenizer and AutoencoderKL. Used for headless training on diffusers model folders and
for the unit tests on tiny configs.

- The new token never enters the tokenizer: the prompt is tokenized around "[V]" and a
  forward hook on CLIP's token-embedding layer writes the trainable vector into that slot,
  so the text encoder itself is never modified and gradients reach the vector through it.
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
from .backbone import EncodedPrompt
from .latent_cache import LatentCache, sample_latents
from .ldm_names import diffusers_to_ldm_names
from .prompt import category_token_id, check_prompt_length, split_at_placeholder, split_at_placeholders
from .regularizer import AttentionCapture, capturing_attention, merge_heads, split_heads
from .schedule import NoiseSchedule
from .stages import CROSS_ATTENTION, TOKEN, UNET

# ComfyUI's embedding-file key per token width (comfy/sd1_clip.py, text_encoders/sd2_clip.py).
EMBEDDING_KEYS = {768: "clip_l", 1024: "clip_h"}


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
        device: str | torch.device = "cpu",
        frozen_dtype: torch.dtype | None = None,
        identity: str = "diffusers",
    ):
        _check_supported(unet, text_encoder)
        self.device = torch.device(device)
        if frozen_dtype is None:  # the frozen text encoder and VAE: half precision on a GPU
            frozen_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.identity = identity
        self._latents = LatentCache()
        self.tokenizer = tokenizer
        self.schedule = NoiseSchedule(torch.as_tensor(scheduler.alphas_cumprod), scheduler.config.prediction_type)

        # Exact base weights for export, kept in the dtype they came in (fp16 stays exact).
        self._base_unet = {name: parameter.detach().to("cpu", copy=True) for name, parameter in unet.named_parameters()}
        self._ldm_names = diffusers_to_ldm_names(unet)

        self.unet = _placed(unet, self.device, torch.float32).train().requires_grad_(False)
        self.text_encoder = _placed(text_encoder, self.device, frozen_dtype).eval().requires_grad_(False)
        self.vae = _placed(vae, self.device, frozen_dtype).eval().requires_grad_(False)

        width = text_encoder.get_input_embeddings().weight.shape[1]
        self.embedding_key = EMBEDDING_KEYS.get(width, "clip_l")
        self.token = torch.nn.Parameter(torch.zeros(width, device=self.device, dtype=torch.float32), requires_grad=False)
        self._groups = {
            TOKEN: {"token": self.token},
            CROSS_ATTENTION: {name: p for name, p in self.unet.named_parameters() if ".attn2." in name},
            UNET: dict(self.unet.named_parameters()),
        }

    @classmethod
    def from_pretrained(
        cls, folder: str, *, device: str | torch.device = "cpu", frozen_dtype: torch.dtype | None = None
    ) -> "DiffusersBackbone":
        """A local diffusers model folder (unet/, text_encoder/, tokenizer/, vae/, scheduler/).
        Never downloads: a name that is not a local folder is refused."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        if not os.path.isdir(folder):
            raise SteerError(f"{folder!r} is not a folder; give the path of a diffusers model folder (with unet/, text_encoder/, vae/...)")
        missing = [
            part for part in ("unet", "text_encoder", "tokenizer", "vae", "scheduler") if not os.path.isdir(os.path.join(folder, part))
        ]
        if missing:
            raise SteerError(f"{folder!r} is not a Stable Diffusion diffusers folder: it has no {', '.join(missing)} subfolder(s)")
        local = {"local_files_only": True}  # use_safetensors=True below: never fall back to pickle (.bin) weights
        return cls(
            UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, **local),
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True, **local),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **local),
            AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, **local),
            DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **local),
            device=device,
            frozen_dtype=frozen_dtype,
            identity=os.path.basename(os.path.normpath(folder)),
        )

    # --- parameters -------------------------------------------------------------------------

    def parameter_groups(self):
        return self._groups

    def reset_token(self, category: str) -> None:
        with torch.no_grad():
            row = self.text_encoder.get_input_embeddings().weight[category_token_id(category, self._word_ids)]
            self.token.copy_(row.float())

    def token_embedding(self) -> torch.Tensor:
        return self.token.detach().float().cpu()[None]

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

    def _word_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _max_length(self) -> int:
        # The text encoder's positions bound it: some tokenizer folders say 8192 or "very large".
        positions = self.text_encoder.config.max_position_embeddings
        length = self.tokenizer.model_max_length
        return min(length, positions) if 0 < length else positions

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        split_at_placeholder(prompt, self._word_ids)  # exactly one [V], followed by the category
        embeddings, (token_index,) = self._encode_with_token(prompt)
        return EncodedPrompt(embeddings=embeddings, token_index=token_index, category_index=token_index + 1)

    @torch.no_grad()
    def encode_concept_text(self, prompt: str) -> torch.Tensor:
        """A sampling prompt with the trained token at every [V] (any number of them, or none)."""
        return self._encode_with_token(prompt)[0].float()

    def _encode_with_token(self, prompt: str) -> tuple[torch.Tensor, list[int]]:
        pieces = split_at_placeholders(prompt, self._word_ids)
        ids, slots = [self.tokenizer.bos_token_id, *pieces[0]], []
        for after_ids in pieces[1:]:
            # The slot's id is irrelevant (the hook overwrites its embedding); the category's keeps it in-vocabulary.
            slots.append(len(ids))
            ids += [after_ids[0], *after_ids]
        ids.append(self.tokenizer.eos_token_id)
        max_length = self._max_length()
        check_prompt_length(len(ids), max_length)
        ids += [self.tokenizer.pad_token_id] * (max_length - len(ids))

        def insert_token(module, inputs, output):
            vector = self.token.to(output.dtype).view(1, 1, -1).expand(output.shape[0], 1, -1)
            for slot in slots:
                output = torch.cat([output[:, :slot], vector, output[:, slot + 1 :]], dim=1)
            return output

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(insert_token)
        try:
            embeddings = self.text_encoder(torch.tensor([ids], device=self.device))[0]
        finally:
            handle.remove()
        return embeddings, slots

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self._max_length(), truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0].float()

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

    def predict_noise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.unet(
            noisy_latents.to(self.device), timesteps.to(self.device), encoder_hidden_states=text_embeddings.to(self.device)
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


def _check_supported(unet, text_encoder) -> None:
    config = unet.config
    if getattr(config, "addition_embed_type", None) == "text_time":
        raise SteerError("SDXL is not supported yet by AttnDreamBooth training; use an SD1.x or SD2.x model")
    if not hasattr(unet, "down_blocks") or getattr(config, "cross_attention_dim", None) is None:
        raise SteerError("this model is not a Stable Diffusion UNet; AttnDreamBooth training supports SD1.x and SD2.x")
    width = text_encoder.config.hidden_size
    if config.cross_attention_dim != width:
        raise SteerError(
            f"the text encoder ({width}-wide) does not match the UNet (cross-attention width {config.cross_attention_dim}); "
            f"load the text encoder that belongs to this model"
        )
