"""Tune the default preset on the digits model without looking at the judge.

Issue rule: tune on the guide's numbers and the guide's training half (A), report on the judge.
So every score here uses only the guide and half A:
  guide hit-rate      the guide's argmax equals the target;
  realism             the Fréchet distance of the guide's penultimate features to half A's, and the
                      mean pixel distance from each sample to its nearest real digit of half A;
                      both relative to the same number for unguided samples.
Seeds differ from `steer bench digits` (seed 0), so the benchmark's samples are never tuned on.

    python -m steer.benchmarks.tune_digits [--per-class 5] [--steps 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch

from ..digits import experiment
from ..digits import model as digits
from ..guidance.config import PRESETS
from ..guidance.losses.base import Window

TUNING_SEED = 1000


@torch.no_grad()
def nearest_real_distance(images: torch.Tensor, real: torch.Tensor) -> float:
    return float(torch.cdist(images.flatten(1), real.flatten(1)).min(dim=1).values.mean())


@torch.no_grad()
def guide_features(pretrained: digits.PretrainedDigits, images: torch.Tensor) -> torch.Tensor:
    guide = pretrained.guide
    return guide.body(digits._as_digit_batch(images) - 0.5)


def candidates(base_name: str, scales=(0.05, 0.1, 0.2, 0.3), windows=(Window(0.3, 0.7), Window(0.4, 0.8))):
    """The preset at several scales and windows, then every other preset as it ships."""
    base = PRESETS[base_name]
    for window, scale in itertools.product(windows, scales):
        yield (
            f"{base_name} window {window.start:.1f}-{window.end:.1f} scale {scale:g}",
            dataclasses.replace(base, window=window, scale=scale),
        )
    for name, config in PRESETS.items():
        if name != base_name:
            yield f"{name} as shipped", config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--preset", default="mpgd")
    args = parser.parse_args(argv)
    pretrained = digits.load_pretrained()
    real, _ = digits.load_digits_images("guide_train")
    targets = experiment.balanced_targets(args.per_class)

    real_features = guide_features(pretrained, real)

    def evaluate(config):
        generated = experiment.generate(pretrained, targets, config, steps=args.steps, seed=TUNING_SEED)
        with torch.no_grad():
            guide_hit = float((pretrained.guide(generated.images).argmax(1) == targets).float().mean())
        frechet = digits.frechet_distance(guide_features(pretrained, generated.images), real_features)
        return guide_hit, frechet, nearest_real_distance(generated.images, real), generated.seconds / len(targets)

    _, unguided_frechet, unguided_distance, _ = evaluate(dataclasses.replace(PRESETS[args.preset], scale=0.0))
    print(
        f"unguided: guide-feature Fréchet {unguided_frechet:.2f}, nearest-real distance {unguided_distance:.3f} "
        f"(half A, {len(targets)} samples, {args.steps} steps)"
    )
    print(
        "| config | guide hit-rate | guide-feature Fréchet / unguided | nearest-real distance / unguided | s / sample |\n| --- | "
        "--- | --- | --- | --- |"
    )
    for name, config in candidates(args.preset):
        guide_hit, frechet, distance, seconds = evaluate(config)
        print(
            f"| {name} | {guide_hit:.0%} | {frechet / unguided_frechet:.2f} | {distance / unguided_distance:.2f} | {seconds:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
