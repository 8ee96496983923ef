"""`steer`: the argument parser and the entry point; each sub-command's work lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..benchmarks.arguments import (
    add_digits_bench_arguments,
    add_families_bench_arguments,
    add_guidance_bench_arguments,
    add_personalize_bench_arguments,
    add_regions_bench_arguments,
    add_world_bench_arguments,
)
from ..errors import SteerError
from .convert import add_convert_command
from .queue import add_queue_command
from .train import add_train_command

# Kept in sync with guidance.config by tests/unit/test_cli.py; importing it here would load torch
# for every command, and `steer queue` needs none.
PRESET_NAMES = ("paper", "freedom", "ugd", "mpgd", "dps")
DEFAULT_PRESET = "mpgd"


def _demo(args) -> None:
    from ..world.demo import run_demo

    run_demo(Path(args.out), count=args.count, steps=args.steps, preset_name=args.preset, seed=args.seed)


def _demo_digits(args) -> None:
    from ..digits.demo import run_demo

    run_demo(Path(args.out), per_digit=args.per_digit, steps=args.steps, preset_name=args.preset, seed=args.seed)


def _bench_digits(args) -> int:
    from ..benchmarks.digits import execute

    return execute(args)


def _bench_world(args) -> int:
    from ..benchmarks.world import execute

    return execute(args)


def _bench_personalize(args) -> int:
    from ..benchmarks.personalize_world_cli import execute

    return execute(args)


def _bench_regions(args) -> int:
    from ..benchmarks.regions_world import execute

    return execute(args)


def _bench_families(args) -> int:
    from ..benchmarks.families import execute

    return execute(args)


def _bench_training_memory(args) -> int:
    from ..benchmarks.personalize_memory import execute

    return execute(args)


def _bench_guidance(args) -> int:
    from ..benchmarks.guidance_cost import execute

    return execute(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steer", description="Steer: loss-guided diffusion sampling and AttnDreamBooth, for ComfyUI and the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help=(
            "steer the embedded text-to-image world model toward another colour and another shape; writes a PNG grid and "
            "samples.npz, prints a table"
        ),
        description="Without a sub-command: the world model (shape scenes with captions). `steer demo digits`: the digits model.",
    )
    demo.add_argument("--out", default="steer-demo", help="output folder (default: ./steer-demo)")
    demo.add_argument("--count", type=int, default=8, help="prompts (default 8; each sampled unguided and guided twice)")
    _add_demo_arguments(demo)
    demo.set_defaults(run=_demo)
    demos = demo.add_subparsers(dest="demo", required=False)
    digits_demo = demos.add_parser("digits", help="steer the embedded digits model to every digit")
    digits_demo.add_argument("--out", default="steer-demo", help="output folder (default: ./steer-demo)")
    digits_demo.add_argument("--per-digit", type=int, default=8, help="samples per digit (default 8)")
    _add_demo_arguments(digits_demo)
    digits_demo.set_defaults(run=_demo_digits)

    add_queue_command(commands)
    add_train_command(commands)
    add_convert_command(commands)

    bench = commands.add_parser(
        "bench",
        help="benchmarks; each prints ratios or rates measured side by side in one run",
        description="Without a sub-command: the cost of guided sampling (full-size SD1.5 UNet + VAE with random weights, "
        "through ComfyUI at COMFYUI_PATH), as ratios to an unguided CFG step.",
    )
    add_guidance_bench_arguments(bench)
    bench.set_defaults(run=_bench_guidance)
    benches = bench.add_subparsers(dest="benchmark", required=False)
    digits_bench = benches.add_parser("digits", help="the paper's three claims on the digits model, scored by an independent judge")
    add_digits_bench_arguments(digits_bench)
    digits_bench.set_defaults(run=_bench_digits)
    world_bench = benches.add_parser(
        "world", help="guidance in latent space on the world text-to-image model: presets, ablations, claims, scored by independent judges"
    )
    add_world_bench_arguments(world_bench)
    world_bench.set_defaults(run=_bench_world)
    personalize_bench = benches.add_parser(
        "personalize",
        help="AttnDreamBooth against Textual Inversion, DreamBooth and ablations on the world model's held-out concepts: "
        "identity, prompt fidelity, leakage, time, memory",
    )
    add_personalize_bench_arguments(personalize_bench)
    personalize_bench.set_defaults(run=_bench_personalize)
    families_bench = benches.add_parser(
        "families", help="time of a guided step over an unguided one on SDXL, SD3 and Flux (reduced models of their ComfyUI classes)"
    )
    add_families_bench_arguments(families_bench)
    families_bench.set_defaults(run=_bench_families)
    memory_bench = benches.add_parser(
        "training-memory",
        help="AttnDreamBooth's training memory per stage on a full-width SDXL relative (Vega, CPU), against the accounting",
    )
    memory_bench.add_argument("--out", type=Path, help="write personalize_memory.md here (default: the package's benchmarks/results)")
    memory_bench.set_defaults(run=_bench_training_memory)
    regions_bench = benches.add_parser(
        "regions",
        help="region masks, a reward head and guided img2img on the world text-to-image model, scored by independent judges",
    )
    add_regions_bench_arguments(regions_bench)
    regions_bench.set_defaults(run=_bench_regions)
    return parser


def _add_demo_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, help=f"guidance preset (default {DEFAULT_PRESET})")
    parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SteerError as error:
        print(f"steer: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
