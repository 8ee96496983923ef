"""`steer train` on a tiny diffusers model folder: files, Ctrl-C then resume, and input errors."""

import io
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from unit.tiny_sd import single_thread, tiny_components, tiny_photos, write_tokenizer_files  # noqa: F401 (single_thread: pytest fixtures)

from steer.benchmarks.random_diffusers import SDXL_G_WIDTH, TEXT_WIDTH, random_sdxl_components
from steer.cli import train as cli_train
from steer.cli.progress import TerminalProgress
from steer.cli.train import add_train_command, main, parse_numbers

TINY_PLAN = [
    "--set",
    "token_steps=2",
    "--set",
    "cross_attention_steps=1",
    "--set",
    "unet_steps=1",
    "--set",
    "token_batch_size=2",
    "--set",
    "cross_attention_batch_size=2",
    "--set",
    "unet_batch_size=2",
    "--set",
    "resolution=16",
]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_diffusers")
    unet, text_encoder, tokenizer, vae, scheduler = tiny_components(write_tokenizer_files(root / "bpe"))
    for part, component in {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "vae": vae, "scheduler": scheduler}.items():
        component.save_pretrained(root / "model" / part)
    return root / "model"


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sdxl_diffusers")
    for part, component in random_sdxl_components(write_tokenizer_files(root / "bpe"), sample_size=8).items():
        component.save_pretrained(root / "model" / part)
    return root / "model"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for index, photo in enumerate(tiny_photos(3)):
        Image.fromarray((photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{index}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def arguments(model_folder, photo_folder, out, name="my_dog", *extra):
    return [
        "--images",
        str(photo_folder),
        "--category",
        "dog",
        "--name",
        name,
        "--model",
        str(model_folder),
        "--out-embeddings",
        str(out / "embeddings"),
        "--out-loras",
        str(out / "loras"),
        "--checkpoints",
        str(out / "checkpoints"),
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--rank",
        "4",
        *TINY_PLAN,
        *extra,
    ]


def test_train_writes_the_files_the_node_writes(model_folder, photo_folder, tmp_path, capsys):
    assert main(arguments(model_folder, photo_folder, tmp_path)) == 0
    embedding = load_file(str(tmp_path / "embeddings" / "my_dog.safetensors"))
    assert list(embedding) == ["clip_l"] and tuple(embedding["clip_l"].shape) == (1, 32)
    unet = load_file(str(tmp_path / "loras" / "my_dog.safetensors"))
    assert unet and all(key.startswith("diffusion_model.") for key in unet)
    metadata = json.loads((tmp_path / "loras" / "my_dog.json").read_text())
    assert metadata["category"] == "dog" and metadata["preset"] == "custom" and metadata["images"] == 3
    assert metadata["trigger"] == "embedding:my_dog dog" and metadata["augmented_views"] == 16
    assert metadata["trained_in"].startswith("steer train (diffusers folder")
    assert not list((tmp_path / "checkpoints").glob("*/progress.json"))  # dropped after saving
    err = capsys.readouterr().err
    assert "4/4" in err and "embedding:my_dog dog" in err

    # The name is now taken.
    assert main(arguments(model_folder, photo_folder, tmp_path)) == 2
    assert "already exists" in capsys.readouterr().err


def test_an_sdxl_folder_trains_both_vectors(sdxl_folder, photo_folder, tmp_path, capsys):
    assert main(arguments(sdxl_folder, photo_folder, tmp_path, "my_sdxl_dog")) == 0
    embedding = load_file(str(tmp_path / "embeddings" / "my_sdxl_dog.safetensors"))
    assert {key: tuple(value.shape) for key, value in embedding.items()} == {"clip_l": (1, TEXT_WIDTH), "clip_g": (1, SDXL_G_WIDTH)}
    metadata = json.loads((tmp_path / "loras" / "my_sdxl_dog.json").read_text())
    assert metadata["embedding_keys"] == ["clip_g", "clip_l"] and metadata["plan"]["resolution"] == 16  # custom keeps its size
    folder_without_second_encoder = tmp_path / "broken_sdxl"
    folder_without_second_encoder.mkdir()
    for part in ("unet", "text_encoder", "tokenizer", "vae", "scheduler"):
        os.symlink(sdxl_folder / part, folder_without_second_encoder / part)
    capsys.readouterr()
    assert main(arguments(folder_without_second_encoder, photo_folder, tmp_path, "broken")) == 2
    assert "no text_encoder_2, tokenizer_2 subfolder(s)" in capsys.readouterr().err


def test_ctrl_c_keeps_a_checkpoint_and_the_same_command_resumes(model_folder, photo_folder, tmp_path, capsys, monkeypatch):
    original = TerminalProgress.__call__
    calls = []

    def interrupting(self, done, total, loss):
        calls.append(done)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as a user pressing Ctrl-C as step 1 ends
        return original(self, done, total, loss)

    monkeypatch.setattr(TerminalProgress, "__call__", interrupting)
    with pytest.raises(SystemExit) as stopped:
        main(arguments(model_folder, photo_folder, tmp_path, "ctrl_c"))
    assert stopped.value.code == 130
    assert "Run the same command again to resume" in capsys.readouterr().err
    assert not (tmp_path / "loras" / "ctrl_c.json").exists()
    (progress,) = [json.loads(p.read_text()) for p in (tmp_path / "checkpoints").glob("ctrl_c-*/progress.json")]
    assert (progress["stage_index"], progress["step"]) == (0, 1)  # stopped cleanly after the finished step

    monkeypatch.setattr(TerminalProgress, "__call__", original)
    assert main(arguments(model_folder, photo_folder, tmp_path, "ctrl_c")) == 0
    assert "resumed at step 1" in capsys.readouterr().err
    assert (tmp_path / "loras" / "ctrl_c.json").exists()


def test_input_errors_are_one_line_messages(model_folder, photo_folder, tmp_path, capsys, monkeypatch):
    assert main(arguments(model_folder, photo_folder, tmp_path, "../up")) == 2
    assert "invalid concept name '../up'" in capsys.readouterr().err
    assert main(arguments(model_folder, tmp_path, tmp_path, "empty")) == 2  # a folder without photos
    assert "got 0" in capsys.readouterr().err
    assert main(arguments(tmp_path / "nope", photo_folder, tmp_path, "nomodel")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(arguments(model_folder, photo_folder, tmp_path, "badset", "--set", "unet_steps")) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(arguments(model_folder, photo_folder, tmp_path, "badset", "--set", "unet_speed=3")) == 2
    assert "unknown custom training setting" in capsys.readouterr().err
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert main(arguments(checkpoint, photo_folder, tmp_path, "single_file")) == 2
    assert "COMFYUI_PATH" in capsys.readouterr().err
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not loaded")
    assert main(arguments(pickled, photo_folder, tmp_path, "pickled")) == 2  # refused before anything unpickles it
    assert "safetensors only" in capsys.readouterr().err
    assert not (tmp_path / "loras").exists() or not any((tmp_path / "loras").iterdir())


def test_parse_numbers_and_parser():
    assert parse_numbers(["unet_steps=300", "unet_learning_rate=1e-5", "resolution=768"]) == {
        "unet_steps": 300,
        "unet_learning_rate": 1e-5,
        "resolution": 768,
    }
    import argparse

    parser = argparse.ArgumentParser()
    train = add_train_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--images", "a", "--category", "dog", "--name", "x", "--model", "m"])
    assert args.run is cli_train.run_train and args.preset == "official" and args.unet_format == "lora" and args.rank == 32
    assert "steer train" in train.description


def test_terminal_progress_without_a_terminal():
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    for done in range(1, 41):
        progress(done, 40, 0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 21 and lines[-1].startswith("[" + "#" * 30 + "] 40/40  loss 0.5000")
