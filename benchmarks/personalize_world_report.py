"""The personalization benchmark's records as a table, an identity-versus-fidelity plot and verdicts.

The verdict rules were fixed before the first full run:
- the paper's claim (balance) is REPRODUCED when AttnDreamBooth's identity and its prompt
  fidelity are each within MARGIN of the better of Textual Inversion and DreamBooth on that
  axis, and the trade-off it resolves is there (TI obeys the prompt more than DreamBooth does,
  DreamBooth keeps the identity better than TI does);
- a component (the regularizer, stage 2) HELPS when the official plan's balance, the mean of
  identity and fidelity, beats the ablation's by more than two standard errors of the paired
  differences over (concept, seed); HURTS when it loses by as much; else no measurable effect.
Fidelity is the mean over the five prompt kinds. Because the base model itself draws neither
places nor pairs (it was trained on one shape per scene and ignores place words), the table
also gives fidelity over the kinds the untrained base model obeys at least half the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .personalize_world_methods import (
    ATTNDREAMBOOTH,
    BASE,
    DREAMBOOTH,
    KINDS,
    METHODS,
    NO_REGULARIZER_ABLATION,
    NO_STAGE2_ABLATION,
    SINGLE_SUBJECT_KINDS,
    TEXTUAL_INVERSION,
)

MARGIN = 0.05
BASE_ABLE = 0.5  # a kind counts as within the base model's reach when it obeys it this often


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _median(values) -> float | None:
    return float(np.median(values)) if values else None


def record_scores(record: dict) -> dict:
    kinds = record["kinds"]
    scores = {f"obeyed_{kind}": _mean(kinds[kind]["obeyed"]) for kind in KINDS}
    for key in ("identity", "outline", "colour", "judge_cosine"):
        scores[key] = _mean([v for kind in SINGLE_SUBJECT_KINDS for v in kinds[kind][key]])
    scores["fidelity"] = _mean([scores[f"obeyed_{kind}"] for kind in KINDS])
    scores["background_leak"] = _mean(kinds["background"].get("background_leak", []))
    scores["other_shape_leak"] = _mean(kinds["second"].get("other_shape_leak", [])) if kinds["second"].get("other_shape_leak") else None
    scores["balance"] = (scores["identity"] + scores["fidelity"]) / 2
    return scores


@dataclass
class Summary:
    method: str
    means: dict  # score -> mean over (concept, seed)
    seed_spread: dict  # score -> std over seeds of the per-seed mean over concepts
    standard_error: dict  # score -> s.e. over (concept, seed)
    per_pair: dict  # (concept, seed) -> scores
    train_seconds: float  # median over trainings
    peak_mib: float | None  # median over trainings, on CUDA only
    trainable_mib: float | None


def summarize(records: list[dict]) -> dict[str, Summary]:
    by_method: dict[str, dict] = {}
    for record in records:
        by_method.setdefault(record["method"], {})[(record["concept"], record["seed"])] = record
    out = {}
    for method in [m for m in METHODS if m in by_method]:
        pairs = {key: record_scores(record) for key, record in by_method[method].items()}
        names = next(iter(pairs.values())).keys()
        means, spread, error = {}, {}, {}
        seeds = sorted({seed for _, seed in pairs})
        for name in names:
            values = [s[name] for s in pairs.values() if s[name] is not None and not math.isnan(s[name])]
            means[name] = _mean(values)
            error[name] = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
            per_seed = [_mean([s[name] for (c, sd), s in pairs.items() if sd == seed and s[name] is not None]) for seed in seeds]
            spread[name] = float(np.std(per_seed)) if len(per_seed) > 1 else float("nan")
        records_of = by_method[method].values()
        seconds = [r["train_seconds"] for r in records_of if r["train_seconds"]]
        peaks = [r["peak_mib"] for r in records_of if r["peak_mib"] is not None and r.get("device") == "cuda"]
        states = [r["trainable_mib"] for r in records_of if r.get("trainable_mib") is not None]
        # Medians: a training slowed by another job on the machine does not move them.
        out[method] = Summary(method, means, spread, error, pairs, _median(seconds) or 0.0, _median(peaks), _median(states))
    return out


def base_able_kinds(summaries: dict[str, Summary]) -> list[str]:
    base = summaries.get(BASE)
    return [kind for kind in KINDS if base is not None and base.means[f"obeyed_{kind}"] >= BASE_ABLE]


def paired(summaries: dict[str, Summary], a: str, b: str, score: str = "balance") -> tuple[float, float, int]:
    """Mean and standard error of a − b over the (concept, seed) pairs both have."""
    keys = sorted(set(summaries[a].per_pair) & set(summaries[b].per_pair))
    diffs = [summaries[a].per_pair[k][score] - summaries[b].per_pair[k][score] for k in keys]
    if len(diffs) < 2:
        return _mean(diffs), float("nan"), len(diffs)
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))), len(diffs)


def verdicts(summaries: dict[str, Summary]) -> list[dict]:
    out = []
    needed = (TEXTUAL_INVERSION, DREAMBOOTH, ATTNDREAMBOOTH)
    if all(m in summaries for m in needed):
        ti, db, adb = (summaries[m].means for m in needed)
        trade_off = ti["fidelity"] > db["fidelity"] and db["identity"] > ti["identity"]
        best_identity, best_fidelity = max(ti["identity"], db["identity"]), max(ti["fidelity"], db["fidelity"])
        keeps_identity = adb["identity"] >= best_identity - MARGIN
        keeps_fidelity = adb["fidelity"] >= best_fidelity - MARGIN
        reproduced = trade_off and keeps_identity and keeps_fidelity
        over_db = paired(summaries, ATTNDREAMBOOTH, DREAMBOOTH, "identity")
        over_ti = paired(summaries, ATTNDREAMBOOTH, TEXTUAL_INVERSION, "fidelity")
        out.append(
            {
                "claim": "AttnDreamBooth balances identity and prompt fidelity where TI loses identity and DreamBooth the prompt",
                "reproduced": reproduced,
                "line": (
                    f"{'REPRODUCED' if reproduced else 'NOT reproduced'}: identity / fidelity TI {ti['identity']:.2f} / "
                    f"{ti['fidelity']:.2f}, DreamBooth {db['identity']:.2f} / {db['fidelity']:.2f}, AttnDreamBooth "
                    f"{adb['identity']:.2f} / {adb['fidelity']:.2f}; the TI-DreamBooth trade-off is "
                    f"{'there' if trade_off else 'not there'}; AttnDreamBooth is {'within' if keeps_identity else 'not within'} "
                    f"{MARGIN} of the best identity and {'within' if keeps_fidelity else 'not within'} {MARGIN} of the best fidelity "
                    f"(paired over {over_db[2]} concept-seeds: identity minus DreamBooth's {over_db[0]:+.3f} ± {over_db[1]:.3f} s.e., "
                    f"fidelity minus TI's {over_ti[0]:+.3f} ± {over_ti[1]:.3f})"
                ),
            }
        )
    for ablation, component in ((NO_REGULARIZER_ABLATION, "the cross-attention regularizer"), (NO_STAGE2_ABLATION, "stage 2")):
        if ATTNDREAMBOOTH not in summaries or ablation not in summaries:
            continue
        mean, error, count = paired(summaries, ATTNDREAMBOOTH, ablation)
        identity = paired(summaries, ATTNDREAMBOOTH, ablation, "identity")[0]
        fidelity = paired(summaries, ATTNDREAMBOOTH, ablation, "fidelity")[0]
        effect = "HELPS" if mean > 2 * error else "HURTS" if mean < -2 * error else "no measurable effect"
        out.append(
            {
                "claim": f"{component} helps",
                "reproduced": effect == "HELPS",
                "line": (
                    f"{component}: {effect} (balance with it minus without {mean:+.3f} ± {error:.3f} s.e. over {count} concept-seed "
                    f"pairs; identity {identity:+.3f}, fidelity {fidelity:+.3f})"
                ),
            }
        )
    trained = {m: s for m, s in summaries.items() if m != BASE}
    if trained:
        best = max(trained.values(), key=lambda s: s.means["balance"])
        out.append(
            {
                "claim": "the official plan is the best balance on this model",
                "reproduced": best.method == ATTNDREAMBOOTH,
                "line": f"best balance: {best.method} ({best.means['balance']:.3f})"
                + (
                    ""
                    if best.method == ATTNDREAMBOOTH or ATTNDREAMBOOTH not in trained
                    else f"; the official plan has {trained[ATTNDREAMBOOTH].means['balance']:.3f}"
                ),
            }
        )
    return out


def _cell(summary: Summary, name: str, digits: int = 2) -> str:
    value = summary.means.get(name)
    if value is None or math.isnan(value):
        return "–"
    spread = summary.seed_spread.get(name)
    return f"{value:.{digits}f}" + (f" ±{spread:.{digits}f}" if spread is not None and not math.isnan(spread) else "")


def markdown(summaries: dict[str, Summary], verdict_rows: list[dict], header: str) -> str:
    able = base_able_kinds(summaries)
    lines = [header, ""]
    lines.append(
        "| method | identity | outline IoU | colour | fidelity | fidelity ("
        + ", ".join(able)
        + ") | "
        + " | ".join(KINDS)
        + " | leak: background | leak: other shape | train s (median) | trained state MiB | peak MiB (CUDA) |"
    )
    lines.append("|" + "---|" * (10 + len(KINDS)))
    for summary in summaries.values():
        able_fidelity = _mean([summary.means[f"obeyed_{k}"] for k in able]) if able else float("nan")
        peak = "–" if summary.peak_mib is None else f"{summary.peak_mib:.0f}"
        state = "–" if summary.trainable_mib is None else f"{summary.trainable_mib:.3g}"
        lines.append(
            f"| {summary.method} | {_cell(summary, 'identity')} | {_cell(summary, 'outline')} | {_cell(summary, 'colour')} | "
            f"{_cell(summary, 'fidelity')} | {able_fidelity:.2f} | "
            + " | ".join(f"{summary.means[f'obeyed_{k}']:.2f}" for k in KINDS)
            + f" | {_cell(summary, 'background_leak')} | {_cell(summary, 'other_shape_leak')} | "
            + f"{summary.train_seconds:.0f} | {state} | {peak} |"
        )
    lines += [
        "",
        "± is the spread (standard deviation) over training seeds of the mean over concepts. Trained state: float32 weights, "
        "gradients and AdamW moments of the largest stage's parameters. Peak memory is CUDA's allocator peak, measured on a GPU "
        "only.",
        "",
        "Verdicts:",
        "",
    ]
    lines += [f"- {row['line']}" for row in verdict_rows]
    lines += ["", "Methods:", ""]
    lines += [f"- `{name}`: {METHODS[name].description}" for name in summaries]
    return "\n".join(lines)


def plot(summaries: dict[str, Summary], width: int = 720, height: int = 540) -> np.ndarray:
    """(H, W, 3) float: identity (x) against fidelity (y), one dot per method with ±1 s.e. bars."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 70, 40, width - 30, height - 60
    xs = [s.means["identity"] for s in summaries.values()]
    ys = [s.means["fidelity"] for s in summaries.values()]
    x0, x1 = math.floor(min(xs) * 20 - 1) / 20, math.ceil(max(xs) * 20 + 1) / 20
    y0, y1 = math.floor(min(ys) * 20 - 1) / 20, math.ceil(max(ys) * 20 + 1) / 20

    def at(x, y):
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    for k in range(int(round((x1 - x0) / 0.05)) + 1):
        x = x0 + 0.05 * k
        px, _ = at(x, y0)
        draw.line((px, bottom, px, bottom + 5), fill=(0, 0, 0))
        draw.text((px - 12, bottom + 8), f"{x:.2f}", fill=(0, 0, 0))
    for k in range(int(round((y1 - y0) / 0.05)) + 1):
        y = y0 + 0.05 * k
        _, py = at(x0, y)
        draw.line((left - 5, py, left, py), fill=(0, 0, 0))
        draw.text((left - 40, py - 6), f"{y:.2f}", fill=(0, 0, 0))
    draw.text(((left + right) / 2 - 90, height - 30), "identity (outline IoU and colour, from pixels)", fill=(0, 0, 0))
    draw.text((10, 12), "prompt fidelity (share of prompted attributes obeyed); bars: ±1 s.e. over concept-seeds", fill=(0, 0, 0))
    placed: list[tuple[float, float, float, float]] = []  # label boxes drawn so far, so labels do not overlap
    for summary in summaries.values():
        x, y = summary.means["identity"], summary.means["fidelity"]
        ex, ey = summary.standard_error["identity"], summary.standard_error["fidelity"]
        colour = (200, 40, 40) if summary.method.startswith(("attndreambooth", "adb")) else (40, 80, 200)
        if summary.method == BASE:
            colour = (120, 120, 120)
        px, py = at(x, y)
        if not math.isnan(ex):
            draw.line((*at(x - ex, y), *at(x + ex, y)), fill=colour)
            draw.line((*at(x, y - ey), *at(x, y + ey)), fill=colour)
        draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=colour)
        box = list(draw.textbbox((px + 6, py - 12), summary.method))
        while any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            box[1] += 12
            box[3] += 12
        placed.append(tuple(box))
        draw.text((box[0], box[1]), summary.method, fill=colour)
    return np.asarray(image, dtype=np.float32) / 255.0
