"""Region masks: where a loss looks and where the sampler may move the latent.

A region is a batch of soft masks (N, H, W) in [0, 1], N = 1 (one mask for every sample) or the
sample batch. It is served at whatever size asks for it, bilinearly resized, as weights
(B, 1, h, w) for pixel losses and the sampler, or as per-sample bounding boxes for model losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import SteerError

# What the sampler does outside its region (guidance/sampler.py): keep the unguided run there, or leave it free.
REGION_OUTSIDE = ("unguided", "free")


class Region:
    def __init__(self, mask: torch.Tensor, what: str = "mask"):
        if not isinstance(mask, torch.Tensor):
            raise SteerError(f"{what} must be a tensor (a ComfyUI MASK), got {type(mask).__name__}")
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.dim() != 3 or mask.numel() == 0:
            raise SteerError(f"{what} must be a non-empty MASK (N, H, W) or (H, W), got shape {tuple(mask.shape)}")
        with torch.inference_mode(False):  # a mask made inside a ComfyUI prompt is an inference tensor autograd cannot save
            mask = mask.detach().float().cpu().clone()
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise SteerError(f"{what} values must lie in [0, 1] (a ComfyUI MASK), got {float(mask.min()):.3g} to {float(mask.max()):.3g}")
        empty = [str(i) for i in range(mask.shape[0]) if not bool((mask[i] > 0).any())]
        if empty:
            which = f"{what} is" if mask.shape[0] == 1 else f"{what} number {', '.join(empty)} (0-based) of the batch is"
            raise SteerError(f"{which} all zero, so there is no region to guide; paint the region (white = guided) or disconnect the mask")
        self.mask = mask
        self.what = what
        self._cache: dict[tuple, torch.Tensor] = {}

    def _batch(self, batch: int) -> torch.Tensor:
        count = self.mask.shape[0]
        if count == 1:
            return self.mask.expand(batch, -1, -1)
        if count != batch:
            raise SteerError(
                f"{self.what} has a batch of {count} masks but {batch} sample{'s are' if batch != 1 else ' is'} guided; "
                "give one mask, or one per sample"
            )
        return self.mask

    def weights(self, batch: int, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(batch, 1, H, W) weights in [0, 1] at `size`."""
        key = (batch, tuple(size), device, dtype)
        if key not in self._cache:
            masks = self._batch(batch)[:, None]
            if tuple(masks.shape[-2:]) != tuple(size):
                masks = resize_mask(masks, tuple(size))
            self._cache = {key: masks.to(device=device, dtype=dtype)}  # keep one: a sampler asks at one size
        return self._cache[key]

    def weights_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """Weights for a (B, C, H, W) tensor (image or latent), broadcastable over its channels."""
        if tensor.dim() != 4:
            raise SteerError(f"a mask applies to (B, C, H, W) images or latents, got shape {tuple(tensor.shape)}")
        return self.weights(tensor.shape[0], tuple(tensor.shape[-2:]), tensor.device, tensor.dtype)

    def boxes(self, batch: int, size: tuple[int, int]) -> torch.Tensor:
        """(batch, 4) per-sample bounding boxes (top, left, bottom, right), end-exclusive, in pixels at
        `size`: the box of every pixel the mask touches, found at the mask's own size and scaled out."""
        masks = self._batch(batch) > 0
        scale_y, scale_x = size[0] / masks.shape[-2], size[1] / masks.shape[-1]
        boxes = []
        for painted in masks:
            rows, cols = painted.any(dim=1).nonzero()[:, 0], painted.any(dim=0).nonzero()[:, 0]
            top, left = math.floor(int(rows[0]) * scale_y), math.floor(int(cols[0]) * scale_x)
            bottom, right = math.ceil((int(rows[-1]) + 1) * scale_y), math.ceil((int(cols[-1]) + 1) * scale_x)
            boxes.append((top, left, max(bottom, top + 1), max(right, left + 1)))
        return torch.tensor(boxes)


def resize_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Shrinking averages the pixels each target pixel covers (a latent cell gets the share of it
    the mask paints); growing is bilinear."""
    shrinking = masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1]
    if shrinking:
        return F.interpolate(masks, size=size, mode="area")
    return F.interpolate(masks, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box, resized to one common size (the largest box height and width) so the batch
    stays one tensor. Cropping is slicing, so every pixel inside a box keeps its gradient."""
    height = int((boxes[:, 2] - boxes[:, 0]).max())
    width = int((boxes[:, 3] - boxes[:, 1]).max())
    crops = []
    for image, (top, left, bottom, right) in zip(images, boxes.tolist()):
        crop = image[None, :, top:bottom, left:right]
        if crop.shape[-2:] != (height, width):
            crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        crops.append(crop)
    return torch.cat(crops)
