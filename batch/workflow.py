"""ComfyUI workflow files in both formats, checked against a server's `/object_info`.

- API ("prompt") format: ``{"<id>": {"class_type", "inputs": {name: literal | [source_id, output_index]}, "_meta"}}``,
  what ``POST /prompt`` takes.
- UI (LiteGraph) format: ``{"nodes": [...], "links": [[id, origin_id, origin_slot, target_id, target_slot, type]], ...}``,
  what the frontend saves; widget values sit positionally in each node's ``widgets_values``.

`check_api` and `check_ui` return a list of readable problems (empty when the file is valid);
`ui_to_api` converts a UI workflow the way the frontend's "Export (API)" does; `diff_api` compares two
API graphs. Only the standard library is used, so this runs anywhere.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
COMBO_CONTROL_VALUES = SEED_CONTROL_VALUES + ("increment-wrap",)
# Combo values that name a file on the user's machine (models, input images) are not checked
# against the server's list: a shared workflow names the usual file, each user has their own.
FILE_VALUE = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx|png|jpe?g|webp|gif|bmp|tiff?|mp4|webm|wav|mp3|flac)$", re.I)
# Combo inputs that name something on the user's machine without a file extension: a model folder
# under models/steer, a concept saved in models/loras. Not checked against the server's list either.
USER_NAMED_INPUTS = frozenset({("SteerLoadGuidanceModel", "model_folder"), ("SteerAttnDreamBoothLoad", "concept")})
# Frontend-only nodes: they never reach the server.
VIRTUAL_NODE_TYPES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow cannot be read or converted; the message says where."""


# ------------------------------------------------------------------------------------------
# object_info, normalised


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "INT", "COMBO", "MODEL"...
    required: bool
    options: dict = field(default_factory=dict, compare=False)
    choices: tuple | None = None  # COMBO values
    user_named: bool = False  # a COMBO naming a file, folder or concept on the user's machine (USER_NAMED_INPUTS)

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")

    def extra_widget_values(self) -> tuple[tuple, ...]:
        """The frontend's extra widgets after this one in widgets_values, as allowed-value tuples (() = any)."""
        if not self.is_widget:
            return ()
        if self.type == "INT" and self.options.get("control_after_generate", self.name in ("seed", "noise_seed")):
            return (SEED_CONTROL_VALUES,)
        if self.type == "COMBO":
            extras: list[tuple] = []
            if self.options.get("control_after_generate"):
                extras += [COMBO_CONTROL_VALUES, ()]  # the mode, then the filter-list string
            if any(self.options.get(key) for key in ("image_upload", "animated_image_upload", "video_upload", "audio_upload")):
                extras.append(())  # the "upload" button
            return tuple(extras)
        return ()


@dataclass(frozen=True)
class NodeSpec:
    class_type: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool
    display_name: str

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    @property
    def widgets(self) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.is_widget)


def node_spec(class_type: str, info: dict) -> NodeSpec:
    inputs = []
    sections = info.get("input", {})
    order = info.get("input_order") or {section: list(entries) for section, entries in sections.items()}
    for section in ("required", "optional"):
        entries = sections.get(section) or {}
        for name in order.get(section, entries.keys()):
            raw = entries[name]
            kind, options = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
            choices = None
            if isinstance(kind, list):
                kind, choices = "COMBO", tuple(kind)
            elif kind == "COMBO":
                choices = tuple(options.get("options", ()))
            inputs.append(InputSpec(name, kind, section == "required", options, choices, (class_type, name) in USER_NAMED_INPUTS))
    outputs = tuple(info.get("output", ()))
    return NodeSpec(
        class_type,
        tuple(inputs),
        outputs,
        tuple(info.get("output_name") or outputs),
        bool(info.get("output_node")),
        info.get("display_name") or class_type,
    )


class ObjectInfo:
    """`GET /object_info`, indexed by class type."""

    def __init__(self, raw: dict):
        self.raw = raw
        self._specs: dict[str, NodeSpec] = {}

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.raw

    def spec(self, class_type: str) -> NodeSpec:
        if class_type not in self._specs:
            self._specs[class_type] = node_spec(class_type, self.raw[class_type])
        return self._specs[class_type]


def _object_info(object_info) -> ObjectInfo:
    return object_info if isinstance(object_info, ObjectInfo) else ObjectInfo(object_info)


def types_compatible(output_type: str, input_type: str) -> bool:
    """The frontend's rule: equal, a wildcard, or one of a comma-separated list of types."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    outs = {t.strip() for t in str(output_type).split(",")}
    ins = {t.strip() for t in str(input_type).split(",")}
    return bool(outs & ins)


def check_value(spec: InputSpec, value, where: str) -> list[str]:
    """Problems with a literal widget value (type, combo list, min/max)."""
    problems = []
    options = spec.options
    if spec.type == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            return [f"{where}: {value!r} is not an integer"]
    elif spec.type == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return [f"{where}: {value!r} is not a number"]
    elif spec.type == "STRING":
        if not isinstance(value, str):
            return [f"{where}: {value!r} is not a string"]
    elif spec.type == "BOOLEAN":
        if not isinstance(value, bool):
            return [f"{where}: {value!r} is not true/false"]
    elif spec.type == "COMBO":
        users_own = isinstance(value, str) and (FILE_VALUE.search(value) or (spec.user_named and value))
        if not users_own and value not in (spec.choices or ()):
            shown = ", ".join(map(repr, (spec.choices or ())[:12])) + (", ..." if len(spec.choices or ()) > 12 else "")
            problems.append(f"{where}: {value!r} is not one of the allowed values ({shown})")
        return problems
    if spec.type in ("INT", "FLOAT"):
        if options.get("min") is not None and value < options["min"]:
            problems.append(f"{where}: {value!r} is below the minimum {options['min']}")
        if options.get("max") is not None and value > options["max"]:
            problems.append(f"{where}: {value!r} is above the maximum {options['max']}")
    return problems


# ------------------------------------------------------------------------------------------
# API format


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int) and not isinstance(value[1], bool)


def is_ui_format(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def check_api(prompt: dict, object_info) -> list[str]:
    """Every problem `POST /prompt` would reject, and a few it would not (unknown inputs)."""
    info = _object_info(object_info)
    if not isinstance(prompt, dict) or not prompt:
        return ["the workflow is not a non-empty JSON object of nodes"]
    if is_ui_format(prompt):
        return ["this is a UI-format workflow (it has 'nodes' and 'links'), not API format"]
    problems = []
    has_output = False
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            problems.append(f"node {node_id}: no class_type")
            continue
        class_type = node["class_type"]
        where = f"node {node_id} ({class_type})"
        if class_type not in info:
            problems.append(f"{where}: the server has no node type {class_type!r}")
            continue
        spec = info.spec(class_type)
        has_output |= spec.output_node
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            input_spec = spec.input(name)
            at = f"{where} input {name!r}"
            if input_spec is None:
                problems.append(f"{at}: {class_type} has no such input (inputs: {', '.join(s.name for s in spec.inputs)})")
                continue
            if is_link(value):
                source_id, index = str(value[0]), value[1]
                source = prompt.get(source_id)
                if source is None:
                    problems.append(f"{at}: links to node {source_id}, which is not in the workflow")
                    continue
                if source.get("class_type") not in info:
                    continue  # reported at the source
                source_spec = info.spec(source["class_type"])
                if not 0 <= index < len(source_spec.outputs):
                    problems.append(f"{at}: links to output {index} of node {source_id} ({source_spec.class_type}), which has {len(source_spec.outputs)} outputs")
                    continue
                out_type = source_spec.outputs[index]
                if isinstance(out_type, list):
                    out_type = "COMBO"
                if not types_compatible(out_type, input_spec.type):
                    problems.append(f"{at}: expects {input_spec.type} but is linked to {out_type} (output {index} of node {source_id}, {source_spec.class_type})")
            elif not input_spec.is_widget:
                problems.append(f"{at}: expects a link to a {input_spec.type} output, got the value {value!r}")
            else:
                problems.extend(check_value(input_spec, value, at))
        for input_spec in spec.inputs:
            if input_spec.required and input_spec.name not in inputs:
                problems.append(f"{where}: required input {input_spec.name!r} is missing")
    if not has_output:
        problems.append("the workflow has no output node (SaveImage, PreviewImage...)")
    return problems


# ------------------------------------------------------------------------------------------
# UI format


def _widget_layout(spec: NodeSpec) -> list[tuple[str, InputSpec | tuple]]:
    """What each position of widgets_values holds: ("widget", spec) or ("extra", allowed values)."""
    layout = []
    for input_spec in spec.widgets:
        layout.append(("widget", input_spec))
        layout.extend(("extra", allowed) for allowed in input_spec.extra_widget_values())
    return layout


def widget_values(node: dict, spec: NodeSpec) -> dict:
    """A UI node's widget values by input name (the frontend's control/upload extras dropped)."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, dict):
        return {name: value for name, value in values.items() if spec.input(name) is not None}
    layout = _widget_layout(spec)
    return {entry.name: value for (kind, entry), value in zip(layout, values) if kind == "widget"}


def _ui_links(workflow: dict) -> dict:
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):  # the newer object form
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"), link.get("target_slot"), link.get("type")]
        links[link[0]] = link
    return links


def check_ui(workflow: dict, object_info) -> list[str]:
    """Problems that would make the frontend report missing nodes, drop a link or reset a value."""
    info = _object_info(object_info)
    if not is_ui_format(workflow):
        return ["not a UI-format workflow (no 'nodes' and 'links')"]
    problems = []
    if (workflow.get("definitions") or {}).get("subgraphs"):
        problems.append("subgraphs are not supported by this checker")
    links = _ui_links(workflow)
    nodes = {}
    for node in workflow["nodes"]:
        if node.get("id") in nodes:
            problems.append(f"node id {node.get('id')} is used twice")
        nodes[node.get("id")] = node
    if nodes and workflow.get("last_node_id") is not None and max(nodes) > workflow["last_node_id"]:
        problems.append(f"last_node_id {workflow['last_node_id']} is below the largest node id {max(nodes)}")
    if links and workflow.get("last_link_id") is not None and max(links) > workflow["last_link_id"]:
        problems.append(f"last_link_id {workflow['last_link_id']} is below the largest link id {max(links)}")

    for node_id, node in nodes.items():
        class_type = node.get("type")
        where = f"node {node_id} ({class_type})"
        for field_name in ("pos", "size"):
            if not (isinstance(node.get(field_name), (list, dict))):
                problems.append(f"{where}: no {field_name}")
        if class_type in VIRTUAL_NODE_TYPES:
            continue
        if class_type not in info:
            problems.append(f"{where}: the server has no node type {class_type!r} (the frontend would report it missing)")
            continue
        spec = info.spec(class_type)
        active = node.get("mode", MODE_ALWAYS) == MODE_ALWAYS

        # outputs: names, types and the links they list
        for index, output in enumerate(node.get("outputs") or []):
            if index >= len(spec.outputs):
                problems.append(f"{where}: output slot {index} ({output.get('name')}) does not exist; {class_type} has {len(spec.outputs)} outputs")
                continue
            expected = spec.outputs[index]
            expected = "COMBO" if isinstance(expected, list) else expected
            if output.get("type") != expected:
                problems.append(f"{where}: output {index} has type {output.get('type')}, the server says {expected}")
            for link_id in output.get("links") or []:
                link = links.get(link_id)
                if link is None:
                    problems.append(f"{where}: output {index} lists link {link_id}, which is not in 'links'")
                elif (link[1], link[2]) != (node_id, index):
                    problems.append(f"{where}: output {index} lists link {link_id}, which starts at node {link[1]} slot {link[2]}")

        # input slots: sockets and widgets turned into sockets
        linked = set()
        for index, slot in enumerate(node.get("inputs") or []):
            name = slot.get("name")
            at = f"{where} input {name!r}"
            input_spec = spec.input((slot.get("widget") or {}).get("name", name))
            if input_spec is None:
                problems.append(f"{at}: {class_type} has no such input (inputs: {', '.join(s.name for s in spec.inputs)})")
                continue
            if slot.get("widget") and not input_spec.is_widget:
                problems.append(f"{at}: marked as a widget, but the server declares a {input_spec.type} socket")
            if not slot.get("widget") and input_spec.is_widget:
                problems.append(f"{at}: a socket in the file, but the server declares a {input_spec.type} widget")
            if not types_compatible(slot.get("type", "*"), input_spec.type):
                problems.append(f"{at}: slot type {slot.get('type')} but the server declares {input_spec.type}")
            link_id = slot.get("link")
            if link_id is None:
                continue
            link = links.get(link_id)
            if link is None:
                problems.append(f"{at}: link {link_id} is not in 'links'")
                continue
            if (link[3], link[4]) != (node_id, index):
                problems.append(f"{at}: link {link_id} ends at node {link[3]} slot {link[4]}, not here (slot {index})")
            linked.add(input_spec.name)

        if active:
            for input_spec in spec.inputs:
                if input_spec.required and not input_spec.is_widget and input_spec.name not in linked:
                    problems.append(f"{where}: required input {input_spec.name!r} ({input_spec.type}) is not connected")

        # widgets_values: count, then each value
        values = node.get("widgets_values")
        if isinstance(values, list):
            layout = _widget_layout(spec)
            if len(values) != len(layout):
                names = [entry.name if kind == "widget" else "(control)" for kind, entry in layout]
                problems.append(f"{where}: widgets_values has {len(values)} values, the server's inputs need {len(layout)}: {names}")
            else:
                for (kind, entry), value in zip(layout, values):
                    if kind == "widget":
                        if entry.name not in linked:
                            problems.extend(check_value(entry, value, f"{where} widget {entry.name!r}"))
                    elif entry and value not in entry:
                        problems.append(f"{where}: control value {value!r} is not one of {list(entry)}")
        elif isinstance(values, dict):
            for name, value in values.items():
                entry = spec.input(name)
                if entry is None:
                    problems.append(f"{where} widget {name!r}: {class_type} has no such input")
                elif entry.is_widget and name not in linked:
                    problems.extend(check_value(entry, value, f"{where} widget {name!r}"))
        elif spec.widgets:
            problems.append(f"{where}: no widgets_values, the server's inputs need {[w.name for w in spec.widgets]}")

    # every link: both ends exist and the types agree
    for link_id, link in links.items():
        _, origin_id, origin_slot, target_id, target_slot, link_type = link
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            problems.append(f"link {link_id}: joins node {origin_id} to node {target_id}, but {'node ' + str(origin_id) if origin is None else 'node ' + str(target_id)} does not exist")
            continue
        outputs, inputs = origin.get("outputs") or [], target.get("inputs") or []
        if origin_slot >= len(outputs) or target_slot >= len(inputs):
            problems.append(f"link {link_id}: slot out of range (node {origin_id} output {origin_slot} → node {target_id} input {target_slot})")
            continue
        if link_id not in (outputs[origin_slot].get("links") or []):
            problems.append(f"link {link_id}: node {origin_id} output {origin_slot} does not list it")
        if inputs[target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: node {target_id} input {target_slot} does not point back to it")
        out_type, in_type = outputs[origin_slot].get("type"), inputs[target_slot].get("type")
        if not types_compatible(link_type, in_type) or not types_compatible(out_type, link_type):
            problems.append(f"link {link_id}: type {link_type} joins an output of type {out_type} to an input of type {in_type}")
    return problems


def ui_to_api(workflow: dict, object_info) -> dict:
    """Convert a UI-format workflow to API format, as the frontend does when it queues or exports it.

    Handles muted and bypassed nodes, Reroute and PrimitiveNode; raises WorkflowError for what it cannot
    (subgraphs, unknown node types).
    """
    info = _object_info(object_info)
    if not is_ui_format(workflow):
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links')")
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported; in ComfyUI use Workflow → Export (API)")
    links = _ui_links(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}

    def resolve(link_id, wanted_type, seen=()):
        """The (node, slot) or ("value", v) that finally feeds a link, through reroutes, bypasses and primitives."""
        link = links.get(link_id)
        if link is None or link_id in seen:
            return None
        origin = nodes.get(link[1])
        if origin is None:
            return None
        kind, mode = origin.get("type"), origin.get("mode", MODE_ALWAYS)
        if kind == "Reroute":
            slot = (origin.get("inputs") or [{}])[0]
            return resolve(slot.get("link"), wanted_type, seen + (link_id,))
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            for slot in origin.get("inputs") or []:
                if slot.get("link") is not None and types_compatible(slot.get("type", "*"), wanted_type):
                    return resolve(slot["link"], wanted_type, seen + (link_id,))
            return None
        return (origin["id"], link[2])

    prompt = {}
    for node_id, node in sorted(nodes.items(), key=lambda item: item[1].get("order", 0)):
        class_type = node.get("type")
        if class_type in VIRTUAL_NODE_TYPES or node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            continue
        if class_type not in info:
            raise WorkflowError(f"node {node_id}: the server has no node type {class_type!r}")
        spec = info.spec(class_type)
        inputs = widget_values(node, spec)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name", slot.get("name"))
            source = resolve(slot["link"], slot.get("type", "*"))
            if source is None:
                inputs.pop(name, None)
            elif source[0] == "value":
                inputs[name] = source[1]
            else:
                inputs[name] = [str(source[0]), source[1]]
        prompt[str(node_id)] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": node.get("title") or spec.display_name}}
    return prompt


def diff_api(a: dict, b: dict, names=("a", "b")) -> list[str]:
    """How two API graphs differ: node ids, class types, titles, inputs (links and values)."""
    problems = []
    for node_id in sorted(set(a) | set(b), key=lambda k: (len(str(k)), str(k))):
        if node_id not in a or node_id not in b:
            problems.append(f"node {node_id} is only in {names[1] if node_id in b else names[0]}")
            continue
        left, right = a[node_id], b[node_id]
        if left.get("class_type") != right.get("class_type"):
            problems.append(f"node {node_id}: class {left.get('class_type')} vs {right.get('class_type')}")
            continue
        title_a, title_b = (left.get("_meta") or {}).get("title"), (right.get("_meta") or {}).get("title")
        if title_a and title_b and title_a != title_b:
            problems.append(f"node {node_id}: title {title_a!r} vs {title_b!r}")
        inputs_a, inputs_b = left.get("inputs", {}), right.get("inputs", {})
        for name in sorted(set(inputs_a) | set(inputs_b)):
            va, vb = inputs_a.get(name, "<missing>"), inputs_b.get(name, "<missing>")
            if is_link(va) and is_link(vb):
                va, vb = [str(va[0]), va[1]], [str(vb[0]), vb[1]]
            if va != vb:
                problems.append(f"node {node_id} ({left.get('class_type')}) input {name!r}: {va!r} in {names[0]} vs {vb!r} in {names[1]}")
    return problems


def load_workflow(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WorkflowError(f"cannot read workflow {path}: {error}") from error
