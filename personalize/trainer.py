"""Runs a TrainingPlan's three stages over any Backbone, one training_step.TrainingStep at a time.
Only the stage's parameter group is trainable; everything else is frozen and stays bit-identical.

Reproducible and resumable: every random draw of step k comes from generators seeded by
(seed, stage, step, sample), so a resumed run replays the same batches, and the checkpoint
(a CheckpointStore the caller names for this run) restores the weights and AdamW moments exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import SteerError
from .backbone import Backbone
from .checkpoint import CheckpointStore, TrainingState
from .data import TrainingImages
from .stages import PARAMETER_GROUPS, TrainingPlan
from .training_step import TrainingStep, step_batch, trainable_group

log = logging.getLogger("steer")

# progress(stage_name, completed_step, stage_steps, loss); raising from it cancels cleanly.
ProgressCallback = Callable[[str, int, int, float], None]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run, as opposed to what to train (TrainingPlan)."""

    # Autocast compute dtype; trainable weights stay float32. "auto": bf16 on CUDA GPUs that
    # support it, else fp16 on CUDA (with loss scaling), fp32 on the CPU.
    precision: str = "auto"
    gradient_checkpointing: bool = True
    # Periodic checkpoints inside a stage, for crashes (a Cancel and every stage end always save):
    # after this many steps, and after this many minutes of training. 0 turns either off. By time,
    # because a stage-3 checkpoint holds the whole UNet and its AdamW moments (~3x the UNet's size):
    # a crash then loses at most about ten minutes, and a fast GPU writes few checkpoints.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SteerError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.checkpoint_every < 0:
            raise SteerError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0):
            raise SteerError(f"checkpoint minutes must be a number >= 0 (0: only at stage ends), got {self.checkpoint_minutes}")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        precision = self.precision
        if precision == "auto":
            if device.type != "cuda":
                return None
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class TrainingResult:
    history: list[dict]  # one {"stage", "step", "loss", "diffusion", "regularizer"} per step
    seconds: float  # training time, summed over resumed runs
    resumed_at: tuple[str, int] | None  # (stage, completed steps) this run started from
    plan: TrainingPlan = field(repr=False)
    category: str = ""
    seed: int = 0
    steps_lost: int | None = None  # steps done after the checkpoint it resumed from, trained again (None: unknown)


def validate_category(category: str) -> str:
    category = " ".join(str(category).split())
    if not category:
        raise SteerError("give the subject's category, a plain word such as 'dog', 'doll' or 'backpack'")
    if len(category) > 60 or any(character in category for character in "[]{}()<>:\\"):
        raise SteerError(f"the category must be a short plain word or two such as 'dog' or 'teddy bear', got {category!r}")
    return category


def run_fingerprint(backbone: Backbone, images: TrainingImages, category: str, plan: TrainingPlan, seed: int) -> str:
    """Identifies a run: same photos, category, plan, seed and base model -> same fingerprint."""
    digest = hashlib.sha256()
    digest.update(images.fingerprint_bytes())
    digest.update(
        json.dumps({"category": category, "plan": plan.to_dict(), "seed": seed, "model": backbone.identity}, sort_keys=True).encode()
    )
    return digest.hexdigest()


def train(
    backbone: Backbone,
    images: TrainingImages,
    category: str,
    plan: TrainingPlan,
    seed: int,
    *,
    store: CheckpointStore | None = None,
    progress: ProgressCallback | None = None,
    options: RuntimeOptions = RuntimeOptions(),
    on_stage_end: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train the plan's stages, resuming from `store` (this run's checkpoints, whose fingerprint is
    run_fingerprint of these inputs) when it holds a checkpoint; without a store nothing is saved."""
    category = validate_category(category)
    if images.resolution != plan.resolution:
        raise ValueError(f"images prepared at {images.resolution} px, plan trains at {plan.resolution} px")
    groups = backbone.parameter_groups()
    if set(groups) != set(PARAMETER_GROUPS):
        raise TypeError(f"backbone parameter groups are {sorted(groups)}, expected {PARAMETER_GROUPS}")

    state = store.load() if store else None
    resumed_at = steps_lost = None
    backbone.reset_token(category)
    if state is None:
        state = TrainingState()
        if store:
            store.clear()
    else:
        _load_weights(groups, state.weights)
        if state.stage_index < len(plan.stages):
            resumed_at = (plan.stages[state.stage_index].name, state.step)
        else:
            resumed_at = (plan.stages[-1].name, plan.stages[-1].steps)
        steps_lost = _steps_between(plan, (state.stage_index, state.step), store.reached())
        log.warning(
            "steer: AttnDreamBooth resumes at %s step %d from its checkpoint%s",
            *resumed_at,
            "" if steps_lost is None else f"; {steps_lost} steps done after it are trained again",
        )

    run = _StageRunner(backbone, images, category, plan, seed, options, store, state, progress)
    backbone.set_gradient_checkpointing(options.gradient_checkpointing)
    try:
        for stage_index in range(state.stage_index, len(plan.stages)):
            run.stage(stage_index)
            if on_stage_end is not None and plan.stages[stage_index].steps:
                on_stage_end(plan.stages[stage_index].name)  # e.g. a preview image, with the weights trained so far
    finally:
        backbone.set_gradient_checkpointing(False)
        for parameters in groups.values():
            for parameter in parameters.values():
                parameter.requires_grad_(False)
    return TrainingResult(
        history=state.history, seconds=state.seconds, resumed_at=resumed_at, steps_lost=steps_lost, plan=plan, category=category, seed=seed
    )


def _steps_between(plan: TrainingPlan, start: tuple[int, int], end: tuple[int, int] | None) -> int | None:
    """Steps from position `start` to position `end` ((stage index, steps done in it)) of the plan."""
    if end is None:
        return None

    def done(position):
        stage_index, step = position
        return sum(stage.steps for stage in plan.stages[:stage_index]) + step

    return max(0, done(end) - done(start))


def _load_weights(groups, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in weights.items():
            group, name = key.split("/", 1)
            groups[group][name].copy_(value)


class _StageRunner:
    def __init__(self, backbone, images, category, plan, seed, options, store, state, progress):
        self.backbone, self.images, self.plan, self.seed = backbone, images, plan, seed
        self.prompt = plan.prompt(category)
        self.options, self.store, self.state, self.progress = options, store, state, progress
        self.groups = backbone.parameter_groups()
        self.autocast_dtype = options.autocast_dtype(backbone.device)
        self.last_save = time.monotonic()

    def stage(self, stage_index: int) -> None:
        stage = self.plan.stages[stage_index]
        start = self.state.step if stage_index == self.state.stage_index else 0
        trainable = trainable_group(self.backbone, stage.parameter_group)
        if stage.steps == 0:  # a custom plan may skip a stage
            self._save(stage_index + 1, 0, None, None, trainable)
            return
        if not trainable:
            raise RuntimeError(f"the backbone has no trainable weights for stage {stage.name!r}: it was opened for other stages only")
        run_step = TrainingStep.for_stage(self.backbone, stage, trainable, self.prompt, self.autocast_dtype)
        optimizer, scaler = run_step.optimizer, run_step.scaler
        if start > 0 and self.state.optimizer:
            _restore_optimizer(optimizer, trainable, self.state)
            if self.state.grad_scaler and scaler.is_enabled():
                scaler.load_state_dict(self.state.grad_scaler)

        with run_step.attention_capture():
            for step in range(start, stage.steps):
                began = time.perf_counter()
                losses = run_step(
                    step_batch(self.images, self.plan.image_repeats, self.seed, stage_index, step, stage.batch_size), step + 1
                )
                self.state.seconds += time.perf_counter() - began
                self.state.history.append({"stage": stage.name, "step": step + 1, **losses})
                if step + 1 < stage.steps and self._checkpoint_due(step + 1):
                    self._save(stage_index, step + 1, optimizer, scaler, trainable)
                elif self.store is not None:
                    self.store.note_reached(stage_index, step + 1)
                if self.progress is not None:
                    try:
                        self.progress(stage.name, step + 1, stage.steps, losses["loss"])
                    except BaseException:
                        self._save(stage_index, step + 1, optimizer, scaler, trainable)
                        raise
        self._save(stage_index + 1, 0, None, None, trainable)

    def _checkpoint_due(self, step: int) -> bool:
        every, minutes = self.options.checkpoint_every, self.options.checkpoint_minutes
        return bool(every and step % every == 0) or bool(minutes and time.monotonic() - self.last_save >= 60 * minutes)

    def _save(self, stage_index, step, optimizer, scaler, trainable) -> None:
        self.last_save = time.monotonic()
        if self.store is None:
            return
        state = self.state
        state.stage_index, state.step = stage_index, step
        trained_stages = self.plan.stages[: stage_index + (1 if step else 0)]
        trained_groups = {stage.parameter_group for stage in trained_stages if stage.steps}
        state.weights = {
            f"{group}/{name}": parameter.detach().cpu()
            for group in _covering_groups(trained_groups)
            for name, parameter in self.groups[group].items()
        }
        state.optimizer, state.optimizer_step, state.grad_scaler = {}, 0, None
        if optimizer is not None:
            names = {id(parameter): name for name, parameter in trainable.items()}
            for parameter, moments in optimizer.state.items():
                for moment in ("exp_avg", "exp_avg_sq"):
                    state.optimizer[f"{moment}/{names[id(parameter)]}"] = moments[moment].detach().cpu()
                state.optimizer_step = int(moments["step"])
            if scaler is not None and scaler.is_enabled():
                state.grad_scaler = scaler.state_dict()
        self.store.save(state)
        self.store.note_reached(stage_index, step)


def _covering_groups(groups: set[str]) -> list[str]:
    """The fewest groups that hold every trained parameter ("unet" contains "cross_attention")."""
    if "unet" in groups:
        groups = groups - {"cross_attention"}
    return sorted(groups)


def _restore_optimizer(optimizer: torch.optim.Optimizer, trainable: dict[str, torch.nn.Parameter], state: TrainingState) -> None:
    saved = optimizer.state_dict()
    saved["state"] = {}
    for index, name in enumerate(trainable):
        if f"exp_avg/{name}" in state.optimizer:
            saved["state"][index] = {
                "step": torch.tensor(float(state.optimizer_step)),
                "exp_avg": state.optimizer[f"exp_avg/{name}"],
                "exp_avg_sq": state.optimizer[f"exp_avg_sq/{name}"],
            }
    optimizer.load_state_dict(saved)
