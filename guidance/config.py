"""Guidance configuration: one frozen dataclass, presets as named instances of it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..errors import SteerError
from .augment import AugmentConfig
from .losses.base import Window
from .step_rules import STEP_RULES

GRADIENT_PATHS = ("through_model", "x0_shortcut")
CFG_GRADIENTS = ("positive", "combined")


@dataclass(frozen=True)
class TimeTravel:
    """Shen et al. Algorithm 3: inside `window`, each step is done `repeats` times, re-noising in between."""

    repeats: int = 1  # total passes per step; 1 = off
    window: Window = field(default_factory=lambda: Window(0.3, 0.7))

    def __post_init__(self):
        if self.repeats < 1:
            raise SteerError(f"time-travel repeats must be >= 1 (1 turns it off), got {self.repeats}")


@dataclass(frozen=True)
class GuidanceConfig:
    gradient_path: str = "through_model"  # through_model: ∇ w.r.t. x_t through the denoiser; x0_shortcut: ∇ w.r.t. x̂0 only (MPGD)
    cfg_gradient: str = "positive"  # inside ComfyUI with CFG: differentiate the positive branch only, or the combined prediction
    step_rule: str = "polyak"
    scale: float = 1.0  # η of the rule
    max_step: float = 0.5  # largest RMS displacement per element, in units of the current noise level σ (x0 shortcut: data units)
    min_grad_norm: float = 1e-8  # below this gradient norm a sample is not moved
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(copies=0))
    time_travel: TimeTravel = field(default_factory=TimeTravel)
    window: Window = field(default_factory=Window)  # where guidance is applied
    eta: float = 0.0  # DDIM η: 0 deterministic, 1 = Euler ancestral

    def __post_init__(self):
        if self.gradient_path not in GRADIENT_PATHS:
            raise SteerError(f"gradient_path must be one of {GRADIENT_PATHS}, got {self.gradient_path!r}")
        if self.cfg_gradient not in CFG_GRADIENTS:
            raise SteerError(f"cfg_gradient must be one of {CFG_GRADIENTS}, got {self.cfg_gradient!r}")
        if self.step_rule not in STEP_RULES:
            raise SteerError(f"step_rule must be one of {tuple(STEP_RULES)}, got {self.step_rule!r}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise SteerError(f"guidance scale must be a finite number >= 0, got {self.scale}")
        if not self.max_step > 0:
            raise SteerError(f"max_step must be > 0 (use a large value for no cap), got {self.max_step}")
        if not 0.0 <= self.eta <= 1.0:
            raise SteerError(f"eta must be in [0, 1], got {self.eta}")

    def with_strength(self, strength: float) -> "GuidanceConfig":
        """The preset's own scale times a user-facing strength multiplier."""
        if not (math.isfinite(strength) and strength >= 0):
            raise SteerError(f"strength must be a finite number >= 0, got {strength}")
        return replace(self, scale=self.scale * strength)


# Each preset is its authors' method as far as the engine's knobs express it (see README,
# "Presets"). Every preset but `paper` sizes its step with `image_normalized`: the decoded image
# moves by scale × (noise removed) per step, so one scale means the same on pixel and latent
# models, any decoder and any loss units (README, "How it works"). `paper` keeps the paper's own
# Polyak step. Scales were chosen on the world model's guide-side numbers (benchmarks/tune_world.py);
# `strength` multiplies them.
PRESETS: dict[str, GuidanceConfig] = {
    # Shen et al.: FreeDoM + Polyak step + random augmentation + time travel, gradient through the model.
    "paper": GuidanceConfig(
        gradient_path="through_model",
        step_rule="polyak",
        scale=1.0,
        augment=AugmentConfig(copies=10),
        time_travel=TimeTravel(repeats=3, window=Window(0.3, 0.7)),
        window=Window(0.0, 0.9),
    ),
    # FreeDoM (SD style): window 30-70 %, time travel ×3 in 30-60 %, gradient through the model.
    "freedom": GuidanceConfig(
        gradient_path="through_model",
        step_rule="image_normalized",
        scale=0.5,
        time_travel=TimeTravel(repeats=3, window=Window(0.3, 0.6)),
        window=Window(0.3, 0.7),
    ),
    # Universal Guidance: forward guidance through the model with self-recurrence at every step.
    "ugd": GuidanceConfig(
        gradient_path="through_model",
        step_rule="image_normalized",
        scale=0.5,
        time_travel=TimeTravel(repeats=3, window=Window(0.0, 1.0)),
    ),
    # MPGD: gradient w.r.t. x̂0 only (no backward through the model); window 20-80 % (MPGD's own: 30-70 %).
    "mpgd": GuidanceConfig(
        gradient_path="x0_shortcut",
        step_rule="image_normalized",
        scale=0.5,  # benchmarks/tune_world.py: the best guide-side realism among configs with the top guide hit-rate
        max_step=1.0,
        window=Window(0.2, 0.8),
    ),
    # DPS: a step along the gradient through the model at every step.
    "dps": GuidanceConfig(gradient_path="through_model", step_rule="image_normalized", scale=0.5),
}

DEFAULT_PRESET = "mpgd"


def preset(name: str) -> GuidanceConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise SteerError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
