"""UI-format to API conversion for `steer queue` (steer.batch.convert): comfy-cli's converter and the hand-written one
give identical API graphs, and both refuse the same files with the same messages.

Against /object_info saved from a test server (data/comfy_object_info_workflows.json: every node type the shared
workflows use). The same comparison against a live server is in tests/integration/test_workflows.py.
"""

import copy
import json
from pathlib import Path

import pytest
from unit.test_batch_workflow import _ui_graph

from steer.batch import convert
from steer.batch.convert import QUEUE_EXTRA, comfy_cli_converter, convert_to_api
from steer.batch.workflow import WorkflowError

DATA = Path(__file__).parent / "data"
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
needs_comfy_cli = pytest.mark.skipif(comfy_cli_converter() is None, reason=f"comfy-cli is not installed ({QUEUE_EXTRA})")
CONVERTERS = [pytest.param(False, id="hand-written"), pytest.param(True, id="comfy-cli", marks=needs_comfy_cli)]


@pytest.fixture(scope="module")
def info():
    return json.loads((DATA / "comfy_object_info_workflows.json").read_text())


def ui_workflow(name):
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def api_workflow(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


@pytest.mark.parametrize("use_comfy_cli", CONVERTERS)
@pytest.mark.parametrize("name", NAMES)
def test_each_shared_workflow_converts_to_its_api_twin(name, use_comfy_cli, info):
    assert convert_to_api(ui_workflow(name), info, use_comfy_cli) == api_workflow(name)


@needs_comfy_cli
def test_both_converters_agree_on_primitives_reroutes_bypass_and_mute(info):
    workflow = _ui_graph()
    workflow["nodes"][1]["outputs"][0]["links"] = []
    ours = convert_to_api(workflow, info, use_comfy_cli=False)
    assert ours["2"]["inputs"] == {"noise_seed": 1234}  # the primitive's value, not the target's saved 0
    assert convert_to_api(workflow, info, use_comfy_cli=True) == ours


def link_object(link_id, origin, origin_slot, target, target_slot, kind) -> dict:
    return {"id": link_id, "origin_id": origin, "origin_slot": origin_slot, "target_id": target, "target_slot": target_slot, "type": kind}


def packed_into_subgraph(workflow: dict, inner_ids: set, outer_id: int) -> dict:
    """The workflow with the nodes `inner_ids` moved into a subgraph (definitions.subgraphs, as the frontend saves
    it), used once as node `outer_id`; every link across the boundary goes through a subgraph input or output."""
    workflow = copy.deepcopy(workflow)
    graph_id = "5f0c1e7a-2b3d-4c5e-8f90-a1b2c3d4e5f6"
    inner = [node for node in workflow["nodes"] if node["id"] in inner_ids]
    by_id = {node["id"]: node for node in inner}
    inputs, outputs, inner_links, outer_links = [], [], [], []
    instance = {
        "id": outer_id,
        "type": graph_id,
        "mode": 0,
        "pos": [0, 0],
        "size": [200, 100],
        "inputs": [],
        "outputs": [],
        "widgets_values": [],
        "properties": {},
    }
    next_link = max(link[0] for link in workflow["links"]) + 1
    output_slot = {}  # (inner node, slot) -> subgraph output index
    for link in workflow["links"]:
        link_id, origin, origin_slot, target, target_slot, kind = link
        if origin in inner_ids and target in inner_ids:
            inner_links.append(link_object(*link))
        elif target in inner_ids:
            index, inside = len(inputs), next_link
            next_link += 1
            inner_links.append(link_object(inside, -10, index, target, target_slot, kind))
            by_id[target]["inputs"][target_slot]["link"] = inside
            inputs.append({"id": f"input-{index}", "name": f"in_{index}", "type": kind, "linkIds": [inside]})
            instance["inputs"].append({"name": f"in_{index}", "type": kind, "link": link_id})
            outer_links.append([link_id, origin, origin_slot, outer_id, index, kind])
        elif origin in inner_ids:
            if (origin, origin_slot) not in output_slot:
                index, inside = len(outputs), next_link
                next_link += 1
                output_slot[(origin, origin_slot)] = index
                inner_links.append(link_object(inside, origin, origin_slot, -20, index, kind))
                by_id[origin]["outputs"][origin_slot]["links"] = [inside]
                outputs.append({"id": f"output-{index}", "name": f"out_{index}", "type": kind, "linkIds": [inside]})
                instance["outputs"].append({"name": f"out_{index}", "type": kind, "links": []})
            index = output_slot[(origin, origin_slot)]
            instance["outputs"][index]["links"].append(link_id)
            outer_links.append([link_id, outer_id, index, target, target_slot, kind])
        else:
            outer_links.append(link)
    workflow["nodes"] = [node for node in workflow["nodes"] if node["id"] not in inner_ids] + [instance]
    workflow["links"] = outer_links
    workflow["definitions"] = {
        "subgraphs": [
            {
                "id": graph_id,
                "version": 1,
                "name": "guidance",
                "inputNode": {"id": -10, "bounding": [0, 0, 100, 100]},
                "outputNode": {"id": -20, "bounding": [400, 0, 100, 100]},
                "inputs": inputs,
                "outputs": outputs,
                "widgets": [],
                "nodes": inner,
                "links": inner_links,
                "groups": [],
                "config": {},
                "extra": {},
            }
        ]
    }
    return workflow


def renamed(prompt: dict, inner_ids: set, outer_id: int) -> dict:
    """The API graph with the packed nodes named as a subgraph's expanded nodes are: OUTER:INNER."""

    def name(node_id):
        return f"{outer_id}:{node_id}" if int(node_id) in inner_ids else str(node_id)

    result = {}
    for node_id, node in prompt.items():
        inputs = {key: [name(value[0]), value[1]] if isinstance(value, list) else value for key, value in node["inputs"].items()}
        result[name(node_id)] = {**node, "inputs": inputs}
    return result


PACKED = {5, 6}  # color_guidance: the colour loss and the guided sampler (an input from outside, two outputs)


@needs_comfy_cli
def test_comfy_cli_converts_a_subgraph_workflow_to_the_flat_twin(info):
    workflow = packed_into_subgraph(ui_workflow("color_guidance"), PACKED, outer_id=100)
    assert convert_to_api(workflow, info) == renamed(api_workflow("color_guidance"), PACKED, 100)


def test_without_comfy_cli_a_subgraph_workflow_is_refused_with_the_extra_to_install(info, monkeypatch):
    workflow = packed_into_subgraph(ui_workflow("color_guidance"), PACKED, outer_id=100)
    monkeypatch.setattr(convert, "comfy_cli_converter", lambda: None)
    with pytest.raises(WorkflowError, match="subgraphs; converting them needs comfy-cli") as refused:
        convert_to_api(workflow, info)
    assert QUEUE_EXTRA in str(refused.value)
    with pytest.raises(WorkflowError, match="not installed"):
        convert_to_api(workflow, info, use_comfy_cli=True)


@pytest.mark.parametrize("use_comfy_cli", CONVERTERS)
def test_an_unknown_node_type_is_refused_also_inside_a_subgraph(use_comfy_cli, info):
    workflow = packed_into_subgraph(ui_workflow("color_guidance"), PACKED, outer_id=100)
    workflow["definitions"]["subgraphs"][0]["nodes"][0]["type"] = "SteerColourLoss"
    with pytest.raises(WorkflowError, match="subgraph 'guidance': node 5 \\(SteerColourLoss\\): the server has no node type"):
        convert_to_api(workflow, info, use_comfy_cli or False)


@pytest.mark.parametrize("use_comfy_cli", CONVERTERS)
@pytest.mark.parametrize("text", ["a {red|blue} cabin", "a cabin // at dusk", "a cabin, \\| bar"])
def test_dynamic_prompt_syntax_is_refused_by_both(text, use_comfy_cli, info):
    workflow = ui_workflow("color_guidance")
    next(node for node in workflow["nodes"] if node["id"] == 2)["widgets_values"] = [text]
    with pytest.raises(WorkflowError, match="node 2 \\(CLIPTextEncode\\) input 'text'.*dynamic-prompt syntax"):
        convert_to_api(workflow, info, use_comfy_cli)


@needs_comfy_cli
def test_what_comfy_cli_only_logs_is_raised(info):
    workflow = ui_workflow("color_guidance")
    workflow["extra"]["groupNodes"] = {"old": {"nodes": []}}  # legacy group nodes: comfy-cli warns and goes on
    with pytest.raises(WorkflowError, match="comfy-cli could not convert all of this workflow:\n  .*group nodes"):
        convert_to_api(workflow, info, use_comfy_cli=True)
