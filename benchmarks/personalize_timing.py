"""Times AttnDreamBooth's real training step (personalize.training_step.TrainingStep: batch, latents,
noise, UNet forward and backward, AdamW step), whole UNet trainable as in stage 3, in three ways
side by side, for personalize_step.py (diffusers backend) and personalize_step_comfy.py (ComfyUI):

  plain     regularizer off: diffusion MSE only, every attention on the backbone's fused kernel
  capture   + the cross-attention regularizer: attn2 explicit, its [V]/category columns captured;
            self-attention keeps the fused kernel (what training does)
  official  the official hook's way: self-attention explicit as well (matmul-softmax), plus the capture

The variants take turns step by step, so a change in machine load (a shared CPU) hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Callable

import torch

from ..personalize.data import MIN_IMAGES, TrainingImages
from ..personalize.stages import OFFICIAL, PARAMETER_GROUPS, UNET, RegularizerWeights
from ..personalize.training_step import TrainingStep, step_batch, trainable_group
from .clock import synchronize

VARIANTS = ("plain", "capture", "official")
AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
REGULARIZER = RegularizerWeights(2.0, 5.0)  # the official stage-3 weights
SEED = 0


def bench_images(resolution: int) -> TrainingImages:
    """MIN_IMAGES smooth random photos at `resolution`, one augmented view each: the VAE encodes
    them once (cache_latents) and every step still samples fresh latents, noise and timesteps."""
    generator = torch.Generator().manual_seed(SEED)
    photos = [
        torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=generator), size=(resolution, resolution), mode="bilinear")[0]
        for _ in range(MIN_IMAGES)
    ]
    return TrainingImages(photos, resolution, views_per_image=1, view_seed=SEED)


def measure(
    backbone,
    images: TrainingImages,
    explicit_self_attention: Callable[[], AbstractContextManager],
    batch: int,
    repeats: int,
    amp: torch.dtype | None,
) -> dict[str, tuple[float, float | None]]:
    """Median seconds per step and peak CUDA MiB (None off CUDA) per variant, after one warm-up
    round. `explicit_self_attention()` puts the backbone's attn1 on matmul-softmax while open."""
    device = backbone.device
    backbone.reset_token("dog")
    stage = replace(OFFICIAL.stage(UNET), batch_size=batch, regularizer=REGULARIZER)
    captured = TrainingStep.for_stage(backbone, stage, trainable_group(backbone, UNET), OFFICIAL.prompt("dog"), amp)
    # One optimizer for all three: same AdamW state in memory, and the plain step is the one a
    # stage without regularizer runs.
    steps = {"plain": replace(captured, capture=None), "capture": captured, "official": captured}
    scopes = {"plain": nullcontext, "capture": nullcontext, "official": explicit_self_attention}
    times = {variant: [] for variant in VARIANTS}
    peaks = {variant: None for variant in VARIANTS}
    for index in range(repeats + 1):
        for variant in VARIANTS:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            run_step = steps[variant]
            with scopes[variant](), run_step.attention_capture():
                synchronize(device)
                began = time.perf_counter()
                run_step(step_batch(images, OFFICIAL.image_repeats, SEED, PARAMETER_GROUPS.index(UNET), index, batch), index + 1)
                synchronize(device)
                seconds = time.perf_counter() - began
            if device.type == "cuda":
                peaks[variant] = max(peaks[variant] or 0.0, torch.cuda.max_memory_allocated() / 2**20)
            if index:
                times[variant].append(seconds)
    return {variant: (statistics.median(times[variant]), peaks[variant]) for variant in VARIANTS}


def add_step_arguments(parser: argparse.ArgumentParser, latent: int, repeats: int) -> None:
    """The options both step benchmarks take (with their own default latent side and repeats)."""
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--latent", type=int, default=latent, help="latent side (512 px images give 64 in SD)")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--amp", choices=tuple(AMP), default="fp32")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")


def print_results(title: str, results: dict[str, tuple[float, float | None]]) -> None:
    print(title)
    for variant, (seconds, peak) in results.items():
        memory = f", peak {peak:.0f} MiB" if peak is not None else ""
        print(f"  {variant:9s} {seconds * 1000:8.1f} ms/step  ×{seconds / results['plain'][0]:.2f}{memory}")
