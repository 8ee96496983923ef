"""An outsider judge for the digits model: a k-nearest-neighbour vote over its own renders of half B.

The guide is a CNN trained on half A, upsampled 8x8 -> 16x16 bilinearly. This judge shares none
of that: its data is half B's `judge_train` digits (never the guide's), its rendering is its own
(bicubic upsampling from 8x8, random sub-pixel shifts and scales, a light blur: 8 views of each
digit), and its family is not a network at all: a 5-nearest-neighbour vote by cosine similarity
of contrast-normalised pixels. It has no gradients, so guidance cannot be tuned against it.

    python -m steer.digits.outsider --out digits/weights     # a few seconds on CPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ..safe_files import read_safetensors
from . import model as digits

OUTSIDER_FILE = "outsider_judge.safetensors"
SEED = 11
VIEWS = 8
K = 5


def _normalise(images: torch.Tensor) -> torch.Tensor:
    flat = digits._as_digit_batch(images).clamp(0, 1).flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    return F.normalize(flat, dim=1)


def own_renders(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """VIEWS renders of each judge_train digit: bicubic 8->16, random affine (shift <= 1 px, scale 0.9-1.1), blur."""
    import kornia
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = digits._split_indices()["judge_train"]
    small = torch.from_numpy(data.images[idx]).float().div(16.0).unsqueeze(1)
    labels = torch.from_numpy(data.target[idx]).long()
    base = F.interpolate(small, size=(digits.IMAGE_SIZE, digits.IMAGE_SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    generator = torch.Generator().manual_seed(seed)
    views = []
    for _ in range(VIEWS):
        n = len(base)
        scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) / 8  # ±1 px of 16, in [-1, 1] grid units
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, base.shape, align_corners=False)
        moved = F.grid_sample(base, grid, align_corners=False)
        sigma = (0.2 + 0.6 * torch.rand(n, generator=generator)).view(n, 1).expand(n, 2).contiguous()
        views.append(kornia.filters.gaussian_blur2d(moved, (5, 5), sigma))
    return torch.cat(views), labels.repeat(VIEWS)


class OutsiderJudge:
    """predict(images (B, 1 or 3, H, W) in [0, 1]) -> (B,) digit labels, by a K-NN vote."""

    def __init__(self, references: torch.Tensor, labels: torch.Tensor):
        self.references, self.labels = references, labels

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        similarity = _normalise(images.float().cpu()) @ self.references.T
        nearest = similarity.topk(K, dim=1).indices
        votes = F.one_hot(self.labels[nearest], digits.NUM_CLASSES).sum(1).float()
        votes += 1e-3 * F.one_hot(self.labels[nearest[:, 0]], digits.NUM_CLASSES)  # ties go to the nearest
        return votes.argmax(1)


def build(out: Path) -> dict:
    from safetensors.torch import save_file

    images, labels = own_renders()
    references = _normalise(images)
    judge = OutsiderJudge(references.half().float(), labels)  # judged as stored
    facts = {"references": len(labels), "views_per_digit": VIEWS, "k": K}
    for split in ("A", "heldout"):
        real, real_labels = digits.load_digits_images(split)
        facts[f"accuracy_on_{split}"] = float((judge.predict(real) == real_labels).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"references": references.half().contiguous(), "labels": labels.contiguous()},
        str(out / OUTSIDER_FILE),
        metadata={digits.METADATA_KEY: json.dumps(facts, sort_keys=True)},
    )
    return facts


def load_outsider(weights_dir: Path | None = None) -> tuple[OutsiderJudge, dict]:
    path = (weights_dir or digits.WEIGHTS_DIR) / OUTSIDER_FILE
    if not path.is_file():
        from ..errors import SteerError

        raise SteerError(f"missing outsider judge {path}: rebuild it with `python -m steer.digits.outsider --out {path.parent}`")
    tensors, metadata = read_safetensors(path)
    facts = json.loads(metadata[digits.METADATA_KEY])
    return OutsiderJudge(tensors["references"].float(), tensors["labels"]), facts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=digits.WEIGHTS_DIR)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
