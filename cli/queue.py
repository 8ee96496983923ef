"""`steer queue`: run a sweep of a workflow on one or more ComfyUI servers (the engine is steer.batch).

    steer queue workflows/api/color_guidance.json --set 9.inputs.noise_seed=1..100 --out seeds/
    steer queue wf.json --set text=@prompts.txt --set cfg=5,7 --server http://gpu1:8188 --server http://gpu2:8188

This module holds what only the command needs: its arguments, the progress bar (cli.progress.QueueProgress),
the stop signals, and the exit codes. SIGINT, SIGTERM and SIGHUP all stop the batch the way Ctrl-C does. Their
handlers are set at start: a process started in the background inherits SIGINT ignored, and would otherwise never
stop on it. An inherited SIGHUP ignore is kept: that is nohup, asking the batch to outlive its terminal.
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from ..batch.api import DEFAULT_OUT, DEFAULT_SERVER, plan_jobs
from ..batch.manifest import MANIFEST_NAME, STOP_SIGNALS, Manifest
from ..batch.runner import BatchRunner
from ..batch.state import EXIT_INTERRUPTED, EXIT_NO_SERVER, EXIT_USAGE, BatchError
from ..batch.sweep import SweepError
from ..batch.workflow import WorkflowError
from .progress import QueueProgress, signal_handled

DESCRIPTION = (
    "Queue a ComfyUI workflow many times with --set overrides, on one or more servers; download the outputs "
    "and write OUT/manifest.jsonl. Re-running the same command skips the jobs already done."
)
SET_HELP = """\
--set TARGET=VALUES
  TARGET  NODE.inputs.NAME (NODE = node id, title or class type), NODE.NAME, or NAME if one node has it
  VALUES  7.5 | euler,ddim (\\, for a literal comma) | 1..100 | 0..1..0.25 | @prompts.txt (one per line)
          | ["json", "list"]
  Several --set make every combination (the first varies slowest); --zip pairs them up instead.

A UI-format workflow (what ComfyUI saves) is converted with the server's /object_info, by comfy-cli's converter
when installed (pip install "steer-guidance[queue]"; needed for subgraphs), by Steer's own otherwise.

examples:
  steer queue workflows/api/color_guidance.json --set 9.inputs.noise_seed=1..100 --out seeds
  steer queue wf.json --set "Positive prompt.text=@prompts.txt" --set noise_seed=1..3 \\
      --server http://gpu1:8188 --server http://gpu2:8188
"""


def add_queue_command(subparsers) -> argparse.ArgumentParser:
    """Add `queue` to the `steer` command's subparsers; the parser's `run` default runs it."""
    parser = subparsers.add_parser(
        "queue",
        help="run a workflow sweep (seeds, prompts, settings) on one or more ComfyUI servers",
        description=DESCRIPTION,
        epilog=SET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="workflow JSON: API format (Workflow → Export (API)), or UI format, converted")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="TARGET=VALUES", help="override an input; see below")
    parser.add_argument("--zip", dest="zip_values", action="store_true", help="combine the --set lists side by side, not every combination")
    parser.add_argument(
        "--server", dest="servers", action="append", metavar="URL", help=f"a ComfyUI server; repeat for several (default {DEFAULT_SERVER})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"folder for the outputs and manifest.jsonl (default ./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=2,
        metavar="N",
        help="fill each server's queue up to N prompts, everyone's counted (default 2: one running, one waiting)",
    )
    parser.add_argument("--all-outputs", action="store_true", help="also download temporary outputs (Preview Image), not only saved ones")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(run=run_queue_command)


def run_queue_command(args) -> None:
    """The `steer queue` action: raises SystemExit with a non-zero code when jobs failed or it was interrupted."""
    code = _queue_main(args)
    if code:
        raise SystemExit(code)


def _queue_main(args) -> int:
    try:
        with stop_signals_interrupt():
            return _queue(args)
    except KeyboardInterrupt:
        print("steer queue: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def stop_signals_interrupt() -> ExitStack:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (the manifest holds them back while it writes a line)."""
    handlers = ExitStack()
    for signum in STOP_SIGNALS:
        if signum == getattr(signal, "SIGHUP", None) and signal.getsignal(signum) is signal.SIG_IGN:
            continue  # nohup
        handlers.enter_context(signal_handled(signum, signal.default_int_handler))
    return handlers


def _queue(args) -> int:
    servers = args.servers or [DEFAULT_SERVER]
    try:
        jobs = plan_jobs(args.workflow, args.sets, args.zip_values, servers)
    except (SweepError, WorkflowError) as error:
        print(f"steer queue: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BatchError as error:
        print(f"steer queue: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    if args.dry_run:
        done = Manifest(args.out / MANIFEST_NAME).done_keys()
        for job in jobs:
            print(f"{job.label()}{'  [done]' if job.key in done else ''}")
        print(f"{len(jobs)} job(s), {sum(job.key in done for job in jobs)} already done")
        return 0
    outputs = None if args.all_outputs else ("output",)
    runner = BatchRunner(
        jobs,
        servers,
        args.out,
        queue_depth=args.queue_depth,
        outputs=outputs,
        progress=not args.quiet,
        reporter=None if args.quiet else QueueProgress(),
    )
    try:
        summary = runner.run()
    except BatchError as error:
        print(f"steer queue: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    print(
        f"{summary.done} done, {summary.failed} failed, {summary.skipped} already done, {summary.not_run} not run"
        f" → {args.out} (manifest {args.out / MANIFEST_NAME})",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    return summary.exit_code


def main(argv=None) -> int:
    """`python -m steer.cli.queue …` and `python -m steer.batch …`: the same as `steer queue …`."""
    parser = argparse.ArgumentParser(
        prog="steer queue", description=DESCRIPTION, epilog=SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure_parser(parser)
    return _queue_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
