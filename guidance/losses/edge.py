"""Structure guidance: the sample's edge map against a reference image's, with kornia's Sobel filter."""

from __future__ import annotations

import kornia
import torch

from .color import weighted_mean
from .reference import ReferenceImages


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) Sobel gradient magnitude of the luminance."""
    gray = kornia.color.rgb_to_grayscale(images) if images.shape[1] == 3 else images
    return kornia.filters.sobel(gray, normalized=True, eps=1e-6)


def unit_rms(edges: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Edges scaled to unit RMS per image (over the region, when weights are given), so that
    structure, not contrast, is compared."""
    return edges / weighted_mean(edges.square(), weights, keepdim=True).add(1e-8).sqrt()


def edge_map(images: torch.Tensor) -> torch.Tensor:
    return unit_rms(sobel_edges(images))


class EdgeLoss:
    """Mean squared difference of edge maps; several references are averaged into one target map.

    A pixel loss (see color.py): with weights (a region), both maps are scaled over the region and
    compared there only.
    """

    def __init__(self, reference: torch.Tensor):
        self.reference = ReferenceImages(reference, "edge reference")
        self.name = "edges(reference)"
        self._key = None
        self._edges = None
        self._target = None

    def _reference_edges(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) the references' raw edges at the images' size, and their unmasked target, once per size."""
        ref = self.reference.like(images)
        key = (ref.data_ptr(), ref.shape)
        if key != self._key:
            self._edges, self._key = sobel_edges(ref), key
            self._target = unit_rms(self._edges).mean(dim=0, keepdim=True)
        return self._edges

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.weighted(images, None)

    def weighted(self, images: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        references = self._reference_edges(images)  # (N, 1, H, W)
        if weights is None:
            target = self._target
        else:
            target = torch.stack([unit_rms(references, w[None].expand(len(references), -1, -1, -1)).mean(dim=0) for w in weights])
        return weighted_mean((unit_rms(sobel_edges(images), weights) - target).square(), weights)[:, 0]
