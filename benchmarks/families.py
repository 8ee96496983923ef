"""`steer bench families`: the time of a guided step relative to an unguided one, per model family, in ComfyUI.

Each family is its real comfy.model_base class with the reduced config of random_families.py (the models the
family tests run), at the test size (64 px), batch 1, float32 on this machine's device. Per family, one
unguided euler run and the guided runs (mpgd: x̂0 shortcut; paper's gradient path through the model with and
without gradient checkpointing, no augmentation or time travel so that each step is one guided step) are timed
in rounds, interleaved, and the median of the rounds is kept, so every ratio is measured side by side.
Peak memory is read on CUDA only (torch.cuda.max_memory_allocated); on a CPU the column says so.

These are the reduced models with the families' full-size VAEs: at 64 px the VAE decode and its backward pass
dwarf the tiny model, so the ratios are far above a full-size checkpoint's (for SD1.5 at full size see
`steer bench`, benchmarks/results/guidance_cost.md). What the table shows per family is the code path's
cost in milliseconds and how checkpointing changes it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import torch

from .clock import synchronize
from .guidance_cost_setup import comfy_sd

RESULTS = Path(__file__).with_name("results")
SIDE = 64
MODES = ("unguided", "mpgd", "through model", "through model, no checkpointing")


def _sampler(mode: str, vae):
    import comfy.samplers

    from ..guidance.augment import AugmentConfig
    from ..guidance.config import TimeTravel, preset
    from ..guidance.losses.color import TargetColorLoss
    from ..guidance.trace import GuidanceTrace
    from ..nodes.comfy_guidance import make_sampler

    if mode == "unguided":
        return comfy.samplers.sampler_object("euler")
    if mode == "mpgd":
        config = dataclasses.replace(preset("mpgd"), window=preset("dps").window)
    else:
        config = dataclasses.replace(preset("paper"), augment=AugmentConfig(copies=0), time_travel=TimeTravel(repeats=1))
    return make_sampler(
        vae, TargetColorLoss((1.0, 0.0, 0.0)), config, GuidanceTrace(), checkpointing=mode != "through model, no checkpointing"
    )


def _time_run(family: str, model, vae, mode: str, steps: int) -> tuple[float, int | None]:
    import comfy.samplers

    from . import random_families

    spec = random_families.FAMILIES[family]
    positive, negative = random_families.conditioning(family, 1), random_families.conditioning(family, 2)
    cfg = 3.0
    if family.startswith("flux"):
        cfg = 1.0
        if family == "flux_dev":
            positive = [[positive[0][0], {**positive[0][1], "guidance": 3.5}]]
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    scheduler = "normal" if family == "sdxl" else "simple"
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    shape = (1, spec.latent_channels, SIDE // 8, SIDE // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    device = model.load_device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    began = time.perf_counter()
    guider.sample(noise, torch.zeros(shape), _sampler(mode, vae), sigmas, seed=1)
    synchronize(device)
    return (time.perf_counter() - began) / steps, (torch.cuda.max_memory_allocated() if cuda else None)


def run(steps: int, rounds: int, families: list[str], log=print) -> list[dict]:
    comfy_sd()
    from . import random_families

    rows = []
    for family in families:
        with torch.inference_mode():
            model = random_families.build_model(family)
            vae = random_families.build_vae(random_families.FAMILIES[family].latent_channels)
            _time_run(family, model, vae, "through model", 2)  # warm-up: first-call allocations and lazy imports
            times, peaks = {mode: [] for mode in MODES}, {}
            for _ in range(rounds):
                for mode in MODES:
                    seconds, peak = _time_run(family, model, vae, mode, steps)
                    times[mode].append(seconds)
                    peaks[mode] = peak
        median = {mode: statistics.median(values) for mode, values in times.items()}
        row = {
            "family": family,
            "seconds_per_step": median,
            "ratio": {mode: median[mode] / median["unguided"] for mode in MODES},
            "peak_bytes": peaks,
        }
        rows.append(row)
        log(
            f"{family}: "
            + ", ".join(f"{mode} {row['ratio'][mode]:.2f}x" for mode in MODES[1:])
            + f" (unguided {median['unguided'] * 1000:.0f} ms/step)"
        )
    return rows


def markdown(rows: list[dict], steps: int, rounds: int) -> str:
    """The table, per step; ratios to the unguided euler step of the same model."""
    device = "CUDA" if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        "# Guided step time per model family",
        "",
        f"`steer bench families`: reduced-config models of each family's own ComfyUI class, {SIDE} px, batch 1, float32, "
        f"{steps} steps, median of {rounds} interleaved rounds, on {device}. Ratios are to the unguided euler step of the same model.",
        "",
        "The models are tiny and their VAEs full-size, so the VAE decoder's forward and backward pass make up nearly all of a guided "
        "step here, and the ratios are far above a full-size checkpoint's (SD1.5 at full size: benchmarks/results/guidance_cost.md). "
        "Through the model costs little more than the x̂0 shortcut at this size; checkpointing adds its recomputation.",
        "",
        "| family | unguided | mpgd | through the model | through the model, no checkpointing | peak memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        peak = row["peak_bytes"].get("through model")
        peak_text = f"{peak / 2**20:.0f} MiB" if peak else "not measured (CPU)"
        ratio = row["ratio"]
        ms = {mode: row["seconds_per_step"][mode] * 1000 for mode in MODES}
        cells = [f"{ms[mode]:.0f} ms ({ratio[mode]:.0f}×)" for mode in MODES[1:]]
        lines.append(f"| {row['family']} | {ms['unguided']:.1f} ms | {' | '.join(cells)} | {peak_text} |")
    return "\n".join(lines) + "\n"


def execute(args) -> int:
    from ..safe_files import StagedFiles
    from . import random_families

    families = args.families or list(random_families.FAMILIES)
    unknown = [f for f in families if f not in random_families.FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {', '.join(random_families.FAMILIES)}")
    rows = run(args.steps, args.rounds, families)
    out = Path(args.out) if args.out else RESULTS
    with StagedFiles() as files:
        files.bytes(out / "families.md", markdown(rows, args.steps, args.rounds).encode())
        files.json(out / "families.json", {"steps": args.steps, "rounds": args.rounds, "side": SIDE, "rows": rows})
    print(f"wrote {out / 'families.md'} and families.json")
    return 0
