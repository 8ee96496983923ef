"""The shared workflow files are complete, without a server: each UI file has its thumbnail and API twin.

The checks against a live server's /object_info are in tests/integration/test_workflows.py.
"""

import json
from pathlib import Path

import pytest

from steer.batch.workflow import is_link, is_ui_format

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
THUMBNAIL_MAX_BYTES = 200_000


def test_there_are_workflows_and_every_api_twin_has_its_ui_file():
    assert {
        "color_guidance",
        "edge_structure",
        "clip_text_guidance",
        "style_reference",
        "attndreambooth_train_and_generate",
        "attndreambooth_generate",
    } <= set(NAMES)
    orphans = sorted(path.stem for path in (WORKFLOWS / "api").glob("*.json") if path.stem not in NAMES)
    assert not orphans, f"API files without a UI file in workflows/: {orphans}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_has_a_jpg_thumbnail_and_an_api_twin(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert is_ui_format(ui) and ui["nodes"] and ui.get("version") is not None
    # ComfyUI's template browser shows NAME.jpg for a custom node pack's workflows.
    thumbnail = WORKFLOWS / f"{name}.jpg"
    assert thumbnail.is_file(), f"workflows/{name}.jpg is missing"
    data = thumbnail.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) < THUMBNAIL_MAX_BYTES
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert not is_ui_format(api) and all({"class_type", "inputs"} <= set(node) for node in api.values())
    for node in api.values():
        for value in node["inputs"].values():
            if is_link(value):
                assert str(value[0]) in api


@pytest.mark.parametrize("name", NAMES)
def test_shared_files_name_a_common_checkpoint_and_bundled_inputs(name):
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in api.values():
        inputs = node["inputs"]
        if "ckpt_name" in inputs:
            assert "steer_tiny" not in inputs["ckpt_name"], "the test checkpoint leaked into a shared file"
        if node["class_type"] == "LoadImage":
            assert (WORKFLOWS / "inputs" / inputs["image"]).is_file(), f"ship workflows/inputs/{inputs['image']} for {name}"
        if node["class_type"] == "LoadImageSetFromFolderNode":
            folder = WORKFLOWS / "inputs" / inputs["folder"]
            photos = [p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")] if folder.is_dir() else []
            assert len(photos) >= 3, f"ship workflows/inputs/{inputs['folder']}/ with 3 or more images for {name}"
        for key in ("clip_name", "model_folder", "concept", "concept_name"):
            value = inputs.get(key)
            if isinstance(value, str):
                assert not value.startswith(("steer_test", "tiny")), f"a test stand-in ({value}) leaked into a shared file"


@pytest.mark.parametrize("name", NAMES)
def test_every_workflow_explains_itself_in_a_note(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    notes = [node for node in ui["nodes"] if node["type"] in ("Note", "MarkdownNote")]
    assert notes and any(len(str(value)) > 80 for note in notes for value in note.get("widgets_values") or [])
