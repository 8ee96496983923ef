"""Structure guidance: the sample's edge map against a reference image's, with kornia's Sobel filter."""

from __future__ import annotations

import kornia
import torch

from .reference import ReferenceImages


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, scaled to unit RMS per image so that
    structure, not contrast, is compared."""
    gray = kornia.color.rgb_to_grayscale(images) if images.shape[1] == 3 else images
    edges = kornia.filters.sobel(gray, normalized=True, eps=1e-6)
    rms = edges.square().mean(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
    return edges / rms


class EdgeLoss:
    """Mean squared difference of edge maps; several references are averaged into one target map."""

    def __init__(self, reference: torch.Tensor):
        self.reference = ReferenceImages(reference, "edge reference")
        self.name = "edges(reference)"
        self._target_key = None
        self._target = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        ref = self.reference.like(images)
        key = (ref.data_ptr(), ref.shape)
        if key != self._target_key:
            self._target, self._target_key = edge_map(ref).mean(dim=0, keepdim=True), key
        return (edge_map(images) - self._target).square().mean(dim=(1, 2, 3))
