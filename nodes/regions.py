"""The optional MASK input every Steer loss node and guided sampler takes, and what it does to them."""

from __future__ import annotations

from comfy_api.latest import io

from ..guidance.losses.masked import MaskedLoss
from ..guidance.region import REGION_OUTSIDE, Region
from .schema import Choice

PIXEL_LOSS_MASK = (
    "Optional. Only this region counts: each pixel of the loss is weighted by the mask (white = full weight). "
    "Any size (resized to the image); one mask for the batch, or one per sample."
)
MODEL_LOSS_MASK = (
    "Optional. Only this region is scored: the model sees the mask's bounding box, fitted as 'fit' says. "
    "Any size (resized to the image); one mask for the batch, or one per sample."
)
SAMPLER_MASK = (
    "Optional. Confines the guidance to this region: each step's push is multiplied by the mask, resized to the latent. "
    "What happens to the rest is set by mask_outside. To make only the loss look at a region, mask the loss node instead."
)
MASK_OUTSIDE = (
    "With a mask: unguided keeps the rest of the image as the same sampler would draw it without guidance (one more model "
    "call per step, no backward pass), as inpainting keeps the unmasked part. free only stops pushing the rest: no extra "
    "cost, but the model redraws the whole image each step, so the rest changes with the region."
)


def mask_input(tooltip: str) -> io.Mask.Input:
    return io.Mask.Input("mask", optional=True, tooltip=tooltip)


def outside_input() -> Choice:
    return Choice("mask_outside", REGION_OUTSIDE, default="unguided", optional=True, tooltip=MASK_OUTSIDE)


def with_region(loss, mask, what: str = "mask"):
    """The loss seen through `mask` (a ComfyUI MASK), or the loss itself when no mask is connected."""
    return loss if mask is None else MaskedLoss(loss, Region(mask, what))


def sampler_region(mask) -> Region | None:
    return None if mask is None else Region(mask, "the sampler's mask")
