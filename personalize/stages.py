"""AttnDreamBooth's three training stages as data: one frozen `StageConfig` per stage, a
`TrainingPlan` that holds the three, and the presets as named instances.

Numbers are the official ones (lyuPang/AttnDreamBooth @3427390, bash_script/
train_attndreambooth.sh; see shared/research/attndreambooth.md §1.2):

    stage            group            steps  lr     batch  reg (mean, var)
    1 token          token            60     1e-3   8      (0.1, 0)
    2 cross-attn     cross_attention  100    2e-5   8      (2, 5)
    3 UNet           unet             500    2e-6   8      (2, 5)
    "fast" preset: stage 3 = 200 steps, lr 1e-5, batch 4 (README).

Shared: AdamW (betas 0.9/0.999, eps 1e-8, weight decay 1e-2, also on the token), constant
LR with no warm-up, no gradient clipping, 512 px, prompt "a photo of a [V] [category]".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

from ..errors import SteerError

# Parameter groups a backbone names; a stage trains exactly one of them.
TOKEN = "token"  # the new token's input embedding (one vector)
CROSS_ATTENTION = "cross_attention"  # every attn2 to_q/to_k/to_v/to_out weight and bias
UNET = "unet"  # every UNet parameter (includes the cross-attention group)
PARAMETER_GROUPS = (TOKEN, CROSS_ATTENTION, UNET)

# Where the new token goes in the prompt; backbones replace it with the trainable vector.
CONCEPT_PLACEHOLDER = "[V]"
OFFICIAL_PROMPT = "a photo of a [V] {category}"

MAX_STEPS = 100_000


@dataclass(frozen=True)
class RegularizerWeights:
    """Weights of the cross-attention regularizer: w_mean·(Δmean)² + w_var·(Δvar)²."""

    mean: float = 0.0
    variance: float = 0.0

    def __post_init__(self):
        for label, value in (("mean", self.mean), ("variance", self.variance)):
            if not (math.isfinite(value) and value >= 0):
                raise SteerError(f"regularizer {label} weight must be a finite number >= 0, got {value}")

    @property
    def enabled(self) -> bool:
        return self.mean > 0 or self.variance > 0


@dataclass(frozen=True)
class StageConfig:
    name: str
    parameter_group: str
    steps: int
    learning_rate: float
    regularizer: RegularizerWeights
    # Images per optimizer step (the official batch). The regularizer is summed over it.
    batch_size: int = 8
    # Each batch is run as this many equal micro-batches whose gradients add up before the
    # step. The update equals the full batch's (the loss is scaled so), only memory changes.
    # Unlike the usual "effective batch = batch × accumulation", batch_size stays the batch.
    gradient_accumulation: int = 1
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8

    def __post_init__(self):
        if self.parameter_group not in PARAMETER_GROUPS:
            raise SteerError(f"stage {self.name!r}: parameter group must be one of {PARAMETER_GROUPS}, got {self.parameter_group!r}")
        if not (isinstance(self.steps, int) and 0 <= self.steps <= MAX_STEPS):
            raise SteerError(f"stage {self.name!r}: steps must be a whole number in [0, {MAX_STEPS}] (0 skips the stage), got {self.steps}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate < 1):
            raise SteerError(f"stage {self.name!r}: learning rate must be in (0, 1), got {self.learning_rate}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 64):
            raise SteerError(f"stage {self.name!r}: batch size must be a whole number in [1, 64], got {self.batch_size}")
        if not (isinstance(self.gradient_accumulation, int) and self.gradient_accumulation >= 1):
            raise SteerError(f"stage {self.name!r}: gradient accumulation must be a whole number >= 1, got {self.gradient_accumulation}")
        if self.batch_size % self.gradient_accumulation:
            raise SteerError(
                f"stage {self.name!r}: batch size {self.batch_size} does not split into {self.gradient_accumulation} equal "
                f"micro-batches; use a gradient accumulation that divides the batch size (e.g. 1, 2, 4 or 8 for batch 8)"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise SteerError(f"stage {self.name!r}: weight decay must be >= 0, got {self.weight_decay}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.gradient_accumulation


@dataclass(frozen=True)
class TrainingPlan:
    name: str
    stages: tuple[StageConfig, ...]
    resolution: int = 512
    prompt_template: str = OFFICIAL_PROMPT
    # The official dataset repeats each photo ×100 and shuffles; an "epoch" of the sampler.
    image_repeats: int = 100

    def __post_init__(self):
        groups = tuple(stage.parameter_group for stage in self.stages)
        if groups != PARAMETER_GROUPS:
            raise SteerError(f"a training plan has the stages {PARAMETER_GROUPS} in this order, got {groups}")
        if not (isinstance(self.resolution, int) and 8 <= self.resolution <= 2048 and self.resolution % 8 == 0):
            raise SteerError(
                f"training resolution must be a multiple of 8 in [8, 2048] (SD models want multiples of 64), got {self.resolution}"
            )
        if self.prompt_template.count(CONCEPT_PLACEHOLDER) != 1 or "{category}" not in self.prompt_template:
            raise SteerError(f"the training prompt needs one {CONCEPT_PLACEHOLDER} and a {{category}}, got {self.prompt_template!r}")
        if not self.prompt_template.split(CONCEPT_PLACEHOLDER, 1)[1].lstrip().startswith("{category}"):
            # The regularizer pairs [V] with the token right after it: that must be the category word.
            raise SteerError(
                f"in the training prompt {{category}} must directly follow {CONCEPT_PLACEHOLDER}, got {self.prompt_template!r}"
            )
        if not (isinstance(self.image_repeats, int) and self.image_repeats >= 1):
            raise SteerError(f"image repeats must be >= 1, got {self.image_repeats}")
        if self.total_steps == 0:
            # A concept that learned nothing would still be saved and look like a trained one.
            raise SteerError(
                "every stage of this training plan has 0 steps, so nothing would be trained; "
                "give at least one stage (token, cross-attention or UNet) some steps"
            )

    def stage(self, group: str) -> StageConfig:
        return next(stage for stage in self.stages if stage.parameter_group == group)

    @property
    def trained_groups(self) -> frozenset[str]:
        """The parameter groups of the stages that have steps."""
        return frozenset(stage.parameter_group for stage in self.stages if stage.steps)

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def prompt(self, category: str) -> str:
        return self.prompt_template.format(category=category)

    def to_dict(self) -> dict:
        return asdict(self)


def _stage(group: str, steps: int, learning_rate: float, mean: float, variance: float, batch_size: int = 8) -> StageConfig:
    return StageConfig(group, group, steps, learning_rate, RegularizerWeights(mean, variance), batch_size=batch_size)


OFFICIAL = TrainingPlan(
    name="official",
    stages=(
        _stage(TOKEN, 60, 1e-3, 0.1, 0.0),
        _stage(CROSS_ATTENTION, 100, 2e-5, 2.0, 5.0),
        _stage(UNET, 500, 2e-6, 2.0, 5.0),
    ),
)

# README "fast" variant: stage 3 only; ~6 instead of ~20 minutes, slightly weaker on complex prompts.
FAST = replace(
    OFFICIAL,
    name="fast",
    stages=OFFICIAL.stages[:2] + (replace(OFFICIAL.stage(UNET), steps=200, learning_rate=1e-5, batch_size=4),),
)

PRESETS: dict[str, TrainingPlan] = {plan.name: plan for plan in (OFFICIAL, FAST)}
CUSTOM = "custom"  # the preset choice that means "these numbers" (custom_plan)
SDXL_RESOLUTION = 1024  # SDXL's native size; the official numbers are for 512 px SD models


def plan_for_model(plan: TrainingPlan, *, sdxl: bool) -> TrainingPlan:
    """A preset at the model's native resolution (SDXL: 1024 px, else the official 512); a custom plan
    keeps its own numbers."""
    if sdxl and plan.name in PRESETS:
        return replace(plan, resolution=SDXL_RESOLUTION)
    return plan


# Flat names of every number a "custom" plan exposes, e.g. "unet_learning_rate".
_STAGE_NUMBERS = ("steps", "learning_rate", "batch_size", "gradient_accumulation", "weight_decay")
_REGULARIZER_NUMBERS = {"regularizer_mean": "mean", "regularizer_variance": "variance"}
CUSTOM_FIELDS = tuple(f"{group}_{number}" for group in PARAMETER_GROUPS for number in (*_STAGE_NUMBERS, *_REGULARIZER_NUMBERS)) + (
    "resolution",
)


def preset(name: str) -> TrainingPlan:
    try:
        return PRESETS[name]
    except KeyError:
        raise SteerError(f"unknown preset {name!r}; choose one of {tuple(PRESETS)} or build a custom plan") from None


def custom_plan(base: TrainingPlan = OFFICIAL, **numbers) -> TrainingPlan:
    """A plan named "custom": `base` with any of CUSTOM_FIELDS changed, e.g.
    custom_plan(unet_steps=300, cross_attention_gradient_accumulation=4, resolution=768)."""
    unknown = sorted(set(numbers) - set(CUSTOM_FIELDS))
    if unknown:
        raise SteerError(f"unknown custom training setting(s) {unknown}; the settings are {list(CUSTOM_FIELDS)}")
    stages = []
    for stage in base.stages:
        prefix = f"{stage.parameter_group}_"
        changes = {key[len(prefix) :]: value for key, value in numbers.items() if key.startswith(prefix)}
        weights = {_REGULARIZER_NUMBERS[key]: changes.pop(key) for key in list(changes) if key in _REGULARIZER_NUMBERS}
        if weights:
            changes["regularizer"] = replace(stage.regularizer, **weights)
        stages.append(replace(stage, **changes))
    resolution = numbers.get("resolution", base.resolution)
    return replace(base, name="custom", stages=tuple(stages), resolution=resolution)


def build_plan(preset_name: str, gradient_accumulation: int = 1, numbers: Mapping[str, float] | None = None) -> TrainingPlan:
    """The plan a front end (the node, `steer train`) asks for: a preset, or CUSTOM with any of
    CUSTOM_FIELDS in `numbers` (the official value for the others). `gradient_accumulation` applies
    to every stage: it splits each batch into micro-batches and changes only memory, never the result."""
    if preset_name == CUSTOM:
        plan = custom_plan(**(numbers or {}))
    elif preset_name in PRESETS:
        plan = PRESETS[preset_name]
    else:
        raise SteerError(f"unknown preset {preset_name!r}; choose one of {(*PRESETS, CUSTOM)}")
    if gradient_accumulation != 1:
        plan = replace(plan, stages=tuple(replace(stage, gradient_accumulation=gradient_accumulation) for stage in plan.stages))
    return plan


def plan_from_dict(data: dict) -> TrainingPlan:
    """Inverse of TrainingPlan.to_dict (for the concept's JSON and checkpoints)."""
    stage_fields = {f.name for f in fields(StageConfig)}
    stages = []
    for stage in data["stages"]:
        values = {key: value for key, value in stage.items() if key in stage_fields}
        values["regularizer"] = RegularizerWeights(**values["regularizer"])
        values["adam_betas"] = tuple(values.get("adam_betas", (0.9, 0.999)))
        stages.append(StageConfig(**values))
    plan_fields = {f.name for f in fields(TrainingPlan)} - {"stages"}
    return TrainingPlan(stages=tuple(stages), **{key: value for key, value in data.items() if key in plan_fields})
