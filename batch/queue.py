"""`steer queue`: run a sweep of an API-format workflow on one or more ComfyUI servers.

    steer queue workflows/api/color_guidance.json --set 9.inputs.noise_seed=1..100 --out seeds/
    steer queue wf.json --set text=@prompts.txt --set cfg=5,7 --server http://gpu1:8188 --server http://gpu2:8188

Python:

    from steer.batch import run_batch
    summary = run_batch("wf.json", ["noise_seed=1..4"], servers=["http://127.0.0.1:8188"], out_dir="out")

Jobs go to the server with the shortest queue, everyone's prompts counted, while that queue is
shorter than `queue_depth` (default 2: one running, one waiting), so several GPUs or machines share
one batch and a server busy with other work gets fewer jobs. Outputs are downloaded through /view into OUT, and OUT/manifest.jsonl gets a line per
finished job; re-running the same command skips the jobs it lists as done. A server that stops
answering has its jobs re-queued on the others. Ctrl-C takes our prompts off the servers' queues and
leaves the manifest listing exactly the finished jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import queue as queue_module
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SteerError
from .manifest import DONE, FAILED, Manifest
from .servers import ComfyConnection, PromptRejected, ServerUnavailable, compact_node_errors, format_node_errors, normalise_url
from .sweep import Job, SweepError, expand_jobs, parse_set
from .workflow import WorkflowError, is_ui_format, load_workflow, ui_to_api

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_OUT = "steer-out"
MANIFEST_NAME = "manifest.jsonl"
EXIT_FAILED, EXIT_USAGE, EXIT_NO_SERVER, EXIT_INTERRUPTED = 1, 2, 3, 130


class BatchError(SteerError):
    """The batch cannot go on (no server answers, a bad workflow or --set)."""


@dataclass
class Running:
    job: Job
    prompt_id: str
    submitted: float
    started: float | None = None
    node: str | None = None
    progress: tuple | None = None  # (value, max) of the node's last progress event
    ended: bool = False  # an end event arrived; waiting for the history entry
    missing: int = 0  # polls that found it nowhere on the server


@dataclass
class ServerState:
    index: int
    conn: ComfyConnection
    alive: bool = False
    inflight: dict = field(default_factory=dict)  # prompt id -> Running
    depth: int = 0  # queue_remaining, everyone's prompts
    depth_time: float = 0.0
    last_poll: float = 0.0
    last_event: float = 0.0
    down_since: float | None = None
    last_retry: float = 0.0
    abandoned: set = field(default_factory=set)  # our prompt ids re-queued elsewhere
    done: int = 0

    @property
    def name(self) -> str:
        return self.conn.url


@dataclass
class BatchSummary:
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    out_dir: Path | None = None
    records: list = field(default_factory=list)  # this run's manifest records

    @property
    def not_run(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or self.not_run else 0


# ------------------------------------------------------------------------------------------
# progress display


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """A bar over the whole batch plus each running job's node progress (one rewritten line on a
    terminal; a status line every few seconds otherwise). Messages print above it."""

    def __init__(self, total: int, skipped: int, stream=None, enabled: bool = True):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        self._clear()
        print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def update(self, done: int, failed: int, servers: list, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < (0.2 if self.tty else 15.0):
            return
        self._last_draw = now
        line = self.status_line(done, failed, servers, now)
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r\x1b[K" + line[: width - 1])
            self.stream.flush()
            self._drawn = True
        else:
            print(line, file=self.stream, flush=True)

    def status_line(self, done: int, failed: int, servers: list, now: float) -> str:
        to_run = max(1, self.total - self.skipped)
        finished = done + failed
        width = 20
        filled = int(width * finished / to_run)
        parts = [f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{to_run}"]
        if failed:
            parts.append(f"{failed} failed")
        for server in servers:
            for running in server.inflight.values():
                if running.started is None:
                    parts.append(f"job {running.job.index} queued")
                    continue
                node = running.node
                what = (running.job.prompt.get(str(node)) or {}).get("class_type", node) if node else "starting"
                step = f" {running.progress[0]}/{running.progress[1]}" if running.progress and running.progress[1] else ""
                where = f" @{server.index + 1}" if len(servers) > 1 else ""
                parts.append(f"job {running.job.index}: {what}{step}{where}")
        elapsed = now - self.started
        if finished:
            parts.append(f"ETA {_duration(elapsed / finished * (to_run - finished))}")
        return " · ".join(parts)

    def close(self) -> None:
        self._clear()


# ------------------------------------------------------------------------------------------
# the scheduler


class BatchRunner:
    """Runs jobs on servers; see the module docstring. Single-threaded apart from the WebSocket readers."""

    def __init__(
        self,
        jobs: list[Job],
        servers,
        out_dir,
        *,
        queue_depth: int = 2,
        outputs=("output",),
        poll_interval: float = 2.0,
        retry_interval: float = 5.0,
        give_up_after: float = 120.0,
        progress: bool = True,
        stream=None,
    ):
        self.jobs = list(jobs)
        urls = [servers] if isinstance(servers, str) else list(servers)
        if not urls:
            raise BatchError("no server given")
        self.servers = [ServerState(i, ComfyConnection(url)) for i, url in enumerate(dict.fromkeys(normalise_url(u) for u in urls))]
        self.out_dir = Path(out_dir)
        self.manifest = Manifest(self.out_dir / MANIFEST_NAME)
        self.queue_depth = max(1, int(queue_depth))
        self.outputs = set(outputs) if outputs else None  # None: every folder type
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.give_up_after = give_up_after
        self.events: queue_module.Queue = queue_module.Queue()
        self.pending: deque[Job] = deque()
        self.summary = BatchSummary(total=len(self.jobs), out_dir=self.out_dir)
        self.progress_enabled = progress
        self.stream = stream
        self._validation_messages: dict[str, int] = {}

    # ---- entry point

    def run(self) -> BatchSummary:
        done_keys = self.manifest.done_keys()
        self.pending = deque(job for job in self.jobs if job.key not in done_keys)
        self.summary.skipped = len(self.jobs) - len(self.pending)
        self.display = Progress(len(self.jobs), self.summary.skipped, self.stream, self.progress_enabled)
        if self.summary.skipped:
            self.display.message(f"{self.summary.skipped} of {len(self.jobs)} jobs are already done (manifest {self.manifest.path}); skipping them")
        if not self.pending:
            self.display.message("nothing to do")
            for server in self.servers:
                server.conn.close()
            return self.summary
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
            while self.pending or self._inflight_count():
                now = time.monotonic()
                self._retry_dead_servers(now)
                self._check_any_alive(now)
                self._dispatch(now)
                self._drain_events(timeout=0.25)
                self._poll(time.monotonic())
                self.display.update(self.summary.done, self.summary.failed, self.servers)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._cancel_ours()
            self.display.message(
                f"interrupted: {self.summary.done} done, {self.summary.failed} failed, {self.summary.not_run} not run; "
                f"the manifest lists every finished job; run the same command again to resume"
            )
        finally:
            self.display.close()
            for server in self.servers:
                server.conn.close()
            for partial in self.out_dir.glob(".*.part"):  # a download cut short
                partial.unlink(missing_ok=True)
        return self.summary

    # ---- servers coming and going

    def _connect(self) -> None:
        problems = []
        for server in self.servers:
            server.conn.start_events(self.events, server.index)
            try:
                server.depth = server.conn.queue_remaining()
                server.depth_time = time.monotonic()
                server.alive = True
            except (ServerUnavailable, ValueError) as error:
                server.down_since = time.monotonic()
                problems.append(f"{server.name}: {error}")
        if not any(server.alive for server in self.servers):
            for server in self.servers:
                server.conn.close()
            raise BatchError("no ComfyUI server answered:\n  " + "\n  ".join(problems))
        for problem in problems:
            self.display.message(f"server not answering, will retry: {problem}")
        # Give the WebSockets a moment, so the first jobs' events are not missed (polling covers it anyway).
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not all(
            server.conn.ws_connected.is_set() or server.conn.ws_unsupported for server in self.servers if server.alive
        ):
            time.sleep(0.05)

    def _mark_down(self, server: ServerState, reason: str) -> None:
        if not server.alive:
            return
        server.alive = False
        server.down_since = time.monotonic()
        server.last_retry = server.down_since
        jobs = sorted((running.job for running in server.inflight.values()), key=lambda job: job.index)
        server.abandoned.update(server.inflight)
        server.inflight.clear()
        self.pending.extendleft(reversed(jobs))
        others = "the other servers" if len(self.servers) > 1 else "it when it is back"
        self.display.message(f"server {server.name} dropped out ({reason}); re-queuing {len(jobs)} job(s) on {others}")

    def _retry_dead_servers(self, now: float) -> None:
        for server in self.servers:
            if server.alive or now - server.last_retry < self.retry_interval:
                continue
            server.last_retry = now
            try:
                server.depth = server.conn.queue_remaining()
            except (ServerUnavailable, ValueError):
                continue
            server.alive, server.down_since, server.depth_time = True, None, now
            if server.abandoned:  # it may still hold prompts we re-queued elsewhere
                try:
                    running, queued = server.conn.queue_ids()
                    server.conn.cancel(queued=[p for p in queued if p in server.abandoned], running=[p for p in running if p in server.abandoned])
                except (ServerUnavailable, ValueError):
                    pass
            self.display.message(f"server {server.name} is back")

    def _check_any_alive(self, now: float) -> None:
        if any(server.alive for server in self.servers):
            return
        down_since = max(server.down_since or now for server in self.servers)
        if now - down_since > self.give_up_after:
            raise BatchError(
                f"no server has answered for {int(self.give_up_after)} s; {len(self.pending)} job(s) not run. "
                f"The manifest lists the finished ones: run the same command again to resume."
            )

    # ---- submitting

    def _inflight_count(self) -> int:
        return sum(len(server.inflight) for server in self.servers)

    def _dispatch(self, now: float) -> None:
        while self.pending:
            candidates = [s for s in self.servers if s.alive and len(s.inflight) < self.queue_depth]
            for server in candidates:
                if now - server.depth_time > 1.0:
                    try:
                        server.depth, server.depth_time = server.conn.queue_remaining(), now
                    except (ServerUnavailable, ValueError) as error:
                        self._mark_down(server, str(error))
            # A server takes another job while its whole queue, everyone's prompts counted, is short.
            candidates = [s for s in candidates if s.alive and s.depth < self.queue_depth]
            if not candidates:
                return
            server = min(candidates, key=lambda s: (s.depth, len(s.inflight), s.index))
            job = self.pending.popleft()
            try:
                prompt_id = server.conn.submit(job.prompt)
            except PromptRejected as rejected:
                self._record_rejected(job, server, rejected)
                continue
            except ServerUnavailable as error:
                self.pending.appendleft(job)
                self._mark_down(server, str(error))
                continue
            server.inflight[prompt_id] = Running(job, prompt_id, time.monotonic())
            server.depth += 1

    def _record_rejected(self, job: Job, server: ServerState, rejected: PromptRejected) -> None:
        text = format_node_errors(rejected.error, rejected.node_errors, job.prompt)
        first = self._validation_messages.setdefault(text, job.index)
        if first == job.index:
            self.display.message(f"{job.label()} rejected by {server.name} (not retried):\n{text}")
        else:
            self.display.message(f"{job.label()} rejected (not retried): the same errors as job {first}")
        self._write(job, FAILED, server=server, error={"type": "validation", "message": text, "node_errors": compact_node_errors(rejected.node_errors)})

    # ---- following jobs

    def _drain_events(self, timeout: float) -> None:
        try:
            item = self.events.get(timeout=timeout)
        except queue_module.Empty:
            return
        while True:
            self._handle_event(*item)
            try:
                item = self.events.get_nowait()
            except queue_module.Empty:
                return

    def _handle_event(self, server_index: int, message: dict) -> None:
        server = self.servers[server_index]
        kind = message.get("type")
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        now = time.monotonic()
        server.last_event = now
        if kind == "status":
            remaining = ((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining")
            if remaining is not None:
                server.depth, server.depth_time = int(remaining), now
            return
        if kind == "_ws_closed":
            server.last_poll = 0.0  # check it now
            return
        running = server.inflight.get(data.get("prompt_id"))
        if running is None:
            return
        if kind == "execution_start":
            running.started = now
        elif kind == "executing":
            running.started = running.started or now
            running.node, running.progress = data.get("node"), None
            if data.get("node") is None:
                running.ended = True
                self._try_finish(server, running)
        elif kind == "progress":
            running.started = running.started or now
            running.node, running.progress = data.get("node"), (data.get("value"), data.get("max"))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            running.ended = True
            self._try_finish(server, running)

    def _poll(self, now: float) -> None:
        """Without events, ask: is the server there, and which of our prompts finished or vanished?"""
        for server in self.servers:
            if not server.alive:
                continue
            waiting = any(running.ended for running in server.inflight.values())
            # With the WebSocket up, events say when jobs end; the poll is a safety net.
            interval = 0.5 if waiting else self.poll_interval * (1 if not server.conn.ws_connected.is_set() else 2.5)
            if now - server.last_poll < interval:
                continue
            server.last_poll = now
            try:
                running_ids, queued_ids = server.conn.queue_ids()
            except (ServerUnavailable, ValueError) as error:
                self._mark_down(server, str(error))
                continue
            server.depth, server.depth_time = len(running_ids) + len(queued_ids), now
            for prompt_id, running in list(server.inflight.items()):
                if prompt_id in running_ids:
                    running.started = running.started or now
                    continue
                if prompt_id in queued_ids:
                    continue
                if self._try_finish(server, running) or running.ended:
                    continue
                running.missing += 1
                if running.missing >= 2:
                    # twice neither queued, running nor in the history: the server lost it (restarted)
                    server.inflight.pop(prompt_id, None)
                    self.pending.appendleft(running.job)
                    self.display.message(f"{running.job.label()} vanished from {server.name} (restarted?); re-queued")

    def _try_finish(self, server: ServerState, running: Running) -> bool:
        """Finish a job whose history entry is written; False while it is not."""
        try:
            entry = server.conn.history(running.prompt_id)
        except (ServerUnavailable, ValueError) as error:
            self._mark_down(server, str(error))
            return True
        if not entry:  # the server writes the entry once the prompt has ended, whichever way
            return False
        if server.inflight.pop(running.prompt_id, None) is None:
            return True
        self._finish(server, running, entry)
        return True

    def _finish(self, server: ServerState, running: Running, entry: dict) -> None:
        job = running.job
        status = entry.get("status") or {}
        messages = {name: data for name, data in status.get("messages", []) if isinstance(data, dict)}
        seconds = time.monotonic() - (running.started or running.submitted)
        if "execution_error" in messages or status.get("status_str") == "error":
            error = messages.get("execution_error", {})
            text = f"node {error.get('node_id')} ({error.get('node_type')}) raised {error.get('exception_type')}: {error.get('exception_message', '').strip()}"
            self.display.message(f"{job.label()} failed on {server.name}: {text}")
            self._write(job, FAILED, server=server, prompt_id=running.prompt_id, seconds=seconds,
                        error={"type": "execution", "message": text, **{k: error.get(k) for k in ("node_id", "node_type", "exception_type")}})
            return
        if "execution_interrupted" in messages:
            self.display.message(f"{job.label()} was interrupted on {server.name}")
            self._write(job, FAILED, server=server, prompt_id=running.prompt_id, seconds=seconds, error={"type": "interrupted", "message": "interrupted on the server"})
            return
        try:
            files = self._download(server, job, entry.get("outputs") or {})
        except ServerUnavailable as error:
            self.pending.appendleft(job)
            self._mark_down(server, str(error))
            return
        except Exception as error:  # a missing file, a full disk...
            self._write(job, FAILED, server=server, prompt_id=running.prompt_id, seconds=seconds, error={"type": "download", "message": str(error)})
            self.display.message(f"{job.label()}: could not save its outputs: {error}")
            return
        server.done += 1
        record = self._write(job, DONE, server=server, prompt_id=running.prompt_id, seconds=seconds, files=files)
        shown = ", ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "") if files else "no files"
        self.display.message(f"[{self.summary.done + self.summary.failed}/{self.summary.total - self.summary.skipped}] {job.label()} done in {record['seconds']} s on {server.name}: {shown}")

    def _download(self, server: ServerState, job: Job, outputs: dict) -> list[str]:
        files, seen = [], set()
        for node_id in sorted(outputs, key=lambda k: (len(str(k)), str(k))):
            count = 0
            for entries in (outputs[node_id] or {}).values():
                if not isinstance(entries, list):
                    continue
                for entry in entries:
                    if not isinstance(entry, dict) or "filename" not in entry:
                        continue
                    folder_type = entry.get("type", "output")
                    ident = (entry["filename"], entry.get("subfolder", ""), folder_type)
                    if ident in seen or (self.outputs is not None and folder_type not in self.outputs):
                        continue
                    seen.add(ident)
                    data = server.conn.view(*ident)
                    suffix = Path(entry["filename"]).suffix or ".bin"
                    name = f"{job.index:05d}_{node_id}_{count}{suffix}"
                    count += 1
                    temporary = self.out_dir / f".{name}.part"
                    temporary.write_bytes(data)
                    os.replace(temporary, self.out_dir / name)
                    files.append(name)
        return files

    def _write(self, job: Job, status: str, *, server: ServerState, prompt_id=None, seconds=None, files=(), error=None) -> dict:
        record = {
            "job": job.index,
            "key": job.key,
            "status": status,
            "params": job.params,
            "prompt_id": prompt_id,
            "server": server.name,
            "files": list(files),
            "seconds": round(seconds, 2) if seconds is not None else None,
        }
        if error:
            record["error"] = error
        self.manifest.append(record)
        self.summary.records.append(record)
        if status == DONE:
            self.summary.done += 1
        else:
            self.summary.failed += 1
        return record

    def _cancel_ours(self) -> None:
        for server in self.servers:
            if not server.alive or not server.inflight:
                continue
            try:
                running_ids, queued_ids = server.conn.queue_ids()
                ours = set(server.inflight)
                server.conn.cancel(queued=sorted(ours & queued_ids), running=sorted(ours & running_ids))
            except (ServerUnavailable, ValueError):
                pass


# ------------------------------------------------------------------------------------------
# the Python API


def load_api_workflow(workflow, servers=(DEFAULT_SERVER,)) -> dict:
    """An API-format prompt from a path or dict; a UI-format workflow is converted with a server's /object_info."""
    data = load_workflow(workflow) if isinstance(workflow, (str, Path)) else json.loads(json.dumps(workflow))
    if not is_ui_format(data):
        if not isinstance(data, dict) or not all(isinstance(node, dict) and "class_type" in node for node in data.values()):
            raise WorkflowError(f"{workflow if isinstance(workflow, (str, Path)) else 'the workflow'} is not an API-format workflow (node id -> class_type, inputs)")
        return data
    errors = []
    for url in [servers] if isinstance(servers, str) else servers:
        connection = ComfyConnection(url)
        try:
            return ui_to_api(data, connection.object_info())
        except ServerUnavailable as error:
            errors.append(str(error))
        finally:
            connection.close()
    raise BatchError("a UI-format workflow needs a server's /object_info to convert it, and none answered: " + "; ".join(errors))


def plan_jobs(workflow, sets=(), zip_values: bool = False, servers=(DEFAULT_SERVER,), base_dir=None) -> list[Job]:
    """The jobs a `steer queue` command would run, without running them."""
    prompt = load_api_workflow(workflow, servers)
    overrides = [parse_set(text, base_dir) if isinstance(text, str) else text for text in sets]
    return expand_jobs(prompt, overrides, zip_values)


def run_batch(
    workflow,
    sets=(),
    *,
    zip_values: bool = False,
    servers=(DEFAULT_SERVER,),
    out_dir=DEFAULT_OUT,
    queue_depth: int = 2,
    outputs=("output",),
    progress: bool = True,
    stream=None,
    **options,
) -> BatchSummary:
    """Plan the sweep and run it (see the module docstring); returns a BatchSummary."""
    jobs = plan_jobs(workflow, sets, zip_values, servers)
    runner = BatchRunner(jobs, servers, out_dir, queue_depth=queue_depth, outputs=outputs, progress=progress, stream=stream, **options)
    return runner.run()


# ------------------------------------------------------------------------------------------
# the command


def add_queue_command(subparsers) -> argparse.ArgumentParser:
    """Add `queue` to the `steer` command's subparsers; the parser's `run` default runs it."""
    parser = subparsers.add_parser(
        "queue",
        help="run a workflow sweep (seeds, prompts, settings) on one or more ComfyUI servers",
        description=_DESCRIPTION,
        epilog=_SET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return parser


_DESCRIPTION = (
    "Queue an API-format ComfyUI workflow many times with --set overrides, on one or more servers; download the outputs "
    "and write OUT/manifest.jsonl. Re-running the same command skips the jobs already done."
)
_SET_HELP = """\
--set TARGET=VALUES
  TARGET  NODE.inputs.NAME (NODE = node id, title or class type), NODE.NAME, or NAME if one node has it
  VALUES  7.5 | euler,ddim (\\, for a literal comma) | 1..100 | 0..1..0.25 | @prompts.txt (one per line)
          | ["json", "list"]
  Several --set make every combination (the first varies slowest); --zip pairs them up instead.

examples:
  steer queue workflows/api/color_guidance.json --set 9.inputs.noise_seed=1..100 --out seeds
  steer queue wf.json --set "Positive prompt.text=@prompts.txt" --set noise_seed=1..3 \\
      --server http://gpu1:8188 --server http://gpu2:8188
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI: Workflow → Export (API)); a UI-format file is converted")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="TARGET=VALUES", help="override an input; see below")
    parser.add_argument("--zip", dest="zip_values", action="store_true", help="combine the --set lists side by side instead of every combination")
    parser.add_argument("--server", dest="servers", action="append", metavar="URL", help=f"a ComfyUI server; repeat for several (default {DEFAULT_SERVER})")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"folder for the outputs and manifest.jsonl (default ./{DEFAULT_OUT})")
    parser.add_argument("--queue-depth", type=int, default=2, metavar="N", help="fill each server's queue up to N prompts, everyone's counted (default 2: one running, one waiting)")
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
        return _queue(args)
    except KeyboardInterrupt:
        print("steer queue: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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
    runner = BatchRunner(jobs, servers, args.out, queue_depth=args.queue_depth, outputs=None if args.all_outputs else ("output",), progress=not args.quiet)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # stop cleanly when killed, as on Ctrl-C
    try:
        summary = runner.run()
    except BatchError as error:
        print(f"steer queue: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        f"{summary.done} done, {summary.failed} failed, {summary.skipped} already done, {summary.not_run} not run"
        f" → {args.out} (manifest {args.out / MANIFEST_NAME})",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    return summary.exit_code


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """`python -m steer.batch.queue …`: the same as `steer queue …`."""
    parser = argparse.ArgumentParser(prog="steer queue", description=_DESCRIPTION, epilog=_SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    return _queue_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
