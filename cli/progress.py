"""Progress on a terminal for the `steer` command's long runs."""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import contextmanager


class TerminalProgress:
    """A one-line progress bar on a terminal (a line every ~5% otherwise). Ctrl-C asks the
    trainer to stop after the current step (raising from here saves a checkpoint)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.stop_requested = False
        self.started = None
        self.first_done = 0
        self.last_line = -1
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, done: int, total: int, loss: float) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        now = time.monotonic()
        if self.started is None:
            self.started, self.first_done = now, done
        rate = (now - self.started) / max(done - self.first_done, 1) if done > self.first_done else None
        eta = f"  eta {self._clock(rate * (total - done))}" if rate is not None else ""
        shown = "" if math.isnan(loss) else f"  loss {loss:.4f}"
        filled = int(self.width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}{shown}{eta}"
        if self.tty:
            self.stream.write("\r" + line + " " * 4)
            if done >= total:
                self.stream.write("\n")
        elif done >= total or done * 20 // max(total, 1) != self.last_line:
            self.last_line = done * 20 // max(total, 1)
            self.stream.write(line + "\n")
        self.stream.flush()

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(seconds)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"

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
            self.stream.write("\nstopping after this step (Ctrl-C again to stop at once, without a checkpoint)...\n")
            self.stream.flush()

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
