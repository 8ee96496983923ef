"""manifest.jsonl (steer.batch.manifest): whole lines only, resume keys, torn tails."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from steer.batch.manifest import DONE, FAILED, STOP_SIGNALS, Manifest


def sigint_ignored():
    """Start the child as a shell's background job starts it, with SIGINT ignored: it must set its own handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_records_append_as_whole_json_lines(tmp_path):
    manifest = Manifest(tmp_path / "out" / "manifest.jsonl")
    assert manifest.records() == [] and manifest.done_keys() == set()
    manifest.append({"job": 0, "key": "a", "status": DONE, "params": {"9.inputs.text": 'ünïcode, "quoted"\nnewline'}})
    manifest.append({"job": 1, "key": "b", "status": FAILED})
    raw = manifest.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2  # a newline inside a value is escaped
    records = manifest.records()
    assert [r["job"] for r in records] == [0, 1]
    assert records[0]["params"]["9.inputs.text"].startswith("ünïcode")
    assert all("time" in r for r in records)
    assert manifest.done_keys() == {"a"}


def test_the_latest_record_of_a_job_wins(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"job": 0, "key": "a", "status": FAILED})
    assert manifest.done_keys() == set()  # failed jobs are tried again on the next run
    manifest.append({"job": 0, "key": "a", "status": DONE})
    assert manifest.done_keys() == {"a"}


def test_a_torn_last_line_is_ignored_and_closed_before_the_next_record(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps({"job": 0, "key": "a", "status": DONE}) + "\n" + '{"job": 1, "key": "b", "sta')
    manifest = Manifest(path)
    assert [r["key"] for r in manifest.records()] == ["a"]
    manifest.append({"job": 2, "key": "c", "status": DONE})
    assert [r["key"] for r in manifest.records()] == ["a", "c"]
    assert manifest.done_keys() == {"a", "c"}


def test_a_whole_record_that_lost_only_its_newline_counts_once_before_and_after_the_next_append(tmp_path):
    """The crash came after the record's last byte but before its newline: the job finished, so it is done (not
    run again), and ending the line on the next append must not make it a second record of that job."""
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps({"job": 0, "key": "a", "status": DONE}) + "\n" + json.dumps({"job": 1, "key": "b", "status": DONE}))
    manifest = Manifest(path)
    assert manifest.done_keys() == {"a", "b"}
    manifest.append({"job": 2, "key": "c", "status": DONE})
    assert [r["key"] for r in manifest.records()] == ["a", "b", "c"]
    assert path.read_bytes().count(b"\n") == 3  # c starts on a line of its own


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[signal.Signals(s).name for s in STOP_SIGNALS])
def test_ctrl_c_storm_never_leaves_a_half_line(tmp_path, signum):
    """A writer with `steer queue`'s stop handlers, started with SIGINT ignored and hammered with a stop signal:
    it stops, and every line on disk is a whole record."""
    path = tmp_path / "manifest.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from steer.batch.manifest import Manifest
        from steer.cli.queue import stop_signals_interrupt
        manifest = Manifest({str(path)!r})
        i = 0
        try:
            with stop_signals_interrupt():
                print("ready", flush=True)
                while True:
                    manifest.append({{"job": i, "key": str(i), "status": "done", "params": {{"text": "x" * 5000}}}})
                    i += 1
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, preexec_fn=sigint_ignored)
    assert process.stdout.readline().strip() == "ready"
    while not path.exists() or path.stat().st_size < 200_000:
        time.sleep(0.01)
    for _ in range(20):
        os.kill(process.pid, signum)
        if process.poll() is not None:
            break
    assert process.wait(timeout=30) == 130
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    assert [json.loads(line)["job"] for line in lines] == list(range(len(lines)))
