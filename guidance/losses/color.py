"""Colour guidance: toward a target colour, or toward a reference image's colour statistics. No model needed.

Both are pixel losses: `weighted(images, weights)` takes per-pixel weights (B, 1, H, W), which a
region mask provides (guidance/losses/masked.py); every mean is then a weighted mean.
"""

from __future__ import annotations

import torch

from ...errors import SteerError
from .reference import ReferenceImages

COLOR_MATCHES = ("pixels", "average")


class TargetColorLoss:
    """Squared RGB distance to one colour: of every pixel ("pixels") or of the image's mean colour ("average")."""

    def __init__(self, rgb: tuple[float, float, float], match: str = "pixels"):
        if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
            raise SteerError(f"target colour must be three values in [0, 1], got {rgb}")
        if match not in COLOR_MATCHES:
            raise SteerError(f"colour match must be one of {COLOR_MATCHES}, got {match!r}")
        self.rgb = tuple(float(c) for c in rgb)
        self.match = match
        self.name = f"color{self.rgb}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.weighted(images, None)

    def weighted(self, images: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        target = torch.tensor(self.rgb, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        if images.shape[1] == 1:
            target = target.mean(dim=1, keepdim=True)
        if self.match == "average":
            return (weighted_mean(images, weights, keepdim=True) - target).square().sum(dim=(1, 2, 3))
        return weighted_mean((images - target).square().sum(dim=1, keepdim=True), weights)[:, 0]


class ReferenceColorLoss:
    """Match per-channel mean and standard deviation to a reference image (averaged over a reference batch)."""

    def __init__(self, reference: torch.Tensor):
        self.reference = ReferenceImages(reference, "colour reference")
        self.name = "color(reference)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.weighted(images, None)

    def weighted(self, images: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        ref = self.reference.like(images)
        ref_mean, ref_std = ref.mean(dim=(2, 3)).mean(0), ref.std(dim=(2, 3)).mean(0)
        if weights is None:
            mean, std = images.mean(dim=(2, 3)), images.std(dim=(2, 3))
        else:
            mean, std = weighted_mean(images, weights), weighted_std(images, weights)
        return (mean - ref_mean).square().sum(dim=1) + (std - ref_std).square().sum(dim=1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None, keepdim: bool = False) -> torch.Tensor:
    """Per-sample, per-channel mean over (H, W), weighted by (B, 1, H, W) weights when given.
    A view whose weights are all zero (e.g. its region cut out by augmentation) gives 0."""
    if weights is None:
        return values.mean(dim=(2, 3), keepdim=keepdim)
    mean = (values * weights).sum(dim=(2, 3), keepdim=True) / weights.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    return mean if keepdim else mean.flatten(1)


def weighted_std(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, C) weighted standard deviation over (H, W), with the reliability-weights correction
    V1² / (V1² − V2), so that weights of all ones give torch.std's unbiased value."""
    mean = weighted_mean(values, weights, keepdim=True)
    v1 = weights.sum(dim=(2, 3))
    v2 = weights.square().sum(dim=(2, 3))
    spread = (values - mean).square().mul(weights).sum(dim=(2, 3))
    return (spread / (v1 - v2 / v1.clamp(min=1e-6)).clamp(min=1e-6)).add(1e-12).sqrt()
