"""Pixel readers for edits: stripes, colour in a region, distance to another image, foreground overlap.

All are analytic (no network) and read images (B, 3, H, W) in [0, 1], clamped as displayed.

The stripe judge: stripes are drawn in a shade of the shape's colour (render.STRIPE_SHADE), so a
striped shape has many foreground pixels whose nearest colour among the palette and its shades
is a shade; a solid shape has few (anti-aliased edges). A shape is read as striped when that
share is above STRIPE_THRESHOLD, the threshold of best balanced accuracy on the judge split
(`stripe_threshold_from_judge_split`, a test checks the constant against it). Black is the weak
colour: its shade is 11/255 darker per channel, so on the noisy judge split 31 % of solid black
shapes read as striped (about 5 % for the other colours).
"""

from __future__ import annotations

import numpy as np
import torch

from .judges import MIN_FOREGROUND, PALETTE, PALETTE_WITH_SHADES, foreground, nearest_color
from .scene import COLOR_NAMES

STRIPE_THRESHOLD = 0.4
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0001, 0.005), 3)
WEAK_STRIPE_COLORS = ("black",)  # colours whose stripes the judge cannot read reliably (module docstring)


def _clamped(images: torch.Tensor) -> torch.Tensor:
    return images.detach().float().clamp(0, 1).cpu()


def stripe_shares(images: torch.Tensor) -> torch.Tensor:
    """(B,) the share of foreground pixels whose nearest palette-or-shade colour is a shade (0 without a shape)."""
    images = _clamped(images)
    b, _, h, w = images.shape
    _, hard = foreground(images)
    nearest = torch.cdist(images.permute(0, 2, 3, 1).reshape(-1, 3), PALETTE_WITH_SHADES).argmin(1).view(b, h, w)
    shaded = (nearest >= len(PALETTE)) & hard
    counts = hard.flatten(1).sum(1)
    shares = shaded.flatten(1).sum(1).float() / counts.clamp(min=1).float()
    return torch.where(counts >= MIN_FOREGROUND, shares, torch.zeros_like(shares))


def read_striped(images: torch.Tensor, threshold: float = STRIPE_THRESHOLD) -> list[bool]:
    return [bool(s > threshold) for s in stripe_shares(images)]


def best_threshold(shares: torch.Tensor, striped: torch.Tensor) -> tuple[float, float]:
    """(threshold, balanced accuracy) of the grid threshold that best separates striped from solid (ties: the lowest)."""
    best = (0.0, -1.0)
    for threshold in THRESHOLD_GRID:
        said = shares > float(threshold)
        balanced = 0.5 * (float(said[striped].float().mean()) + float((~said[~striped]).float().mean()))
        if balanced > best[1] + 1e-12:
            best = (float(threshold), balanced)
    return best


def stripe_threshold_from_judge_split(count: int = 12_000) -> tuple[float, float]:
    from .data import load_split

    data = load_split("judge", count)
    return best_threshold(stripe_shares(data.images), torch.tensor([s.main.striped for s in data.scenes]))


def stripe_accuracy(images: torch.Tensor, striped: list[bool], threshold: float = STRIPE_THRESHOLD) -> dict:
    """Accuracy, and the rates on striped and on solid shapes, of the stripe judge against the truth."""
    said = torch.tensor(read_striped(images, threshold))
    truth = torch.tensor(striped)
    return {
        "accuracy": float((said == truth).float().mean()),
        "striped_read_striped": float(said[truth].float().mean()) if truth.any() else float("nan"),
        "solid_read_solid": float((~said[~truth]).float().mean()) if (~truth).any() else float("nan"),
    }


def region_mask(region: torch.Tensor, batch: int) -> torch.Tensor:
    """A (H, W), (1, H, W) or (B, H, W) mask as a (B, H, W) bool mask (above one half counts)."""
    region = region.detach().cpu()
    if region.dim() == 2:
        region = region[None]
    return (region > 0.5).expand(batch, -1, -1)


def palette_share(images: torch.Tensor, region: torch.Tensor, color: str) -> torch.Tensor:
    """(B,) the share of the region's pixels whose nearest palette colour (judges.PALETTE, no shades) is `color`."""
    images = _clamped(images)
    inside = region_mask(region, images.shape[0])
    hits = (nearest_color(images.permute(0, 2, 3, 1)) == COLOR_NAMES.index(color)) & inside
    return hits.flatten(1).sum(1).float() / inside.flatten(1).sum(1).clamp(min=1).float()


def mean_abs_distance(images: torch.Tensor, others: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) mean absolute RGB difference (over channels and the region's pixels; all pixels without one), in [0, 1] units."""
    difference = (_clamped(images) - _clamped(others)).abs().mean(1)
    if region is None:
        return difference.flatten(1).mean(1)
    inside = region_mask(region, images.shape[0]).float()
    return (difference * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1)


def foreground_iou(images: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(B,) intersection over union of the judges' hard foreground masks of two image batches (1 when both are empty)."""
    _, a = foreground(_clamped(images))
    _, b = foreground(_clamped(others))
    union = (a | b).flatten(1).sum(1).float()
    both = (a & b).flatten(1).sum(1).float()
    return torch.where(union > 0, both / union.clamp(min=1), torch.ones_like(union))


def left_half(size: int = 32) -> torch.Tensor:
    """(1, size, size): ones on the left half of the columns."""
    mask = torch.zeros(1, size, size)
    mask[..., : size // 2] = 1.0
    return mask
