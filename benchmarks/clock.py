"""Timing on any device: CUDA work is asynchronous, so a clock read waits for it first."""

from __future__ import annotations

import torch


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
