"""Tiny, exact stand-ins for a diffusion model, used by the engine's unit tests.

Data ~ N(mean, std²) per element, so the ideal denoiser in sigma space is known in closed
form and differentiable: x0 = (std²·x + σ²·mean) / (std² + σ²).
"""

import torch


class GaussianDenoiser:
    def __init__(self, mean: float = 0.5, std: float = 0.3):
        self.mean, self.std = mean, std
        self.calls = 0
        self.backward_calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s2 = sigma.view(-1, *([1] * (x.dim() - 1))) ** 2
        out = (self.std**2 * x + s2 * self.mean) / (self.std**2 + s2)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad):
        self.backward_calls += 1
        return grad


class CountingLoss:
    """Wraps a loss and records the batch size of every call."""

    def __init__(self, inner):
        self.inner = inner
        self.name = f"counting({inner.name})"
        self.batch_sizes = []

    def __call__(self, images):
        self.batch_sizes.append(images.shape[0])
        return self.inner(images)


def identity_decode(latent: torch.Tensor) -> torch.Tensor:
    return latent


def karras_like_sigmas(steps: int, sigma_max: float = 5.0, sigma_min: float = 0.02) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    rho = 7.0
    sig = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1)])
