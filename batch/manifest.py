"""manifest.jsonl: one JSON line per finished job, appended, flushed and synced as a whole line.

A line is written only when a job has reached an end (``done`` or ``failed``), after its files are in
place, so an interrupted batch leaves a manifest that lists exactly the jobs that finished. Each line
goes out in one ``write`` with the stop signals (SIGINT, SIGTERM, SIGHUP) held back, and readers skip a
line that does not parse, so the file always reads as whole records.

A crash (power cut, SIGKILL) can still leave the last line without its newline. If what is there parses
as a record, the record was written whole (a JSON object is never a prefix of another), so it counts,
before and after the next append; a half record never does. The next append first ends the torn line,
so a new record never lands glued onto it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

DONE, FAILED = "done", "failed"
MANIFEST_NAME = "manifest.jsonl"  # in the batch's out folder


# The signals `steer queue` turns into a clean stop (cli/queue.py); SIGHUP where the platform has it.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def _stop_signals_held():
    """Hold the stop signals back for the duration: delivered right after, never mid-write."""
    held = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if held:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Manifest:
    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def records(self) -> list[dict]:
        """Every whole record, in order (lines that do not parse are skipped; see the module docstring)."""
        if not self.path.exists():
            return []
        records = []
        with open(self.path, "rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def latest(self) -> dict[str, dict]:
        """The last record of each job key."""
        return {record["key"]: record for record in self.records() if "key" in record}

    def done_keys(self) -> set[str]:
        return {key for key, record in self.latest().items() if record.get("status") == DONE}

    def append(self, record: dict) -> None:
        record = {**record, "time": record.get("time") or time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        line = (json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")
        with self._lock, _stop_signals_held():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if self._ends_torn(fd):
                    line = b"\n" + line  # end the torn line so this record stands on its own
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)

    def _ends_torn(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) != b"\n"
