"""The guided sampling loop: one loop, pluggable step rules, over three callables.

denoiser(x, sigma) -> x0        what ComfyUI's model wrapper returns for eps, v and flow models
decode(latent)     -> images    keeps gradients; images (B, C, H, W) in about [0, 1]
loss(images)       -> (B,)      per-sample loss, see losses/base.py
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..errors import SteerError
from .augment import RandomAugment, augmented_loss
from .config import GuidanceConfig
from .losses.base import Loss
from .noise_law import VARIANCE_EXPLODING, NoiseLaw
from .region import REGION_OUTSIDE, Region
from .step_rules import STEP_RULES, StepContext, cap_displacement, per_sample_norm, per_sample_rms
from .trace import GuidanceTrace, StepRecord

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Decoder = Callable[[torch.Tensor], torch.Tensor]


def active_loss(loss: Loss, progress: float) -> Loss | None:
    """The loss to use at this point of the schedule, or None. Losses with windows expose `at`."""
    at = getattr(loss, "at", None)
    return at(progress) if at is not None else loss


def loss_and_gradient(
    x: torch.Tensor,
    sigma: torch.Tensor,
    denoiser: Denoiser,
    decode: Decoder,
    loss: Loss,
    config: GuidanceConfig,
    augment: RandomAugment | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (x0, per-sample loss, gradient, image gradient). The gradient is w.r.t. x (through_model)
    or x̂0 (x0_shortcut); the image gradient is w.r.t. the decoded image, from the same backward pass.

    Only detached tensors leave this function, so each step's graph is freed at once.
    """
    sigma_batch = sigma.expand(x.shape[0])
    if config.gradient_path == "through_model":
        with torch.enable_grad():
            wrt = x.detach().requires_grad_(True)
            x0 = denoiser(wrt, sigma_batch)
            if not x0.requires_grad:
                raise SteerError(
                    "the denoiser's output carries no gradient, so guidance through the model is impossible "
                    "with this model; use gradient_path 'x0_shortcut' (preset 'mpgd')"
                )
            images = decode(x0)
            values = augmented_loss(loss, images, augment)
            _check_loss_values(values, loss)
            grad, image_grad = torch.autograd.grad(values.sum(), (wrt, images), allow_unused=True)
    else:
        with torch.no_grad():
            x0 = denoiser(x, sigma_batch)
        with torch.enable_grad():
            wrt = x0.detach().requires_grad_(True)
            images = decode(wrt)
            values = augmented_loss(loss, images, augment)
            _check_loss_values(values, loss)
            grad, image_grad = torch.autograd.grad(values.sum(), (wrt, images), allow_unused=True)
    if grad is None or image_grad is None:
        raise SteerError(f"loss '{loss.name}' does not depend on the image, so it cannot guide; check its inputs")
    if not torch.isfinite(grad).all():
        raise SteerError(
            f"the gradient of loss '{loss.name}' became NaN or inf at sigma {float(sigma):.4g}; "
            "lower the strength, or run the VAE in fp32 (--fp32-vae)"
        )
    return x0.detach(), values.detach(), grad.detach(), image_grad.detach()


def _check_loss_values(values: torch.Tensor, loss: Loss) -> None:
    if not values.requires_grad:
        raise SteerError(f"loss '{loss.name}' does not depend on the image, so it cannot guide; check its inputs")
    if not torch.isfinite(values).all():
        raise SteerError(
            f"loss '{loss.name}' returned NaN or inf ({values.detach().flatten().tolist()}); "
            "lower the strength, check the loss inputs, or run the VAE in fp32 (--fp32-vae)"
        )


def sample(
    denoiser: Denoiser,
    decode: Decoder,
    loss: Loss,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    config: GuidanceConfig,
    law: NoiseLaw = VARIANCE_EXPLODING,
    seed: int | None = None,
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    trace: GuidanceTrace | None = None,
    region: Region | None = None,
    outside: str = "unguided",
) -> torch.Tensor:
    """Runs len(sigmas) − 1 guided steps from x at sigmas[0]; returns x at sigmas[-1].

    `region`, if given, confines the guidance: each displacement is multiplied by the mask,
    resized to the latent, before its cap. Outside the region, `outside` says what happens:
    "free": it is only not pushed (the model still redraws it as the region changes);
    "unguided": after every step it is reset to the unguided run from the same start and noise,
    computed alongside (one more model call per step, no backward), as inpainting keeps the
    unmasked part of an image: x ← m·x_guided + (1 − m)·x_unguided.

    `noise(like)` draws fresh N(0, I) noise for ancestral steps and time travel; by default a
    generator seeded with `seed`. The augmentations draw from torch's RNG, forked and seeded
    here so a run is reproducible and leaves the caller's RNG untouched.
    `on_step(i, x, x0)` runs after every step (progress, previews, Cancel).
    """
    if sigmas.dim() != 1 or len(sigmas) < 2:
        raise SteerError("sigmas must be a 1-D schedule with at least two values")
    if outside not in REGION_OUTSIDE:
        raise SteerError(f"outside must be one of {REGION_OUTSIDE}, got {outside!r}")
    # The unguided run beside a region draws from its own generator, seeded alike: it is the run a scale of 0 gives.
    reference_noise = noise if noise is not None else seeded_noise(x.device, seed)
    noise = noise if noise is not None else seeded_noise(x.device, seed)
    if region is not None:
        weights = region.weights_like(x)  # a mask batch unlike the samples' fails now, not at the first guided step
    x_reference = x.clone() if region is not None and outside == "unguided" else None
    augment = RandomAugment(config.augment) if config.augment.copies > 0 else None
    rule = STEP_RULES[config.step_rule]
    if trace is not None:
        trace.clear()
    steps = len(sigmas) - 1

    rng_devices = [x.device] if x.device.type == "cuda" else []
    rng_scope = torch.random.fork_rng(devices=rng_devices) if seed is not None else contextlib.nullcontext()
    with rng_scope, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        for i in range(steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            progress = i / steps
            loss_now = active_loss(loss, progress) if config.window.contains(progress) and config.scale > 0 else None
            repeats = config.time_travel.repeats if loss_now is not None and config.time_travel.window.contains(progress) else 1
            for repeat in range(repeats):
                if check_interrupt is not None:
                    check_interrupt()
                x_next, x0 = _step(
                    x, sigma, sigma_next, i, repeat, denoiser, decode, loss_now, config, law, rule, augment, noise, trace, region
                )
                if repeat < repeats - 1:
                    x = law.renoise(x_next, sigma_next, sigma, noise(x_next))
                else:
                    x = x_next
            if x_reference is not None:
                args = (sigma, sigma_next, i, 0, denoiser, decode, None, config, law, rule, augment, reference_noise, trace, None)
                x_reference, _ = _step(x_reference, *args)
                x = weights * x + (1 - weights) * x_reference
            if trace is not None:
                trace.steps = i + 1
            if on_step is not None:
                on_step(i, x, x0)
    return x


def seeded_noise(device: torch.device, seed: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """N(0, I) draws from a generator seeded with `seed` (0 when None)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return noise


def _step(x, sigma, sigma_next, i, repeat, denoiser, decode, loss, config, law, rule, augment, noise, trace, region):
    fresh = noise(x) if config.eta > 0 and float(sigma_next) > 0 else None
    if trace is not None:
        trace.model_calls += 1
    if loss is None:
        x0 = denoiser(x, sigma.expand(x.shape[0]))
        return law.ddim_step(x0, law.eps(x, x0, sigma), sigma, sigma_next, config.eta, fresh), x0

    x0, values, grad, image_grad = loss_and_gradient(x, sigma, denoiser, decode, loss, config, augment)
    eps = law.eps(x, x0, sigma)
    x_next = law.ddim_step(x0, eps, sigma, sigma_next, config.eta, fresh)
    context = StepContext(
        eps=eps,
        denoise_step=x_next - x,
        noise_level=law.noise(sigma),
        loss=values,
        image_grad=image_grad,
        noise_drop=law.noise(sigma) - law.noise(sigma_next),
    )
    displacement = rule(grad, context, config.scale, config.min_grad_norm)
    if region is not None:
        displacement = displacement * region.weights_like(displacement)
    if config.gradient_path == "through_model":
        # Algorithm 1/2: the displacement lands on x_{t-1}; cap it relative to the noise in x.
        displacement, capped = cap_displacement(displacement, config.max_step * law.noise(sigma))
        x_next = x_next - displacement
    else:
        # MPGD: move x̂0, then take the same DDIM step (same ε̂, same fresh noise) from it.
        displacement, capped = cap_displacement(displacement, config.max_step)
        x0 = x0 - displacement
        x_next = law.ddim_step(x0, eps, sigma, sigma_next, config.eta, fresh)
    if trace is not None:
        trace.records.append(
            StepRecord(
                step=i,
                repeat=repeat,
                sigma=float(sigma),
                loss=values.float(),
                grad_norm=per_sample_norm(grad).flatten().float(),
                displacement_rms=per_sample_rms(displacement).flatten().float(),
                capped=capped,
            )
        )
    return x_next, x0
