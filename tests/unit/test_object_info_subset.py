"""The unit tests' /object_info fixture says of each Steer node what the pack really serves.

data/comfy_object_info_subset.json is trimmed by hand (no tooltips or descriptions); everything it does
say about a Steer node must agree with the published snapshot that tests/integration/test_object_info_stable.py
holds the live server to.
"""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SUBSET = json.loads((TESTS / "unit" / "data" / "comfy_object_info_subset.json").read_text(encoding="utf-8"))
PUBLISHED = json.loads((TESTS / "integration" / "data" / "object_info_v1.json").read_text(encoding="utf-8"))
STEER_NODES = sorted(name for name in SUBSET if name.startswith("Steer"))
# The inputs added since the snapshot, with why (plain Python; loaded by path, tests/ is not a package).
_spec = importlib.util.spec_from_file_location("object_info_snapshot", TESTS / "integration" / "object_info_snapshot.py")
_snapshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_snapshot)
ADDED_INPUTS = _snapshot.ADDED_INPUTS


def without_added_inputs(node: str, entry: dict) -> dict:
    """The fixture entry as the snapshot knows it: inputs added since then (optional, last) set aside."""
    entry = copy.deepcopy(entry)
    added = [name for (owner, name) in ADDED_INPUTS if owner == node]
    optional = entry.get("input", {}).get("optional", {})
    for name in added:
        optional.pop(name, None)
    order = entry.get("input_order", {})
    if "optional" in order:
        order["optional"] = [name for name in order["optional"] if name not in added]
    for holder in (entry.get("input", {}), order):
        if holder.get("optional") in ({}, []):
            del holder["optional"]
    return entry


def _disagreements(trimmed: dict, published: dict, path: str = "") -> list[str]:
    """Where `trimmed` says something `published` does not; keys `trimmed` leaves out are fine."""
    if isinstance(trimmed, dict) and isinstance(published, dict):
        return [
            line
            for key, value in trimmed.items()
            for line in (_disagreements(value, published[key], f"{path}.{key}") if key in published else [f"{path}.{key}: not published"])
        ]
    if isinstance(trimmed, list) and isinstance(published, list) and len(trimmed) == 2 == len(published) and isinstance(trimmed[1], dict):
        return _disagreements(trimmed[0], published[0], f"{path}[0]") + _disagreements(trimmed[1], published[1], f"{path}[1]")
    return [] if trimmed == published else [f"{path}: fixture {trimmed!r}, published {published!r}"]


def test_an_input_the_snapshot_never_had_is_caught():
    extra = copy.deepcopy(SUBSET["SteerGuidedSampler"])
    extra["input"]["optional"]["sharpness"] = ["FLOAT", {}]
    assert ".input.optional.sharpness: not published" in _disagreements(
        without_added_inputs("SteerGuidedSampler", extra), PUBLISHED["SteerGuidedSampler"]
    )


def test_the_fixture_holds_steer_nodes():
    assert {"SteerGuidedSampler", "SteerColorLoss"} <= set(STEER_NODES)


@pytest.mark.parametrize("node", STEER_NODES)
def test_the_fixture_agrees_with_the_published_node(node):
    assert _disagreements(without_added_inputs(node, SUBSET[node]), PUBLISHED[node]) == []


def test_a_stale_default_is_caught():
    stale = without_added_inputs("SteerGuidedSampler", SUBSET["SteerGuidedSampler"])
    stale["input"]["required"]["preset"][1]["default"] = "paper"
    assert _disagreements(stale, PUBLISHED["SteerGuidedSampler"]) == [
        ".input.required.preset[1].default: fixture 'paper', published 'mpgd'"
    ]
