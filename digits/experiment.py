"""Guided sampling on the digits model through the same engine the ComfyUI nodes use."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..guidance.config import GuidanceConfig
from ..guidance.losses.logits import LogitsLoss
from ..guidance.sampler import sample
from ..guidance.trace import GuidanceTrace
from . import model as digits


def guide_loss(pretrained: digits.PretrainedDigits, targets: torch.Tensor) -> LogitsLoss:
    return LogitsLoss(pretrained.guide, targets, name="digit-guide")


def initial_noise(count: int, sigma_max: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded noise image per sample: sample i uses seed + i, so results do not depend on batching."""
    images = [
        torch.randn(1, 1, digits.IMAGE_SIZE, digits.IMAGE_SIZE, generator=torch.Generator().manual_seed(seed + i)) for i in range(count)
    ]
    return torch.cat(images) * sigma_max


@dataclass
class Generated:
    images: torch.Tensor  # (N, 1, 16, 16) in [0, 1], clamped for display and scoring
    targets: torch.Tensor  # (N,)
    seconds: float
    trace: GuidanceTrace


def generate(
    pretrained: digits.PretrainedDigits, targets: torch.Tensor, config: GuidanceConfig, steps: int = 50, seed: int = 0
) -> Generated:
    """Samples one image per target. With config.scale == 0 this is the unguided DDIM sampler."""
    sigmas = digits.sigmas_for_steps(steps)
    x = initial_noise(len(targets), sigmas[0], seed)
    trace = GuidanceTrace()
    start = time.perf_counter()
    out = sample(pretrained.denoiser, digits.decode, guide_loss(pretrained, targets), x, sigmas, config, seed=seed, trace=trace)
    seconds = time.perf_counter() - start
    return Generated(digits.decode(out).clamp(0.0, 1.0), targets.clone(), seconds, trace)


@dataclass
class Scores:
    judge_hit_rate: float  # judge's argmax equals the target
    outsider_hit_rate: float  # the outsider judge (k-NN over its own renders of half B) reads the target
    guide_hit_rate: float
    frechet: float  # of judge features, against held-out real digits
    seconds_per_sample: float

    @property
    def guide_judge_gap(self) -> float:
        """How much more the guide believes than the independent judge: the adversarial-gradient measure."""
        return self.guide_hit_rate - self.judge_hit_rate


_REAL_FEATURES: dict[int, torch.Tensor] = {}
_OUTSIDER: list = []


def outsider_judge():
    if not _OUTSIDER:
        from .outsider import load_outsider

        _OUTSIDER.append(load_outsider()[0])
    return _OUTSIDER[0]


def real_judge_features(pretrained: digits.PretrainedDigits) -> torch.Tensor:
    key = id(pretrained.judge)
    if key not in _REAL_FEATURES:
        real, _ = digits.load_digits_images("heldout")
        with torch.no_grad():
            _REAL_FEATURES[key] = pretrained.judge_features(real)
    return _REAL_FEATURES[key]


@torch.no_grad()
def score(pretrained: digits.PretrainedDigits, generated: Generated) -> Scores:
    images, targets = generated.images, generated.targets
    judge = pretrained.judge(images).argmax(1)
    guide = pretrained.guide(images).argmax(1)
    return Scores(
        judge_hit_rate=float((judge == targets).float().mean()),
        outsider_hit_rate=float((outsider_judge().predict(images) == targets).float().mean()),
        guide_hit_rate=float((guide == targets).float().mean()),
        frechet=digits.frechet_distance(pretrained.judge_features(images), real_judge_features(pretrained)),
        seconds_per_sample=generated.seconds / len(targets),
    )


def balanced_targets(per_class: int) -> torch.Tensor:
    """0,1,...,9 repeated per_class times."""
    return torch.arange(digits.NUM_CLASSES).repeat(per_class)
