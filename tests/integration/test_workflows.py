"""Every shared workflow, in both formats, against the live server's /object_info; and each API twin runs.

So a renamed node input can never silently break a shared file: node types, input names, widget
values (combo lists except file names, min/max, required inputs), links and slot types, and the
UI/API twins describing the same graph are all checked against what the running server declares.
"""

import copy

import numpy as np
import pytest
import requests
from workflow_files import NAMES, NOT_RUN, TEST_SIZE, api_workflow, shrunk_for_tests, stage_for_workflows, ui_workflow

from steer.batch.convert import QUEUE_EXTRA, comfy_cli_converter, convert_to_api
from steer.batch.ui_workflow import check_ui, ui_to_api
from steer.batch.workflow import check_api, diff_api

pytestmark = pytest.mark.skipif(not NAMES, reason="no workflows in workflows/")


@pytest.fixture(scope="module")
def staged(comfy):
    """The server holds what the workflows name: example inputs (image folders too) and stand-in models."""
    stage_for_workflows(comfy)
    return comfy


@pytest.fixture(scope="module")
def object_info(staged):
    return staged.object_info()


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_matches_the_server(name, object_info):
    problems = check_ui(ui_workflow(name), object_info)
    assert not problems, f"workflows/{name}.json:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_the_server(name, object_info):
    problems = check_api(api_workflow(name), object_info)
    assert not problems, f"workflows/api/{name}.json:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twins_describe_the_same_graph(name, object_info):
    differences = diff_api(ui_to_api(ui_workflow(name), object_info), api_workflow(name), (f"{name}.json", f"api/{name}.json"))
    assert not differences, "the twins differ (refresh with tests/integration/build_workflows.py):\n" + "\n".join(differences)


@pytest.mark.skipif(comfy_cli_converter() is None, reason=f"comfy-cli is not installed ({QUEUE_EXTRA})")
@pytest.mark.parametrize("name", NAMES)
def test_comfy_clis_converter_gives_the_same_graph_as_steers(name, object_info):
    """steer queue converts with comfy-cli when it is installed, with ui_to_api otherwise: the same graph, exactly."""
    workflow = ui_workflow(name)
    assert convert_to_api(workflow, object_info, use_comfy_cli=True) == convert_to_api(workflow, object_info, use_comfy_cli=False)


def test_the_checks_would_catch_a_renamed_input(object_info):
    """The live checks are not vacuous: rename an input on the 'server' side and both formats fail."""
    name = NAMES[0]
    info = copy.deepcopy(object_info)
    node_type = next(node["class_type"] for node in api_workflow(name).values() if node["class_type"].startswith("Steer"))
    required = info[node_type]["input"]["required"]
    old = next(iter(required))
    info[node_type]["input"]["required"] = {(f"{old}_renamed" if key == old else key): value for key, value in required.items()}
    info[node_type]["input_order"]["required"] = list(info[node_type]["input"]["required"])
    assert any(old in problem for problem in check_api(api_workflow(name), info))
    assert check_ui(ui_workflow(name), info) or diff_api(ui_to_api(ui_workflow(name), info), api_workflow(name))


def test_workflows_are_offered_as_templates_with_thumbnails(comfy):
    """ComfyUI lists workflows/*.json of the pack under Browse Templates, with NAME.jpg as the picture."""
    templates = requests.get(f"{comfy.base_url}/workflow_templates", timeout=30).json()
    pack = next((key for key, names in templates.items() if set(NAMES) <= set(names)), None)
    assert pack is not None, templates
    for name in NAMES:
        served = requests.get(f"{comfy.base_url}/api/workflow_templates/{pack}/{name}.json", timeout=30)
        assert served.status_code == 200 and served.json() == ui_workflow(name)
        thumbnail = requests.get(f"{comfy.base_url}/api/workflow_templates/{pack}/{name}.jpg", timeout=30)
        assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_runs(name, staged):
    if name in NOT_RUN:
        pytest.skip(NOT_RUN[name])
    comfy = staged
    prompt = shrunk_for_tests(api_workflow(name), name)
    log_start = len(comfy.log_text())
    result = comfy.run(prompt, timeout=600)
    log = comfy.log_text()[log_start:]
    # Every embedding a prompt names (embedding:<concept>) and every LoRA key was found.
    assert "does not exist, ignoring" not in log and "lora key not loaded" not in log, log[-3000:]
    for node in prompt.values():
        if node["class_type"] == "SteerAttnDreamBoothTrain":  # the trained concept was saved in the stock folders
            concept = node["inputs"]["concept_name"]
            assert (comfy.models_dir / "embeddings" / f"{concept}.safetensors").is_file()
            assert (comfy.models_dir / "loras" / f"{concept}.safetensors").is_file() and (
                comfy.models_dir / "loras" / f"{concept}.json"
            ).is_file()
    saved = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    images = [image for node_id in saved for image in comfy.images(result, node_id)]
    assert images, f"{name}: no saved image; outputs {result.outputs}"
    for image in images:
        assert image.size == (TEST_SIZE, TEST_SIZE)
        assert np.asarray(image).std() > 0  # not a blank frame
