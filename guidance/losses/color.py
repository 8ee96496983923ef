"""Colour guidance: toward a target colour, or toward a reference image's colour statistics. No model needed."""

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
        target = torch.tensor(self.rgb, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        if images.shape[1] == 1:
            target = target.mean(dim=1, keepdim=True)
        if self.match == "average":
            return (images.mean(dim=(2, 3), keepdim=True) - target).square().sum(dim=(1, 2, 3))
        return (images - target).square().sum(dim=1).mean(dim=(1, 2))


class ReferenceColorLoss:
    """Match per-channel mean and standard deviation to a reference image (averaged over a reference batch)."""

    def __init__(self, reference: torch.Tensor):
        self.reference = ReferenceImages(reference, "colour reference")
        self.name = "color(reference)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        ref = self.reference.like(images)
        ref_mean, ref_std = ref.mean(dim=(2, 3)).mean(0), ref.std(dim=(2, 3)).mean(0)
        mean, std = images.mean(dim=(2, 3)), images.std(dim=(2, 3))
        return (mean - ref_mean).square().sum(dim=1) + (std - ref_std).square().sum(dim=1)
