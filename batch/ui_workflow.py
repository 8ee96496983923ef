"""UI-format (LiteGraph) workflows, what the frontend saves: checked against `/object_info`, and converted by hand.

    {"nodes": [...], "links": [[id, origin_id, origin_slot, target_id, target_slot, type]], "definitions": {...}, ...}

`check_ui` returns what would make the frontend report a missing node, drop a link or reset a value, as readable
problems (empty when the file is valid). `ui_to_api` converts the way the frontend's "Export (API)" does, for the
workflows without subgraphs; convert.py uses comfy-cli's converter instead when it is installed.
"""

from __future__ import annotations

from .workflow import (
    MODE_ALWAYS,
    MODE_BYPASS,
    MODE_NEVER,
    VIRTUAL_NODE_TYPES,
    InputSpec,
    NodeSpec,
    WorkflowError,
    check_value,
    is_ui_format,
    object_info_of,
    types_compatible,
)


def has_subgraphs(workflow: dict) -> bool:
    return bool((workflow.get("definitions") or {}).get("subgraphs"))


def widget_layout(spec: NodeSpec) -> list[tuple[str, InputSpec | tuple]]:
    """What each position of widgets_values holds: ("widget", spec) or ("extra", allowed values)."""
    layout = []
    for input_spec in spec.widgets:
        layout.append(("widget", input_spec))
        layout.extend(("extra", allowed) for allowed in input_spec.extra_widget_values())
    layout.extend(("extra", ()) for input_spec in spec.widgets if input_spec.has_upload_button)
    return layout


def widget_values(node: dict, spec: NodeSpec) -> dict:
    """A UI node's widget values by input name (the frontend's control/upload extras dropped)."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, dict):
        return {name: value for name, value in values.items() if spec.input(name) is not None}
    layout = widget_layout(spec)
    return {entry.name: value for (kind, entry), value in zip(layout, values) if kind == "widget"}


def ui_links(workflow: dict) -> dict:
    """link id -> [id, origin_id, origin_slot, target_id, target_slot, type], from either form the frontend writes."""
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):  # the newer object form
            link = [link.get(key) for key in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")]
        links[link[0]] = link
    return links


# ------------------------------------------------------------------------------------------
# check_ui, one named check per part of the file


def check_ui(workflow: dict, object_info) -> list[str]:
    """Problems that would make the frontend report missing nodes, drop a link or reset a value."""
    info = object_info_of(object_info)
    if not is_ui_format(workflow):
        return ["not a UI-format workflow (no 'nodes' and 'links')"]
    problems = ["subgraphs are not supported by this checker"] if has_subgraphs(workflow) else []
    links = ui_links(workflow)
    nodes = _nodes_by_id(workflow, problems)
    problems += _id_counters(workflow, nodes, links)
    for node_id, node in nodes.items():
        class_type = node.get("type")
        where = f"node {node_id} ({class_type})"
        problems += _layout_fields(node, where)
        if class_type in VIRTUAL_NODE_TYPES:
            continue
        if class_type not in info:
            problems.append(f"{where}: the server has no node type {class_type!r} (the frontend would report it missing)")
            continue
        spec = info.spec(class_type)
        problems += _output_slots(node, node_id, spec, links, where)
        slot_problems, linked = _input_slots(node, node_id, spec, links, where)
        problems += slot_problems
        if node.get("mode", MODE_ALWAYS) == MODE_ALWAYS:
            problems += _required_inputs_connected(spec, linked, where)
        problems += _widget_values(node, spec, linked, where)
    problems += _links_agree(links, nodes)
    return problems


def _nodes_by_id(workflow: dict, problems: list[str]) -> dict:
    nodes = {}
    for node in workflow["nodes"]:
        if node.get("id") in nodes:
            problems.append(f"node id {node.get('id')} is used twice")
        nodes[node.get("id")] = node
    return nodes


def _id_counters(workflow: dict, nodes: dict, links: dict) -> list[str]:
    """The frontend numbers new nodes and links from last_node_id / last_link_id: they must not be behind."""
    problems = []
    if nodes and workflow.get("last_node_id") is not None and max(nodes) > workflow["last_node_id"]:
        problems.append(f"last_node_id {workflow['last_node_id']} is below the largest node id {max(nodes)}")
    if links and workflow.get("last_link_id") is not None and max(links) > workflow["last_link_id"]:
        problems.append(f"last_link_id {workflow['last_link_id']} is below the largest link id {max(links)}")
    return problems


def _layout_fields(node: dict, where: str) -> list[str]:
    return [f"{where}: no {name}" for name in ("pos", "size") if not isinstance(node.get(name), (list, dict))]


def _output_slots(node: dict, node_id, spec: NodeSpec, links: dict, where: str) -> list[str]:
    """Each output slot exists, has the server's type, and the links it lists start here."""
    problems = []
    for index, output in enumerate(node.get("outputs") or []):
        if index >= len(spec.outputs):
            problems.append(
                f"{where}: output slot {index} ({output.get('name')}) does not exist; {spec.class_type} has {len(spec.outputs)} outputs"
            )
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
    return problems


def _input_slots(node: dict, node_id, spec: NodeSpec, links: dict, where: str) -> tuple[list[str], set[str]]:
    """Sockets and widgets turned into sockets: each is an input of the server's node, of its kind and type, and its
    link ends here. Also returns the names of the linked inputs."""
    problems, linked = [], set()
    for index, slot in enumerate(node.get("inputs") or []):
        name = slot.get("name")
        at = f"{where} input {name!r}"
        input_spec = spec.input((slot.get("widget") or {}).get("name", name))
        if input_spec is None:
            problems.append(f"{at}: {spec.class_type} has no such input (inputs: {', '.join(s.name for s in spec.inputs)})")
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
    return problems, linked


def _required_inputs_connected(spec: NodeSpec, linked: set[str], where: str) -> list[str]:
    return [
        f"{where}: required input {input_spec.name!r} ({input_spec.type}) is not connected"
        for input_spec in spec.inputs
        if input_spec.required and not input_spec.is_widget and input_spec.name not in linked
    ]


def _widget_values(node: dict, spec: NodeSpec, linked: set[str], where: str) -> list[str]:
    """widgets_values: as many as the server's widgets (and their control extras) need, each allowed."""
    values = node.get("widgets_values")
    problems = []
    if isinstance(values, list):
        layout = widget_layout(spec)
        # A workflow saved before a node gained optional widgets at its end lacks their values; the
        # frontend then gives them their defaults, and so does the server for an API prompt without them.
        missing = layout[len(values) :]
        saved_before_new_inputs = all(kind == "widget" and not entry.required for kind, entry in missing)
        if len(values) > len(layout) or not saved_before_new_inputs:
            names = [entry.name if kind == "widget" else "(control)" for kind, entry in layout]
            return [f"{where}: widgets_values has {len(values)} values, the server's inputs need {len(layout)}: {names}"]
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
                problems.append(f"{where} widget {name!r}: {spec.class_type} has no such input")
            elif entry.is_widget and name not in linked:
                problems.extend(check_value(entry, value, f"{where} widget {name!r}"))
    elif spec.widgets:
        problems.append(f"{where}: no widgets_values, the server's inputs need {[w.name for w in spec.widgets]}")
    return problems


def _links_agree(links: dict, nodes: dict) -> list[str]:
    """Every link: both ends exist, both list it, and the types agree."""
    problems = []
    for link_id, link in links.items():
        _, origin_id, origin_slot, target_id, target_slot, link_type = link
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            missing = origin_id if origin is None else target_id
            problems.append(f"link {link_id}: joins node {origin_id} to node {target_id}, but node {missing} does not exist")
            continue
        outputs, inputs = origin.get("outputs") or [], target.get("inputs") or []
        if origin_slot >= len(outputs) or target_slot >= len(inputs):
            ends = f"node {origin_id} output {origin_slot} → node {target_id} input {target_slot}"
            problems.append(f"link {link_id}: slot out of range ({ends})")
            continue
        if link_id not in (outputs[origin_slot].get("links") or []):
            problems.append(f"link {link_id}: node {origin_id} output {origin_slot} does not list it")
        if inputs[target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: node {target_id} input {target_slot} does not point back to it")
        out_type, in_type = outputs[origin_slot].get("type"), inputs[target_slot].get("type")
        if not types_compatible(link_type, in_type) or not types_compatible(out_type, link_type):
            problems.append(f"link {link_id}: type {link_type} joins an output of type {out_type} to an input of type {in_type}")
    return problems


# ------------------------------------------------------------------------------------------
# the hand-written converter


def ui_to_api(workflow: dict, object_info) -> dict:
    """Convert a UI-format workflow to API format, as the frontend does when it queues or exports it.

    Handles muted and bypassed nodes, Reroute and PrimitiveNode; raises WorkflowError for what it cannot
    (subgraphs, unknown node types).
    """
    info = object_info_of(object_info)
    if not is_ui_format(workflow):
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links')")
    if has_subgraphs(workflow):
        raise WorkflowError("workflows with subgraphs are not supported; in ComfyUI use Workflow → Export (API)")
    links = ui_links(workflow)
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
