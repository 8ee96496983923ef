"""`steer train` with a single-file checkpoint: loaded through ComfyUI's own loaders (COMFYUI_PATH)
and trained with the ComfyUI backend, in a subprocess as a user runs it. Ctrl-C keeps a
checkpoint and the same command resumes; the files are the ones the node writes.

Runs `python -m steer.cli.train` (what `steer train` calls).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from comfy_server import comfyui_path
from PIL import Image

TIMEOUT = 900


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_photos")
    rng = np.random.default_rng(1)
    for index, size in enumerate([(70, 64), (64, 90), (80, 80)]):
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).resize(size, Image.BILINEAR).save(folder / f"{index}.jpg")
    return folder


def command(tiny_checkpoint, photos, out):
    return [
        sys.executable,
        "-m",
        "steer.cli.train",
        "--images",
        str(photos),
        "--category",
        "dog",
        "--name",
        "cli_dog",
        "--model",
        str(tiny_checkpoint),
        "--out-embeddings",
        str(out / "embeddings"),
        "--out-loras",
        str(out / "loras"),
        "--checkpoints",
        str(out / "checkpoints"),
        "--set",
        "token_steps=3",
        "--set",
        "cross_attention_steps=1",
        "--set",
        "unet_steps=0",
        "--set",
        "token_batch_size=1",
        "--set",
        "cross_attention_batch_size=1",
        "--set",
        "resolution=64",
        "--augmented-views",
        "1",
        "--rank",
        "4",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]


def environment():
    return {**os.environ, "COMFYUI_PATH": str(comfyui_path()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_single_file_checkpoint_trains_through_comfyui_and_resumes_after_ctrl_c(tiny_checkpoint, photos, tmp_path):
    first = subprocess.Popen(
        command(tiny_checkpoint, photos, tmp_path), env=environment(), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    seen = []
    deadline = time.monotonic() + TIMEOUT
    for line in first.stderr:  # a line per step when stderr is not a terminal
        seen.append(line)
        if "] 1/4" in line:
            first.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline
    _, rest = first.communicate(timeout=TIMEOUT)
    output = "".join(seen) + rest
    assert first.returncode == 130, output
    assert not (tmp_path / "loras" / "cli_dog.json").exists()
    (progress,) = [json.loads(p.read_text()) for p in (tmp_path / "checkpoints").glob("cli_dog-*/progress.json")]
    assert progress["stage_index"] == 0 and 1 <= progress["step"] < 3

    second = subprocess.run(command(tiny_checkpoint, photos, tmp_path), env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resumed at step {progress['step']}" in second.stderr
    assert "through ComfyUI (SD15)" in second.stderr

    from safetensors.torch import load_file

    embedding = load_file(str(tmp_path / "embeddings" / "cli_dog.safetensors"))
    assert tuple(embedding["clip_l"].shape) == (1, 768)
    unet = load_file(str(tmp_path / "loras" / "cli_dog.safetensors"))
    assert unet and all(".attn2." in key for key in unet)  # stage 3 skipped: only cross-attention changed
    metadata = json.loads((tmp_path / "loras" / "cli_dog.json").read_text())
    assert metadata["base_model"].startswith("comfyui-SD15-") and metadata["trained_in"].startswith("steer train (")
    assert metadata["steps"] == 4 and metadata["trigger"] == "embedding:cli_dog dog"
    assert not list((tmp_path / "checkpoints").glob("cli_dog-*/progress.json"))
    from PIL import Image

    previews = sorted(p.name for p in (tmp_path / "loras").glob("cli_dog.preview*.png"))
    assert previews == ["cli_dog.preview-cross_attention.png", "cli_dog.preview-token.png", "cli_dog.preview.png"], previews
    assert "cli_dog.preview.png" in second.stderr
    image = Image.open(tmp_path / "loras" / "cli_dog.preview.png")
    assert image.mode == "RGB" and image.size[0] == image.size[1] >= 64
