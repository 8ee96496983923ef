"""The shared workflow files (workflows/NAME.json + workflows/api/NAME.json) and how the tests run them.

Adding a workflow needs no test change: every workflows/*.json is checked and run. A workflow
whose test run needs more than the generic shrinking below (a training step count, an extra model)
gets an entry in TEST_RUN_OVERRIDES, or in NOT_RUN with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from comfy_server import CHECKPOINT_NAME, REPO_ROOT, comfyui_path
from fixture_models import stage_clip_vision, stage_concept, stage_reward_head, stage_tiny_clip

WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
INPUTS_DIR = WORKFLOWS_DIR / "inputs"  # example input images (LoadImage) and image folders (LoadImageSetFromFolderNode)
NAMES = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
TEST_SIZE = 64
TEST_STEPS = 2

# What the test server holds besides the fixture checkpoint (written by stage_models): random-weight
# stand-ins for the models a user picks, which the overrides below point the workflows at.
TEST_CLIP_FOLDER = "tiny-clip"  # models/steer: a tiny CLIP with tokenizer (tests/unit/tiny_models.py)
TEST_CLIP_VISION = "steer_test_vitl_random.safetensors"  # models/clip_vision: random ViT-L/14, the smallest the stock loader knows
TEST_SAVED_CONCEPT = "steer_test_saved_concept"  # models/loras + models/embeddings: as Steer AttnDreamBooth Train saves
TEST_TRAINED_CONCEPT = "steer_test_trained_concept"  # what the training workflow saves in the tests
TEST_REWARD_HEAD = "steer_test_reward_head.safetensors"  # models/steer: a random head on the tiny CLIP's embedding

# A few optimizer steps of every stage at 64 px: the whole three-stage run, on the CPU in seconds.
TINY_ATTNDREAMBOOTH = {
    "preset": "custom",
    "token_steps": 1,
    "cross_attention_steps": 1,
    "unet_steps": 1,
    "token_batch_size": 1,
    "cross_attention_batch_size": 1,
    "unet_batch_size": 1,
    "resolution": 64,
    "augmented_views": 1,
    "lora_rank": 4,
    "concept_name": TEST_TRAINED_CONCEPT,
    "overwrite": True,
}

# name -> {"NODE_ID.inputs.NAME": value}, applied after the generic shrinking.
TEST_RUN_OVERRIDES: dict[str, dict] = {
    "clip_text_guidance": {"5.inputs.model_folder": TEST_CLIP_FOLDER},
    "style_reference": {"6.inputs.clip_name": TEST_CLIP_VISION},
    "attndreambooth_train_and_generate": {f"3.inputs.{key}": value for key, value in TINY_ATTNDREAMBOOTH.items()},
    "attndreambooth_generate": {"2.inputs.concept": TEST_SAVED_CONCEPT},
    "guided_img2img": {"5.inputs.width": TEST_SIZE, "5.inputs.height": TEST_SIZE},
    "regional_losses": {"9.inputs.clip_name": TEST_CLIP_VISION},
    "reward_aesthetic": {"5.inputs.model_folder": TEST_CLIP_FOLDER, "6.inputs.head": TEST_REWARD_HEAD},
}
# name -> why its API twin is not run in the tests (it is still checked against /object_info).
NOT_RUN: dict[str, str] = {}


@dataclass(frozen=True)
class StandIn:
    """A family workflow's loaders and text encoders, replaced in the test run by the test pack's SteerTestFamily node
    (random reduced models of the family's own ComfyUI class: tests/integration/family_pack), which outputs
    (MODEL, VAE, positive, negative). `links` maps (node id, output slot) of the workflow to SteerTestFamily's slot."""

    family: str
    links: dict
    removed: tuple[str, ...]


MODEL, VAE, POSITIVE, NEGATIVE = range(4)
_CHECKPOINT_GRAPH = {("1", 0): MODEL, ("1", 2): VAE, ("2", 0): POSITIVE, ("3", 0): NEGATIVE}
STAND_INS: dict[str, StandIn] = {
    "sdxl_color_guidance": StandIn("sdxl", _CHECKPOINT_GRAPH, ("1", "2", "3")),
    "sd3_color_guidance": StandIn("sd3", _CHECKPOINT_GRAPH, ("1", "2", "3")),
    "flux_color_guidance": StandIn(
        "flux_dev", {("1", 0): MODEL, ("3", 0): VAE, ("4", 0): POSITIVE, ("6", 0): NEGATIVE}, ("1", "2", "3", "4", "6")
    ),
}
STAND_IN_NODE = "stand_in"


def with_stand_in(prompt: dict, stand_in: StandIn) -> dict:
    prompt = {node_id: node for node_id, node in prompt.items() if node_id not in stand_in.removed}
    for node in prompt.values():
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and (str(value[0]), value[1]) in stand_in.links:
                node["inputs"][name] = [STAND_IN_NODE, stand_in.links[(str(value[0]), value[1])]]
            elif isinstance(value, list) and len(value) == 2 and str(value[0]) in stand_in.removed:
                raise KeyError(
                    f"STAND_INS: input {name!r} links to removed node {value[0]} slot {value[1]}, which no stand-in slot replaces"
                )
    prompt[STAND_IN_NODE] = {"class_type": "SteerTestFamily", "inputs": {"family": stand_in.family}}
    return prompt


def ui_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def api_workflow(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def shrunk_for_tests(prompt: dict, name: str = "") -> dict:
    """The workflow as the tests run it: the fixture checkpoint, 64 px, 2 steps, the cheapest preset."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        inputs = node.get("inputs", {})
        if isinstance(inputs.get("ckpt_name"), str):
            inputs["ckpt_name"] = CHECKPOINT_NAME
        for size in ("width", "height"):
            if isinstance(inputs.get(size), int) and node["class_type"].startswith("Empty"):
                inputs[size] = TEST_SIZE
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], TEST_STEPS)
        if node["class_type"].startswith("SteerGuidedSampler") and "preset" in inputs:
            inputs["preset"] = "mpgd"  # no backward pass through the UNet: the fastest preset on CPU
        if isinstance(inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = f"workflow_tests/{name or 'workflow'}"
    if name in STAND_INS:
        prompt = with_stand_in(prompt, STAND_INS[name])
    for path, value in TEST_RUN_OVERRIDES.get(name, {}).items():
        node_id, _, input_name = path.split(".", 2)
        if input_name not in prompt[node_id]["inputs"]:
            raise KeyError(f"TEST_RUN_OVERRIDES[{name!r}]: node {node_id} ({prompt[node_id]['class_type']}) has no input {input_name!r}")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def stage_inputs(input_dir: Path) -> list[str]:
    """Copy the example inputs (images, and folders of images) into the server's input folder; returns their names."""
    input_dir = Path(input_dir)
    input_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(INPUTS_DIR.glob("*")) if INPUTS_DIR.is_dir() else []:
        if path.is_file():
            shutil.copy2(path, input_dir / path.name)
        elif path.is_dir():
            shutil.copytree(path, input_dir / path.name, dirs_exist_ok=True)
        else:
            continue
        names.append(path.name)
    return names


def stage_models(models_dir: Path) -> None:
    """Put the random-weight stand-ins the TEST_RUN_OVERRIDES name into the server's model folders."""
    assert stage_tiny_clip(models_dir) == TEST_CLIP_FOLDER
    assert stage_clip_vision(models_dir) == TEST_CLIP_VISION
    stage_concept(models_dir, TEST_SAVED_CONCEPT, category="dog")
    assert stage_reward_head(models_dir, TEST_REWARD_HEAD) == TEST_REWARD_HEAD
    stage_tiny_decoders(Path(models_dir) / "vae_approx")


def stage_tiny_decoders(folder: Path) -> None:
    """Random TAESD decoders under ComfyUI's preview names (taesdxl, taesd3, taef1): ComfyUI's own Decoder class, so
    they are written in a process of their own (the tests' process never imports ComfyUI)."""
    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / f"{name}.safetensors").is_file() for name in ("taesdxl_decoder", "taesd3_decoder", "taef1_decoder")):
        return
    command = [sys.executable, "-m", "steer.benchmarks.random_families", str(folder)]
    written = subprocess.run(command, timeout=300, capture_output=True, text=True, env={**os.environ, "COMFYUI_PATH": str(comfyui_path())})
    if written.returncode != 0:
        raise RuntimeError(f"writing the TAESD stand-ins failed:\n{written.stderr[-3000:]}")


def stage_for_workflows(comfy) -> None:
    """Everything the shared workflows name on a test server: example inputs and stand-in models."""
    stage_inputs(comfy.input_dir)
    stage_models(comfy.models_dir)
