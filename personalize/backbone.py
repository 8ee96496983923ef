"""What the AttnDreamBooth algorithm needs from a model, and nothing more.

Two implementations: `diffusers_backbone.DiffusersBackbone` (diffusers UNet + transformers
CLIP; headless training and unit tests) and the ComfyUI adapter in nodes/ (MODEL, CLIP, VAE).
The trainer, regularizer and data pipeline only ever talk to this interface.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch

from .regularizer import AttentionCapture
from .schedule import NoiseSchedule


@dataclass(frozen=True)
class TextConditioning:
    """What the UNet is conditioned on: the per-token text embeddings and, for SDXL, the pooled
    CLIP-G vector (with the image size it joins the UNet's added conditioning)."""

    embeddings: torch.Tensor  # (batch, tokens, width); in the graph of the token while it is trainable
    pooled: torch.Tensor | None = None  # (batch, pooled width) for SDXL; None for SD1.x/SD2.x

    def expand(self, batch: int) -> "TextConditioning":
        """The same conditioning repeated for a batch (from a batch of 1)."""
        pooled = None if self.pooled is None else self.pooled.expand(batch, -1)
        return TextConditioning(self.embeddings.expand(batch, -1, -1), pooled)

    def float(self) -> "TextConditioning":
        return TextConditioning(self.embeddings.float(), None if self.pooled is None else self.pooled.float())

    @staticmethod
    def cat(parts: Sequence["TextConditioning"]) -> "TextConditioning":
        pooled = [part.pooled for part in parts]
        if any(p is None for p in pooled) and not all(p is None for p in pooled):
            raise ValueError("cannot batch conditionings with and without a pooled vector")
        joined = None if pooled[0] is None else torch.cat(pooled)
        return TextConditioning(torch.cat([part.embeddings for part in parts]), joined)


@dataclass(frozen=True, kw_only=True)
class EncodedPrompt(TextConditioning):
    """A training prompt's conditioning and where [V] and the category word sit in it."""

    token_index: int  # position of [V] in the token sequence (the same in every text encoder)
    category_index: int  # position of the category word's first token (token_index + 1)


def token_group(vectors: Mapping[str, torch.nn.Parameter]) -> dict[str, torch.nn.Parameter]:
    """The "token" parameter group from the learned vectors by embedding key: one encoder's vector keeps
    the name "token" (checkpoints of earlier versions resume), two (SDXL) go by their keys."""
    return {"token": next(iter(vectors.values()))} if len(vectors) == 1 else dict(vectors)


def vector_copies(vectors: Mapping[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """`token_embeddings()` of the learned vectors: (1, width) float32 CPU copies, not views of the live vectors."""
    return {key: vector.detach().float().cpu().clone()[None] for key, vector in vectors.items()}


@runtime_checkable
class Backbone(Protocol):
    device: torch.device
    schedule: NoiseSchedule
    # SDXL: two text encoders (two learned vectors), the pooled vector and size conditioning.
    is_sdxl: bool
    # Names the base model in checkpoints and the concept's JSON (a path, a hash...).
    identity: str

    def parameter_groups(self) -> Mapping[str, Mapping[str, torch.nn.Parameter]]:
        """{"token": {...}, "cross_attention": {...}, "unet": {...}}: name -> parameter.
        Trainable parameters are float32; "unet" includes the cross-attention ones. Everything
        outside these groups (text encoder, VAE) is frozen by the backbone itself."""
        ...

    def reset_token(self, category: str) -> None:
        """Initialise the new token's embedding in each text encoder from the category word's first
        token in that encoder."""
        ...

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        """Encode a prompt holding one CONCEPT_PLACEHOLDER ("[V]"), which becomes the trainable
        token (one vector per text encoder). Differentiable w.r.t. the tokens; the text encoders
        stay frozen."""
        ...

    def encode_text(self, prompt: str) -> TextConditioning:
        """The conditioning of a plain prompt (no placeholder), batch 1, padded like encode_prompt's."""
        ...

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the latent of a size x size image."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (as encode_images returns) -> (B, 3, H, W) in [0, 1], without gradient."""
        ...

    def encode_images(self, pixels: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents, one latent-distribution sample per image
        drawn with that image's generator. Runs without gradient."""
        ...

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The model output for x_t (ε or v per schedule.prediction_type). SDXL backbones need the
        pooled vector, and condition on the latent's own image size (uncropped)."""
        ...

    def attention_capture(self, capture: AttentionCapture) -> AbstractContextManager:
        """While open, every cross-attention (attn2) layer computes its probabilities explicitly
        and hands them to `capture.record`; self-attention keeps its fused kernel."""
        ...

    def set_gradient_checkpointing(self, enabled: bool) -> None: ...

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        """The learned vectors by the key ComfyUI's embedding loader looks for in the file ("clip_l"
        for SD1.x, "clip_h" for SD2.x, "clip_l" and "clip_g" for SDXL), each (1, width) float32 on the CPU."""
        ...

    def unet_weight_deltas(self) -> dict[str, torch.Tensor]:
        """trained − base for every UNet parameter that changed, float32 on the CPU, keyed by
        ComfyUI's (LDM) parameter name without the "diffusion_model." prefix."""
        ...
