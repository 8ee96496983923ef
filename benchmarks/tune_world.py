"""Tune the default preset on the world model without looking at any judge.

Issue rule: tune on guide-side numbers only, report on the judges. Every score here uses only
the guides, the losses and the guide split's renders:
  guide hit-rate   shape task: the classifier's shape; text and reference tasks: the CLIP guide's
                   zero-shot shape and colour; colour task: the colour loss is at most its 90th
                   percentile over guide-split renders whose background is the target colour;
  guide keeping    the classifier still reads the prompt's shape (colour task) or colour (shape task);
  realism          Fréchet distance of the classifier's pooled features to guide-split renders,
                   relative to unguided samples.
Prompt seeds differ from `steer bench world` (seed 0), so the benchmark's samples are never tuned on.

    python -m steer.benchmarks.tune_world [--per-task 16] [--steps 50]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from ..digits.model import frechet_distance
from ..guidance.config import PRESETS
from ..guidance.losses.base import Window
from ..guidance.losses.classifier import ClassifierLoss
from ..world import experiment
from ..world.data import load_split
from ..world.scene import COLOR_NAMES, SHAPES
from .tune_digits import candidates

TUNING_SEED = 1000


def _classifier(world) -> ClassifierLoss:
    return ClassifierLoss(world.classifier, "star")  # any label: only its model and preprocessing are used


@torch.no_grad()
def classifier_features(world, images: torch.Tensor) -> torch.Tensor:
    loss = _classifier(world)
    module = loss.model.placed(images.device)
    return module.resnet(pixel_values=loss.preprocess(images)).pooler_output.flatten(1)


@torch.no_grad()
def classifier_reads(world, images: torch.Tensor) -> tuple[list[str], list[str]]:
    loss = _classifier(world)
    logits = loss.model.placed(images.device)(pixel_values=loss.preprocess(images)).logits
    shapes = [SHAPES[int(k)] for k in logits[:, : len(SHAPES)].argmax(1)]
    colors = [COLOR_NAMES[int(k)] for k in logits[:, len(SHAPES) :].argmax(1)]
    return shapes, colors


def color_threshold(world, task, renders) -> float:
    with torch.no_grad():
        values = world.loss_for(task)(renders.images[[s.background == task.target["background"] for s in renders.scenes]])
    return float(torch.quantile(values, 0.9))


def evaluate(world, tasks, config, steps: int, renders, threshold: float) -> dict:
    hits, keeps, features, seconds = [], [], [], 0.0
    for task in tasks:
        generated = experiment.generate(world, task, config, steps, seed=TUNING_SEED)
        seconds += generated.seconds
        images = generated.images
        features.append(classifier_features(world, images))
        shapes, colors = classifier_reads(world, images)
        if task.name == "color":
            with torch.no_grad():
                hits.append(float((world.loss_for(task)(images) <= threshold).float().mean()))
            keeps.append(float(np.mean([a == s.main.shape for a, s in zip(shapes, task.scenes)])))
        else:
            hits.append(float(np.mean(experiment._guide_reads(world, task, images))))
            if task.name == "shape":
                keeps.append(float(np.mean([a == s.main.color for a, s in zip(colors, task.scenes)])))
    real = classifier_features(world, renders.images)
    return {
        "hit": hits,
        "keep": float(np.mean(keeps)),
        "frechet": frechet_distance(torch.cat(features), real),
        "seconds": seconds / sum(len(t.scenes) for t in tasks),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-task", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--preset", default="mpgd")
    parser.add_argument("--scales", default="0.2,0.5,1,2")
    parser.add_argument("--windows", default="0.4-0.8,0.2-0.8,0.1-0.9")
    parser.add_argument("--no-others", action="store_true", help="only the preset's own grid")
    args = parser.parse_args(argv)
    world = experiment.load()
    tasks = experiment.make_tasks(args.per_task, seed=TUNING_SEED)
    renders = load_split("guide", 2000)
    threshold = color_threshold(world, tasks[0], renders)
    base = evaluate(world, tasks, dataclasses.replace(PRESETS[args.preset], scale=0.0), args.steps, renders, threshold)
    print(
        f"unguided: guide hits {[f'{h:.0%}' for h in base['hit']]}, keep {base['keep']:.0%}, Fréchet {base['frechet']:.3f} "
        f"({args.steps} steps)"
    )
    print(
        "| config | guide hit: colour, shape, text, reference | mean | guide keeping (Δ) | Fréchet / unguided | s / sample |\n| --- "
        "| --- | --- | --- | --- | --- |"
    )
    scales = [float(s) for s in args.scales.split(",")]
    windows = [Window(*map(float, w.split("-"))) for w in args.windows.split(",")]
    for name, config in candidates(args.preset, scales, windows):
        if args.no_others and "as shipped" in name:
            continue
        r = evaluate(world, tasks, config, args.steps, renders, threshold)
        print(
            f"| {name} | {', '.join(f'{h:.0%}' for h in r['hit'])} | {np.mean(r['hit']):.0%} | {r['keep']:.0%} "
            f"({r['keep'] - base['keep']:+.0%}) | "
            f"{r['frechet'] / base['frechet']:.2f} | {r['seconds']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
