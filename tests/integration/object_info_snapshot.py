"""Compare a node's live /object_info entry with the snapshot the pack published under ComfyUI's V1 node API.

data/object_info_v1.json holds the /object_info entries of every Steer node as ComfyUI v0.3.64 served them
from commit c6254e3 (V1 NODE_CLASS_MAPPINGS, before the move to V3 schemas), taken from a server started like
comfy_server.ComfyServer with an empty models folder, keeping the entries whose python_module is the pack.

Workflows depend on everything in an entry: ids, display names, category, description, input names and
their order, each input's type, default, min/max/step, combo options and tooltip, the required/optional/
hidden split, the output types, names, order and tooltips, and output_node. `comparable` keeps all of that
and drops only what V3 adds without changing how a workflow loads or validates:

- `deprecated`, `experimental`, `api_node` while false: V3 always sends these flags; V1 left them out when false.
- `multiline: false` on a STRING input: V3 always sends it; false is the frontend's default.
- `options` and `multiselect: false` on a combo: V3 repeats the options beside the type; a differing copy is kept.
- the PROMPT and EXTRA_PNGINFO hidden inputs of an output node: V3's Schema.finalize adds them to every output node;
  the server fills them in, no workflow carries them.
- the options of the combos that list files on the machine (ENVIRONMENT_COMBOS): they depend on what is installed,
  so only that the input is a combo is compared.

Tooltips and descriptions reworded since the snapshot (REWORDED_TOOLTIPS, REWORDED_DESCRIPTIONS) are compared
without their text, each with why: they are help text, which no workflow stores or reads.

Nodes added since the snapshot are published in data/object_info_added.json (their first /object_info entry, as
served by V3) and compared like the others.

Inputs added since the snapshot (ADDED_INPUTS) are set aside too, each with why a saved workflow still loads: it
must be optional and come after every published input, so the positional widget values of a UI workflow saved
before it still line up and an API prompt without it gets its default.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

SNAPSHOT_PATH = Path(__file__).with_name("data") / "object_info_v1.json"
ADDED_NODES_PATH = SNAPSHOT_PATH.with_name("object_info_added.json")
PACK_MODULE = "custom_nodes.steer"

FALSE_FLAGS_V3_SENDS = ("deprecated", "experimental", "api_node")
OUTPUT_NODE_HIDDEN = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
ENVIRONMENT_COMBOS = {("SteerLoadGuidanceModel", "model_folder"), ("SteerAttnDreamBoothLoad", "concept"), ("SteerRewardLoss", "head")}
FILES_ON_THIS_MACHINE = "<files on this machine>"
ADDED_INPUTS = {
    ("SteerAttnDreamBoothTrain", "checkpoint_minutes"): "issue 15: the checkpoint interval inside a stage (default 10 minutes)",
    ("SteerAttnDreamBoothTrain", "preview_prompt"): "issue 13: the prompt of the preview made at each stage end",
    **{
        (node, "mask"): "issue 16: an optional region MASK (a socket, no widget)"
        for node in (
            "SteerColorLoss",
            "SteerEdgeLoss",
            "SteerCLIPTextLoss",
            "SteerCLIPImageLoss",
            "SteerStyleLoss",
            "SteerClassifierLoss",
            "SteerGuidedSampler",
            "SteerGuidedSamplerAdvanced",
        )
    },
    **{
        (node, "mask_outside"): "issue 16: what the sampler does outside its mask (default: keep the unguided run there)"
        for node in ("SteerGuidedSampler", "SteerGuidedSamplerAdvanced")
    },
}

REWORDED_TOOLTIPS = {
    ("SteerAttnDreamBoothTrain", "preset"): "issue 13: says which plan measured best on the world benchmark, and for what",
    **{
        ("SteerAttnDreamBoothTrain", name): "issue 11: says that SDXL trains too (two learned vectors, 1024 px presets)"
        for name in ("model", "clip", "resolution")
    },
}
REWORDED_DESCRIPTIONS = {
    "SteerCombineLosses": "issue 16: says that masked losses keep their regions when combined",
    "SteerAttnDreamBoothTrain": "issue 11: says that SDXL trains too (two learned vectors, 1024 px presets)",
}


def snapshot() -> dict:
    """The published entries: the V1 snapshot and the nodes added since."""
    published = json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))
    added = json.loads(ADDED_NODES_PATH.read_text(encoding="utf-8"))
    assert not set(published) & set(added), "a node is in both snapshot files"
    return {**published, **added}


def pack_entries(object_info: dict) -> dict:
    return {name: entry for name, entry in object_info.items() if entry.get("python_module") == PACK_MODULE}


def _comparable_spec(node: str, name: str, spec: list) -> list:
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if options.get("multiline") is False:
        del options["multiline"]
    if isinstance(kind, list):
        if options.get("multiselect") is False:
            del options["multiselect"]
        if options.get("options") == kind:
            del options["options"]
        if (node, name) in ENVIRONMENT_COMBOS:
            kind = [FILES_ON_THIS_MACHINE]
    if (node, name) in REWORDED_TOOLTIPS:
        options.pop("tooltip", None)
    return [kind, options]


def comparable(node: str, entry: dict) -> dict:
    """`entry` without what V3 adds and no workflow reads (see the module docstring); everything else as it is."""
    entry = copy.deepcopy(entry)
    if node in REWORDED_DESCRIPTIONS:
        entry.pop("description", None)
    for flag in FALSE_FLAGS_V3_SENDS:
        if entry.get(flag, False) is False:
            entry.pop(flag, None)
    inputs, order = entry.get("input", {}), entry.get("input_order", {})
    if entry.get("output_node") and "hidden" in inputs:
        for name, value in OUTPUT_NODE_HIDDEN.items():
            if inputs["hidden"].get(name) == value:
                del inputs["hidden"][name]
                order["hidden"] = [key for key in order.get("hidden", []) if key != name]
        if not inputs["hidden"]:
            del inputs["hidden"]
            order.pop("hidden", None)
    for (added_to, name), _why in reversed(ADDED_INPUTS.items()):  # the newest is last
        if added_to == node and name in inputs.get("optional", {}):
            if order.get("optional", [])[-1:] != [name]:
                continue  # not last: left in, so the comparison reports it
            del inputs["optional"][name]
            order["optional"] = order["optional"][:-1]
    if "optional" in inputs and not inputs["optional"]:  # the added inputs were the only optional ones
        del inputs["optional"]
        order.pop("optional", None)
    for section, specs in inputs.items():
        entry["input"][section] = {name: _comparable_spec(node, name, spec) for name, spec in specs.items()}
    return entry


def differences(published: dict, live: dict) -> list[str]:
    """Each way `live` (node id -> entry) departs from `published`, one line each; [] when a workflow sees no change."""
    found = [f"node {node} is gone" for node in sorted(set(published) - set(live))]
    found += [f"node {node} is new: add it to the snapshot" for node in sorted(set(live) - set(published))]
    for node in sorted(set(published) & set(live)):
        found += [f"{node}{where}" for where in _walk(comparable(node, published[node]), comparable(node, live[node]), "")]
    return found


def _is_spec(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict)


def _walk(before, after, path: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after), key=str):
            if key not in after:
                lines.append(f"{path}.{key}: removed (was {json.dumps(before[key], ensure_ascii=False)[:120]})")
            elif key not in before:
                lines.append(f"{path}.{key}: added ({json.dumps(after[key], ensure_ascii=False)[:120]})")
            else:
                lines += _walk(before[key], after[key], f"{path}.{key}")
        return lines
    if _is_spec(before) and _is_spec(after):  # [type, options]: name the part that differs
        return [line for index, pair in enumerate(zip(before, after)) for line in _walk(*pair, f"{path}[{index}]")]
    if before != after:
        return [f"{path}: {json.dumps(before, ensure_ascii=False)[:160]} -> {json.dumps(after, ensure_ascii=False)[:160]}"]
    return []
