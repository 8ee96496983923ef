"""A weighted sum of losses, each active in its own window of the schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...errors import SteerError
from ..augment import augmented_views_loss
from .base import Loss, Window


@dataclass(frozen=True)
class LossTerm:
    loss: Loss
    weight: float = 1.0
    window: Window = field(default_factory=Window)


class CombinedLoss:
    def __init__(self, terms: list[LossTerm] | tuple[LossTerm, ...]):
        if not terms:
            raise SteerError("combine needs at least one loss")
        self.terms = tuple(terms)
        self.name = " + ".join(f"{t.weight:g}·{t.loss.name}" for t in self.terms)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return sum(term.weight * term.loss(images) for term in self.terms)

    @property
    def has_regions(self) -> bool:
        return any(getattr(term.loss, "has_regions", False) for term in self.terms)

    def augmented(self, images: torch.Tensor, augment) -> torch.Tensor:
        """(copies·B,) per-view values. Without masked terms all terms score the same views, in one
        batch each; a masked term makes its own views, whose region follows them."""
        if not self.has_regions:
            return self(augment(images))
        return sum(term.weight * augmented_views_loss(term.loss, images, augment) for term in self.terms)

    def at(self, progress: float) -> "CombinedLoss | None":
        """Only the terms whose window holds this point of the schedule; None when none does."""
        live = []
        for term in self.terms:
            inner = term.loss.at(progress) if hasattr(term.loss, "at") else term.loss
            if inner is not None and term.window.contains(progress) and term.weight != 0:
                live.append(LossTerm(inner, term.weight, term.window))
        return CombinedLoss(live) if live else None
