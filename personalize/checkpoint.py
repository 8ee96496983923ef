"""Training checkpoints, so a re-run with the same inputs resumes where the last one stopped.

A checkpoint folder holds:
  progress.json                 the commit record, written last: fingerprint, stage index,
                                completed steps, loss history, elapsed time, file names
  weights-<stage>-<step>.safetensors     every parameter of the groups trained so far
  optimizer-<stage>-<step>.safetensors   AdamW moments, only when stopped inside a stage
  reached.json                  the last step the run finished (small; every step), so a run that
                                resumes after a crash can say how many steps it trains again

Tensor files carry their position in the name and progress.json is replaced atomically after
them, so a crash at any moment leaves the previous checkpoint intact. A folder whose
fingerprint differs (other photos, category, plan, seed or base model) is started afresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SteerError
from ..safe_files import file_in_folder, read_safetensors, write_json, write_safetensors

log = logging.getLogger("steer")

FORMAT = "steer.attndreambooth.checkpoint/1"
PROGRESS_FILE = "progress.json"
REACHED_FILE = "reached.json"  # how far the run got, written every step: what a crash loses


@dataclass
class TrainingState:
    stage_index: int = 0  # the stage to run next (== len(stages) when finished)
    step: int = 0  # completed steps inside that stage
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # "<group>/<name>" -> tensor
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)  # "<exp_avg|exp_avg_sq>/<name>" -> tensor
    optimizer_step: int = 0
    grad_scaler: dict | None = None


class CheckpointStore:
    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def position(self) -> tuple[int, int] | None:
        """(stage index, completed steps in it) of the saved state for this fingerprint, read from
        progress.json alone (no tensors), or None. For progress reporting before `load`."""
        try:
            progress = json.loads((self.folder / PROGRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if progress.get("format") != FORMAT or progress.get("fingerprint") != self.fingerprint:
            return None
        return int(progress["stage_index"]), int(progress["step"])

    def load(self) -> TrainingState | None:
        """The saved state, or None when there is none for this fingerprint. A checkpoint that
        cannot be read whole is never used: training starts over, and the log says so."""
        progress_path = self.folder / PROGRESS_FILE
        if not progress_path.is_file():
            return None
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("steer: the training checkpoint %s is unreadable (%s); training starts over", progress_path, error)
            return None
        if not isinstance(progress, dict) or progress.get("format") != FORMAT or progress.get("fingerprint") != self.fingerprint:
            return None
        try:
            state = TrainingState(
                stage_index=int(progress["stage_index"]),
                step=int(progress["step"]),
                history=list(progress["history"]),
                seconds=float(progress["seconds"]),
                optimizer_step=int(progress.get("optimizer_step", 0)),
                grad_scaler=progress.get("grad_scaler"),
            )
            for kind in ("weights", "optimizer"):
                if progress.get(kind):
                    setattr(state, kind, read_safetensors(file_in_folder(self.folder, progress[kind], str(progress_path)))[0])
        except (KeyError, TypeError, ValueError, SteerError) as error:
            log.warning("steer: the training checkpoint in %s is unusable (%s); training starts over", self.folder, error)
            return None
        return state

    def save(self, state: TrainingState) -> None:
        tag = f"{state.stage_index}-{state.step:06d}"
        files = {}
        if state.weights:
            files["weights"] = f"weights-{tag}.safetensors"
            write_safetensors(self.folder / files["weights"], state.weights)
        if state.optimizer:
            files["optimizer"] = f"optimizer-{tag}.safetensors"
            write_safetensors(self.folder / files["optimizer"], state.optimizer)
        write_json(
            self.folder / PROGRESS_FILE,
            {
                "format": FORMAT,
                "fingerprint": self.fingerprint,
                "stage_index": state.stage_index,
                "step": state.step,
                "history": state.history,
                "seconds": state.seconds,
                "optimizer_step": state.optimizer_step,
                "grad_scaler": state.grad_scaler,
                **files,
            },
        )
        # Only now are older tensor files unreferenced; temporary files are what a killed write left.
        for stale in [*self.folder.glob("*.safetensors"), *self.folder.glob(".*.tmp")]:
            if stale.name not in files.values():
                stale.unlink(missing_ok=True)

    def note_reached(self, stage_index: int, step: int) -> None:
        # Every step, so not flushed to disk: a marker lost to a power cut only makes the steps lost unknown.
        write_json(self.folder / REACHED_FILE, {"fingerprint": self.fingerprint, "stage_index": stage_index, "step": step}, durable=False)

    def reached(self) -> tuple[int, int] | None:
        """(stage index, steps done in it) the last run of this fingerprint got to, or None."""
        try:
            reached = json.loads((self.folder / REACHED_FILE).read_text(encoding="utf-8"))
            if reached.get("fingerprint") == self.fingerprint:
                return int(reached["stage_index"]), int(reached["step"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no marker, or a torn one: the steps lost are then unknown, which is all it tells
        return None

    def clear(self) -> None:
        markers = [self.folder / PROGRESS_FILE, self.folder / REACHED_FILE]
        for path in [*self.folder.glob("*.safetensors"), *self.folder.glob(".*.tmp"), *markers]:
            path.unlink(missing_ok=True)
