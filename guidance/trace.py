"""What the guidance did, step by step: per-sample loss, gradient norm and displacement."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch


@dataclass
class StepRecord:
    """One guided model call. Values stay tensors on the model's device until read,
    so recording never forces a host-device sync inside the sampling loop."""

    step: int  # sampler step index
    repeat: int  # time-travel pass within the step (0 = first)
    sigma: float
    loss: torch.Tensor  # (B,) before the update
    grad_norm: torch.Tensor  # (B,)
    displacement_rms: torch.Tensor  # (B,) RMS of the applied displacement
    capped: torch.Tensor  # (B,) bool: the max-step cap bound

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "repeat": self.repeat,
            "sigma": self.sigma,
            "loss": self.loss.cpu().tolist(),
            "grad_norm": self.grad_norm.cpu().tolist(),
            "displacement_rms": self.displacement_rms.cpu().tolist(),
            "capped": self.capped.cpu().tolist(),
        }


@dataclass
class GuidanceTrace:
    """Filled by the sampler; cleared at the start of every run."""

    records: list[StepRecord] = field(default_factory=list)
    steps: int = 0
    model_calls: int = 0
    label: str = ""

    def clear(self) -> None:
        self.records.clear()
        self.steps = 0
        self.model_calls = 0

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "steps": self.steps,
            "model_calls": self.model_calls,
            "records": [r.to_dict() for r in self.records],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def first_pass_series(self, field_name: str) -> list[tuple[int, float]]:
        """(step, mean over samples) of a recorded field, at the first pass of each guided step."""
        return [(r.step, float(getattr(r, field_name).float().mean())) for r in self.records if r.repeat == 0]
