"""A loss seen through a region mask.

Pixel losses (those with `weighted(images, weights)`: colour, edges) weigh their pixels by the
mask. Model losses (CLIP text, image, style, classifier, reward) score each sample's bounding box
of the mask, which their own `fit` then fits to the model's input.

Random augmentation has to respect the region (guidance/augment.py): a pixel loss's weights get
the same translation, zoom and cutout as the image; a model loss is cropped first and its crop is
augmented, so every view still shows the region.
"""

from __future__ import annotations

import torch

from ..region import Region, crop_boxes
from .base import Loss


class MaskedLoss:
    has_regions = True

    def __init__(self, loss: Loss, region: Region):
        self.loss = loss
        self.region = region
        self.pixelwise = hasattr(loss, "weighted")
        self.name = f"{loss.name} in {region.what}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.pixelwise:
            return self.loss.weighted(images, self.region.weights_like(images))
        return self.loss(self.crop(images))

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        return crop_boxes(images, self.region.boxes(images.shape[0], tuple(images.shape[-2:])))

    def augmented(self, images: torch.Tensor, augment) -> torch.Tensor:
        """(copies·B,) the loss of each augmented view, views that keep the region (see the module docstring)."""
        if self.pixelwise:
            views, weights = augment.with_weights(images, self.region.weights_like(images))
            return self.loss.weighted(views, weights)
        return self.loss(augment(self.crop(images)))
