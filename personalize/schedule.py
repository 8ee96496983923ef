"""The DDPM forward process and the training target, from ᾱ_t alone.

A backbone hands over its ᾱ_t table (diffusers: scheduler.alphas_cumprod; ComfyUI:
1 / (1 + σ_t²) from model_sampling) and its prediction type; the trainer does the rest.
"""

from __future__ import annotations

import torch

from ..errors import SteerError

PREDICTION_TYPES = ("epsilon", "v_prediction")


class NoiseSchedule:
    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str):
        if prediction_type not in PREDICTION_TYPES:
            raise SteerError(
                f"this model predicts {prediction_type!r}; AttnDreamBooth training supports {PREDICTION_TYPES} "
                f"(SD1.x, SD2.x and their v-prediction variants)"
            )
        alphas_cumprod = alphas_cumprod.detach().double().cpu()
        if alphas_cumprod.dim() != 1 or not ((alphas_cumprod > 0) & (alphas_cumprod < 1)).all():
            raise ValueError("alphas_cumprod must be a 1-D table of values in (0, 1)")
        self.alphas_cumprod = alphas_cumprod
        self.prediction_type = prediction_type

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def _coefficients(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_bar = self.alphas_cumprod[timesteps.cpu()]
        shape = (-1,) + (1,) * (like.dim() - 1)
        signal = alpha_bar.sqrt().view(shape).to(like.device, torch.float32)
        noise = (1 - alpha_bar).sqrt().view(shape).to(like.device, torch.float32)
        return signal, noise

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε"""
        signal, scale = self._coefficients(timesteps, latents)
        return (signal * latents.float() + scale * noise.float()).to(latents.dtype)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the model regresses: ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0."""
        if self.prediction_type == "epsilon":
            return noise.float()
        signal, scale = self._coefficients(timesteps, latents)
        return signal * noise.float() - scale * latents.float()
