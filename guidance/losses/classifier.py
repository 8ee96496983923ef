"""Image-classifier guidance: any Hugging Face AutoModelForImageClassification folder, toward one label.

Objectives, per image:
- cross_entropy:   −log p(label). 0 when certain; log(#labels) at chance. Multi-label heads
                   (problem_type "multi_label_classification") use −log sigmoid(logit).
- neg_probability: −p(label), in [−1, 0]. Saturates once the label is likely: gentler than
                   cross-entropy, which keeps pushing.
- neg_logit:       −logit(label), unbounded. For regression heads (one output, e.g. an
                   aesthetic score) where "more" is the goal.
"""

from __future__ import annotations

import torch

from ...errors import SteerError
from ..hf_models import GuidanceModel
from ..preprocess import FITS
from .logits import CLASSIFIER_OBJECTIVES as OBJECTIVES
from .logits import class_objective


def resolve_label(id2label: dict, label: str | int) -> int:
    """A class index from a label name (case-insensitive, as in config.json's id2label) or an index."""
    names = {int(k): str(v) for k, v in id2label.items()}
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if isinstance(label, int):
        if label in names:
            return label
        raise SteerError(f"label index {label} is out of range: this classifier has indices 0 to {len(names) - 1} ({_some_labels(names)})")
    wanted = label.strip().casefold()
    for index, name in names.items():
        if name.strip().casefold() == wanted:
            return index
    raise SteerError(f"label {label!r} is not one of this classifier's labels. Valid labels (name or index): {_some_labels(names)}")


def _some_labels(names: dict[int, str], shown: int = 20) -> str:
    listed = ", ".join(f"{i}: {names[i]}" for i in sorted(names)[:shown])
    return listed + (f", … ({len(names)} in all)" if len(names) > shown else "")


class ClassifierLoss:
    def __init__(self, model: GuidanceModel, label: str | int, objective: str = "cross_entropy", fit: str = "stretch"):
        if model.kind != "classifier":
            raise SteerError(
                f"model {model.name!r} is a {model.kind} model, not an image classifier; load an AutoModelForImageClassification folder"
            )
        if objective not in OBJECTIVES:
            raise SteerError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if fit not in FITS:
            raise SteerError(f"fit must be one of {FITS}, got {fit!r}")
        id2label = model.config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(int(model.config.get("num_labels", 2)))}
        self.model = model
        self.index = resolve_label(id2label, label)
        self.label = str(id2label.get(str(self.index), id2label.get(self.index, self.index)))
        self.objective = objective
        self.multi_label = model.config.get("problem_type") == "multi_label_classification"
        self.preprocess = model.preprocess(fit)
        self.name = f"classifier({model.name}: {objective} {self.label!r})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        module = self.model.placed(images.device)
        dtype = next(module.parameters()).dtype
        logits = module(pixel_values=self.preprocess(images).to(dtype)).logits.float()
        targets = torch.full((logits.shape[0],), self.index, dtype=torch.long, device=logits.device)
        return class_objective(logits, targets, self.objective, self.multi_label)
