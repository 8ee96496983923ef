"""The batch scheduler (steer.batch.runner) against stand-in ComfyUI servers on 127.0.0.1 (fake_comfy.py).

Covers: outputs and manifest, resume (also from a manifest torn by a crash), validation errors (printed per node
and input, not retried), execution errors, spreading by queue depth, a server dropping out mid-batch or answering
POST /prompt badly, and Ctrl-C.
"""

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from unit.fake_comfy import SEED_NODE, FakeComfy, tiny_workflow
from unit.test_batch_manifest import sigint_ignored

from steer.batch import BatchError, BatchStatus, Manifest, plan_jobs, run_batch
from steer.batch.manifest import STOP_SIGNALS
from steer.batch.runner import BAD_ANSWERS_IN_A_ROW, BatchRunner
from steer.batch.state import Running
from steer.cli.progress import QueueProgress
from steer.cli.queue import stop_signals_interrupt

FAST = {"poll_interval": 0.1, "retry_interval": 0.2}


def seeds_of(manifest_path):
    return sorted(
        record["params"][f"{SEED_NODE}.inputs.noise_seed"] for record in Manifest(manifest_path).records() if record["status"] == "done"
    )


def run(workflow, sets, servers, out, **options):
    stream = io.StringIO()
    summary = run_batch(workflow, sets, servers=servers, out_dir=out, stream=stream, **{**FAST, **options})
    return summary, stream.getvalue()


def test_outputs_are_downloaded_and_each_job_gets_a_manifest_line(tmp_path):
    with FakeComfy() as server:
        summary, log = run(tiny_workflow(), ["noise_seed=1..4"], [server.url], tmp_path / "out")
    assert (summary.done, summary.failed, summary.exit_code) == (4, 0, 0)
    records = Manifest(tmp_path / "out" / "manifest.jsonl").records()
    assert [r["job"] for r in sorted(records, key=lambda r: r["job"])] == [0, 1, 2, 3]
    for record in records:
        assert record["status"] == "done" and record["server"] == server.url and record["prompt_id"]
        assert set(record) >= {"job", "key", "params", "prompt_id", "server", "files", "seconds", "status", "time"}
        (name,) = record["files"]  # the saved image only: the temp preview is not downloaded by default
        seed = record["params"][f"{SEED_NODE}.inputs.noise_seed"]
        assert (tmp_path / "out" / name).read_text().startswith(f"image seed={seed} ")
    assert "done in" in log


def test_a_rerun_skips_done_jobs_and_runs_only_new_ones(tmp_path):
    with FakeComfy() as server:
        run(tiny_workflow(), ["noise_seed=1..3"], [server.url], tmp_path)
        assert len(server.accepted) == 3
        summary, log = run(tiny_workflow(), ["noise_seed=1..3"], [server.url], tmp_path)
        assert (summary.skipped, summary.done, len(server.accepted)) == (3, 0, 3)
        assert "already done" in log and "nothing to do" in log
        summary, _ = run(tiny_workflow(), ["noise_seed=1..5"], [server.url], tmp_path)
        assert (summary.skipped, summary.done, len(server.accepted)) == (3, 2, 5)
    assert seeds_of(tmp_path / "manifest.jsonl") == [1, 2, 3, 4, 5]


def test_all_outputs_includes_temp_previews(tmp_path):
    with FakeComfy() as server:
        summary, _ = run(tiny_workflow(), [], [server.url], tmp_path, outputs=None)
    assert len(summary.records[0]["files"]) == 2


def test_validation_errors_are_printed_per_node_and_input_and_not_retried(tmp_path):
    def reject(prompt):
        seed = prompt[SEED_NODE]["inputs"]["noise_seed"]
        if seed < 0:
            return {
                SEED_NODE: {
                    "class_type": "RandomNoise",
                    "dependent_outputs": ["9"],
                    "errors": [
                        {
                            "type": "value_smaller_than_min",
                            "message": "Value -1 smaller than min of 0",
                            "details": "noise_seed",
                            "extra_info": {"input_name": "noise_seed", "received_value": seed, "input_config": ["INT", {"min": 0}]},
                        }
                    ],
                }
            }
        return None

    with FakeComfy(reject=reject) as server:
        summary, log = run(tiny_workflow(), ["noise_seed=-2..1"], [server.url], tmp_path)
        assert len(server.accepted) == 2  # the two valid jobs; the rejected ones were posted once each
    assert (summary.done, summary.failed, summary.exit_code) == (2, 2, 1)
    assert "node 3 (RandomNoise), input 'noise_seed': Value -1 smaller than min of 0" in log
    assert "not retried" in log
    failed = [r for r in Manifest(tmp_path / "manifest.jsonl").records() if r["status"] == "failed"]
    assert len(failed) == 2 and failed[0]["error"]["type"] == "validation"
    assert failed[0]["error"]["node_errors"][SEED_NODE][0]["input"] == "noise_seed"
    assert "input_config" not in json.dumps(failed)  # the manifest keeps the errors compact


def test_an_execution_error_is_recorded_with_the_node_and_message(tmp_path):
    with FakeComfy(fail=lambda p: p[SEED_NODE]["inputs"]["noise_seed"] == 2) as server:
        summary, log = run(tiny_workflow(), ["noise_seed=1..3"], [server.url], tmp_path)
    assert (summary.done, summary.failed) == (2, 1)
    (failed,) = [r for r in summary.records if r["status"] == "failed"]
    assert failed["error"]["type"] == "execution" and "RuntimeError: boom" in failed["error"]["message"]
    assert "raised RuntimeError: boom" in log


def test_jobs_spread_by_queue_depth(tmp_path):
    """A server whose queue is full of other users' prompts gets none of ours while another is free."""
    with FakeComfy(seconds_per_job=0.1, name="idle") as idle, FakeComfy(seconds_per_job=0.1, external_depth=5, name="busy") as busy:
        summary, _ = run(tiny_workflow(), ["noise_seed=1..8"], [busy.url, idle.url], tmp_path, queue_depth=2)
        assert summary.done == 8
        assert (len(idle.accepted), len(busy.accepted)) == (8, 0)
        busy.external_depth = 1  # room for one more there now
        summary, _ = run(tiny_workflow(), ["noise_seed=9..16"], [busy.url, idle.url], tmp_path, queue_depth=2)
        assert summary.done == 8 and 1 <= len(busy.accepted) < len(idle.accepted) - 8


def test_two_equal_servers_share_the_batch(tmp_path):
    with FakeComfy(seconds_per_job=0.2, name="a") as a, FakeComfy(seconds_per_job=0.2, name="b") as b:
        summary, _ = run(tiny_workflow(), ["noise_seed=1..8"], [a.url, b.url], tmp_path)
    assert summary.done == 8 and len(a.accepted) >= 3 and len(b.accepted) >= 3


def test_a_server_that_drops_out_has_its_jobs_requeued_on_the_others(tmp_path):
    with FakeComfy(seconds_per_job=0.3, name="flaky") as flaky, FakeComfy(seconds_per_job=0.05, name="steady") as steady:
        # the flaky server dies just after it accepted its second prompt, with both still unfinished
        flaky.on_accept = lambda fake, _: len(fake.accepted) == 2 and threading.Timer(0.05, fake.die).start()
        summary, log = run(tiny_workflow(), ["noise_seed=1..6"], [flaky.url, steady.url], tmp_path, queue_depth=2)
    assert (summary.done, summary.failed, summary.exit_code) == (6, 0, 0)
    assert "dropped out" in log and "re-queuing" in log
    records = Manifest(tmp_path / "manifest.jsonl").records()
    assert sorted(r["job"] for r in records) == list(range(6))  # each job exactly once
    assert seeds_of(tmp_path / "manifest.jsonl") == [1, 2, 3, 4, 5, 6]
    lost_on_flaky = set(flaky.accepted) - set(flaky.executed)
    assert lost_on_flaky and all(r["server"] == steady.url for r in records if r["prompt_id"] not in flaky.executed)


BAD_ANSWERS = {
    "http-500": (500, b"<html><h1>500 Internal Server Error</h1></html>"),
    "not-json": (200, b"<html>Please log in to the proxy</html>"),
    "no-prompt-id": (200, b'{"number": 1, "node_errors": {}}'),
}


@pytest.mark.parametrize("answer", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
def test_a_server_that_answers_prompt_badly_gives_its_jobs_to_the_others(tmp_path, answer):
    broken = FakeComfy(name="broken", bad_answer=lambda _: answer, queue_before_bad_answer=answer[0] == 200, seconds_per_job=30)
    with broken, FakeComfy(seconds_per_job=0.2, name="healthy") as healthy:
        # the broken server comes first, and is tried first while both queues are empty
        summary, log = run(tiny_workflow(), ["noise_seed=1..6"], [broken.url, healthy.url], tmp_path, queue_depth=2)
        assert broken.bad_answers == BAD_ANSWERS_IN_A_ROW  # tried again after each, then never again
        # what it queued in spite of its answer was taken off it again
        assert not broken.pending and set(broken.accepted) <= set(broken.deleted) | set(broken.interrupted)
    assert (summary.done, summary.failed, summary.exit_code) == (6, 0, 0)
    records = Manifest(tmp_path / "manifest.jsonl").records()
    assert sorted(r["job"] for r in records) == list(range(6)) and {r["server"] for r in records} == {healthy.url}
    assert f"server {broken.url} dropped out ({broken.url}/prompt answered" in log
    assert f"server {broken.url} is left out of this batch ({BAD_ANSWERS_IN_A_ROW} bad answers to POST /prompt" in log
    assert "Traceback" not in log


def test_only_servers_that_answer_prompt_badly_is_a_clear_error(tmp_path):
    with FakeComfy(bad_answer=lambda _: BAD_ANSWERS["not-json"]) as broken:
        with pytest.raises(BatchError, match="every server is left out of the batch") as raised:
            run(tiny_workflow(), ["noise_seed=1..3"], [broken.url], tmp_path)
    assert f"{broken.url}: {BAD_ANSWERS_IN_A_ROW} bad answers to POST /prompt in a row" in str(raised.value)
    assert "not JSON" in str(raised.value) and "3 job(s) not run" in str(raised.value)


@pytest.mark.parametrize("torn", ["half-record", "whole-record-without-newline"])
def test_a_rerun_after_a_crash_that_tore_the_manifest_runs_each_job_exactly_once(tmp_path, torn):
    with FakeComfy() as server:
        run(tiny_workflow(), ["noise_seed=1..3"], [server.url], tmp_path)
        manifest = tmp_path / "manifest.jsonl"
        raw = manifest.read_bytes()
        last = raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        manifest.write_bytes(raw[: len(raw) - 1] if torn == "whole-record-without-newline" else raw[: len(raw) - len(last) // 2])
        summary, _ = run(tiny_workflow(), ["noise_seed=1..5"], [server.url], tmp_path)
        rerun = 3 if torn == "half-record" else 2  # a half record is not a finished job; a whole one is
        assert (summary.skipped, summary.done, len(server.accepted)) == (5 - rerun, rerun, 3 + rerun)
    records = Manifest(manifest).records()
    # no record lost (glued onto the torn line) or repeated (the torn one counted once read, once rewritten)
    assert sorted(r["job"] for r in records) == list(range(5)) and seeds_of(manifest) == [1, 2, 3, 4, 5]


def test_every_server_down_stops_with_a_resumable_manifest(tmp_path):
    with FakeComfy(seconds_per_job=0.2) as server:
        server.on_accept = lambda fake, _: len(fake.accepted) == 3 and threading.Timer(0.3, fake.die).start()
        with pytest.raises(BatchError, match="run the same command again to resume"):
            run(tiny_workflow(), ["noise_seed=1..6"], [server.url], tmp_path, queue_depth=1, give_up_after=0.5)
    done = seeds_of(tmp_path / "manifest.jsonl")
    assert 1 <= len(done) <= 3
    with FakeComfy() as replacement:
        summary, _ = run(tiny_workflow(), ["noise_seed=1..6"], [replacement.url], tmp_path)
    assert summary.skipped == len(done) and seeds_of(tmp_path / "manifest.jsonl") == [1, 2, 3, 4, 5, 6]


def test_no_server_answering_is_a_clear_error(tmp_path):
    server = FakeComfy()
    url = server.url
    server.die()
    with pytest.raises(BatchError, match="no ComfyUI server answered"):
        run(tiny_workflow(), [], [url], tmp_path)


def test_plan_jobs_reads_a_workflow_file(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(tiny_workflow()))
    jobs = plan_jobs(path, ["noise_seed=1..2"])
    assert [job.prompt[SEED_NODE]["inputs"]["noise_seed"] for job in jobs] == [1, 2]


def test_a_ui_format_workflow_is_converted_with_the_servers_object_info(tmp_path):
    workflows = Path(__file__).resolve().parents[2] / "workflows"
    with FakeComfy() as server:
        (job,) = plan_jobs(workflows / "color_guidance.json", [], servers=[server.url])
    assert job.prompt == json.loads((workflows / "api" / "color_guidance.json").read_text())


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[signal.Signals(s).name for s in STOP_SIGNALS])
def test_ctrl_c_leaves_a_consistent_manifest_and_the_rerun_finishes(tmp_path, signum):
    """Ctrl-C, SIGTERM and SIGHUP all stop `steer queue` cleanly, though it was started with SIGINT ignored."""
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(tiny_workflow()))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "steer.batch", str(workflow), "--set", "noise_seed=1..8", "--out", str(out)]
    with FakeComfy(seconds_per_job=0.4) as server:
        process = subprocess.Popen(
            [*command, "--server", server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_ignored
        )
        deadline = time.monotonic() + 60
        while len(Manifest(out / "manifest.jsonl").records()) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "resume" in stderr
        raw = (out / "manifest.jsonl").read_bytes()
        assert raw.endswith(b"\n")
        finished = [json.loads(line) for line in raw.splitlines()]
        assert 2 <= len(finished) < 8 and all(r["status"] == "done" for r in finished)
        for record in finished:
            assert all((out / name).exists() for name in record["files"])
        assert not list(out.glob(".*.part"))
        time.sleep(0.5)
        assert not server.pending  # our queued prompts were taken off the server

        rerun = subprocess.run([*command, "--server", server.url], capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{len(finished)} of 8 jobs are already done" in rerun.stderr
    assert seeds_of(out / "manifest.jsonl") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert len(Manifest(out / "manifest.jsonl").records()) == 8


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_the_stop_handlers_override_an_inherited_sigint_ignore_but_keep_nohup():
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup: outlive the terminal
        with stop_signals_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is signal.default_int_handler
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_the_progress_line_shows_each_running_jobs_node_progress(tmp_path):
    runner = BatchRunner(plan_jobs(tiny_workflow(), ["noise_seed=1..3"]), ["http://127.0.0.1:9"], tmp_path, progress=False)
    server = runner.servers[0]
    server.inflight["p1"] = Running(runner.jobs[1], "p1", time.monotonic(), started=time.monotonic(), node=SEED_NODE, progress=(3, 20))
    server.inflight["p2"] = Running(runner.jobs[2], "p2", time.monotonic())
    runner.summary.done = 1
    line = QueueProgress(io.StringIO()).status_line(runner.status(), time.monotonic())
    assert line.startswith("[######..............] 1/3")
    assert "job 1: RandomNoise 3/20" in line and "job 2 queued" in line and "ETA" in line


def test_the_queue_display_draws_one_line_on_a_terminal_and_prints_messages_above_it():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    display = QueueProgress(stream)
    runner_status = BatchStatus(done=1, failed=0, to_run=4, servers=1)
    display.status(runner_status)
    display.message("job 0 done")
    display.status(BatchStatus(done=2, failed=0, to_run=4, servers=1))
    display.close()
    out = stream.getvalue()
    assert out.count("\r\x1b[K[#####...............] 1/4") == 1 and "\r\x1b[Kjob 0 done\n" in out
    assert "\r\x1b[K[##########..........] 2/4" in out  # drawn again at once below the message
    assert out.endswith("\r\x1b[K")  # closing erases the bar


def test_the_queue_display_without_a_terminal_prints_a_line_per_five_percent():
    stream = io.StringIO()
    display = QueueProgress(stream)
    for done in range(41):
        display.status(BatchStatus(done=done, failed=0, to_run=40, servers=1))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 21 and lines[-1].startswith("[" + "#" * 20 + "] 40/40")
