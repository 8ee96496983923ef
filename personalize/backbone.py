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
class EncodedPrompt:
    embeddings: torch.Tensor  # (1, tokens, width); in the graph of the token while it is trainable
    token_index: int  # position of [V] in the token sequence
    category_index: int  # position of the category word's first token (token_index + 1)


@runtime_checkable
class Backbone(Protocol):
    device: torch.device
    schedule: NoiseSchedule
    # The key ComfyUI's embedding loader looks for: "clip_l" (SD1.x), "clip_h" (SD2.x).
    embedding_key: str
    # Names the base model in checkpoints and the concept's JSON (a path, a hash...).
    identity: str

    def parameter_groups(self) -> Mapping[str, Mapping[str, torch.nn.Parameter]]:
        """{"token": {...}, "cross_attention": {...}, "unet": {...}}: name -> parameter.
        Trainable parameters are float32; "unet" includes the cross-attention ones. Everything
        outside these groups (text encoder, VAE) is frozen by the backbone itself."""
        ...

    def reset_token(self, category: str) -> None:
        """Initialise the new token's embedding from the category word's first token."""
        ...

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        """Encode a prompt holding one CONCEPT_PLACEHOLDER ("[V]"), which becomes the trainable
        token. Differentiable w.r.t. the token; the text encoder stays frozen."""
        ...

    def encode_text(self, prompt: str) -> torch.Tensor:
        """(1, tokens, width) embeddings of a plain prompt (no placeholder), padded like encode_prompt's."""
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

    def predict_noise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The model output for x_t (ε or v per schedule.prediction_type)."""
        ...

    def attention_capture(self, capture: AttentionCapture) -> AbstractContextManager:
        """While open, every cross-attention (attn2) layer computes its probabilities explicitly
        and hands them to `capture.record`; self-attention keeps its fused kernel."""
        ...

    def set_gradient_checkpointing(self, enabled: bool) -> None: ...

    def token_embedding(self) -> torch.Tensor:
        """The learned vector as (1, width), float32, on the CPU."""
        ...

    def unet_weight_deltas(self) -> dict[str, torch.Tensor]:
        """trained − base for every UNet parameter that changed, float32 on the CPU, keyed by
        ComfyUI's (LDM) parameter name without the "diffusion_model." prefix."""
        ...
