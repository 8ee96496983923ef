"""`steer bench regions`: the verdicts (rules in benchmarks/regions_world.py's docstring), tables, sample grid and files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..personalize.plot import png_bytes
from ..safe_files import StagedFiles

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
NAMES = "regions_world"
# The rules, as numbers (see the docstring of benchmarks/regions_world.py).
MASK_INSIDE_AT_LEAST, MASK_OUTSIDE_AT_MOST = 0.8, 0.25
STRIPE_RISE_AT_LEAST, KEEPING_DROP_AT_MOST, FRECHET_AT_MOST = 0.25, 0.05, 1.5
BACKGROUND_DISTANCE_AT_MOST, LAYOUT_DROP_AT_MOST = 0.5, 0.05
CELL = 64
SLACK = 1e-9  # a value exactly at a rule's bound passes despite float rounding


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else math.nan


def _find(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _presets(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["preset"] for r in rows if r["preset"]))


def images_of(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Takes each row's first samples out of it (JSON keeps the numbers only)."""
    return {row["label"]: row.pop("_images") for row in rows}


def mask_verdicts(rows: list[dict]) -> list[dict]:
    out = []
    for preset in _presets(rows):
        unmasked = _find(rows, preset=preset, configuration="unmasked")
        for configuration in ("both", "loss mask", "sampler region", "both, outside free", "sampler region, outside free"):
            row = _find(rows, preset=preset, configuration=configuration)
            inside, outside = (
                _ratio(row["inside_hit"], unmasked["inside_hit"]),
                _ratio(row["outside_distance"], unmasked["outside_distance"]),
            )
            out.append(
                {
                    "measurement": "mask",
                    "claim": f"{preset}, {configuration}: the mask confines the colour to the left half",
                    "headline": configuration == "both",
                    "holds": bool(inside >= MASK_INSIDE_AT_LEAST - SLACK and outside <= MASK_OUTSIDE_AT_MOST + SLACK),
                    "numbers": f"inside yellow {row['inside_hit']:.2f} = {inside:.2f}x unmasked (rule >= {MASK_INSIDE_AT_LEAST}x); outside "
                    f"distance {row['outside_distance']:.3f} = {outside:.2f}x unmasked (rule <= {MASK_OUTSIDE_AT_MOST}x)",
                }
            )
    return out


def reward_verdicts(rows: list[dict]) -> list[dict]:
    base = _find(rows, label="unguided")
    out = []
    for row in rows:
        if not row["preset"]:
            continue
        rise = row["stripe_rate"] - base["stripe_rate"]
        out.append(
            {
                "measurement": "reward",
                "claim": f"{row['label']}: the reward head steers toward stripes",
                "headline": row["strength"] == 1.0,
                "holds": bool(rise >= STRIPE_RISE_AT_LEAST - SLACK),
                "numbers": f"judged stripe rate {row['stripe_rate']:.0%} vs {base['stripe_rate']:.0%} unguided ({rise:+.0%}; rule >= "
                f"+{STRIPE_RISE_AT_LEAST:.0%}); the head itself reads {row['head_stripe_rate']:.0%}",
            }
        )
        out.append(
            {
                "measurement": "reward",
                "claim": f"{row['label']}: at little cost",
                "headline": row["strength"] == 1.0,
                "holds": bool(row["keeping_change"] >= -KEEPING_DROP_AT_MOST - SLACK and row["frechet_ratio"] <= FRECHET_AT_MOST + SLACK),
                "numbers": f"keeping {row['keeping']:.0%} ({row['keeping_change']:+.1%}; rule >= -{KEEPING_DROP_AT_MOST:.0%}), Fréchet "
                f"{row['frechet_ratio']:.2f}x unguided (rule <= {FRECHET_AT_MOST}x)",
            }
        )
    return out


def img2img_verdicts(rows: list[dict]) -> list[dict]:
    base = _find(rows, label="unguided img2img")
    out = []
    for preset in _presets(rows):
        row = _find(rows, preset=preset)
        distance = _ratio(row["background_distance"], base["background_distance"])
        out.append(
            {
                "measurement": "img2img",
                "claim": f"{preset} img2img moves the background toward the reference's",
                "headline": True,
                "holds": bool(distance <= BACKGROUND_DISTANCE_AT_MOST + SLACK),
                "numbers": f"background distance to orange {row['background_distance']:.3f} vs {base['background_distance']:.3f} unguided "
                f"img2img = {distance:.2f}x (rule <= {BACKGROUND_DISTANCE_AT_MOST}x)",
            }
        )
        layout, iou = row["layout_same"] - base["layout_same"], row["foreground_iou"] - base["foreground_iou"]
        out.append(
            {
                "measurement": "img2img",
                "claim": f"{preset} img2img keeps the source's layout",
                "headline": True,
                "holds": bool(layout >= -LAYOUT_DROP_AT_MOST - SLACK and iou >= -LAYOUT_DROP_AT_MOST - SLACK),
                "numbers": f"shape+place+size as the source {row['layout_same']:.0%} vs {base['layout_same']:.0%} ({layout:+.1%}), "
                f"foreground IoU {row['foreground_iou']:.2f} vs {base['foreground_iou']:.2f} ({iou:+.2f}); "
                f"rule: both >= unguided - {LAYOUT_DROP_AT_MOST}",
            }
        )
    return out


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(cells) + " |" for cells in lines]


def markdown(settings, measured: dict, verdicts: list[dict], total_seconds: float) -> str:
    judge = measured["stripe_judge"]
    mask, reward, img2img, setup = measured["mask"], measured["reward"], measured["img2img"], measured["setup"]
    unmasked = {p: _find(mask, preset=p, configuration="unmasked") for p in _presets(mask)}
    quick = " (QUICK smoke run: numbers mean nothing)" if settings.quick else ""
    out = [
        f"# Region masks, a reward head and guided img2img on the world model{quick}",
        "",
        f"{settings.count} prompts per measurement, DDIM {settings.steps} steps, CFG {setup['cfg']}, seed {settings.seed}; presets "
        f"{', '.join(_presets(mask))}; {torch.get_num_threads()} CPU threads; the run took {total_seconds / 60:.1f} min "
        f"({', '.join(f'{k} {v / 60:.1f}' for k, v in measured['seconds'].items())}). Rules fixed before the first run: "
        "benchmarks/regions_world.py. Stripe judge: threshold "
        f"{judge['threshold']} (chosen on the judge split), accuracy {judge['heldout']['accuracy']:.1%} on {judge['heldout_count']} "
        "held-out renders.",
        "",
        f"## Mask: colour loss toward {setup['target_color']}, region = left half",
        "",
    ]
    lines = []
    for r in mask:
        base = unmasked.get(r["preset"])
        inside = f"{_ratio(r['inside_hit'], base['inside_hit']):.2f}x" if base else "—"
        outside = f"{_ratio(r['outside_distance'], base['outside_distance']):.2f}x" if base else "—"
        lines.append(
            [
                r["label"],
                f"{r['inside_hit']:.2f}",
                inside,
                f"{r['outside_distance']:.3f}",
                outside,
                f"{r['outside_latent_distance']:.3f}",
                f"{r['outside_hit']:.2f}",
                f"{r['seconds_per_sample']:.2f}",
            ]
        )
    out += _table(
        [
            "sampling",
            f"inside: {setup['target_color']} share",
            "inside x unmasked",
            "outside: mean abs RGB diff to unguided",
            "outside x unmasked",
            "outside: mean abs latent diff",
            f"outside: {setup['target_color']} share",
            "s / sample",
        ],
        lines,
    )
    out += ["", '## Reward: "prefers striped shapes" head on the guide CLIP', ""]
    lines = [
        [
            r["label"],
            f"{r['stripe_rate']:.0%}",
            f"{r['head_stripe_rate']:.0%}",
            f"{r['keeping']:.0%} ({r['keeping_change']:+.1%})",
            " / ".join(f"{r['prompt_accuracy'][k]:.0%}" for k in setup["kept"]),
            f"{r['frechet']:.1f} ({r['frechet_ratio']:.2f}x)",
            f"{r['seconds_per_sample']:.2f}",
        ]
        for r in reward
    ]
    out += _table(
        [
            "sampling",
            "judged striped",
            "head says striped",
            "keeping (Δ)",
            "shape / colour / background / size as prompted",
            f"Fréchet, N={settings.count} (x unguided)",
            "s / sample",
        ],
        lines,
    )
    out += ["", f"## img2img at denoise {setup['denoise']}: reference colour loss toward a purple heart on orange", ""]
    lines = [
        [
            r["label"],
            f"{r['background_distance']:.3f}",
            f"{r['background_is_reference']:.0%}",
            f"{r['layout_same']:.0%}",
            f"{r['foreground_iou']:.2f}",
            f"{r['distance_to_source']:.3f}",
            f"{r['seconds_per_sample']:.2f}",
        ]
        for r in img2img
    ]
    out += _table(
        [
            "sampling",
            "background: RGB distance to orange",
            "background read as orange",
            "shape, place, size as the source",
            "foreground IoU with the source",
            "mean abs RGB diff to the source",
            "s / sample",
        ],
        lines,
    )
    out += ["", "## Verdicts", ""]
    for v in verdicts:
        out.append(f"- {'HOLDS' if v['holds'] else 'FAILS'}{'' if v['headline'] else ' (secondary)'}: {v['claim']}: {v['numbers']}")
    return "\n".join(out) + "\n"


GRID_ROWS = (
    ("mask", ("unguided", "mpgd, unmasked", "mpgd, both", "paper, unmasked", "paper, both")),
    ("reward", ("unguided", 'unguided, prompt says "striped"', "mpgd, strength 1", "paper, strength 1")),
    ("img2img", ("source render", "unguided img2img", "mpgd img2img", "paper img2img")),
)


def sample_grid(images: dict[str, dict[str, torch.Tensor]]) -> np.ndarray:
    """(H, W, 3) float: labelled rows of the first samples of each measurement's main configurations."""
    rows = [(f"{m}: {label}", images[m][label]) for m, labels in GRID_ROWS for label in labels if label in images[m]]
    label_width, columns = 230, max(len(batch) for _, batch in rows)
    canvas = Image.new("RGB", (label_width + columns * CELL, len(rows) * CELL), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (label, batch) in enumerate(rows):
        draw.text((6, index * CELL + CELL // 2 - 6), label, fill=(0, 0, 0))
        pixels = (batch.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        for column, tile in enumerate(pixels):
            canvas.paste(Image.fromarray(tile).resize((CELL, CELL), Image.Resampling.NEAREST), (label_width + column * CELL, index * CELL))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def write(out: Path, settings, measured: dict, total_seconds: float, log=print) -> None:
    images = {name: images_of(measured[name]) for name in ("mask", "reward", "img2img")}
    verdicts = mask_verdicts(measured["mask"]) + reward_verdicts(measured["reward"]) + img2img_verdicts(measured["img2img"])
    table = markdown(settings, measured, verdicts, total_seconds)
    log(table)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": vars(settings), "total_seconds": total_seconds, **measured, "verdicts": verdicts}
    with StagedFiles() as files:  # all three or none
        files.bytes(out / f"{NAMES}.md", (table + f"\n![samples]({NAMES}_samples.png)\n").encode())
        files.json(out / f"{NAMES}.json", record)
        files.bytes(out / f"{NAMES}_samples.png", png_bytes(sample_grid(images)))
    log(f"wrote {out}/{NAMES}.md, .json and _samples.png")
