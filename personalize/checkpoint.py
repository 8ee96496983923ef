"""Training checkpoints, so a re-run with the same inputs resumes where the last one stopped.

A checkpoint folder holds:
  progress.json                 the commit record, written last: fingerprint, stage index,
                                completed steps, loss history, elapsed time, file names
  weights-<stage>-<step>.safetensors     every parameter of the groups trained so far
  optimizer-<stage>-<step>.safetensors   AdamW moments, only when stopped inside a stage

Tensor files carry their position in the name and progress.json is replaced atomically after
them, so a crash at any moment leaves the previous checkpoint intact. A folder whose
fingerprint differs (other photos, category, plan, seed or base model) is started afresh.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..safe_files import write_json, write_safetensors

FORMAT = "steer.attndreambooth.checkpoint/1"
PROGRESS_FILE = "progress.json"


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
        """The saved state, or None when there is none for this fingerprint."""
        progress_path = self.folder / PROGRESS_FILE
        if not progress_path.is_file():
            return None
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if progress.get("format") != FORMAT or progress.get("fingerprint") != self.fingerprint:
            return None
        state = TrainingState(
            stage_index=progress["stage_index"],
            step=progress["step"],
            history=progress["history"],
            seconds=progress["seconds"],
            optimizer_step=progress.get("optimizer_step", 0),
            grad_scaler=progress.get("grad_scaler"),
        )
        if progress.get("weights"):
            state.weights = load_file(str(self.folder / progress["weights"]))
        if progress.get("optimizer"):
            state.optimizer = load_file(str(self.folder / progress["optimizer"]))
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
        # Only now are older tensor files unreferenced.
        for stale in self.folder.glob("*.safetensors"):
            if stale.name not in files.values():
                stale.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in [*self.folder.glob("*.safetensors"), self.folder / PROGRESS_FILE]:
            path.unlink(missing_ok=True)
