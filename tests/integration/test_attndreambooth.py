"""AttnDreamBooth inside a real ComfyUI, on the tiny fixture checkpoint.

- In a ComfyUI subprocess (attndreambooth_probe.py): the ComfyUI backbone and the diffusers one,
  built from the same tiny weights, give the same prompt embeddings, latents, predictions,
  regularizer and token gradient, and the same training history (SD1- and SD2-style models);
  unsupported inputs get clear errors; training leaves ComfyUI's objects as they were.
- Through the server (/prompt): a training graph with a stock image-folder loader is cancelled
  after its first progress event, then queued again and resumes from the checkpoint; the files
  appear; stock LoraLoaderModelOnly + `embedding:<name>` load them without warnings and change
  the output; Steer AttnDreamBooth Load gives the same image; bad inputs are clear errors.

The server here is this module's own: it adds a small test-helper custom node (SteerTestPhotos,
which can make an empty image batch) beside the pack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from comfy_server import CHECKPOINT_NAME, ComfyServer, ExecutionFailed, PromptBuilder, run_script
from concept_checks import assert_stock_nodes_apply_the_concept, saved_image
from graphs import concept_sample_graph, tiny_training_plan, txt2img

PROBE_SCRIPT = Path(__file__).with_name("attndreambooth_probe.py")
CONCEPT = "steer_test_dog"
PHOTO_FOLDER = "steer_dog_photos"
NODES = ("SteerAttnDreamBoothTrain", "SteerAttnDreamBoothLoad")
# Stage 1 long enough to be cancelled inside it.
PLAN = tiny_training_plan(token_steps=3)
TOTAL_STEPS = 5
TIMEOUT = 900

HELPERS = '''
"""Test-only nodes for tests/integration/test_attndreambooth.py (not part of the pack)."""
import torch


class SteerTestPhotos:
    """`count` smooth random photos (count may be 0: an empty IMAGE batch no stock node makes)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "count": ("INT", {"default": 3, "min": 0, "max": 64}),
            "size": ("INT", {"default": 64, "min": 8, "max": 1024}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, count, size, seed):
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(count, 3, 4, 4, generator=generator)
        if count:
            images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        else:
            images = torch.zeros(0, 3, size, size)
        return (images.movedim(1, -1).contiguous(),)


NODE_CLASS_MAPPINGS = {"SteerTestPhotos": SteerTestPhotos}
'''


def _run_probe(command: str, timeout: float) -> dict:
    completed = run_script(PROBE_SCRIPT, command, timeout=timeout)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("PROBE_REPORT "))
    return json.loads(line.removeprefix("PROBE_REPORT "))


# --------------------------------------------------------------------------------------------
# In a ComfyUI process: parity with the diffusers backend, errors, restoration


def _relative(entry: dict) -> float:
    return entry["max_abs"] / max(entry["scale"], 1e-12)


@pytest.fixture(scope="module")
def probe_report():
    return _run_probe("all", timeout=1500)


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sdxl"])
def test_comfy_and_diffusers_backbones_agree_on_the_same_tiny_weights(probe_report, variant):
    report = probe_report["parity"][variant]
    assert report["prediction_types"] == (["v_prediction"] * 2 if variant == "sd2" else ["epsilon"] * 2)
    keys = {"sd1": ["clip_l"], "sd2": ["clip_h"], "sdxl": ["clip_g", "clip_l"]}[variant]
    assert report["embedding_keys"][1] == keys  # the diffusers backend names a lone encoder's key by its (here tiny) width
    assert report["embedding_keys"][0] == (keys if variant == "sdxl" else ["clip_l"])
    # "a photo of a [V] dog"; 7 attn2 layers in the SD UNet, 8 in the SDXL one (two blocks per level-2 transformer).
    assert report["token_index"] == [5, 5] and report["layers"] == ([8, 8] if variant == "sdxl" else [7, 7])
    assert _relative(report["schedule"]) < 1e-5
    assert _relative(report["latents"]) < 1e-5
    assert _relative(report["embeddings"]) < 1e-5
    assert report["pooled_present"] == [variant == "sdxl"] * 2  # SDXL's UNet takes CLIP-G's pooled vector
    if variant == "sdxl":
        assert _relative(report["pooled"]) < 1e-5
    assert _relative(report["prediction"]) < 1e-4
    names = ["clip_g", "clip_l"] if variant == "sdxl" else ["token"]  # one learned vector per text encoder
    assert report["gradient_names"] == [names, names]
    assert all(_relative(gradient) < 1e-3 for gradient in report["gradients"].values()), report["gradients"]
    ours, theirs = report["regularizer"]  # the requirement: the same regularizer value
    assert ours > 0 and abs(ours - theirs) <= 1e-4 * ours, report["regularizer"]
    # The trainer on each: same losses step by step (gradient checkpointing on for ComfyUI only).
    for mine, other in zip(*report["history"]):
        assert mine["stage"] == other["stage"]
        assert abs(mine["diffusion"] - other["diffusion"]) <= 1e-4 * mine["diffusion"]
        assert abs(mine["regularizer"] - other["regularizer"]) <= 1e-3 * mine["regularizer"]
    assert sorted(report["tokens_after_training"]) == keys
    assert all(_relative(vector) < 1e-5 for vector in report["tokens_after_training"].values())
    # Adam normalises each update, so a parameter whose gradient is ~1e-8 moves by up to ±lr on
    # either side: weight deltas agree to about one stage-3 learning rate (2e-6 here).
    assert report["delta_names_equal"] and report["deltas"] < 5e-6


def test_unsupported_inputs_are_clear_errors_and_training_restores_comfyui(probe_report):
    report = probe_report["errors"]
    assert "(SDXLRefiner) is not supported" in report["refiner"] and "Stable Diffusion 1.x, 2.x and SDXL" in report["refiner"]
    assert "(Flux) is not supported" in report["flux"] and "Stable Diffusion 1.x, 2.x and SDXL" in report["flux"]
    assert "not SDXL's pair of text encoders" in report["sdxl_with_sd1_clip"]
    assert "not the single CLIP text encoder of an SD1.x/SD2.x" in report["sd1_with_sdxl_clip"]
    assert "does not match the MODEL" in report["mismatch"] and "32 wide" in report["mismatch"] and "64" in report["mismatch"]
    assert "clip input is empty" in report["no_clip"]
    assert "VAE does not match" in report["bad_vae"]
    assert "NaN or infinite" in report["overflowing_vae"] and "--bf16-vae" in report["overflowing_vae"]
    assert report["stopped"] and report["clip_layers_patched"]
    assert report["clip_layers_restored"] and report["blocks_restored"]
    assert report["model_options_unchanged"] and report["weight_wrappers_unchanged"]
    assert report["stock_output_identical"] and report["stock_cond_identical"]
    assert report["our_weight_functions_left"] == 0
    assert report["upstream_gradients_after_training"] == 0 and report["upstream_gradients_after_planned"] == 0
    # Without stage 3 only the cross-attention weights get float32 copies, and training is the same to the bit.
    every_weight, planned, cross_attention = report["planned_copies"]
    assert planned == cross_attention < every_weight
    assert report["planned_history_equal"] and report["planned_deltas_equal"]
    assert "no trainable weights for stage 'cross_attention'" in report["wrong_groups"]


# --------------------------------------------------------------------------------------------
# Through the server


@pytest.fixture(scope="module")
def comfy(tiny_checkpoint, tmp_path_factory):
    """This module's own server: the session one plus the test-helper custom node."""
    base = tmp_path_factory.mktemp("attndreambooth_base")
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "steer_attndreambooth_test_helpers.py").write_text(HELPERS)
    server = ComfyServer(base, tiny_checkpoint)
    server.start(timeout=float(os.environ.get("STEER_COMFY_STARTUP_TIMEOUT", "180")))
    try:
        yield server.client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def photo_folder(comfy):
    """Three photos of different sizes in input/<folder>, for the stock folder loader."""
    from PIL import Image

    folder = comfy.input_dir / PHOTO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, size in enumerate([(72, 64), (64, 80), (96, 96)]):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize(size, Image.BILINEAR).save(folder / f"dog_{index}.png")
    return PHOTO_FOLDER


def train_graph(name: str = CONCEPT, overwrite: bool = False, images=None, **overrides) -> dict:
    """checkpoint + photos (stock 'Load Image Dataset from Folder') -> Train -> PreviewImage(loss plot)."""
    b = PromptBuilder()
    ckpt = b.node("CheckpointLoaderSimple", node_id="ckpt", ckpt_name=CHECKPOINT_NAME)
    if images is None:
        images = b.node("LoadImageSetFromFolderNode", node_id="photos", folder=PHOTO_FOLDER, resize_method="Stretch")
    else:
        images = images(b)
    train = b.node(
        "SteerAttnDreamBoothTrain",
        node_id="train",
        model=ckpt.out(0),
        clip=ckpt.out(1),
        vae=ckpt.out(2),
        images=images.out(0),
        concept_name=name,
        category="dog",
        unet_format="lora",
        lora_rank=4,
        overwrite=overwrite,
        seed=0,
        **{**PLAN, **overrides},
    )
    b.node("PreviewImage", node_id="plot", images=train.out(3))
    # Sample straight from the node's outputs: its MODEL, its CLIP and its trigger phrase as the prompt.
    txt2img(b, train.out(0), train.out(1), ckpt.out(2), train.out(2), seed=5, prefix="t_")
    return b.prompt()


def sample_graph(prompt: str, lora: str | None = None, concept: str | None = None, seed: int = 11) -> dict:
    """The stock txt2img graph on the fixture checkpoint, optionally with LoraLoaderModelOnly or Steer AttnDreamBooth Load."""
    return concept_sample_graph(
        lambda b: b.node("CheckpointLoaderSimple", node_id="ckpt", ckpt_name=CHECKPOINT_NAME), prompt, lora, concept, seed
    )


def _checkpoint_progress(comfy) -> list[dict]:
    # Under ComfyUI's --user-directory, which survives restarts (temp does not).
    paths = sorted((comfy.base_dir / "user" / "steer" / "attndreambooth_checkpoints").glob(f"{CONCEPT}-*/progress.json"))
    return [json.loads(path.read_text()) for path in paths]


def _concept_files(comfy, name: str = CONCEPT) -> dict[str, Path]:
    return {
        "embedding": comfy.models_dir / "embeddings" / f"{name}.safetensors",
        "unet": comfy.models_dir / "loras" / f"{name}.safetensors",
        "metadata": comfy.models_dir / "loras" / f"{name}.json",
    }


@pytest.fixture(scope="module")
def trained(comfy, photo_folder):
    """Queue the training graph, cancel it after its first progress event, queue it again."""
    prompt = train_graph()
    prompt_id = comfy.queue(prompt)
    while not comfy.seen_progress(prompt_id, "train"):
        comfy.pump_events(0.2)
    comfy.interrupt()
    cancelled = comfy.wait(prompt_id, timeout=TIMEOUT)
    saved = _checkpoint_progress(comfy)
    files_after_cancel = {key: path.exists() for key, path in _concept_files(comfy).items()}
    resumed = comfy.run(prompt, timeout=TIMEOUT)
    return {"cancelled": cancelled, "saved": saved, "files_after_cancel": files_after_cancel, "resumed": resumed}


def test_nodes_are_listed_with_tooltips(comfy):
    info = comfy.object_info()
    for node in NODES:
        entry = info[node]
        assert entry["category"] == "Steer/personalize" and entry["description"], node
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    train = info["SteerAttnDreamBoothTrain"]
    assert train["output_node"] is True
    assert train["output"] == ["MODEL", "CLIP", "STRING", "IMAGE"]
    assert train["input"]["required"]["preset"][0] == ["official", "fast", "custom"]
    assert info["SteerAttnDreamBoothLoad"]["output"] == ["MODEL", "CLIP", "STRING"]


def test_cancel_then_rerun_resumes_and_writes_the_concept(comfy, trained):
    assert trained["cancelled"].status == "interrupted"
    assert not any(trained["files_after_cancel"].values()), "a cancelled run must not write the concept"
    (saved,) = trained["saved"]  # one checkpoint folder, for this run
    done_at_cancel = saved["step"] if saved["stage_index"] == 0 else None
    assert done_at_cancel is not None and 1 <= done_at_cancel < PLAN["token_steps"] + 1, saved  # cancelled inside stage 1
    assert len(saved["history"]) == done_at_cancel

    resumed = trained["resumed"]
    progress = resumed.progress("train")
    assert progress[0] == (done_at_cancel, TOTAL_STEPS), progress  # starts where the checkpoint stopped
    assert progress[-1] == (TOTAL_STEPS, TOTAL_STEPS)
    assert [value for value, _ in progress[1:]] == list(range(done_at_cancel + 1, TOTAL_STEPS + 1))
    assert f"resuming '{CONCEPT}' from its checkpoint at step {done_at_cancel}/{TOTAL_STEPS}" in comfy.log_text()
    assert not _checkpoint_progress(comfy), "checkpoints are removed once the concept is saved"
    assert len(comfy.images(resumed, "plot")) == 1  # the loss plot reached PreviewImage
    # The node shows the plot and a preview for each of the three stages (the first stage resumed in this run).
    shown = [np.asarray(image.convert("RGB")) for image in comfy.images(resumed, "train")]
    assert len(shown) == 4, resumed.outputs["train"]
    assert all(image.shape == (64, 64, 3) for image in shown[1:]), [image.shape for image in shown]  # the training resolution
    assert not all((shown[1] == other).all() for other in shown[2:]), "the previews should follow the training"


def test_the_concept_files_are_stock_formats(comfy, trained):
    from safetensors.torch import load_file

    files = _concept_files(comfy)
    embedding = load_file(str(files["embedding"]))
    assert list(embedding) == ["clip_l"] and tuple(embedding["clip_l"].shape) == (1, 768)
    unet = load_file(str(files["unet"]))
    assert unet and all(key.startswith("diffusion_model.") for key in unet)
    suffixes = {key.rsplit(".", 2)[-2] + "." + key.rsplit(".", 1)[-1] if "lora_" in key else key.rsplit(".", 1)[-1] for key in unet}
    assert suffixes <= {"lora_up.weight", "lora_down.weight", "alpha", "diff", "diff_b"}, suffixes
    assert any(key.endswith(".attn2.to_k.lora_up.weight") for key in unet)
    assert all(tuple(unet[key].shape)[1] == 4 for key in unet if key.endswith("lora_up.weight"))  # rank 4
    metadata = json.loads(files["metadata"].read_text())
    assert metadata["category"] == "dog" and metadata["preset"] == "custom"
    assert metadata["trigger"] == f"embedding:{CONCEPT} dog"
    assert metadata["unet_format"] == "lora" and metadata["lora_rank"] == 4 and metadata["embedding_keys"] == ["clip_l"]
    assert metadata["steps"] == TOTAL_STEPS and metadata["training_seconds"] > 0
    assert metadata["base_model"].startswith("comfyui-SD15-") and metadata["architecture"] == "SD15"
    assert [stage["steps"] for stage in metadata["plan"]["stages"]] == [3, 1, 1] and metadata["plan"]["resolution"] == 64
    leftovers = [p.name for folder in ("loras", "embeddings") for p in (comfy.models_dir / folder).iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_stock_lora_loader_and_embedding_load_the_concept_and_change_the_output(comfy, trained):
    assert_stock_nodes_apply_the_concept(comfy, lambda prompt, lora: saved_image(comfy, sample_graph(prompt, lora=lora)), CONCEPT)


def test_train_and_load_node_outputs_equal_the_stock_nodes(comfy, trained):
    info = comfy.object_info("SteerAttnDreamBoothLoad")["SteerAttnDreamBoothLoad"]
    assert CONCEPT in info["input"]["required"]["concept"][0]
    stock = saved_image(comfy, sample_graph(f"embedding:{CONCEPT} dog", lora=f"{CONCEPT}.safetensors", seed=5))
    loaded = saved_image(comfy, sample_graph("unused", concept=CONCEPT, seed=5))
    assert np.array_equal(stock, loaded)
    # The training graph sampled from the Train node's own MODEL, CLIP and trigger: the same image.
    (from_train,) = comfy.images(trained["resumed"], "t_save")
    assert np.array_equal(stock, np.asarray(from_train.convert("RGB"), dtype=np.int16))


def _failure(comfy, prompt) -> str:
    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(prompt, timeout=TIMEOUT)
    assert failure.value.node_id == "train"
    return failure.value.exception_message


def test_bad_inputs_are_clear_errors_and_write_nothing(comfy, trained):
    files = _concept_files(comfy)
    stamps = {key: path.stat().st_mtime_ns for key, path in files.items()}

    message = _failure(comfy, train_graph(name="../escape"))
    assert "invalid concept name '../escape'" in message
    assert not list(comfy.base_dir.rglob("escape*"))

    message = _failure(
        comfy, train_graph(name="empty_set", images=lambda b: b.node("SteerTestPhotos", node_id="none", count=0, size=64, seed=0))
    )
    assert "3 to 20 photos" in message and "got 0" in message
    message = _failure(
        comfy, train_graph(name="two_photos", images=lambda b: b.node("SteerTestPhotos", node_id="two", count=2, size=64, seed=0))
    )
    assert "got 2" in message

    # Other numbers than the finished run, so ComfyUI does not answer from its cache.
    message = _failure(comfy, train_graph(name=CONCEPT, token_steps=4))
    assert f"a concept named '{CONCEPT}' already exists" in message and "overwrite" in message
    assert {key: path.stat().st_mtime_ns for key, path in files.items()} == stamps

    for name in ("empty_set", "two_photos"):
        assert not any(path.exists() for path in _concept_files(comfy, name).values())
