"""The modes `steer bench` times: each a guided step with only what it names turned on."""

from __future__ import annotations

import dataclasses

from ..guidance.augment import AugmentConfig
from ..guidance.config import DEFAULT_PRESET, PRESETS, GuidanceConfig, TimeTravel
from ..guidance.losses.base import Window

AUGMENT_COPIES = 10
EVERY_STEP = Window(0.0, 1.0)


def guided(**changes) -> GuidanceConfig:
    """A guided step with nothing on but what is asked: every step guided, no time travel, no augmentation."""
    base = GuidanceConfig(step_rule="polyak", window=EVERY_STEP, time_travel=TimeTravel(repeats=1), augment=AugmentConfig(copies=0))
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    config: GuidanceConfig | None  # None: the stock euler sampler, unguided
    loss_decoder: str = "vae"
    checkpointing: bool = True
    naive_augment: int = 0  # > 0: the loss scores that many augmented views one call at a time


def default_preset_config() -> GuidanceConfig:
    return dataclasses.replace(PRESETS[DEFAULT_PRESET], window=EVERY_STEP, time_travel=TimeTravel(repeats=1))


MODES = {
    "unguided": Mode("unguided CFG step (euler)", None),
    "unguided_clone": Mode(
        "unguided, through ComfyUI's differentiable weights (weight-wrapper copies)", guided(gradient_path="through_model", scale=0.0)
    ),
    "through_positive": Mode("through the model, positive branch", guided(gradient_path="through_model", cfg_gradient="positive")),
    "through_combined": Mode("through the model, combined CFG", guided(gradient_path="through_model", cfg_gradient="combined")),
    "through_positive_nockpt": Mode(
        "through the model, positive branch, no checkpointing", guided(gradient_path="through_model"), checkpointing=False
    ),
    "x0_vae": Mode("x0 shortcut, full VAE decoder", guided(gradient_path="x0_shortcut")),
    "x0_vae_nockpt": Mode("x0 shortcut, full VAE decoder, no checkpointing", guided(gradient_path="x0_shortcut"), checkpointing=False),
    "x0_taesd": Mode("x0 shortcut, TAESD decoder", guided(gradient_path="x0_shortcut"), loss_decoder="taesd"),
    "through_positive_aug": Mode(
        f"through the model, positive branch, |T| = {AUGMENT_COPIES}",
        guided(gradient_path="through_model", augment=AugmentConfig(copies=AUGMENT_COPIES)),
    ),
    "x0_taesd_aug": Mode(
        f"x0 shortcut, TAESD decoder, |T| = {AUGMENT_COPIES}",
        guided(gradient_path="x0_shortcut", augment=AugmentConfig(copies=AUGMENT_COPIES)),
        loss_decoder="taesd",
    ),
    "default": Mode(f"Steer's default preset ({DEFAULT_PRESET})", default_preset_config()),
    "naive": Mode(
        f"naive: full VAE, combined CFG, |T| = {AUGMENT_COPIES} one at a time, no checkpointing",
        guided(gradient_path="through_model", cfg_gradient="combined"),
        checkpointing=False,
        naive_augment=AUGMENT_COPIES,
    ),
}
MEMORY_MODES = ("unguided", "through_positive", "through_positive_nockpt", "x0_vae", "x0_vae_nockpt", "x0_taesd")
