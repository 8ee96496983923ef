"""`steer demo`: the same prompts unguided, guided toward another colour, and toward another shape,
on the embedded world text-to-image model; a labelled grid, a table of judge numbers, samples.npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import SteerError
from ..guidance.config import DEFAULT_PRESET, preset
from . import experiment
from .experiment import Task, prompt_scenes
from .scene import rgb01

CELL = 96  # pixels per 32x32 sample in the grid
COLOR_TARGET, SHAPE_TARGET = "yellow", "star"


def demo_tasks(count: int, seed: int) -> list[Task]:
    """Shared prompts (never yellow, never a star), three ways: no target, a colour target, a shape target."""
    scenes = prompt_scenes(count, 70_000 + seed, {"shape": {SHAPE_TARGET}, "color": {COLOR_TARGET}, "background": {COLOR_TARGET}})
    return [
        Task(
            "color",
            f"background toward {COLOR_TARGET}",
            scenes,
            {"background": COLOR_TARGET},
            ("shape", "place", "size"),
            target_rgb=rgb01(COLOR_TARGET),
        ),
        Task(
            "shape",
            f"shape toward {SHAPE_TARGET} (classifier guide)",
            scenes,
            {"shape": SHAPE_TARGET},
            ("color", "background", "place", "size"),
            target_shape=SHAPE_TARGET,
        ),
    ]


def run_demo(out_dir: Path, count: int = 8, steps: int = 50, preset_name: str = DEFAULT_PRESET, seed: int = 0, log=print) -> dict:
    if count < 1 or steps < 1:
        raise SteerError(f"--count and --steps must be at least 1 (got {count} and {steps})")
    out_dir.mkdir(parents=True, exist_ok=True)
    world = experiment.load()
    config = preset(preset_name)
    tasks = demo_tasks(count, seed)
    log(
        f"Sampling {count} prompts unguided, then guided with preset '{preset_name}' toward a {COLOR_TARGET} background and toward "
        f"a {SHAPE_TARGET} ({steps} DDIM steps)..."
    )
    unguided = experiment.generate(world, tasks[0], config.with_strength(0.0), steps, seed=seed)
    rows = {}
    for task in tasks:
        rows[f"unguided, read for: {task.description}"] = experiment.score(world, task, unguided)
    guided = {}
    for task in tasks:
        guided[task.name] = experiment.generate(world, task, config, steps, seed=seed)
        rows[f"guided ({preset_name}): {task.description}"] = experiment.score(world, task, guided[task.name])
    grid_path = out_dir / "world_grid.png"
    _grid(
        [
            ("unguided", unguided.images),
            (f"{COLOR_TARGET} (colour loss)", guided["color"].images),
            (f"{SHAPE_TARGET} (classifier)", guided["shape"].images),
        ]
    ).save(grid_path)
    npz_path = out_dir / "samples.npz"
    _save_samples(npz_path, tasks, unguided, guided)
    log(_table(rows))
    log(f"grid: {grid_path}\nsamples: {npz_path}")
    return {"scores": rows, "grid": grid_path, "samples": npz_path}


def _save_samples(path: Path, tasks: list[Task], unguided, guided: dict) -> None:
    prompts = tasks[0].prompts
    n = len(prompts)
    nan3 = np.full((n, 3), np.nan, dtype=np.float32)
    color_rgb = np.tile(np.asarray(tasks[0].target_rgb, dtype=np.float32), (n, 1))
    np.savez(
        path,
        images=torch.cat([unguided.images, guided["color"].images, guided["shape"].images]).permute(0, 2, 3, 1).numpy().astype(np.float32),
        prompt=np.array(prompts * 3),
        guided=np.array([False] * n + [True] * 2 * n),
        target_rgb=np.concatenate([nan3, color_rgb, nan3]),
        target_shape=np.array([""] * 2 * n + [SHAPE_TARGET] * n),
    )


def _table(rows: dict) -> str:
    lines = ["| | judge hit-rate | prompt kept (untouched attributes) | s / sample |", "| --- | --- | --- | --- |"]
    for label, s in rows.items():
        lines.append(f"| {label} | {s.hit_rate:.0%} | {s.keeping:.0%} | {s.seconds_per_sample:.3f} |")
    return "\n".join(lines)


def _grid(rows: list[tuple[str, torch.Tensor]]) -> Image.Image:
    label_width, header = 150, 8
    columns = rows[0][1].shape[0]
    canvas = Image.new("RGB", (label_width + columns * CELL, header + len(rows) * CELL), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = header + r * CELL
        draw.text((6, top + CELL // 2 - 6), label, fill=(0, 0, 0))
        pixels = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        for c in range(columns):
            canvas.paste(Image.fromarray(pixels[c]).resize((CELL, CELL), Image.Resampling.NEAREST), (label_width + c * CELL, top))
    return canvas
