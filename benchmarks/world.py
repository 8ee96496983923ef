"""`steer bench world`: loss guidance in latent space, on the world text-to-image model.

The same engine the ComfyUI nodes use runs with the world's UNet (CFG on, gradient through
the prompt's branch) and its VAE decoder. Four tasks, each a target the prompt does not give
(world/experiment.py); every sample is read by the judges, which share nothing with the guides.
Per method and step count: judge hit-rate per task, prompt-keeping (the attributes the target
leaves alone, read as prompted), the guide−judge gap on the tasks steered by a model, realism
(Fréchet distance of judge features to held-out real renders, all tasks pooled) and time.
Claims (Shen et al. 2024) are judged on the model-guided tasks. Nothing is tuned here.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from ..digits.model import frechet_distance
from ..errors import SteerError
from ..guidance.config import DEFAULT_PRESET, PRESETS
from ..world import experiment
from .methods import PAPER_MINUS_AUGMENTATION, PAPER_MINUS_POLYAK, PAPER_MINUS_TIME_TRAVEL, PAPER_SCALED_AUGMENTATION, standard_methods

MODEL_GUIDED = ("shape", "text", "reference")


def methods() -> dict:
    return standard_methods(scaled_augmentation=True)


def run_method(world, tasks, config, steps: int, seed: int, decoder: str = "vae") -> dict:
    per_task, features, seconds = {}, [], 0.0
    for task in tasks:
        generated = experiment.generate(world, task, config, steps, seed=seed, decoder=decoder)
        scores = experiment.score(world, task, generated)
        per_task[task.name] = scores
        features.append(scores.features)
        seconds += generated.seconds
    guided = [per_task[t].guide_hit_rate for t in MODEL_GUIDED if t in per_task]
    judged = [per_task[t].hit_rate for t in MODEL_GUIDED if t in per_task]
    count = sum(len(t.scenes) for t in tasks)
    return {
        "hit_rate": {name: s.hit_rate for name, s in per_task.items()},
        "mean_hit_rate": float(np.mean([s.hit_rate for s in per_task.values()])),
        "keeping": float(np.mean([s.keeping for s in per_task.values()])),
        "guide_judge_gap": float(np.mean(guided) - np.mean(judged)) if guided else None,
        "frechet": frechet_distance(torch.cat(features), world.real_features()),
        "seconds_per_sample": seconds / count,
    }


def run(count: int, step_counts: list[int], seed: int, only: list[str] | None = None, log=print) -> list[dict]:
    world = experiment.load()
    tasks = experiment.make_tasks(count, seed)
    chosen = methods()
    if only:
        unknown = [m for m in only if m not in chosen]
        if unknown:
            raise SteerError(f"unknown method(s) {unknown}; choose from {list(chosen)}")
        chosen = {"unguided": chosen["unguided"], **{m: chosen[m] for m in only}}
    rows = []
    for steps in step_counts:
        for name, config in chosen.items():
            start = time.perf_counter()
            row = {"method": name, "steps": steps, "decoder": "vae", **run_method(world, tasks, config, steps, seed)}
            rows.append(row)
            log(_line(row) + f"  ({time.perf_counter() - start:.0f} s)")
        default = PRESETS[DEFAULT_PRESET]
        row = {
            "method": f"{DEFAULT_PRESET} (default), tiny decoder",
            "steps": steps,
            "decoder": "tiny",
            **run_method(world, tasks, default, steps, seed, decoder="tiny"),
        }
        rows.append(row)
        log(_line(row))
        if "paper" in chosen:
            row = {
                "method": "paper, tiny decoder",
                "steps": steps,
                "decoder": "tiny",
                **run_method(world, tasks, PRESETS["paper"], steps, seed, decoder="tiny"),
            }
            rows.append(row)
            log(_line(row))
    _add_ratios(rows)
    return rows


def _line(row: dict) -> str:
    hits = " ".join(f"{k} {v:4.0%}" for k, v in row["hit_rate"].items())
    return (
        f"  {row['steps']:>3} steps  {row['method']:<38} {hits}  keep {row['keeping']:.0%}  Fréchet {row['frechet']:.3f}  "
        f"{row['seconds_per_sample']:.3f} s/sample"
    )


def _add_ratios(rows: list[dict]) -> None:
    for row in rows:
        base = next(r for r in rows if r["method"] == "unguided" and r["steps"] == row["steps"])
        row["frechet_ratio"] = row["frechet"] / base["frechet"] if base["frechet"] > 0 else float("nan")
        row["time_ratio"] = row["seconds_per_sample"] / base["seconds_per_sample"]
        row["keeping_change"] = row["keeping"] - base["keeping"]


def _get(rows, method, steps, key):
    return next(r[key] for r in rows if r["method"] == method and r["steps"] == steps)


def _model_guided_hit(rows, method, steps) -> float:
    hits = _get(rows, method, steps, "hit_rate")
    return float(np.mean([hits[t] for t in MODEL_GUIDED]))


def claims(rows: list[dict]) -> list[dict]:
    step_counts = sorted({r["steps"] for r in rows})
    out = []
    for steps in step_counts:
        for with_name, label in (("paper", "the paper's policy"), (PAPER_SCALED_AUGMENTATION, "a policy scaled to 32 px")):
            gap, gap_without = (
                _get(rows, with_name, steps, "guide_judge_gap"),
                _get(rows, PAPER_MINUS_AUGMENTATION, steps, "guide_judge_gap"),
            )
            hit, hit_without = _model_guided_hit(rows, with_name, steps), _model_guided_hit(rows, PAPER_MINUS_AUGMENTATION, steps)
            out.append(
                {
                    "claim": f"random augmentation fights adversarial gradients ({label})",
                    "steps": steps,
                    "reproduced": gap < gap_without and hit >= hit_without,
                    "numbers": f"guide−judge gap {gap:+.1%} with vs {gap_without:+.1%} without; judge hit-rate {hit:.1%} vs "
                    f"{hit_without:.1%} (shape, text, reference tasks)",
                }
            )
    few = step_counts[0]
    polyak, freedom_step = _get(rows, "paper", few, "mean_hit_rate"), _get(rows, PAPER_MINUS_POLYAK, few, "mean_hit_rate")
    out.append(
        {
            "claim": "the Polyak step converges in fewer steps",
            "steps": few,
            "reproduced": polyak > freedom_step,
            "numbers": f"judge hit-rate at {few} steps, all tasks: {polyak:.1%} with Polyak vs {freedom_step:.1%} with FreeDoM's step",
        }
    )
    for steps in step_counts:
        tt, no_tt = _get(rows, "paper", steps, "mean_hit_rate"), _get(rows, PAPER_MINUS_TIME_TRAVEL, steps, "mean_hit_rate")
        out.append(
            {
                "claim": "time travel helps",
                "steps": steps,
                "reproduced": tt > no_tt,
                "numbers": f"judge hit-rate, all tasks: {tt:.1%} with vs {no_tt:.1%} without",
            }
        )
    return out


def goal(rows: list[dict], steps: int = 50) -> dict | None:
    """The default preset's goal: hit-rate >= 90 %, keeping within 5 points, realism within 1.5x unguided."""
    name = DEFAULT_PRESET
    if not any(r["method"] == name and r["steps"] == steps for r in rows):
        return None
    hit, keep, realism = (_get(rows, name, steps, k) for k in ("mean_hit_rate", "keeping_change", "frechet_ratio"))
    return {
        "preset": name,
        "steps": steps,
        "hit_rate": hit,
        "keeping_change": keep,
        "frechet_ratio": realism,
        "met": hit >= 0.9 and keep >= -0.05 and realism <= 1.5,
    }


def markdown(rows: list[dict], claim_rows: list[dict], goal_row: dict | None) -> str:
    tasks = list(rows[0]["hit_rate"])
    lines = [
        "| steps | method | "
        + " | ".join(f"hit: {t}" for t in tasks)
        + " | mean hit | keeping (Δ vs unguided) | guide − judge | Fréchet (× unguided) | s / sample (× unguided) |",
        "| --- | --- | " + "--- | " * len(tasks) + "--- | --- | --- | --- | --- |",
    ]
    for r in rows:
        gap = "—" if r["guide_judge_gap"] is None else f"{r['guide_judge_gap']:+.1%}"
        lines.append(
            f"| {r['steps']} | {r['method']} | "
            + " | ".join(f"{r['hit_rate'][t]:.0%}" for t in tasks)
            + f" | {r['mean_hit_rate']:.1%} | {r['keeping']:.1%} ({r['keeping_change']:+.1%}) | {gap} | "
            f"{r['frechet']:.3f} ({r['frechet_ratio']:.2f}×) | "
            f"{r['seconds_per_sample']:.3f} ({r['time_ratio']:.2f}×) |"
        )
    lines.append("")
    for c in claim_rows:
        lines.append(f"- {'REPRODUCED' if c['reproduced'] else 'NOT reproduced'}: {c['claim']} ({c['steps']} steps): {c['numbers']}")
    if goal_row is not None:
        lines.append(
            f"- Default preset `{goal_row['preset']}` at {goal_row['steps']} steps: hit-rate {goal_row['hit_rate']:.1%} (goal ≥ 90 %), "
            f"keeping {goal_row['keeping_change']:+.1%} vs unguided (goal ≥ −5 points), Fréchet {goal_row['frechet_ratio']:.2f}× "
            "unguided (goal ≤ 1.5×): " + ("goal MET" if goal_row["met"] else "goal NOT met")
        )
    return "\n".join(lines)


def execute(args) -> int:
    step_counts = [int(s) for s in args.steps.split(",") if s.strip()]
    only = [m.strip() for m in args.methods.split(",")] if args.methods else None
    print(
        f"world benchmark: {args.per_task} prompts per task, 4 tasks, steps {step_counts}, CFG {experiment.DEFAULT_CFG}, torch "
        f"threads {torch.get_num_threads()}"
    )
    rows = run(args.per_task, step_counts, args.seed, only=only)
    claim_rows = claims(rows) if not only else []
    goal_row = goal(rows)
    table = markdown(rows, claim_rows, goal_row)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "claims": claim_rows, "goal": goal_row}, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0
