"""How a sampler's latent mixes signal and noise: x = signal(σ)·x0 + noise(σ)·n.

ComfyUI samplers work in sigma space. For eps and v models (and the digits DDPM after
conversion) the law is variance-exploding: x = x0 + σ·n. Flow models (SD3, Flux) use
x = (1 − σ)·x0 + σ·n. Every formula in the engine goes through this one object, so the
DDIM step, the noise estimate and time travel's re-noising agree with the model's own law.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseLaw:
    name: str  # "variance_exploding" or "flow"

    def signal(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.name == "flow":
            return 1.0 - sigma
        return torch.ones_like(sigma)

    def noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def eps(self, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The noise estimate ε̂ implied by a prediction x0 of x at level σ."""
        return (x - self.signal(sigma) * x0) / self.noise(sigma)

    def ddim_step(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        eta: float,
        fresh_noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """DDIM(η) from σ to σ_next, written for any signal/noise law.

        The stochastic part has std c = η·b_next·sqrt(1 − snr(σ)/snr(σ_next)), the DDPM posterior
        std at η = 1. For the variance-exploding law this is exactly k-diffusion's ancestral step,
        so η = 1 is "Euler ancestral" and η = 0 is deterministic DDIM (= Euler).
        """
        a_next, b_next = self.signal(sigma_next), self.noise(sigma_next)
        if float(sigma_next) == 0.0 or eta == 0.0:
            return a_next * x0 + b_next * eps
        a, b = self.signal(sigma), self.noise(sigma)
        snr_ratio = (a / b) ** 2 / (a_next / b_next) ** 2
        c = eta * b_next * torch.sqrt(torch.clamp(1.0 - snr_ratio, min=0.0))
        c = torch.minimum(c, b_next)
        return a_next * x0 + torch.sqrt(b_next**2 - c**2) * eps + c * fresh_noise

    def renoise(self, x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor, fresh_noise: torch.Tensor) -> torch.Tensor:
        """Move x from level σ_from back up to σ_to > σ_from with this law's forward process.

        x_to = (a_to/a_from)·x_from + sqrt(b_to² − (a_to/a_from)²·b_from²)·n. For the VP schedule this
        is the paper's √(α_t/α_{t−1})·x_{t−1} + √(1 − α_t/α_{t−1})·n, written in sigma space.
        """
        ratio = self.signal(sigma_to) / self.signal(sigma_from)
        extra = torch.clamp(self.noise(sigma_to) ** 2 - (ratio * self.noise(sigma_from)) ** 2, min=0.0)
        return ratio * x + torch.sqrt(extra) * fresh_noise


VARIANCE_EXPLODING = NoiseLaw("variance_exploding")
FLOW = NoiseLaw("flow")
