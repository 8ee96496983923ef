"""`steer bench world`'s options, apart from the benchmark so `steer --help` loads no torch."""
from __future__ import annotations

from pathlib import Path


def add_world_bench_arguments(parser) -> None:
    parser.add_argument("--per-task", type=int, default=32, help="prompts per task (default 32: 128 samples per method and step count)")
    parser.add_argument("--steps", default="20,50", help="comma-separated DDIM step counts (default 20,50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all; the claim verdicts need all)")
    parser.add_argument("--json", type=Path, help="also write rows, claims and the goal as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")

