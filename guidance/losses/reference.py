"""Reference images shared by the image-based losses: resized and moved once per size and device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import SteerError


class ReferenceImages:
    """A reference batch (N, C, H, W) in [0, 1], served at the size, device and dtype a loss asks for."""

    def __init__(self, images: torch.Tensor, what: str):
        if images.dim() != 4 or images.shape[0] == 0:
            raise SteerError(f"{what} must be a non-empty image batch (N, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] not in (1, 3):
            raise SteerError(f"{what} must have 1 or 3 channels, got {images.shape[1]}")
        self._images = images.detach().float().cpu()
        self._cache: dict[tuple, torch.Tensor] = {}

    def original(self, device: torch.device) -> torch.Tensor:
        """The references at their own size, float32, on `device`: for losses whose model resizes them itself."""
        return self._images.to(device)

    def like(self, images: torch.Tensor) -> torch.Tensor:
        """The references at images' (C, H, W), device and dtype."""
        channels, height, width = images.shape[1:]
        key = (channels, height, width, images.device, images.dtype)
        if key not in self._cache:
            ref = self._images
            if ref.shape[1] != channels:
                ref = ref.mean(dim=1, keepdim=True) if channels == 1 else ref.expand(-1, channels, -1, -1)
            if ref.shape[-2:] != (height, width):
                ref = F.interpolate(ref, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            self._cache = {key: ref.to(device=images.device, dtype=images.dtype)}  # keep one: the sampler uses one size
        return self._cache[key]
