"""The one minibatch training loop every world stage runs, and what the stages share around it."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

FACTS_FILE = "training.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def batches(count: int, size: int, generator: torch.Generator):
    """Endless minibatch indices, a fresh seeded permutation per epoch."""
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - size + 1, size):
            yield order[start : start + size]


def lr_at(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def fit(
    name: str,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_loss: Callable[[int], tuple[torch.Tensor, float]],
    *,
    peak_lr: float,
    warmup: int = 200,
    clip_norm: float | None = None,
    after_step: Callable[[int], None] | None = None,
    smoothing: float = 0.98,
    log_every: int = 100,
) -> float:
    """Runs `steps` optimizer steps on `batch_loss(step) -> (loss, tracked value)` under `lr_at`,
    with optional gradient clipping (over the optimizer's parameters); returns the smoothed tracked value."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    running, start = None, time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, warmup)
        loss, tracked = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        running = tracked if running is None else smoothing * running + (1 - smoothing) * tracked
        if step % log_every == 0 or step == steps - 1:
            log(f"{name} {step}/{steps} {running:.5f} ({time.time() - start:.0f} s)")
    return running


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def record(out: Path, stage: str, facts: dict) -> None:
    """Adds a stage's facts to training.json (the model card is written from it)."""
    from ..safe_files import write_json

    path = out / FACTS_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[stage] = facts
    write_json(path, data)


def degrade(images: torch.Tensor, mean: torch.Tensor, generator: torch.Generator, clean: float = 0.25) -> torch.Tensor:
    """Look like a decoded x̂0 of a noisy step: random blur, a pull toward the mean image, noise.
    A guide trained on clean renders only gives poor gradients on the blurry estimates early in sampling."""
    import kornia

    b = images.shape[0]

    def rand():
        return torch.rand(b, generator=generator)

    sigma = (0.05 + 2.0 * rand()).view(b, 1).expand(b, 2).contiguous()
    blurred = kornia.filters.gaussian_blur2d(images, (9, 9), sigma)
    contrast = (0.3 + 0.7 * rand()).view(b, 1, 1, 1)
    out = mean + contrast * (blurred - mean) + (0.1 * rand()).view(b, 1, 1, 1) * torch.randn(images.shape, generator=generator)
    keep = (rand() < clean).view(b, 1, 1, 1)
    return torch.where(keep, images, out)
