"""The benchmarks' options, apart from the benchmarks so `steer --help` loads no torch."""

from __future__ import annotations

import os
from pathlib import Path


def _add_claim_bench_arguments(parser, steps: str) -> None:
    """What the claim benchmarks (digits, world) share: step counts, seed, methods, outputs."""
    parser.add_argument("--steps", default=steps, help=f"comma-separated DDIM step counts (default {steps})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all; the claim verdicts need all)")
    parser.add_argument("--json", type=Path, help="also write rows and claims as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")


def add_world_bench_arguments(parser) -> None:
    parser.add_argument("--per-task", type=int, default=32, help="prompts per task (default 32: 128 samples per method and step count)")
    _add_claim_bench_arguments(parser, steps="20,50")


def add_personalize_bench_arguments(parser) -> None:
    parser.add_argument("--concepts", help="comma-separated held-out concepts (default: all six)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all; the verdicts need all)")
    parser.add_argument(
        "--out",
        type=Path,
        help="write personalize_world.{md,json}, the plot, a sample grid and the raw records here; a rerun with the same "
        "folder reuses the records already there",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: every stage's steps divided by 50 (its numbers mean nothing)")


def add_regions_bench_arguments(parser) -> None:
    parser.add_argument("--count", type=int, default=48, help="prompts (and img2img sources) per measurement (default 48)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; img2img runs its 50 of a denoise-0.6 schedule)")
    parser.add_argument("--seed", type=int, default=0, help="picks the prompt and noise seeds (default 0)")
    parser.add_argument(
        "--out", type=Path, help="write regions_world.md, .json and _samples.png here (default: the package's benchmarks/results)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 prompts, 3 steps, strength 1 only (needs --out; numbers mean nothing)"
    )


def add_families_bench_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=6, help="sampling steps per timed run (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median is kept (default 3)")
    parser.add_argument("--families", nargs="+", help="which families (default: all of sdxl, sd3, flux_dev, flux_schnell)")
    parser.add_argument("--out", type=Path, help="write families.md and .json here (default: the package's benchmarks/results)")


def add_digits_bench_arguments(parser) -> None:
    parser.add_argument("--per-class", type=int, default=10, help="samples per digit (default 10: 100 samples per method)")
    _add_claim_bench_arguments(parser, steps="20,50,100")


def add_guidance_bench_arguments(parser) -> None:
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per mode (default 3; one warm-up round more)")
    parser.add_argument("--latent", type=int, default=32, help="latent side (default 32, i.e. 256 px images)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    parser.add_argument("--no-training", action="store_true", help="skip the AttnDreamBooth training row")
    parser.add_argument("--quiet", action="store_true", help="no per-repeat log on stderr")
