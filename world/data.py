"""The world's data splits: disjoint seeded scene sets, each rendered in its own style.

| split     | trains                                   | style        |
|-----------|------------------------------------------|--------------|
| generator | VAE, text encoder, UNet, tiny decoder    | TRAIN_STYLE  |
| guide     | the shape/colour classifier, tiny CLIP   | TRAIN_STYLE  |
| judge     | the shape judge                          | JUDGE_STYLE (other anti-aliasing, more jitter, noise, blur) |
| heldout   | nothing: the real renders realism is measured against | TRAIN_STYLE |

Scenes of split s are drawn from numpy seed SPLIT_SEEDS[s], so no two splits share a scene seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SteerError
from .render import JUDGE_STYLE, TRAIN_STYLE, RenderStyle, render_batch
from .scene import PHRASINGS, Scene, caption, random_scene

SPLIT_SEEDS = {"generator": 1000, "guide": 2000, "judge": 3000, "heldout": 4000}
SPLIT_STYLES = {"generator": TRAIN_STYLE, "guide": TRAIN_STYLE, "judge": JUDGE_STYLE, "heldout": TRAIN_STYLE}
SPLIT_JITTER = {"generator": 1.0, "guide": 1.0, "judge": 1.5, "heldout": 1.0}


@dataclass
class WorldData:
    scenes: list[Scene]
    images: torch.Tensor  # (N, 3, 32, 32) float in [0, 1]

    def captions(self, rng: np.random.Generator) -> list[str]:
        return [caption(s, int(rng.integers(PHRASINGS))) for s in self.scenes]


def scenes_for(split: str, count: int) -> list[Scene]:
    if split not in SPLIT_SEEDS:
        raise SteerError(f"unknown world split {split!r}: use one of {', '.join(SPLIT_SEEDS)}")
    rng = np.random.default_rng(SPLIT_SEEDS[split])
    return [random_scene(rng, jitter=SPLIT_JITTER[split]) for _ in range(count)]


def load_split(split: str, count: int, style: RenderStyle | None = None) -> WorldData:
    scenes = scenes_for(split, count)
    pixels = render_batch(scenes, style or SPLIT_STYLES[split], seed=SPLIT_SEEDS[split] * 1000)
    return WorldData(scenes, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, for PNG grids."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


COUNTS = {"generator": 30000, "guide": 12000, "judge": 12000, "heldout": 1000}
COUNTS_NOTE = "Split sizes: " + ", ".join(f"{k} {v:,}" for k, v in COUNTS.items()) + " scenes."
