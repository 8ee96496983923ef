"""The methods every quality benchmark compares: the presets and the ablations of the paper's method."""

from __future__ import annotations

import dataclasses

from ..guidance.augment import AugmentConfig
from ..guidance.config import PRESETS, GuidanceConfig, TimeTravel

PAPER_MINUS_POLYAK = "paper − Polyak (FreeDoM step)"
PAPER_MINUS_AUGMENTATION = "paper − augmentation"
PAPER_MINUS_TIME_TRAVEL = "paper − time travel"
PAPER_SCALED_AUGMENTATION = "paper, augmentation scaled to 32 px"
# The paper's DiffAugment policy was made for 224 px CLIP inputs; on a 32 px scene a 50 % cutout
# often erases the whole object. This one keeps the kinds of change and shrinks their extent.
SCALED_AUGMENTATION = AugmentConfig(copies=10, translation=1 / 16, resize=(0.9, 1.1), cutout=0.25)
# The Polyak ablation swaps in FreeDoM's own step: RMS = 0.2 × the denoising step's.
FREEDOM_STEP = GuidanceConfig(step_rule="normalized", scale=0.2)


def standard_methods(without_augmentation: bool = False, scaled_augmentation: bool = False) -> dict[str, GuidanceConfig]:
    paper, freedom = PRESETS["paper"], PRESETS["freedom"]
    out = {
        "unguided": dataclasses.replace(paper, scale=0.0),
        "dps": PRESETS["dps"],
        "freedom": freedom,
        "ugd": PRESETS["ugd"],
        "mpgd": PRESETS["mpgd"],
        "paper": paper,
        PAPER_MINUS_POLYAK: dataclasses.replace(paper, step_rule=FREEDOM_STEP.step_rule, scale=FREEDOM_STEP.scale),
        PAPER_MINUS_AUGMENTATION: dataclasses.replace(paper, augment=AugmentConfig(copies=0)),
        PAPER_MINUS_TIME_TRAVEL: dataclasses.replace(paper, time_travel=TimeTravel(repeats=1)),
    }
    if scaled_augmentation:
        out[PAPER_SCALED_AUGMENTATION] = dataclasses.replace(paper, augment=SCALED_AUGMENTATION)
    if without_augmentation:
        # The Polyak and time-travel ablations again without augmentation, which can confound them.
        no_aug = out[PAPER_MINUS_AUGMENTATION]
        out[f"{PAPER_MINUS_AUGMENTATION} − Polyak (FreeDoM step)"] = dataclasses.replace(
            no_aug, step_rule=FREEDOM_STEP.step_rule, scale=FREEDOM_STEP.scale
        )
        out[f"{PAPER_MINUS_AUGMENTATION} − time travel"] = dataclasses.replace(no_aug, time_travel=TimeTravel(repeats=1))
    return out
