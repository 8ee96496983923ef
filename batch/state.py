"""What the batch runner keeps about a run: each server, each job on a server, and the summary it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SteerError
from .servers import ComfyConnection
from .sweep import Job

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
    bad_answers: int = 0  # to POST /prompt, in a row
    left_out: str | None = None  # why the batch no longer uses this server
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
