"""`steer queue` end to end: a seed sweep of the colour-guidance API workflow on the real server."""

import json
import subprocess
import sys

import numpy as np
import requests
from comfy_server import CHECKPOINT_NAME
from PIL import Image
from workflow_files import API_DIR, TEST_SIZE

WORKFLOW = API_DIR / "color_guidance.json"
SEED_INPUT = "9.inputs.noise_seed"  # the RandomNoise node of color_guidance


def queue_command() -> list[str]:
    return [sys.executable, "-m", "steer.cli", "queue"]


def history_size(comfy) -> int:
    return len(requests.get(f"{comfy.base_url}/history", timeout=30).json())


def test_seed_sweep_downloads_four_images_writes_four_lines_and_a_rerun_does_nothing(comfy, tmp_path):
    assert json.loads(WORKFLOW.read_text())["9"]["class_type"] == "RandomNoise"
    out = tmp_path / "sweep"
    command = [
        *queue_command(),
        str(WORKFLOW),
        "--server",
        comfy.base_url,
        "--set",
        f"{SEED_INPUT}=1..4",
        # the tests' checkpoint, at test size and speed
        "--set",
        f"ckpt_name={CHECKPOINT_NAME}",
        "--set",
        f"width={TEST_SIZE}",
        "--set",
        f"height={TEST_SIZE}",
        "--set",
        "steps=2",
        "--set",
        "preset=mpgd",
        "--out",
        str(out),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stderr

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert sorted(r["params"][SEED_INPUT] for r in records) == [1, 2, 3, 4]
    for record in records:
        assert record["status"] == "done" and record["server"] == comfy.base_url and record["prompt_id"]
        assert record["seconds"] > 0 and len(record["files"]) == 1  # the saved image; the report preview is temp
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4
    by_seed = {r["params"][SEED_INPUT]: np.asarray(Image.open(out / r["files"][0]).convert("RGB"), dtype=np.int16) for r in records}
    assert all(image.shape == (TEST_SIZE, TEST_SIZE, 3) for image in by_seed.values())
    for a in range(1, 5):
        for b in range(a + 1, 5):
            assert np.abs(by_seed[a] - by_seed[b]).max() > 8, f"seeds {a} and {b} gave the same image"

    before = history_size(comfy)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 of 4 jobs are already done" in rerun.stderr and "nothing to do" in rerun.stderr
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    assert len(list(out.glob("*.png"))) == 4
    assert history_size(comfy) == before  # nothing was queued
