"""Step-size rules: how far to move along the loss gradient, per sample.

Every rule returns a displacement with the gradient's shape; the sampler subtracts it.
All norms are per sample (dim 0 is the batch), so a batch of different seeds is guided
independently. The reference code of Shen et al. takes batch-global norms; we do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped (B, 1, 1, ...) to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def per_sample_rms(t: torch.Tensor) -> torch.Tensor:
    return per_sample_norm(t) / (t[0].numel() ** 0.5)


@dataclass(frozen=True)
class StepContext:
    """What a rule may look at besides the gradient."""

    eps: torch.Tensor  # the model's noise estimate ε̂ at this step
    denoise_step: torch.Tensor  # the unguided update of the sampler, x_next − x
    noise_level: torch.Tensor  # b(σ): the noise std currently in x (scalar tensor)
    loss: torch.Tensor | None = None  # (B,) the loss values the gradient was taken of
    image_grad: torch.Tensor | None = None  # ∂loss/∂(decoded image), (B, C, H, W)
    noise_drop: torch.Tensor | None = None  # b(σ) − b(σ_next): how much noise this step removes


def polyak(grad: torch.Tensor, ctx: StepContext, scale: float, min_grad_norm: float) -> torch.Tensor:
    """Shen et al. Algorithm 2: Δ = η·‖ε̂‖/‖g‖²·g, per sample.

    ‖ε̂‖ stands in for the gap f(x) − f* of the classic Polyak step. Where ‖g‖ is below the
    guard the displacement is zero: a flat loss must not produce a huge jump (the reference
    code's guard is overwritten on the next line and never takes effect).
    """
    g_norm = per_sample_norm(grad)
    usable = g_norm > min_grad_norm
    step = scale * per_sample_norm(ctx.eps) / torch.where(usable, g_norm, torch.ones_like(g_norm)) ** 2
    return torch.where(usable, step, torch.zeros_like(step)) * grad


def loss_polyak(grad: torch.Tensor, ctx: StepContext, scale: float, min_grad_norm: float) -> torch.Tensor:
    """Classic Polyak with the loss itself as the gap (f* = 0): Δ = η·ℓ/‖g‖²·g, per sample.

    To first order the step removes the fraction η of the remaining loss, whatever the loss's
    units, the latent's scale or how strongly the decoder responds: the one rule here whose η
    means the same on every model. (The paper's ‖ε̂‖ in place of ℓ makes η carry loss units.)
    """
    if ctx.loss is None:
        raise ValueError("loss_polyak needs the loss values in the step context")
    g_norm = per_sample_norm(grad)
    usable = g_norm > min_grad_norm
    gap = ctx.loss.detach().clamp(min=0.0).view(g_norm.shape).to(grad.dtype)
    step = scale * gap / torch.where(usable, g_norm, torch.ones_like(g_norm)) ** 2
    return torch.where(usable, step, torch.zeros_like(step)) * grad


def image_normalized(grad: torch.Tensor, ctx: StepContext, scale: float, min_grad_norm: float) -> torch.Tensor:
    """The normalized rule measured on the decoded image: each step moves the image, to first order,
    by RMS δ = scale·(b(σ) − b(σ_next)) along the loss's steepest descent in image space.

    With g = ∂ℓ/∂latent and g_img = ∂ℓ/∂image, that move lowers ℓ by δ·√N·‖g_img‖, and the latent
    step achieving it along g is Δ = δ·√N·‖g_img‖/‖g‖²·g. The step is thus unchanged by the loss's
    units, the latent's scale and the decoder's gain, and, being proportional to the noise removed,
    adds up to the same total over a window at any step count.
    """
    if ctx.image_grad is None or ctx.noise_drop is None:
        raise ValueError("image_normalized needs the image gradient and the noise drop in the step context")
    g_norm = per_sample_norm(grad)
    usable = g_norm > min_grad_norm
    image_g = ctx.image_grad.flatten(1)
    pixels = image_g.shape[1]
    gap = scale * ctx.noise_drop.to(grad.dtype).clamp(min=0.0) * pixels**0.5 * image_g.norm(dim=1).view(g_norm.shape).to(grad.dtype)
    step = gap / torch.where(usable, g_norm, torch.ones_like(g_norm)) ** 2
    return torch.where(usable, step, torch.zeros_like(step)) * grad


def normalized(grad: torch.Tensor, ctx: StepContext, scale: float, min_grad_norm: float) -> torch.Tensor:
    """FreeDoM-style: the displacement's RMS is `scale` times the RMS of the denoising step."""
    g_norm = per_sample_norm(grad)
    usable = g_norm > min_grad_norm
    factor = scale * per_sample_rms(ctx.denoise_step) / torch.where(usable, per_sample_rms(grad), torch.ones_like(g_norm))
    return torch.where(usable, factor, torch.zeros_like(factor)) * grad


def constant(grad: torch.Tensor, ctx: StepContext, scale: float, min_grad_norm: float) -> torch.Tensor:
    """Δ = scale·g, as DPS does."""
    return scale * grad


STEP_RULES = {
    "polyak": polyak,
    "loss_polyak": loss_polyak,
    "image_normalized": image_normalized,
    "normalized": normalized,
    "constant": constant,
}


def cap_displacement(displacement: torch.Tensor, max_rms: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink each sample's displacement so its RMS is at most max_rms. Returns (capped, was_capped)."""
    rms = per_sample_rms(displacement)
    limit = torch.as_tensor(max_rms, dtype=rms.dtype, device=rms.device)
    shrink = torch.clamp(limit / torch.clamp(rms, min=1e-30), max=1.0)
    return displacement * shrink, (shrink < 1.0).flatten()
