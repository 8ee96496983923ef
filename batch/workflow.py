"""ComfyUI workflow files: `/object_info` normalised (ObjectInfo, NodeSpec, InputSpec), and the API format.

- API ("prompt") format: ``{"<id>": {"class_type", "inputs": {name: literal | [source_id, output_index]}, "_meta"}}``,
  what ``POST /prompt`` takes.
- UI (LiteGraph) format: ``{"nodes": [...], "links": [...], ...}``, what the frontend saves; widget values sit
  positionally in each node's ``widgets_values``. It is checked and converted in ui_workflow.py and convert.py.

`check_api` returns a list of readable problems (empty when the file is valid); `diff_api` compares two API
graphs. Only the standard library is used, so this runs anywhere.
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
        """The frontend's extra widgets right after this one in widgets_values, as allowed-value tuples (() = any)."""
        if not self.is_widget:
            return ()
        if self.type == "INT" and self.options.get("control_after_generate", self.name in ("seed", "noise_seed")):
            return (SEED_CONTROL_VALUES,)
        if self.type == "COMBO" and self.options.get("control_after_generate"):
            return (COMBO_CONTROL_VALUES, ())  # the mode, then the filter-list string
        return ()

    @property
    def has_upload_button(self) -> bool:
        """The frontend adds an "upload" widget for this combo, after all of the node's own widgets
        (LoadImageMask saves [image, channel, "image"])."""
        upload_keys = ("image_upload", "animated_image_upload", "video_upload", "audio_upload")
        return self.is_widget and self.type == "COMBO" and any(self.options.get(key) for key in upload_keys)


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


def object_info_of(object_info) -> ObjectInfo:
    """An ObjectInfo from the raw `/object_info` dict (or the ObjectInfo itself)."""
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
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def is_ui_format(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def check_api(prompt: dict, object_info) -> list[str]:
    """Every problem `POST /prompt` would reject, and a few it would not (unknown inputs)."""
    info = object_info_of(object_info)
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
                    problems.append(
                        f"{at}: links to output {index} of node {source_id} ({source_spec.class_type}), which has "
                        f"{len(source_spec.outputs)} outputs"
                    )
                    continue
                out_type = source_spec.outputs[index]
                if isinstance(out_type, list):
                    out_type = "COMBO"
                if not types_compatible(out_type, input_spec.type):
                    problems.append(
                        f"{at}: expects {input_spec.type} but is linked to {out_type} (output {index} of node {source_id}, "
                        f"{source_spec.class_type})"
                    )
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
