"""Judges: what a generated image shows, read without any guide.

Colour, background, place and the foreground mask are measured analytically from the pixels.
The shape (and, from it, the size threshold) comes from `ShapeJudge`, an MLP on the normalised
foreground mask, trained on the judge split: its own scene seeds, another anti-aliasing, more
jitter, pixel noise and blur (world/data.py). The guides are a CNN and a ViT trained on the
guide split's renders; no judge shares weights, data, rendering or architecture family with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SteerError
from ..safe_files import read_safetensors
from .render import STRIPE_SHADE
from .scene import COLOR_NAMES, COLORS, PLACE_CENTERS, PLACES, SHAPES, SIZES

MASK_SIDE = 16
FOREGROUND_DISTANCE = 0.22  # RGB distance from the background colour that counts as foreground
MIN_FOREGROUND = 6  # pixels; fewer means "no shape"
JUDGE_FILE = "shape_judge.safetensors"
NONE = "none"

PALETTE = torch.tensor([COLORS[c] for c in COLOR_NAMES], dtype=torch.float32) / 255.0
# Stripes are drawn in a shade of the colour; a shaded pixel still counts as that colour.
PALETTE_WITH_SHADES = torch.cat([PALETTE, PALETTE * STRIPE_SHADE])
SHADE_LABELS = torch.arange(len(COLOR_NAMES)).repeat(2)  # PALETTE_WITH_SHADES index -> COLOR_NAMES index


def _border(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, K) the outermost ring of pixels."""
    top, bottom = images[:, :, 0, :], images[:, :, -1, :]
    left, right = images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]
    return torch.cat([top, bottom, left, right], dim=2)


def background_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, 3): the per-channel median of the border ring."""
    return _border(images).median(dim=2).values


def nearest_color(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...) index into COLOR_NAMES."""
    return torch.cdist(rgb.reshape(-1, 3), PALETTE).argmin(dim=1).view(rgb.shape[:-1])


def foreground(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft mask (B, H, W) in [0, 1], hard mask (B, H, W) bool) of pixels unlike the background."""
    distance = (images - background_rgb(images)[:, :, None, None]).norm(dim=1)
    return (distance / (2 * FOREGROUND_DISTANCE)).clamp(0, 1), distance > FOREGROUND_DISTANCE


def normalized_masks(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """(B, MASK_SIDE²): each soft mask cropped to its hard mask's bounding square, resized. Empty -> zeros."""
    out = torch.zeros(soft.shape[0], MASK_SIDE, MASK_SIDE)
    for i in range(soft.shape[0]):
        ys, xs = torch.nonzero(hard[i], as_tuple=True)
        if len(ys) < MIN_FOREGROUND:
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        side = max(y1 - y0, x1 - x0)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        crop = torch.zeros(side, side)
        ty, tx = int(round(cy - side / 2)), int(round(cx - side / 2))
        for_y = slice(max(ty, 0), min(ty + side, soft.shape[1]))
        for_x = slice(max(tx, 0), min(tx + side, soft.shape[2]))
        crop[for_y.start - ty : for_y.stop - ty, for_x.start - tx : for_x.stop - tx] = soft[i, for_y, for_x]
        out[i] = F.interpolate(crop[None, None], size=(MASK_SIDE, MASK_SIDE), mode="area")[0, 0]
    return out.flatten(1)


class ShapeJudge(nn.Module):
    """An MLP on the normalised foreground mask -> shape logits."""

    def __init__(self, hidden: int = 256, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(MASK_SIDE * MASK_SIDE, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, features), nn.ReLU()
        )
        self.head = nn.Linear(features, len(SHAPES))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(masks))


@dataclass
class Reading:
    """What the judges read from a batch of images; names per image, NONE where no shape was found."""

    shape: list[str]
    color: list[str]
    background: list[str]
    place: list[str]
    size: list[str]
    features: torch.Tensor  # (B, 74) for the realism metric

    def attribute(self, name: str) -> list[str]:
        return getattr(self, name)


class Judges:
    def __init__(self, shape_judge: ShapeJudge, size_thresholds: dict[str, float]):
        self.shape_judge = shape_judge.eval()
        self.size_thresholds = size_thresholds

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> Reading:
        """images (B, 3, H, W), clamped to [0, 1] as they would be displayed."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise SteerError(f"the judges read RGB images (B, 3, H, W), got {tuple(images.shape)}")
        images = images.float().clamp(0, 1).cpu()
        b, _, h, w = images.shape
        bg = background_rgb(images)
        soft, hard = foreground(images)
        masks = normalized_masks(soft, hard)
        hidden = self.shape_judge.body(masks)
        shape_idx = self.shape_judge.head(hidden).argmax(1)
        counts = hard.flatten(1).sum(1)
        pixel_colors = torch.cdist(images.permute(0, 2, 3, 1).reshape(-1, 3), PALETTE_WITH_SHADES).argmin(1)
        pixel_colors = SHADE_LABELS[pixel_colors].view(b, h, w)
        bg_idx = nearest_color(bg)
        shapes, colors, places, sizes = [], [], [], []
        analytic = torch.zeros(b, 10)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        for i in range(b):
            if counts[i] < MIN_FOREGROUND:
                shapes.append(NONE), colors.append(NONE), places.append(NONE), sizes.append(NONE)
                analytic[i, :3] = bg[i]
                continue
            m = hard[i]
            labels = pixel_colors[i][m]
            labels = labels[labels != bg_idx[i]]
            colors.append(COLOR_NAMES[int(torch.bincount(labels, minlength=len(COLOR_NAMES)).argmax())] if len(labels) else NONE)
            cy, cx = float(ys[m].mean()) / h, float(xs[m].mean()) / w
            row = int(np.argmin([abs(cy - c) for c in PLACE_CENTERS]))
            col = int(np.argmin([abs(cx - c) for c in PLACE_CENTERS]))
            places.append(PLACES[row * 3 + col])
            extent = max(float(ys[m].max() - ys[m].min() + 1) / h, float(xs[m].max() - xs[m].min() + 1) / w)
            shape = SHAPES[int(shape_idx[i])]
            shapes.append(shape)
            sizes.append(SIZES[1] if extent > self.size_thresholds[shape] else SIZES[0])
            analytic[i] = torch.tensor([*bg[i].tolist(), *images[i][:, m].mean(1).tolist(), cx, cy, extent, float(counts[i]) / (h * w)])
        return Reading(shapes, colors, [COLOR_NAMES[int(k)] for k in bg_idx], places, sizes, torch.cat([hidden, analytic], dim=1))


def mask_inputs(images: torch.Tensor) -> torch.Tensor:
    soft, hard = foreground(images.float().clamp(0, 1))
    return normalized_masks(soft, hard)


def extents(images: torch.Tensor) -> torch.Tensor:
    """(B,) the foreground's bounding-box side as a fraction of the image side (0 where empty)."""
    _, hard = foreground(images.float().clamp(0, 1))
    out = torch.zeros(images.shape[0])
    for i in range(images.shape[0]):
        ys, xs = torch.nonzero(hard[i], as_tuple=True)
        if len(ys) >= MIN_FOREGROUND:
            out[i] = max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1) / images.shape[-1]
    return out


def save_judges(judges: Judges, folder: Path, facts: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"steer_world_judge": json.dumps({"size_thresholds": judges.size_thresholds, **facts}, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in judges.shape_judge.state_dict().items()}, str(folder / JUDGE_FILE), metadata=meta)


def load_judges(folder: str | Path) -> Judges:
    path = Path(folder) / JUDGE_FILE
    if not path.is_file():
        raise SteerError(
            f"missing world judge {path}: rebuild it with `python -m steer.world.train --stage judge --out {Path(folder).parent}`"
        )
    judge = ShapeJudge()
    tensors, metadata = read_safetensors(path)
    judge.load_state_dict(tensors)
    meta = json.loads(metadata["steer_world_judge"])
    for p in judge.parameters():
        p.requires_grad_(False)
    return Judges(judge, {k: float(v) for k, v in meta["size_thresholds"].items()})
