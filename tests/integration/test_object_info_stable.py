"""Every Steer node's /object_info, served by a real ComfyUI, is the entry the pack published under the V1 API.

The nodes are V3 schemas now (nodes/schema.py); what may differ and why is listed in object_info_snapshot.py.
The last tests show that the comparison itself catches the changes a workflow would break on.
"""

from __future__ import annotations

import copy

import pytest
from object_info_snapshot import comparable, differences, pack_entries, snapshot


@pytest.fixture(scope="module")
def live(comfy) -> dict:
    return pack_entries(comfy.object_info())


def test_every_node_is_served_as_published(live):
    found = differences(snapshot(), live)
    assert not found, "the nodes' /object_info departs from tests/integration/data/object_info_v1.json:\n" + "\n".join(found)


def test_the_nodes_are_registered_through_the_v3_entry_point(comfy, live):
    # A V3 node keeps no V1 FUNCTION; ComfyUI calls its EXECUTE_NORMALIZED. Asked of one node: the schema is the node.
    assert set(live) == set(snapshot())
    assert comfy.object_info("SteerAttnDreamBoothTrain")["SteerAttnDreamBoothTrain"]["input"]["hidden"] == {
        "prompt": ["PROMPT"],
        "extra_pnginfo": ["EXTRA_PNGINFO"],
    }, "V3 gives every output node these hidden inputs; without them the node is not served by its V3 schema"


def _changed(edit) -> dict:
    published = snapshot()
    live = copy.deepcopy(published)
    edit(live)
    return live


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda info: info["SteerGuidedSampler"]["input"]["required"]["strength"][1].update(default=2.0),
            "SteerGuidedSampler.input.required.strength[1].default: 1.0 -> 2.0",
        ),
        (lambda info: info["SteerColorLoss"]["input"]["required"]["match"][0].append("median"), "SteerColorLoss.input.required.match[0]"),
        (
            lambda info: info["SteerCombineLosses"]["input"]["optional"]["weight_1"][1].update(min=0.0),
            "SteerCombineLosses.input.optional.weight_1[1].min",
        ),
        (
            lambda info: info["SteerEdgeLoss"]["input"]["required"]["reference"][1].pop("tooltip"),
            "SteerEdgeLoss.input.required.reference[1].tooltip: removed",
        ),
        (lambda info: info["SteerGuidanceReport"].update(output=["STRING", "IMAGE"]), "SteerGuidanceReport.output"),
        (lambda info: info["SteerGuidedSampler"]["input_order"]["required"].reverse(), "SteerGuidedSampler.input_order.required"),
        (
            lambda info: info["SteerStyleLoss"]["input"]["required"]["block"].__setitem__(0, "FLOAT"),
            "SteerStyleLoss.input.required.block[0]",
        ),
        (lambda info: info["SteerAttnDreamBoothTrain"].update(output_node=False), "SteerAttnDreamBoothTrain.output_node"),
        (lambda info: info["SteerLoadGuidanceModel"].update(experimental=True), "SteerLoadGuidanceModel.experimental: added"),
        (lambda info: info.__setitem__("SteerColourLoss", info.pop("SteerColorLoss")), "node SteerColorLoss is gone"),
    ],
)
def test_the_comparison_catches_what_a_workflow_would_break_on(edit, expected):
    found = differences(snapshot(), _changed(edit))
    assert any(line.startswith(expected) for line in found), found


def test_the_comparison_passes_over_only_what_v3_adds():
    def v3_additions(info):
        info["SteerLoadGuidanceModel"]["input"]["required"]["model_folder"][0] = ["tiny-clip"]  # a folder in models/steer
        for entry in info.values():
            entry.update(deprecated=False, experimental=False, api_node=False)
            for spec in entry["input"].get("required", {}).values():
                if isinstance(spec[0], list):
                    spec[1].update(options=list(spec[0]), multiselect=False)
                elif spec[0] == "STRING":
                    spec[1].setdefault("multiline", False)
        train = info["SteerAttnDreamBoothTrain"]
        train["input"]["hidden"] = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
        train["input_order"]["hidden"] = ["prompt", "extra_pnginfo"]

    assert differences(snapshot(), _changed(v3_additions)) == []
    # ...but a combo's repeated options must agree with its type, and a non-output node gets no hidden inputs.
    wrong_copy = _changed(lambda info: info["SteerColorLoss"]["input"]["required"]["match"][1].update(options=["pixels"]))
    assert differences(snapshot(), wrong_copy) == ['SteerColorLoss.input.required.match[1].options: added (["pixels"])']
    hidden = _changed(lambda info: info["SteerEdgeLoss"]["input"].update(hidden={"prompt": ["PROMPT"]}))
    assert differences(snapshot(), hidden)[0].startswith("SteerEdgeLoss.input.hidden: added")
    assert comparable("SteerEdgeLoss", snapshot()["SteerEdgeLoss"]) == snapshot()["SteerEdgeLoss"]
