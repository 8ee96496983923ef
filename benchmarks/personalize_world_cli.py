"""`steer bench personalize`: options in, the run, and its files out (Markdown, JSON, plot, grid, records)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import SteerError
from ..personalize.plot import png_bytes
from ..safe_files import StagedFiles
from ..world.concepts import CONCEPTS, HELDOUT_CONCEPTS
from . import personalize_world, personalize_world_report
from .personalize_world_methods import LR_SCALE, METHODS, Method

QUICK_DIVISOR = 50
NAMES = "personalize_world"


def quick_methods(divisor: int = QUICK_DIVISOR) -> dict[str, Method]:
    """Every method with each stage's steps divided by `divisor` (at least 1 where it had any)."""
    out = {}
    for name, method in METHODS.items():
        if method.plan is not None:
            stages = tuple(replace(s, steps=max(1, s.steps // divisor) if s.steps else 0) for s in method.plan.stages)
            method = replace(method, plan=replace(method.plan, stages=stages))
        out[name] = method
    return out


def _names(text: str | None, known, what: str) -> list[str] | None:
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SteerError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(known)}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SteerError(f"--seeds takes whole numbers separated by commas, e.g. 0,1; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SteerError(f"--seeds needs at least one seed and no repeats, got {text!r}")
    return seeds


def sample_grid(strips: Path, concept: str, seed: int, methods: list[str], scale: int = 3) -> np.ndarray:
    """(H, W, 3) float: one row per method of its images (the first sample of every prompt), labelled."""
    rows = []
    for method in methods:
        strip = np.asarray(Image.open(strips / f"{concept}-{seed}-{method}.png").convert("RGB"), dtype=np.float32) / 255.0
        side = strip.shape[0]
        per_prompt = strip.reshape(side, -1, personalize_world.SAMPLES_PER_PROMPT * side, 3)[:, :, :side]
        rows.append(per_prompt.reshape(side, -1, 3))
    label_width, side = 150, rows[0].shape[0] * scale
    canvas = Image.new("RGB", (label_width + rows[0].shape[1] * scale, side * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (method, row) in enumerate(zip(methods, rows)):
        tile = Image.fromarray((row * 255).round().astype(np.uint8)).resize((row.shape[1] * scale, side), Image.Resampling.NEAREST)
        canvas.paste(tile, (label_width, index * side))
        draw.text((6, index * side + side // 2 - 6), method, fill=(0, 0, 0))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def execute(args) -> int:
    concepts = _names(args.concepts, CONCEPTS, "concept(s)")
    seeds = _seeds(args.seeds)
    catalogue = quick_methods() if args.quick else METHODS
    methods = _names(args.methods, catalogue, "method(s)")
    header = (
        f"# Personalization on the world model: {len(concepts or HELDOUT_CONCEPTS)} held-out concepts x {len(seeds)} training seeds"
        f"{' (QUICK smoke run: steps / ' + str(QUICK_DIVISOR) + ', numbers mean nothing)' if args.quick else ''}\n\n"
        f"Sampling: DDIM {personalize_world.SAMPLING_STEPS} steps, CFG {personalize_world.SAMPLING_CFG}, "
        f"{personalize_world.SAMPLES_PER_PROMPT} samples per prompt, 20 prompts per concept (4 per kind). UNet learning rates "
        f"x{LR_SCALE:g} (the world generator's pre-training rate over Stable Diffusion's); rotation augmentation off. "
        f"CPU threads {torch.get_num_threads()}."
    )
    print(f"steer bench personalize: {len(methods or catalogue)} methods, {len(concepts or HELDOUT_CONCEPTS)} concepts, seeds {seeds}")
    out = args.out
    with tempfile.TemporaryDirectory() as scratch:
        strips = (out / "personalize_world_strips") if out else Path(scratch)
        raw = out / f"{NAMES}.records.jsonl" if out else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
        records = personalize_world.run(concepts, seeds, methods, raw=raw, strips=strips, catalogue=catalogue)
        summaries = personalize_world_report.summarize(records)
        verdict_rows = personalize_world_report.verdicts(summaries)
        table = personalize_world_report.markdown(summaries, verdict_rows, header)
        print(table)
        if out:
            first = (concepts or [HELDOUT_CONCEPTS[0].name])[0]
            summary_json = {
                name: {
                    "means": s.means,
                    "seed_spread": s.seed_spread,
                    "standard_error": s.standard_error,
                    "train_seconds": s.train_seconds,
                    "peak_mib": s.peak_mib,
                    "trainable_mib": s.trainable_mib,
                }
                for name, s in summaries.items()
            }
            with StagedFiles() as files:  # all four or none
                files.bytes(out / f"{NAMES}.md", (table + f"\n\n![identity vs fidelity]({NAMES}.png)\n").encode())
                files.json(out / f"{NAMES}.json", {"summaries": summary_json, "verdicts": verdict_rows})
                files.bytes(out / f"{NAMES}.png", png_bytes(personalize_world_report.plot(summaries)))
                files.bytes(out / f"{NAMES}_samples.png", png_bytes(sample_grid(strips, first, seeds[0], list(summaries))))
            print(f"wrote {out}/{NAMES}.md, .json, .png and _samples.png ({first}, seed {seeds[0]})")
    return 0
