"""The loss interface every guidance loss implements.

A loss maps a batch of images to one loss value per image:

    loss(images) -> per_sample_loss
    images: float tensor (B, C, H, W), RGB in [0, 1] (C may be 1 for grayscale models),
            on any device; it carries gradients and must not be modified in place.
    result: float tensor (B,), differentiable w.r.t. images.

Model-based losses own their model and move it to the images' device and a suitable
dtype on first use. The engine never needs to know which kind of loss it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ...errors import SteerError


@runtime_checkable
class Loss(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Window:
    """Part of the schedule where something is active, as fractions of the sampling steps.

    0.0 is the first step and 1.0 the end of the last one: step i of n is inside when
    start <= i / n < end.
    """

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise SteerError(f"window start and end must lie in [0, 1], got ({self.start}, {self.end})")
        if self.start > self.end:
            raise SteerError(f"window start {self.start} is after its end {self.end}: swap them")

    def contains(self, progress: float) -> bool:
        return self.start <= progress < self.end
