"""How the batch runner reports: a Reporter gets messages (one line each) and status snapshots of the whole batch.

The runner knows nothing of terminals; the `steer queue` front end passes cli.progress.QueueProgress, which draws a
bar. The Python API's default, LineReporter, prints the messages and ignores the snapshots.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JobActivity:
    """A job that is on a server now."""

    index: int
    server: int  # index in the runner's server list
    queued: bool  # not started yet
    node: str | None = None  # class type (or id) of the node it is running
    step: tuple | None = None  # (value, max) of that node's last progress event


@dataclass(frozen=True)
class BatchStatus:
    done: int
    failed: int
    to_run: int  # jobs this run (already-done jobs excluded)
    servers: int
    active: tuple[JobActivity, ...] = ()


class Reporter(Protocol):
    def message(self, text: str) -> None: ...

    def status(self, status: BatchStatus) -> None: ...

    def close(self) -> None: ...


class LineReporter:
    """Messages to a stream (stderr by default), one per line; no status display."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def status(self, status: BatchStatus) -> None:
        pass

    def close(self) -> None:
        pass


class SilentReporter(LineReporter):
    def message(self, text: str) -> None:
        pass
