"""The unit tests' /object_info fixture says of each Steer node what the pack really serves.

data/comfy_object_info_subset.json is trimmed by hand (no tooltips or descriptions); everything it does
say about a Steer node must agree with the published snapshot that tests/integration/test_object_info_stable.py
holds the live server to.
"""

import json
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SUBSET = json.loads((TESTS / "unit" / "data" / "comfy_object_info_subset.json").read_text(encoding="utf-8"))
PUBLISHED = json.loads((TESTS / "integration" / "data" / "object_info_v1.json").read_text(encoding="utf-8"))
STEER_NODES = sorted(name for name in SUBSET if name.startswith("Steer"))


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


def test_the_fixture_holds_steer_nodes():
    assert {"SteerGuidedSampler", "SteerColorLoss"} <= set(STEER_NODES)


@pytest.mark.parametrize("node", STEER_NODES)
def test_the_fixture_agrees_with_the_published_node(node):
    assert _disagreements(SUBSET[node], PUBLISHED[node]) == []


def test_a_stale_default_is_caught():
    stale = json.loads(json.dumps(SUBSET["SteerGuidedSampler"]))
    stale["input"]["required"]["preset"][1]["default"] = "paper"
    assert _disagreements(stale, PUBLISHED["SteerGuidedSampler"]) == [
        ".input.required.preset[1].default: fixture 'paper', published 'mpgd'"
    ]
