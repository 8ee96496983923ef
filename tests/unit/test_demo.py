"""`steer demo`, the README's first command, end to end (small settings to stay fast)."""

import math
import subprocess
import sys

import numpy as np
from PIL import Image


def _steer(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "steer.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_steer_demo_runs_the_world_model_and_writes_grid_and_samples(tmp_path):
    out = tmp_path / "demo"
    run = _steer("demo", "--out", str(out), "--count", "3", "--steps", "8")
    assert run.returncode == 0, run.stderr
    assert "judge hit-rate" in run.stdout and "guided (mpgd)" in run.stdout
    grid = Image.open(out / "world_grid.png")
    assert grid.size[0] >= 3 * 96 and grid.size[1] >= 3 * 96  # 3 prompts, rows unguided / colour / shape
    samples = np.load(out / "samples.npz")
    assert samples["images"].shape == (9, 32, 32, 3) and samples["images"].dtype == np.float32
    assert 0.0 <= samples["images"].min() and samples["images"].max() <= 1.0
    assert samples["guided"].tolist() == [False] * 3 + [True] * 6
    assert samples["prompt"].dtype.kind == "U" and samples["prompt"][0] == samples["prompt"][3] == samples["prompt"][6]
    assert samples["target_rgb"].shape == (9, 3) and samples["target_rgb"].dtype == np.float32
    assert all(math.isnan(v) for v in samples["target_rgb"][:3].ravel()) and all(math.isnan(v) for v in samples["target_rgb"][6:].ravel())
    assert np.allclose(samples["target_rgb"][3], [240 / 255, 220 / 255, 40 / 255])
    assert samples["target_shape"].tolist() == [""] * 6 + ["star"] * 3
    assert "yellow" not in " ".join(samples["prompt"].tolist()) and "star" not in " ".join(samples["prompt"].tolist())


def test_steer_demo_digits_writes_grid_and_samples(tmp_path):
    out = tmp_path / "demo"
    run = _steer("demo", "digits", "--out", str(out), "--per-digit", "2", "--steps", "10")
    assert run.returncode == 0, run.stderr
    assert "judge hit-rate" in run.stdout and "guided (mpgd)" in run.stdout
    grid = Image.open(out / "digits_grid.png")
    assert grid.size[0] >= 2 * 2 * 48 and grid.size[1] >= 10 * 48  # two blocks of 2 digits, 10 rows, 48 px cells
    samples = np.load(out / "samples.npz")
    assert samples["images"].shape == (40, 16, 16) and samples["images"].dtype == np.float32
    assert 0.0 <= samples["images"].min() and samples["images"].max() <= 1.0
    assert samples["target"].tolist() == list(range(10)) * 2 * 2
    assert samples["guided"].sum() == 20


def test_bad_arguments_give_a_clear_error(tmp_path):
    run = _steer("demo", "--out", str(tmp_path), "--steps", "0", timeout=120)
    assert run.returncode == 2
    assert "--count and --steps must be at least 1" in run.stderr
    run = _steer("demo", "digits", "--out", str(tmp_path), "--steps", "0", timeout=120)
    assert run.returncode == 2
    assert "steps must be between 1 and 1000" in run.stderr
