"""The embedded default model: a tiny pixel-space DDPM on scikit-learn's 8x8 digits, plus two
digit classifiers (a *guide* to steer with and an independent *judge* to score with).

Everything runs on CPU in seconds, needs no download, and loads only from the safetensors
files committed in `weights/` (see MODEL_CARD.md; `python -m steer.digits.train` rebuilds them).

Conventions
-----------
images       float (B, 1, 16, 16) in [0, 1], ink = 1 (what the classifiers and losses take).
model space  float (B, 1, 16, 16) in [-1, 1] (what the DDPM generates); `decode` / `encode`.
sigma space  the k-diffusion / ComfyUI "VE" parameterisation of the VP DDPM:
             x = x_vp / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar),
             so x = x0 + sigma * noise and a sampler starts from x = sigma_max * noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SteerError
from ..safe_files import read_safetensors

IMAGE_SIZE = 16
NUM_CLASSES = 10
NUM_TRAIN_TIMESTEPS = 1000
SPLIT_SEED = 0
JUDGE_TRAIN_SIZE = 600  # the first 600 of half B train the judge; the remaining 298 are held out

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DDPM_FILE = "ddpm.safetensors"
GUIDE_FILE = "guide.safetensors"
JUDGE_FILE = "judge.safetensors"
METADATA_KEY = "steer_digits"  # the safetensors metadata entry holding training facts, as JSON

# ~1.06M parameters. No attention: at 16x16 it costs more CPU time than it buys.
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
)

SPLITS = ("all", "A", "B", "guide_train", "judge_train", "heldout", "ddpm_train")


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


def _split_indices() -> dict[str, np.ndarray]:
    """A fixed, seeded partition of the 1797 digits.

    A (899)           trains the guide; the judge is tested on it.
    B (898)           tests the guide. Its first 600 ("judge_train") train the judge, its
                      last 298 ("heldout") are seen by no model: the real reference set for
                      realism metrics (Frechet distance in judge-feature space).
    ddpm_train (1499) = A + judge_train: everything except the held-out set.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(1797)
    half_a, half_b = order[:899], order[899:]
    judge_train, heldout = half_b[:JUDGE_TRAIN_SIZE], half_b[JUDGE_TRAIN_SIZE:]
    return {
        "all": np.arange(1797),
        "A": half_a,
        "guide_train": half_a,
        "B": half_b,
        "judge_train": judge_train,
        "heldout": heldout,
        "ddpm_train": np.concatenate([half_a, judge_train]),
    }


def load_digits_images(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits as (images, labels): images float (N, 1, 16, 16) in [0, 1] with ink = 1
    (load_digits pixels / 16, bilinearly upsampled from 8x8), labels long (N,).

    split: one of SPLITS; see `_split_indices` for what each holds.
    """
    if split not in SPLITS:
        raise SteerError(f"unknown digits split {split!r}: use one of {', '.join(SPLITS)}")
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = _split_indices()[split]
    small = torch.from_numpy(data.images[idx]).float().div(16.0).unsqueeze(1)
    images = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(data.target[idx]).long()
    return images.clamp(0.0, 1.0), labels


def encode(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> model space [-1, 1]."""
    return images * 2.0 - 1.0


def decode(x0: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> images in [0, 1]. No clamp, so gradients survive; clamp for display."""
    return x0 * 0.5 + 0.5


def _as_digit_batch(images: torch.Tensor) -> torch.Tensor:
    """Accept (B, C, H, W) images in [0, 1]: RGB is averaged to gray and other sizes are resized
    to 16x16, so a loss can hand over whatever the pipeline decoded."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise SteerError(f"digit classifiers take images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images


# ----------------------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------------------


class GuideCNN(nn.Module):
    """The guide: a small CNN, trained on half A with blur / contrast / noise augmentation so
    it also classifies the blurry x0 predictions of early sampling steps. SiLU and average
    pooling keep its input gradients smooth, which is what guidance follows."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # 8x8
            nn.Conv2d(32, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # 4x4
            nn.Conv2d(64, 64, 3, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.SiLU(),
        )
        self.head = nn.Linear(128, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [0, 1] -> logits (B, 10)."""
        return self.head(self.body(_as_digit_batch(images) - 0.5))


class JudgeMLP(nn.Module):
    """The judge: an MLP on raw pixels, trained on clean digits from half B only (plus synthetic
    non-digits pushed towards the uniform distribution, so its confidence means "a legible
    digit"). A different architecture and disjoint data from the guide, so fooling the guide
    does not fool it. Judge images clamped to [0, 1], as they would be displayed."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [0, 1] -> penultimate features (B, 64), for Frechet distance."""
        return self.body(_as_digit_batch(images) - 0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [0, 1] -> logits (B, 10)."""
        return self.head(self.features(images))


# ----------------------------------------------------------------------------------------
# Noise schedule and denoiser
# ----------------------------------------------------------------------------------------


def make_scheduler():
    """The diffusers DDPMScheduler the model was trained with."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def training_alphas_cumprod() -> torch.Tensor:
    """alpha_bar for the 1000 training timesteps, float32 (1000,), decreasing."""
    return make_scheduler().alphas_cumprod.float().clone()


def training_sigmas() -> torch.Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar) for the 1000 training timesteps, increasing
    (about 0.01 at t=0 to 157 at t=999)."""
    alphas_cumprod = training_alphas_cumprod()
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def sigmas_for_steps(n: int) -> torch.Tensor:
    """A DDIM-style sampling schedule: n training timesteps with "trailing" spacing (the first is
    t=999, so sampling starts at sigma_max), as descending sigmas with 0.0 appended.
    Returns float32 (n + 1,)."""
    if not 1 <= int(n) <= NUM_TRAIN_TIMESTEPS:
        raise SteerError(f"steps must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {n}")
    n = int(n)
    # Same rule as diffusers' timestep_spacing="trailing".
    timesteps = np.round(np.arange(NUM_TRAIN_TIMESTEPS, 0, -NUM_TRAIN_TIMESTEPS / n)).astype(np.int64) - 1
    sigmas = training_sigmas()[torch.from_numpy(timesteps)]
    return torch.cat([sigmas, sigmas.new_zeros(1)])


class DigitsDenoiser:
    """denoise(x, sigma) -> x0 in the k-diffusion / ComfyUI sigma convention.

    x: (B, 1, 16, 16) noisy sample in sigma space (x = x0 + sigma * noise).
    sigma: float, 0-d tensor or (B,) tensor.
    Returns the Tweedie estimate x0 = x - sigma * eps(x_vp, t) in model space [-1, 1].
    Differentiable w.r.t. x (no no_grad inside); the UNet's own parameters are frozen.
    """

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor):
        self.unet = unet
        alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigmas_for_steps(self, n: int) -> torch.Tensor:
        return sigmas_for_steps(n)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional training timestep for each sigma: linear interpolation in log-sigma between
        the discrete training sigmas (k-diffusion's DiscreteSchedule.sigma_to_t, quantize=False).
        ComfyUI's ModelSamplingDiscrete.timestep rounds to the nearest instead; the two agree on
        the schedule's own sigmas. Sigmas outside the trained range clamp to t=0 or t=999."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.detach().float().clamp(min=self.sigma_min).log()
        dists = log_sigma - log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0)
        return ((1.0 - w) * low_idx + w * high_idx).view(sigma.shape)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise SteerError(f"sigma must be a number or one value per image ({x.shape[0]}), got shape {tuple(sigma.shape)}")
        s = sigma.view(-1, 1, 1, 1)
        x_vp = x / (s * s + 1.0).sqrt()  # alpha_bar(sigma) = 1 / (1 + sigma^2)
        eps = self.unet(x_vp, self.timestep(sigma)).sample
        return x - s * eps


@torch.no_grad()
def sample_unguided(denoiser: DigitsDenoiser, num_images: int, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples, returned in model space (num_images, 1, 16, 16).
    Step rule: x_next = x0 + sigma_next * (x - x0) / sigma."""
    generator = torch.Generator().manual_seed(seed)
    sigmas = sigmas_for_steps(steps)
    x = torch.randn(num_images, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x0 = denoiser(x, sigma)
        x = x0 + sigma_next * (x - x0) / sigma
    return x


# ----------------------------------------------------------------------------------------
# Realism metric
# ----------------------------------------------------------------------------------------


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) - FID's formula,
    used here with `judge_features`.

    tr sqrt(cov_a cov_b) is computed as the sum of sqrt-eigenvalues of the symmetric
    sqrt(cov_a) cov_b sqrt(cov_a), which stays stable when covariances are singular
    (dead ReLU units, few samples)."""
    a = features_a.detach().double().cpu().numpy()
    b = features_b.detach().double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eigvals, eigvecs = np.linalg.eigh(cov_a)
    sqrt_a = (eigvecs * np.sqrt(eigvals.clip(min=0.0))) @ eigvecs.T
    trace_covmean = np.sqrt(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clip(min=0.0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


def build_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass
class PretrainedDigits:
    """The committed digits models, on CPU, in eval mode, with frozen parameters."""

    unet: nn.Module  # diffusers UNet2DModel, epsilon prediction
    scheduler: object  # diffusers DDPMScheduler it was trained with
    alphas_cumprod: torch.Tensor  # (1000,)
    guide: GuideCNN
    judge: JudgeMLP
    denoiser: DigitsDenoiser
    metadata: dict  # training facts stored in the safetensors headers

    def judge_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [0, 1] -> judge penultimate features (B, 64)."""
        return self.judge.features(images)


def _load_module(module: nn.Module, path: Path) -> dict:
    if not path.is_file():
        raise SteerError(
            f"missing digits weights {path}: reinstall the package or rebuild them with `python -m steer.digits.train --out {path.parent}`"
        )
    tensors, raw = read_safetensors(path)
    module.load_state_dict(tensors, strict=True)
    return json.loads(raw[METADATA_KEY]) if METADATA_KEY in raw else dict(raw)


def load_pretrained(weights_dir: str | Path | None = None) -> PretrainedDigits:
    """Load the DDPM, guide and judge from `weights_dir` (default: the committed digits/weights)."""
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    unet, guide, judge = build_unet(), GuideCNN(), JudgeMLP()
    metadata = {
        "ddpm": _load_module(unet, weights_dir / DDPM_FILE),
        "guide": _load_module(guide, weights_dir / GUIDE_FILE),
        "judge": _load_module(judge, weights_dir / JUDGE_FILE),
    }
    for module in (unet, guide, judge):
        _freeze(module)
    scheduler = make_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float().clone()
    return PretrainedDigits(
        unet=unet,
        scheduler=scheduler,
        alphas_cumprod=alphas_cumprod,
        guide=guide,
        judge=judge,
        denoiser=DigitsDenoiser(unet, alphas_cumprod),
        metadata=metadata,
    )
