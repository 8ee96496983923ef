"""A tiny Stable-Diffusion-shaped model for personalization tests: the "tiny" random diffusers
components of steer.benchmarks.random_diffusers at RESOLUTION px, as a DiffusersBackbone, plus
photos and the one-thread fixture the tests share. Nothing is downloaded."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from steer.benchmarks.random_diffusers import TEXT_WIDTH, random_sd_components, write_tokenizer_files

__all__ = [
    "RESOLUTION",
    "TEXT_WIDTH",
    "one_torch_thread",
    "single_thread",
    "tiny_backbone",
    "tiny_components",
    "tiny_photos",
    "tokenizer_folder",
    "write_tokenizer_files",
]

RESOLUTION = 16  # pixels; the VAE halves it, so latents are 8×8 and the UNet works at 8×8 and 4×4


def tiny_components(tokenizer_folder: Path, prediction_type: str = "epsilon", seed: int = 0):
    return random_sd_components(tokenizer_folder, unet_size="tiny", sample_size=RESOLUTION // 2, prediction_type=prediction_type, seed=seed)


def tiny_backbone(tokenizer_folder: Path, prediction_type: str = "epsilon", seed: int = 0):
    from steer.personalize.diffusers_backbone import DiffusersBackbone

    return DiffusersBackbone(*tiny_components(tokenizer_folder, prediction_type, seed), identity=f"tiny-sd-{seed}")


def tiny_photos(count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random RGB photos of different sizes, (3, H, W) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(20, 24), (30, 18), (16, 16), (40, 28), (17, 33)]
    photos = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        coarse = torch.rand(1, 3, 4, 4, generator=generator)
        photos.append(torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0])
    return photos


@contextmanager
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spin-wait badly on a busy
    2-core machine (measured: 0.1 s vs 2 s per training step). Restores the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Fixtures the personalization tests share: `from unit.tiny_sd import single_thread, tokenizer_folder`
# (pytest finds fixtures a test module imports; single_thread then applies to that module).


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return write_tokenizer_files(tmp_path_factory.mktemp("tokenizer"))
