"""`steer bench digits`: the paper's three claims, tested on the embedded digits model.

Every method runs through the same engine; scores come from the *judge*, a classifier of a
different architecture trained on the other half of the data, never used for guidance.
Claims (Shen et al. 2024):
  1. random augmentation fights misaligned (adversarial) gradients: a smaller guide−judge gap
     and a higher judge hit-rate than the same method without it;
  2. the Polyak step converges in fewer steps: a higher judge hit-rate at few steps than the
     same method with FreeDoM's normalised step;
  3. time travel helps: a higher judge hit-rate than the same method without it.
Nothing is tuned here: each method runs at its preset's defaults.
"""

from __future__ import annotations

import json
import time

import torch

from ..digits import experiment
from ..digits import model as digits
from ..errors import SteerError
from ..guidance.config import GuidanceConfig
from .methods import standard_methods


def methods() -> dict[str, GuidanceConfig]:
    return standard_methods(without_augmentation=True)


def run(per_class: int, step_counts: list[int], seed: int, log=print, only: list[str] | None = None) -> list[dict]:
    pretrained = digits.load_pretrained()
    targets = experiment.balanced_targets(per_class)
    chosen = methods()
    if only:
        unknown = [name for name in only if name not in chosen]
        if unknown:
            raise SteerError(f"unknown method(s) {unknown}; choose from {list(chosen)}")
        chosen = {name: chosen[name] for name in only}
    rows = []
    for steps in step_counts:
        for name, config in chosen.items():
            start = time.perf_counter()
            scores = experiment.score(pretrained, experiment.generate(pretrained, targets, config, steps=steps, seed=seed))
            rows.append(
                {
                    "method": name,
                    "steps": steps,
                    "judge_hit_rate": scores.judge_hit_rate,
                    "outsider_hit_rate": scores.outsider_hit_rate,
                    "guide_hit_rate": scores.guide_hit_rate,
                    "guide_judge_gap": scores.guide_judge_gap,
                    "frechet": scores.frechet,
                    "seconds_per_sample": scores.seconds_per_sample,
                }
            )
            log(
                f"  {steps:>3} steps  {name:<32} judge {scores.judge_hit_rate:6.1%}  outsider {scores.outsider_hit_rate:6.1%}  "
                f"guide {scores.guide_hit_rate:6.1%}  "
                f"Fréchet {scores.frechet:7.2f}  ({time.perf_counter() - start:.0f} s)"
            )
    return rows


def claims(rows: list[dict]) -> list[dict]:
    def get(method, steps, key):
        return next(r[key] for r in rows if r["method"] == method and r["steps"] == steps)

    step_counts = sorted({r["steps"] for r in rows})
    few = step_counts[0]
    out = []
    for steps in step_counts:
        gap, gap_without = get("paper", steps, "guide_judge_gap"), get("paper − augmentation", steps, "guide_judge_gap")
        judge, judge_without = get("paper", steps, "judge_hit_rate"), get("paper − augmentation", steps, "judge_hit_rate")
        out.append(
            {
                "claim": "random augmentation fights adversarial gradients",
                "steps": steps,
                "reproduced": gap < gap_without and judge >= judge_without,
                "numbers": f"guide−judge gap {gap:+.1%} with vs {gap_without:+.1%} without; judge {judge:.1%} vs {judge_without:.1%}",
            }
        )
    polyak, freedom_step = get("paper", few, "judge_hit_rate"), get("paper − Polyak (FreeDoM step)", few, "judge_hit_rate")
    out.append(
        {
            "claim": "the Polyak step converges in fewer steps",
            "steps": few,
            "reproduced": polyak > freedom_step,
            "numbers": f"judge at {few} steps: {polyak:.1%} with Polyak vs {freedom_step:.1%} with FreeDoM's step",
        }
    )
    for steps in step_counts:
        tt, no_tt = get("paper", steps, "judge_hit_rate"), get("paper − time travel", steps, "judge_hit_rate")
        out.append(
            {
                "claim": "time travel helps",
                "steps": steps,
                "reproduced": tt > no_tt,
                "numbers": f"judge {tt:.1%} with vs {no_tt:.1%} without",
            }
        )
    # The same two tests on the method without augmentation (harmful here, so it confounds them).
    base = "paper − augmentation"
    polyak, freedom_step = get(base, few, "judge_hit_rate"), get(f"{base} − Polyak (FreeDoM step)", few, "judge_hit_rate")
    polyak_fd, freedom_fd = get(base, few, "frechet"), get(f"{base} − Polyak (FreeDoM step)", few, "frechet")
    out.append(
        {
            "claim": "the Polyak step converges in fewer steps (without augmentation)",
            "steps": few,
            "reproduced": polyak > freedom_step,
            "numbers": f"judge at {few} steps: {polyak:.1%} with Polyak vs {freedom_step:.1%} with FreeDoM's step (Fréchet "
            f"{polyak_fd:.1f} vs {freedom_fd:.1f})",
        }
    )
    for steps in step_counts:
        tt, no_tt = get(base, steps, "judge_hit_rate"), get(f"{base} − time travel", steps, "judge_hit_rate")
        tt_fd, no_tt_fd = get(base, steps, "frechet"), get(f"{base} − time travel", steps, "frechet")
        out.append(
            {
                "claim": "time travel helps (without augmentation)",
                "steps": steps,
                "reproduced": tt > no_tt or (tt == no_tt and tt_fd < no_tt_fd),
                "numbers": f"judge {tt:.1%} with vs {no_tt:.1%} without (Fréchet {tt_fd:.1f} vs {no_tt_fd:.1f})",
            }
        )
    return out


def markdown(rows: list[dict], claim_rows: list[dict]) -> str:
    lines = [
        "| steps | method | judge hit-rate | outsider hit-rate | guide hit-rate | guide − judge | Fréchet (judge features) | s / sample |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['steps']} | {r['method']} | {r['judge_hit_rate']:.1%} | {r['outsider_hit_rate']:.1%} | {r['guide_hit_rate']:.1%} | "
            f"{r['guide_judge_gap']:+.1%} | {r['frechet']:.2f} | {r['seconds_per_sample']:.3f} |"
        )
    lines.append("")
    for c in claim_rows:
        verdict = "REPRODUCED" if c["reproduced"] else "NOT reproduced"
        lines.append(f"- {verdict}: {c['claim']} ({c['steps']} steps): {c['numbers']}")
    return "\n".join(lines)


def execute(args) -> int:
    step_counts = [int(s) for s in args.steps.split(",") if s.strip()]
    print(f"digits benchmark: {args.per_class} samples per digit, steps {step_counts}, torch threads {torch.get_num_threads()}")
    only = [name.strip() for name in args.methods.split(",")] if args.methods else None
    rows = run(args.per_class, step_counts, args.seed, only=only)
    claim_rows = claims(rows) if not only else []
    table = markdown(rows, claim_rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "claims": claim_rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0
