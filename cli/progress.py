"""Progress on a terminal for the `steer` command's long runs: training (TerminalProgress) and `steer queue` (QueueProgress).

Both draw through one LiveLine: on a terminal one line rewritten in place, otherwise a plain line when the
run has moved another 5 % (or, for runs whose count moves slowly, every so many seconds), so logs stay short.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `steer train` uses this module too, and needs none of batch/'s imports
    from ..batch.report import BatchStatus


def is_terminal(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


class LiveLine:
    """One status line. On a terminal it is redrawn in place (at most every `redraw_every` s) and messages print above
    it; otherwise a line is printed each time the fraction done crosses another 5 %, and every `plain_every` s if set."""

    STEPS = 20  # plain lines per run: one per 5 %

    def __init__(self, stream=None, redraw_every: float = 0.0, plain_every: float | None = None):
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream)
        self.redraw_every, self.plain_every = redraw_every, plain_every
        self._drawn = False
        self._last_time = -math.inf
        self._last_step = -1

    def show(self, line: str, fraction: float, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if final or now - self._last_time >= self.redraw_every:
                width = shutil.get_terminal_size((100, 20)).columns
                self.stream.write("\r\x1b[K" + line[: width - 1])
                self._drawn = True
                self._last_time = now
        else:
            step = int(fraction * self.STEPS)
            due = self.plain_every is not None and now - self._last_time >= self.plain_every
            if not (final or due or step != self._last_step):
                return
            self._last_step, self._last_time = step, now
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line above the status line (which the next `show` draws again)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
            self._last_time = -math.inf  # the next show draws it again at once

    def keep(self) -> None:
        """Leave the last status line on screen and move below it."""
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.flush()


@contextmanager
def signal_handled(signum, handler):
    """`handler` for `signum` for the duration, the previous one restored after; a no-op where Python cannot set it
    (off the main thread, or a signal this platform lacks)."""
    try:
        previous = signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signum, previous)


class TerminalProgress:
    """The training bar (`progress(done, total, loss)` after each step). Ctrl-C asks the trainer to stop after the
    current step (raising from here saves a checkpoint)."""

    def __init__(self, stream=None, width: int = 30):
        self.line = LiveLine(stream)
        self.stream = self.line.stream
        self.width = width
        self.stop_requested = False
        self.started = None
        self.first_done = 0

    def __call__(self, done: int, total: int, loss: float) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        now = time.monotonic()
        if self.started is None:
            self.started, self.first_done = now, done
        rate = (now - self.started) / max(done - self.first_done, 1) if done > self.first_done else None
        eta = f"  eta {clock(rate * (total - done))}" if rate is not None else ""
        shown = "" if math.isnan(loss) else f"  loss {loss:.4f}"
        finished = done >= total
        self.line.show(f"{bar(done, total, self.width)}{shown}{eta}", done / max(total, 1), final=finished)
        if finished:
            self.line.keep()

    @contextmanager
    def ctrl_c_stops_cleanly(self):
        """First Ctrl-C: finish the step, save a checkpoint, stop. Second: stop at once."""
        if not hasattr(signal, "SIGINT") or os.name == "nt":
            yield
            return

        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.line.message("stopping after this step (Ctrl-C again to stop at once, without a checkpoint)...")

        with signal_handled(signal.SIGINT, handler):
            yield


class QueueProgress:
    """`steer queue`'s display (a batch.report.Reporter): a bar over the batch plus each running job's node and step,
    with the runner's messages above it."""

    def __init__(self, stream=None, width: int = 20):
        self.line = LiveLine(stream, redraw_every=0.2, plain_every=15.0)
        self.width = width
        self.started = time.monotonic()

    def message(self, text: str) -> None:
        self.line.message(text)

    def status(self, status: BatchStatus) -> None:
        self.line.show(self.status_line(status, time.monotonic()), (status.done + status.failed) / max(status.to_run, 1))

    def status_line(self, status: BatchStatus, now: float) -> str:
        finished = status.done + status.failed
        parts = [bar(finished, max(1, status.to_run), self.width)]
        if status.failed:
            parts.append(f"{status.failed} failed")
        for job in status.active:
            if job.queued:
                parts.append(f"job {job.index} queued")
                continue
            step = f" {job.step[0]}/{job.step[1]}" if job.step and job.step[1] else ""
            where = f" @{job.server + 1}" if status.servers > 1 else ""
            parts.append(f"job {job.index}: {job.node or 'starting'}{step}{where}")
        if finished:
            parts.append(f"ETA {clock((now - self.started) / finished * (status.to_run - finished))}")
        return " · ".join(parts)

    def close(self) -> None:
        self.line.clear()
