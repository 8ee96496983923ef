"""Loss from any image classifier that returns logits: steer each sample toward its target class."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ...errors import SteerError

CLASSIFIER_OBJECTIVES = ("cross_entropy", "neg_probability", "neg_logit")


def class_objective(logits: torch.Tensor, targets: torch.Tensor, objective: str, multi_label: bool = False) -> torch.Tensor:
    """Per-sample loss toward `targets` (B,) from logits (B, classes).

    cross_entropy: −log p; neg_probability: −p (saturates once likely); neg_logit: −logit
    (for one-output regression heads). Multi-label heads use sigmoid instead of softmax.
    """
    chosen = logits.gather(1, targets[:, None]).squeeze(1)
    if objective == "neg_logit":
        return -chosen
    if multi_label:
        return -F.logsigmoid(chosen) if objective == "cross_entropy" else -torch.sigmoid(chosen)
    if objective == "cross_entropy":
        return F.cross_entropy(logits, targets, reduction="none")
    return -logits.softmax(dim=1).gather(1, targets[:, None]).squeeze(1)


class LogitsLoss:
    """Per-sample loss toward a target class (see class_objective).

    `targets` holds one class per sample, or a single class for all. Augmented batches are
    copy-major (copies·B images), so the targets are tiled to match.
    """

    def __init__(
        self, classifier: Callable[[torch.Tensor], torch.Tensor], targets, objective: str = "cross_entropy", name: str = "classifier"
    ):
        if objective not in CLASSIFIER_OBJECTIVES:
            raise SteerError(f"classifier objective must be one of {CLASSIFIER_OBJECTIVES}, got {objective!r}")
        self.classifier = classifier
        self.targets = torch.as_tensor(targets, dtype=torch.long).flatten()
        if self.targets.numel() == 0:
            raise SteerError("a classifier loss needs at least one target class")
        self.objective = objective
        self.name = name

    def targets_for(self, batch: int, device: torch.device) -> torch.Tensor:
        count = self.targets.numel()
        if count == 1:
            return self.targets.expand(batch).to(device)
        if batch % count != 0:
            raise SteerError(f"{count} per-sample targets do not fit a batch of {batch} images; give one target per image")
        return self.targets.repeat(batch // count).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(images).float()
        targets = self.targets_for(images.shape[0], logits.device)
        if int(targets.max()) >= logits.shape[1]:
            raise SteerError(f"target class {int(targets.max())} is out of range: the classifier has {logits.shape[1]} classes")
        return class_objective(logits, targets, self.objective)
