"""`steer bench`'s table: ratios of the measured times and peaks, their targets and floors."""

from __future__ import annotations

import statistics

from ..guidance.config import DEFAULT_PRESET
from .guidance_cost_modes import AUGMENT_COPIES, MEMORY_MODES, MODES


def _median_ratio(times, name, baseline="unguided") -> float:
    return statistics.median(times[name]) / statistics.median(times[baseline])


def build_rows(times: dict, memory: dict | None, training: dict | None, floor: dict | None = None) -> list[dict]:
    floor = floor or {}

    def row(mode, ratio, target, kind="time ratio to an unguided CFG step", lower_is_better=True, note="", floor_key=None):
        met = None if ratio is None or target is None else (ratio <= target if lower_is_better else ratio >= target)
        bound = floor.get(floor_key)
        return {
            "mode": mode,
            "measure": kind,
            "ratio": None if ratio is None else round(ratio, 3),
            "target": target,
            "met": met,
            "floor": None if bound is None else round(bound, 3),
            "note": note,
        }

    rows = [
        row(MODES["unguided"].name, 1.0, 1.0, note=f"{statistics.median(times['unguided']):.2f} s/step"),
        row(MODES["through_positive"].name, _median_ratio(times, "through_positive"), 3.0, floor_key="through_positive"),
        row(MODES["unguided_clone"].name, _median_ratio(times, "unguided_clone"), None, note="part of every through-the-model step"),
        row(MODES["through_combined"].name, _median_ratio(times, "through_combined"), 3.5, floor_key="through_combined"),
        row(MODES["x0_vae"].name, _median_ratio(times, "x0_vae"), 1.8, floor_key="x0_vae"),
        row(MODES["x0_taesd"].name, _median_ratio(times, "x0_taesd"), 1.15, floor_key="x0_taesd"),
        row(
            f"random augmentation |T| = {AUGMENT_COPIES}, through the model",
            _median_ratio(times, "through_positive_aug", "through_positive") - 1,
            0.10,
            kind="extra time over the same step without it",
            floor_key="augmentation_through_model",
        ),
        row(
            f"random augmentation |T| = {AUGMENT_COPIES}, x0 shortcut + TAESD",
            _median_ratio(times, "x0_taesd_aug", "x0_taesd") - 1,
            0.10,
            kind="extra time over the same step without it",
            floor_key="augmentation_x0_taesd",
        ),
        row(
            "checkpointing, through the model",
            _median_ratio(times, "through_positive", "through_positive_nockpt") - 1,
            None,
            kind="extra time over the same step without it",
        ),
        row(
            "checkpointing, x0 shortcut",
            _median_ratio(times, "x0_vae", "x0_vae_nockpt") - 1,
            None,
            kind="extra time over the same step without it",
        ),
        row(
            f"Steer's default ({DEFAULT_PRESET}) over the naive reference",
            _median_ratio(times, "naive", "default"),
            None,
            kind="speed-up",
            lower_is_better=False,
        ),
        row(
            f"Steer's paper method (positive branch, batched |T| = {AUGMENT_COPIES}) over the naive reference",
            _median_ratio(times, "naive", "through_positive_aug"),
            None,
            kind="speed-up",
            lower_is_better=False,
        ),
    ]
    if memory:
        base = memory["unguided"]
        for name in MEMORY_MODES[1:]:
            target = 2.0 if MODES[name].checkpointing else None
            rows.append(
                row(
                    MODES[name].name,
                    memory[name] / base,
                    target,
                    kind="peak memory over unguided",
                    note=f"{memory[name]:.0f} MiB vs {base:.0f} MiB",
                )
            )
    if training:
        rows.append(
            row("AttnDreamBooth step over a plain diffusion-loss step (tiny test checkpoint)", training["time"], 1.15, kind="time ratio")
        )
        if training["memory"] is not None:
            rows.append(
                row(
                    "AttnDreamBooth step over a plain diffusion-loss step (tiny test checkpoint)",
                    training["memory"],
                    1.15,
                    kind="peak memory ratio",
                )
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| Mode | Measure | Ratio | Floor | Target | Met |", "| --- | --- | --- | --- | --- | --- |"]

    def number(value, measure):
        if value is None:
            return "—"
        return f"{value * 100:+.1f} %" if measure.startswith("extra") else f"{value:.2f}"

    for r in rows:
        ratio, bound = number(r["ratio"], r["measure"]), number(r.get("floor"), r["measure"])
        target = (
            "—" if r["target"] is None else (f"≤ {r['target'] * 100:.0f} %" if r["measure"].startswith("extra") else f"≤ {r['target']}")
        )
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['mode']}{note} | {r['measure']} | {ratio} | {bound} | {target} | {met} |")
    return "\n".join(lines)
