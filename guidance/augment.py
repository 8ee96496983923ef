"""Random augmentation of x̂0 before the loss (Shen et al. §4.1, Algorithm 1).

The policy is DiffAugment's `color,translation,resize,cutout` (Zhao et al. 2020), the one
the paper's code uses. All |T| copies go through the loss in ONE batched call and their
losses are averaged per sample, so a misaligned (adversarial) gradient of one view is
averaged away while the cost stays one loss-model forward per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch

from ..errors import SteerError
from .losses.base import Loss


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 10  # |T|; 0 turns augmentation off
    color: bool = True
    translation: float = 0.125  # max shift, as a fraction of H and W
    resize: tuple[float, float] = (0.8, 1.2)
    cutout: float = 0.5  # side of the zeroed square, as a fraction of the image side

    def __post_init__(self):
        if self.copies < 0:
            raise SteerError(f"augmentation copies must be >= 0, got {self.copies}")
        if not 0.0 <= self.translation < 0.5:
            raise SteerError(f"augmentation translation must be in [0, 0.5), got {self.translation}")
        if not 0.0 <= self.cutout < 1.0:
            raise SteerError(f"augmentation cutout must be in [0, 1), got {self.cutout}")


class RandomAugment:
    """Makes `copies` randomly augmented views of each image, copy-major: (copies·B, C, H, W)."""

    def __init__(self, config: AugmentConfig):
        self.config = config
        geometry = []
        if config.translation > 0 or config.resize != (1.0, 1.0):
            geometry.append(
                K.RandomAffine(
                    degrees=0.0,
                    translate=(config.translation, config.translation),
                    scale=config.resize,
                    padding_mode="zeros",
                    p=1.0,
                )
            )
        if config.cutout > 0:
            area = config.cutout**2
            geometry.append(K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=1.0))
        self.geometry = K.AugmentationSequential(*geometry) if geometry else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.with_weights(images, None)[0]

    def with_weights(self, images: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views of images and, when given, of per-pixel weights (B, 1, H, W) under the same geometry
        (the colour jitter touches the images only): a region mask that follows its image."""
        views = images.repeat(self.config.copies, *([1] * (images.dim() - 1)))
        if weights is not None:
            weights = weights.to(views.dtype).repeat(self.config.copies, 1, 1, 1)
        if self.config.color:
            views = _diffaugment_color(views, weights)
        if weights is not None:
            channels = views.shape[1]
            views = torch.cat([views, weights], dim=1)
        if self.geometry is not None:
            views = self.geometry(views)
        if weights is None:
            return views, None
        return views[:, :channels], views[:, channels:]


def _diffaugment_color(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """DiffAugment's colour jitter, rescaled from its [-1, 1] images to our [0, 1] ones.
    With region weights, the contrast pivots on the region's mean, so nothing outside it counts.

    Written out rather than taken from kornia.enhance because kornia clamps to [0, 1],
    which zeroes the gradient on every saturated pixel.
    """
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    x = x + (torch.rand(shape, device=x.device, dtype=x.dtype) - 0.5) * 0.5  # brightness ±0.25 (±0.5 on [-1, 1])
    if x.shape[1] == 3:
        channel_mean = x.mean(dim=1, keepdim=True)
        x = (x - channel_mean) * (torch.rand(shape, device=x.device, dtype=x.dtype) * 2.0) + channel_mean  # saturation
    if weights is None:
        image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    else:
        area = weights.sum(dim=(1, 2, 3), keepdim=True) * x.shape[1]
        image_mean = (x * weights).sum(dim=(1, 2, 3), keepdim=True) / area.clamp(min=1e-6)
    return (x - image_mean) * (torch.rand(shape, device=x.device, dtype=x.dtype) + 0.5) + image_mean  # contrast


def augmented_loss(loss: Loss, images: torch.Tensor, augment: RandomAugment | None) -> torch.Tensor:
    """Per-sample loss, averaged over augmented views when augmentation is on."""
    if augment is None or augment.config.copies == 0:
        return loss(images)
    copies, batch = augment.config.copies, images.shape[0]
    values = augmented_views_loss(loss, images, augment)
    if values.shape != (copies * batch,):
        raise SteerError(
            f"loss '{loss.name}' returned shape {tuple(values.shape)} for {copies * batch} images; a loss must return one value per image"
        )
    return values.view(copies, batch).mean(dim=0)


def augmented_views_loss(loss: Loss, images: torch.Tensor, augment: RandomAugment) -> torch.Tensor:
    """(copies·B,) the loss of each augmented view. Losses with `augmented(images, augment)` make
    their own views (masked losses, and combinations holding one: their region must follow the view)."""
    own = getattr(loss, "augmented", None)
    return own(images, augment) if own is not None else loss(augment(images))
