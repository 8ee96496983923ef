"""The batch scheduler: BatchRunner sends jobs to ComfyUI servers and follows them to their end.

Jobs go to the server with the shortest queue, everyone's prompts counted, while that queue is shorter than
`queue_depth` (default 2: one running, one waiting), so several GPUs or machines share one batch and a server busy
with other work gets fewer jobs. Outputs are downloaded into OUT (outputs.py), and OUT/manifest.jsonl gets a line
per finished job; a run skips the jobs the manifest lists as done. A server that stops answering, or answers POST
/prompt badly (HTTP 5xx, not JSON, no prompt_id), has its jobs re-queued on the others; after BAD_ANSWERS_IN_A_ROW bad
answers it is left out of the batch. KeyboardInterrupt takes our prompts off the servers' queues and leaves the manifest
listing exactly the finished jobs. What it has to say goes to a Reporter (report.py).
"""

from __future__ import annotations

import queue as queue_module
import time
from collections import deque
from pathlib import Path

from .manifest import DONE, FAILED, MANIFEST_NAME, Manifest
from .outputs import download_outputs, job_record, remove_partial_downloads
from .report import BatchStatus, JobActivity, LineReporter, Reporter, SilentReporter
from .servers import BadAnswer, ComfyConnection, PromptRejected, ServerUnavailable, compact_node_errors, format_node_errors, normalise_url
from .state import BatchError, BatchSummary, Running, ServerState
from .sweep import Job

BAD_ANSWERS_IN_A_ROW = 3  # to POST /prompt, before a server is left out (one may be a restart's hiccup)


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
        reporter: Reporter | None = None,
    ):
        """`reporter` gets the messages and status; without one, messages print to `stream` (stderr) unless `progress`
        is False."""
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
        self.reporter = reporter or (LineReporter(stream) if progress else SilentReporter())
        self._validation_messages: dict[str, int] = {}

    # ---- entry point

    def run(self) -> BatchSummary:
        done_keys = self.manifest.done_keys()
        self.pending = deque(job for job in self.jobs if job.key not in done_keys)
        self.summary.skipped = len(self.jobs) - len(self.pending)
        if self.summary.skipped:
            self.reporter.message(
                f"{self.summary.skipped} of {len(self.jobs)} jobs are already done (manifest {self.manifest.path}); skipping them"
            )
        if not self.pending:
            self.reporter.message("nothing to do")
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
                self.reporter.status(self.status())
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._cancel_ours()
            self.reporter.message(
                f"interrupted: {self.summary.done} done, {self.summary.failed} failed, {self.summary.not_run} not run; "
                f"the manifest lists every finished job; run the same command again to resume"
            )
        finally:
            self.reporter.close()
            for server in self.servers:
                server.conn.close()
            remove_partial_downloads(self.out_dir)
        return self.summary

    def status(self) -> BatchStatus:
        """Where the batch stands: counts, and each job on a server with the node it runs."""
        active = []
        for server in self.servers:
            for running in server.inflight.values():
                node = running.node
                what = (running.job.prompt.get(str(node)) or {}).get("class_type", node) if node else None
                active.append(JobActivity(running.job.index, server.index, running.started is None, what, running.progress))
        summary = self.summary
        return BatchStatus(summary.done, summary.failed, summary.total - summary.skipped, len(self.servers), tuple(active))

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
            self.reporter.message(f"server not answering, will retry: {problem}")
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
        self.reporter.message(f"server {server.name} dropped out ({reason}); re-queuing {len(jobs)} job(s) on {others}")

    def _retry_dead_servers(self, now: float) -> None:
        for server in self.servers:
            if server.alive or server.left_out or now - server.last_retry < self.retry_interval:
                continue
            server.last_retry = now
            try:
                server.depth = server.conn.queue_remaining()
            except (ServerUnavailable, ValueError):
                continue
            server.alive, server.down_since, server.depth_time = True, None, now
            self._take_off(server, server.abandoned)  # it may still hold prompts we re-queued elsewhere
            self.reporter.message(f"server {server.name} is back")

    def _take_off(self, server: ServerState, ours: set) -> None:
        """Delete these prompts of ours from the server's queue, then interrupt them: one may have started between the
        two calls, and a targeted interrupt leaves a prompt that is not running alone. Best effort."""
        if not ours:
            return
        try:
            running, queued = server.conn.queue_ids()
            there = sorted(ours & (running | queued))
            server.conn.cancel(queued=there, running=there)
        except (ServerUnavailable, ValueError):
            pass

    def _bad_answer(self, server: ServerState, error: BadAnswer) -> None:
        """POST /prompt answered badly: the server's jobs go to the others; after BAD_ANSWERS_IN_A_ROW it is left out."""
        if error.prompt_id:
            server.abandoned.add(error.prompt_id)  # it may have queued the prompt all the same
        server.bad_answers += 1
        self._mark_down(server, str(error))
        if server.bad_answers >= BAD_ANSWERS_IN_A_ROW:
            server.left_out = f"{server.bad_answers} bad answers to POST /prompt in a row, the last: {error}"
            self._take_off(server, server.abandoned)
            self.reporter.message(f"server {server.name} is left out of this batch ({server.left_out})")

    def _check_any_alive(self, now: float) -> None:
        if any(server.alive for server in self.servers):
            return
        usable = [server for server in self.servers if not server.left_out]
        if not usable:
            raise BatchError(
                "every server is left out of the batch:\n  "
                + "\n  ".join(f"{server.name}: {server.left_out}" for server in self.servers)
                + f"\n{len(self.pending)} job(s) not run. The manifest lists the finished ones: run the same command again to resume."
            )
        down_since = max(server.down_since or now for server in usable)
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
            except BadAnswer as error:
                self.pending.appendleft(job)
                self._bad_answer(server, error)
                continue
            except ServerUnavailable as error:
                self.pending.appendleft(job)
                self._mark_down(server, str(error))
                continue
            server.bad_answers = 0
            server.inflight[prompt_id] = Running(job, prompt_id, time.monotonic())
            server.depth += 1

    def _record_rejected(self, job: Job, server: ServerState, rejected: PromptRejected) -> None:
        text = format_node_errors(rejected.error, rejected.node_errors, job.prompt)
        first = self._validation_messages.setdefault(text, job.index)
        if first == job.index:
            self.reporter.message(f"{job.label()} rejected by {server.name} (not retried):\n{text}")
        else:
            self.reporter.message(f"{job.label()} rejected (not retried): the same errors as job {first}")
        error = {"type": "validation", "message": text, "node_errors": compact_node_errors(rejected.node_errors)}
        self._write(job, FAILED, server=server, error=error)

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
                    self.reporter.message(f"{running.job.label()} vanished from {server.name} (restarted?); re-queued")

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
            text = (
                f"node {error.get('node_id')} ({error.get('node_type')}) raised {error.get('exception_type')}: "
                f"{error.get('exception_message', '').strip()}"
            )
            self.reporter.message(f"{job.label()} failed on {server.name}: {text}")
            where = {key: error.get(key) for key in ("node_id", "node_type", "exception_type")}
            self._write(
                job,
                FAILED,
                server=server,
                prompt_id=running.prompt_id,
                seconds=seconds,
                error={"type": "execution", "message": text, **where},
            )
            return
        if "execution_interrupted" in messages:
            self.reporter.message(f"{job.label()} was interrupted on {server.name}")
            self._write(
                job,
                FAILED,
                server=server,
                prompt_id=running.prompt_id,
                seconds=seconds,
                error={"type": "interrupted", "message": "interrupted on the server"},
            )
            return
        try:
            files = download_outputs(server.conn, job, entry.get("outputs") or {}, self.out_dir, self.outputs)
        except ServerUnavailable as error:
            self.pending.appendleft(job)
            self._mark_down(server, str(error))
            return
        except Exception as error:  # a missing file, a full disk...
            self._write(
                job, FAILED, server=server, prompt_id=running.prompt_id, seconds=seconds, error={"type": "download", "message": str(error)}
            )
            self.reporter.message(f"{job.label()}: could not save its outputs: {error}")
            return
        server.done += 1
        record = self._write(job, DONE, server=server, prompt_id=running.prompt_id, seconds=seconds, files=files)
        shown = ", ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "") if files else "no files"
        count = f"[{self.summary.done + self.summary.failed}/{self.summary.total - self.summary.skipped}]"
        self.reporter.message(f"{count} {job.label()} done in {record['seconds']} s on {server.name}: {shown}")

    def _write(self, job: Job, status: str, *, server: ServerState, **details) -> dict:
        record = job_record(job, status, server.name, **details)
        self.manifest.append(record)
        self.summary.records.append(record)
        if status == DONE:
            self.summary.done += 1
        else:
            self.summary.failed += 1
        return record

    def _cancel_ours(self) -> None:
        for server in self.servers:
            if server.alive:
                self._take_off(server, set(server.inflight))
