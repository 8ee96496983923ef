"""Peak resident memory of this process, sampled while a block runs."""

from __future__ import annotations

import threading
import time


class PeakRSS:
    """Samples this process's resident set every few milliseconds while open."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def take(self) -> int:
        """The peak since the block opened or since the last take, and start again from now."""
        peak, self.peak = self.peak, self.process.memory_info().rss
        return max(peak, self.peak)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
