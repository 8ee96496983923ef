"""UI-format workflows to API format for `steer queue`: comfy-cli's maintained converter when the `queue` extra is
installed (`pip install "steer-guidance[queue]"`), the hand-written ui_workflow.ui_to_api otherwise.

comfy-cli (Comfy-Org, 1.23) is an optional extra because its dependency tree is large (typer, rich, uv, ruff,
telemetry...), and the node pack and `steer queue` work without it. On Steer's shared workflows both converters
give the same API graphs (tests/unit/test_batch_convert.py, and against a live server tests/integration/
test_workflows.py). Only comfy-cli handles subgraphs (`definitions.subgraphs`, which the current frontend saves),
V3 dynamic inputs and Get/Set nodes; without it a subgraph workflow is refused with the command that installs it.

Checked here before either converter runs, so both refuse the same files with the same message:
- a node type the server lacks (comfy-cli would pass it on and the server would reject every job);
- text in the frontend's dynamic-prompt syntax ({a|b}, // and /* */ comments, \\| escapes): the frontend rewrites it,
  picking an option at random, each time it queues. Converting once would fix one random choice for the whole
  sweep and give the jobs new keys on every run, so a re-run would not resume.
comfy-cli reports what it could not convert (a node it left out, legacy group nodes, widget values it could not
match) only as log warnings; they are raised here as WorkflowError.

Before comfy-cli runs, each PrimitiveNode's value is written into the widget it feeds, as the frontend does when it
queues (comfy-cli would keep the target's own saved value). Known differences left, which the shared workflows do
not exercise: comfy-cli fills an input missing from widgets_values
with the server's default, wraps list values as {"__value__": [...]} and matches combo values case-insensitively.
"""

from __future__ import annotations

import copy
import logging
import re
from contextlib import contextmanager

from .ui_workflow import has_subgraphs, ui_links, ui_to_api, widget_layout, widget_values
from .workflow import MODE_ALWAYS, VIRTUAL_NODE_TYPES, WorkflowError, object_info_of

QUEUE_EXTRA = 'pip install "steer-guidance[queue]"'
COMFY_CLI_LOGGER = "comfy_cli.workflow_to_api"
# What the frontend's dynamic-prompt pass rewrites (formatUtil.ts processDynamicPrompt; comfy-cli does the same).
DYNAMIC_PROMPT_SYNTAX = re.compile(r"[{}]|//|/\*|\\[|]")
# KJNodes' frontend-only variables: comfy-cli resolves them; for the hand-written converter they are unknown types.
FRONTEND_VARIABLE_NODES = ("GetNode", "SetNode")


def comfy_cli_converter():
    """comfy-cli's `convert_ui_to_api(workflow, object_info)`, or None when the `queue` extra is not installed."""
    try:
        from comfy_cli.workflow_to_api import convert_ui_to_api
    except ImportError:
        return None
    return convert_ui_to_api


def convert_to_api(workflow: dict, object_info, use_comfy_cli: bool | None = None) -> dict:
    """The API graph of a UI-format workflow. `use_comfy_cli`: None = when installed, True = required, False = never."""
    info = object_info_of(object_info)
    converter = comfy_cli_converter() if use_comfy_cli is not False else None
    if use_comfy_cli and converter is None:
        raise WorkflowError(f"comfy-cli's converter is not installed: {QUEUE_EXTRA}")
    problems = _unknown_node_types(workflow, info) + _dynamic_prompts(workflow, info)
    if problems:
        raise WorkflowError("cannot convert this UI-format workflow:\n  " + "\n  ".join(problems))
    if converter is None:
        if has_subgraphs(workflow):
            raise WorkflowError(
                f"this workflow has subgraphs; converting them needs comfy-cli: {QUEUE_EXTRA} "
                "(or in ComfyUI use Workflow → Export (API) and queue that file)"
            )
        return ui_to_api(workflow, info)
    from comfy_cli.workflow_to_api import WorkflowConversionError

    with _warnings_raised():
        try:
            return converter(primitives_applied(workflow, info), info.raw)
        except WorkflowConversionError as error:
            raise WorkflowError(f"comfy-cli cannot convert this workflow: {error}") from error


def primitives_applied(workflow: dict, info) -> dict:
    """A copy with each PrimitiveNode's value written into the widgets it feeds, as the frontend does before it queues
    (PrimitiveNode.applyToGraph). comfy-cli keeps the target's own saved widget value when the two differ."""
    workflow = copy.deepcopy(workflow)
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    for graph in [workflow] + [graph for graph in subgraphs if isinstance(graph, dict)]:
        nodes = {node.get("id"): node for node in graph.get("nodes") or [] if isinstance(node, dict)}
        for link in ui_links(graph).values():
            origin, target = nodes.get(link[1]), nodes.get(link[3])
            if origin is None or target is None or origin.get("type") != "PrimitiveNode" or target.get("type") not in info:
                continue
            slots = target.get("inputs") or []
            widget = (slots[link[4]].get("widget") or {}).get("name") if isinstance(link[4], int) and link[4] < len(slots) else None
            values = origin.get("widgets_values") or []
            if widget and values:
                _set_widget_value(target, info.spec(target["type"]), widget, values[0])
    return workflow


def _set_widget_value(node: dict, spec, name: str, value) -> None:
    values = node.get("widgets_values")
    if isinstance(values, dict):
        values[name] = value
    elif isinstance(values, list):
        positions = [index for index, (kind, entry) in enumerate(widget_layout(spec)) if kind == "widget" and entry.name == name]
        if positions and positions[0] < len(values):
            values[positions[0]] = value


def _active_nodes(workflow: dict):
    """(where, node) of every node that reaches the server: the top level's and each subgraph definition's."""
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    subgraph_ids = {graph.get("id") for graph in subgraphs if isinstance(graph, dict)}
    graphs = [("", workflow)]
    graphs += [(f"subgraph {graph.get('name') or graph.get('id')!r}: ", graph) for graph in subgraphs if isinstance(graph, dict)]
    for prefix, graph in graphs:
        for node in graph.get("nodes") or []:
            if not isinstance(node, dict) or node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
                continue
            if node.get("type") in VIRTUAL_NODE_TYPES or node.get("type") in subgraph_ids:
                continue
            yield f"{prefix}node {node.get('id')} ({node.get('type')})", node


def _unknown_node_types(workflow: dict, info) -> list[str]:
    return [
        f"{where}: the server has no node type {node.get('type')!r}"
        for where, node in _active_nodes(workflow)
        if node.get("type") not in info and node.get("type") not in FRONTEND_VARIABLE_NODES
    ]


def _dynamic_prompts(workflow: dict, info) -> list[str]:
    problems = []
    for where, node in _active_nodes(workflow):
        if node.get("type") not in info:
            continue
        spec = info.spec(node["type"])
        for name, value in widget_values(node, spec).items():
            if spec.input(name).options.get("dynamicPrompts") and isinstance(value, str) and DYNAMIC_PROMPT_SYNTAX.search(value):
                problems.append(
                    f"{where} input {name!r}: {value[:60]!r} uses the frontend's dynamic-prompt syntax ({{a|b}}, comments), "
                    "which picks at random each time the frontend queues it; sweep the options with --set instead "
                    '(e.g. --set "text=@prompts.txt"), or export the workflow in API format'
                )
    return problems


@contextmanager
def _warnings_raised():
    """comfy-cli's log warnings during the conversion, raised as one WorkflowError (it leaves the node out otherwise)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            cause = f" ({record.exc_info[1]!r})" if record.exc_info and record.exc_info[1] else ""
            messages.append(record.getMessage() + cause)

    logger = logging.getLogger(COMFY_CLI_LOGGER)
    handler, level = Collect(logging.WARNING), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if messages:
        raise WorkflowError("comfy-cli could not convert all of this workflow:\n  " + "\n  ".join(messages))
