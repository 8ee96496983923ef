"""The workflow checker and converter (steer.batch.workflow) against a saved /object_info excerpt.

The live check of the shared files is tests/integration/test_workflows.py; these tests show the
checker catches each kind of breakage it is there for, without a server.
"""

import copy
import json
from pathlib import Path

import pytest

from steer.batch.ui_workflow import check_ui, ui_to_api
from steer.batch.workflow import ObjectInfo, WorkflowError, check_api, diff_api

DATA = Path(__file__).parent / "data"
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def info():
    return json.loads((DATA / "comfy_object_info_subset.json").read_text())


@pytest.fixture
def api():
    return json.loads((WORKFLOWS / "api" / "color_guidance.json").read_text())


@pytest.fixture
def ui():
    return json.loads((WORKFLOWS / "color_guidance.json").read_text())


def node_id(prompt, class_type):
    return next(i for i, node in prompt.items() if node["class_type"] == class_type)


def ui_node(workflow, class_type):
    return next(node for node in workflow["nodes"] if node["type"] == class_type)


def new_problems(before, after):
    return [problem for problem in after if problem not in before]


# ---- API format


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p[node_id(p, "SteerGuidedSampler")]["inputs"].update(strength=1000.0), "above the maximum 100.0"),
        (lambda p: p[node_id(p, "SteerGuidedSampler")]["inputs"].update(strength="strong"), "is not a number"),
        (lambda p: p[node_id(p, "SteerGuidedSampler")]["inputs"].update(preset="nope"), "'nope' is not one of the allowed values"),
        (lambda p: p[node_id(p, "RandomNoise")]["inputs"].update(noise_seed=1.5), "is not an integer"),
        (lambda p: p[node_id(p, "SteerColorLoss")]["inputs"].update(color=123), "is not a string"),
        (lambda p: p[node_id(p, "SteerGuidedSampler")]["inputs"].update(strenght=1.0), "SteerGuidedSampler has no such input"),
        (lambda p: p[node_id(p, "SteerGuidedSampler")]["inputs"].pop("strength"), "required input 'strength' is missing"),
        (
            lambda p: p[node_id(p, "SamplerCustomAdvanced")]["inputs"].update(sampler=[node_id(p, "CheckpointLoaderSimple"), 0]),
            "expects SAMPLER but is linked to MODEL",
        ),
        (
            lambda p: p[node_id(p, "SamplerCustomAdvanced")]["inputs"].update(sampler=["999", 0]),
            "links to node 999, which is not in the workflow",
        ),
        (
            lambda p: p[node_id(p, "SamplerCustomAdvanced")]["inputs"].update(sampler=[node_id(p, "SteerGuidedSampler"), 5]),
            "which has 2 outputs",
        ),
        (lambda p: p[node_id(p, "SamplerCustomAdvanced")]["inputs"].update(sigmas=0.5), "expects a link to a SIGMAS output"),
        (lambda p: p[node_id(p, "SteerColorLoss")].update(class_type="SteerColourLoss"), "no node type 'SteerColourLoss'"),
    ],
)
def test_api_check_catches(info, api, mutate, expected):
    before = check_api(api, info)
    broken = copy.deepcopy(api)
    mutate(broken)
    problems = new_problems(before, check_api(broken, info))
    assert any(expected in problem for problem in problems), problems


def test_api_check_lets_model_and_image_file_names_through(info, api):
    before = check_api(api, info)
    api[node_id(api, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = "someone_elses_model.safetensors"
    assert check_api(api, info) == before


def test_api_check_lets_model_folders_and_concepts_through_but_not_other_combos(info):
    """A Steer model folder or saved concept is the user's own, like a file name; any other combo value is checked."""
    info = copy.deepcopy(info)
    info["SteerLoadGuidanceModel"] = {
        "input": {"required": {"model_folder": [["tiny-clip"], {}], "precision": [["auto", "float32"], {}]}},
        "input_order": {"required": ["model_folder", "precision"]},
        "output": ["STEER_GUIDANCE_MODEL"],
        "output_node": False,
    }
    prompt = {
        "1": {"class_type": "SteerLoadGuidanceModel", "inputs": {"model_folder": "clip-vit-large-patch14", "precision": "auto"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    }
    assert not [p for p in check_api(prompt, info) if "node 1 " in p]
    prompt["1"]["inputs"]["precision"] = "float64"
    assert any("'float64' is not one of the allowed values" in p for p in check_api(prompt, info))
    prompt["1"]["inputs"].update(precision="auto", model_folder="")
    assert any("'' is not one of the allowed values" in p for p in check_api(prompt, info))


def test_api_check_wants_an_output_node(info, api):
    for output_id in [i for i, n in api.items() if n["class_type"] in ("SaveImage", "PreviewImage")]:
        del api[output_id]
    assert any("no output node" in problem for problem in check_api(api, info))


def test_a_renamed_input_on_the_server_breaks_the_api_file(info, api):
    spec = info["SteerGuidedSampler"]["input"]["required"]
    spec["scale"] = spec.pop("strength")
    info["SteerGuidedSampler"]["input_order"]["required"] = list(spec)
    problems = check_api(api, info)
    assert any("has no such input" in p and "'strength'" in p for p in problems)
    assert any("required input 'scale' is missing" in p for p in problems)


# ---- UI format


def test_ui_check_catches_an_unknown_node_type(info, ui):
    ui_node(ui, "SteerColorLoss")["type"] = "SteerColourLoss"
    assert any("no node type 'SteerColourLoss'" in p for p in check_ui(ui, info))


def test_ui_check_catches_a_value_out_of_range_and_a_bad_combo(info, ui):
    before = check_ui(ui, info)
    sampler = ui_node(ui, "SteerGuidedSampler")
    sampler["widgets_values"] = ["nope", -1, sampler["widgets_values"][2]]
    problems = new_problems(before, check_ui(ui, info))
    assert any("'nope' is not one of the allowed values" in p for p in problems), problems
    assert any("-1 is below the minimum 0.0" in p for p in problems), problems


def test_ui_check_counts_widget_values_including_the_seed_control(info, ui):
    noise = ui_node(ui, "RandomNoise")
    assert len(noise["widgets_values"]) == 2  # the seed and its "control after generate" mode
    before = check_ui(ui, info)
    noise["widgets_values"] = [42]
    assert any("widgets_values has 1 values" in p for p in new_problems(before, check_ui(ui, info)))
    noise["widgets_values"] = [42, "sometimes"]
    assert any("control value 'sometimes'" in p for p in new_problems(before, check_ui(ui, info)))


def test_ui_check_catches_a_renamed_socket(info, ui):
    spec = info["SteerGuidedSampler"]["input"]["required"]
    info["SteerGuidedSampler"]["input"]["required"] = {("losses" if k == "loss" else k): v for k, v in spec.items()}
    info["SteerGuidedSampler"]["input_order"]["required"] = list(info["SteerGuidedSampler"]["input"]["required"])
    problems = check_ui(ui, info)
    assert any("input 'loss'" in p and "has no such input" in p for p in problems), problems
    assert any("required input 'losses'" in p and "not connected" in p for p in problems), problems


def test_ui_check_catches_inconsistent_and_mistyped_links(info, ui):
    before = check_ui(ui, info)
    broken = copy.deepcopy(ui)
    link = broken["links"][0]
    link[5] = "LATENT"  # the link claims a type neither end has
    problems = new_problems(before, check_ui(broken, info))
    assert any(f"link {link[0]}: type LATENT" in p for p in problems), problems

    broken = copy.deepcopy(ui)
    target = next(n for n in broken["nodes"] if n["id"] == broken["links"][0][3])
    slot = target["inputs"][broken["links"][0][4]]
    slot["link"] = None  # the input forgets the link
    problems = new_problems(before, check_ui(broken, info))
    assert any("does not point back to it" in p for p in problems), problems

    broken = copy.deepcopy(ui)
    broken["links"].pop()  # a node still lists a link that is gone
    assert new_problems(before, check_ui(broken, info))


def test_ui_check_catches_a_socket_plugged_into_the_wrong_type(info, ui):
    before = check_ui(ui, info)
    sampler = ui_node(ui, "SamplerCustomAdvanced")
    sampler["inputs"][2]["type"] = "MODEL"
    assert any("slot type MODEL but the server declares SAMPLER" in p for p in new_problems(before, check_ui(ui, info)))


# ---- twins and conversion


def test_the_shared_twins_convert_into_each_other(info, ui, api):
    assert diff_api(ui_to_api(ui, info), api) == []


def test_twins_that_drifted_apart_are_reported(info, ui, api):
    ui_node(ui, "SteerColorLoss")["widgets_values"][0] = "#00ff00"
    differences = diff_api(ui_to_api(ui, info), api, ("ui", "api"))
    assert any("input 'color'" in d and "#00ff00" in d for d in differences), differences


def test_a_renamed_widget_is_caught_by_the_twin_comparison(info, ui, api):
    """widgets_values are positional, so only the API twin carries the name: comparing the two catches it."""
    spec = info["SteerGuidedSampler"]["input"]["required"]
    info["SteerGuidedSampler"]["input"]["required"] = {("scale" if k == "strength" else k): v for k, v in spec.items()}
    info["SteerGuidedSampler"]["input_order"]["required"] = list(info["SteerGuidedSampler"]["input"]["required"])
    differences = diff_api(ui_to_api(ui, info), api, ("ui", "api"))
    assert any("input 'scale'" in d for d in differences) and any("input 'strength'" in d for d in differences)


def _ui_graph():
    """noise seed from a PrimitiveNode, a Reroute, a bypassed and a muted node, and a Note."""
    nodes = [
        {
            "id": 1,
            "type": "PrimitiveNode",
            "mode": 0,
            "outputs": [{"name": "INT", "type": "INT", "links": [1]}],
            "widgets_values": [1234, "fixed"],
        },
        {
            "id": 2,
            "type": "RandomNoise",
            "mode": 0,
            "inputs": [{"name": "noise_seed", "type": "INT", "widget": {"name": "noise_seed"}, "link": 1}],
            "outputs": [{"name": "NOISE", "type": "NOISE", "links": [2]}],
            "widgets_values": [0, "fixed"],
        },
        {
            "id": 3,
            "type": "LoadImage",
            "mode": 0,
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}, {"name": "MASK", "type": "MASK", "links": []}],
            "widgets_values": ["example.png", "image"],
        },
        {
            "id": 4,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 3}],
            "outputs": [{"name": "", "type": "IMAGE", "links": [4]}],
        },
        {
            "id": 5,
            "type": "ImageScale",
            "mode": 4,
            "inputs": [{"name": "image", "type": "IMAGE", "link": 4}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [5]}],
            "widgets_values": ["nearest-exact", 64, 64, "disabled"],
        },
        {"id": 6, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "widgets_values": ["out"]},
        {"id": 7, "type": "PreviewImage", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": None}]},
        {"id": 8, "type": "Note", "mode": 0, "widgets_values": ["hello"]},
    ]
    for node in nodes:
        node.setdefault("pos", [0, 0])
        node.setdefault("size", [100, 50])
    links = [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 9, 0, "NOISE"], [3, 3, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"], [5, 5, 0, 6, 0, "IMAGE"]]
    return {"last_node_id": 8, "last_link_id": 5, "nodes": nodes, "links": links[:1] + links[2:], "version": 0.4}


def test_conversion_resolves_primitives_reroutes_bypass_and_mute(info):
    workflow = _ui_graph()
    workflow["nodes"][1]["outputs"][0]["links"] = []
    prompt = ui_to_api(workflow, info)
    assert set(prompt) == {"2", "3", "6"}  # no primitive, reroute, bypassed, muted or note node
    assert prompt["2"]["inputs"] == {"noise_seed": 1234}
    assert prompt["6"]["inputs"] == {"filename_prefix": "out", "images": ["3", 0]}  # straight past the reroute and the bypass
    assert prompt["3"]["inputs"] == {"image": "example.png"}  # the upload button's value is not an input
    assert check_ui(workflow, info) == []


def test_conversion_refuses_unknown_nodes_and_subgraphs(info):
    workflow = _ui_graph()
    workflow["nodes"][2]["type"] = "Mystery"
    with pytest.raises(WorkflowError, match="no node type 'Mystery'"):
        ui_to_api(workflow, info)
    with pytest.raises(WorkflowError, match="subgraphs"):
        ui_to_api({**_ui_graph(), "definitions": {"subgraphs": [{"id": "x"}]}}, ObjectInfo(info))
    with pytest.raises(WorkflowError, match="not a UI-format"):
        ui_to_api({"1": {"class_type": "SaveImage", "inputs": {}}}, info)


def test_a_workflow_saved_before_a_node_gained_an_optional_widget_still_checks_and_converts():
    info = json.loads((DATA / "comfy_object_info_workflows.json").read_text())
    ui = json.loads((WORKFLOWS / "attndreambooth_train_and_generate.json").read_text())
    api = json.loads((WORKFLOWS / "api" / "attndreambooth_train_and_generate.json").read_text())
    train = ui_node(ui, "SteerAttnDreamBoothTrain")
    assert check_ui(ui, info) == []
    train["widgets_values"] = train["widgets_values"][:-2]  # as saved before checkpoint_minutes and preview_prompt existed
    assert check_ui(ui, info) == []
    converted = ui_to_api(ui, info)
    for added in ("checkpoint_minutes", "preview_prompt"):
        del api[node_id(api, "SteerAttnDreamBoothTrain")]["inputs"][added]  # the server uses its default
    assert diff_api(converted, api) == []
    train["widgets_values"] = train["widgets_values"][:1]  # a required widget's value missing is still an error
    assert any("widgets_values has 1 values" in p for p in check_ui(ui, info))
