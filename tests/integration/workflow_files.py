"""The shared workflow files (workflows/NAME.json + workflows/api/NAME.json) and how the tests run them.

Adding a workflow needs no test change: every workflows/*.json is checked and run. A workflow
whose test run needs more than the generic shrinking below (a training step count, an extra model)
gets an entry in TEST_RUN_OVERRIDES, or in NOT_RUN with the reason.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from comfy_server import CHECKPOINT_NAME, REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
INPUTS_DIR = WORKFLOWS_DIR / "inputs"  # example input images the workflows name (LoadImage)
NAMES = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
TEST_SIZE = 64
TEST_STEPS = 2

# name -> {"NODE_ID.inputs.NAME": value}, applied after the generic shrinking.
TEST_RUN_OVERRIDES: dict[str, dict] = {}
# name -> why its API twin is not run in the tests (it is still checked against /object_info).
NOT_RUN: dict[str, str] = {}


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
    for path, value in TEST_RUN_OVERRIDES.get(name, {}).items():
        node_id, _, input_name = path.split(".", 2)
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def stage_inputs(input_dir: Path) -> list[str]:
    """Copy the example input images into the server's input folder; returns their names."""
    input_dir = Path(input_dir)
    input_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(INPUTS_DIR.glob("*")) if INPUTS_DIR.is_dir() else []:
        if path.is_file():
            shutil.copy2(path, input_dir / path.name)
            names.append(path.name)
    return names
