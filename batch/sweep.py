"""`--set` overrides and the sweep they span: one API-format prompt per job.

A `--set` is ``TARGET=VALUES``.

TARGET names one input of one node: ``NODE.inputs.NAME`` (ComfyUI's own path), or ``NODE.NAME``, or just
``NAME`` when exactly one node has an input of that name. NODE is a node id, a node title
(``_meta.title``) or a class type that occurs once.

VALUES is one of:

- a single value: ``cfg=7.5``, ``text=a red apple``;
- a list, split on commas: ``sampler_name=euler,ddim``; write ``\\,`` for a comma inside a value
  and ``\\\\`` for a backslash;
- an inclusive range of integers ``1..100``, or with a step ``0..20..5`` / ``0.5..1.5..0.25``;
  ranges can sit in a list: ``1..3,10``;
- ``@FILE``: each non-blank line of FILE is one value, taken literally (no escapes); ``\\@`` starts a
  value with a literal @;
- a JSON array, taken literally: ``text=["a cat, sitting", "a dog"]``.

Values take the type of the input's current value in the workflow (int, float, bool or string).
Several `--set` combine as a product (the first varies slowest), or with `zip` side by side
(lists of one value are repeated).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .workflow import is_link

RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)(?:\.\.(-?\d+(?:\.\d+)?))?\s*$")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
MAX_JOBS = 1_000_000


class SweepError(ValueError):
    """A --set that cannot be parsed or applied; the message says which and why."""


@dataclass(frozen=True)
class Override:
    """One parsed --set: where it points (as written) and its values (strings, or JSON values)."""

    text: str
    node: str | None  # None: find the node by the input name
    input: str
    values: tuple


@dataclass
class Job:
    """One prompt of the sweep."""

    index: int
    params: dict  # "NODE_ID.inputs.NAME" -> value, for every --set
    prompt: dict
    key: str = ""  # hash of the prompt: the manifest's identity of a job
    varying: tuple = ()  # the params that differ between jobs (shown in messages); default all

    def __post_init__(self):
        if not self.key:
            self.key = prompt_key(self.prompt)

    def label(self) -> str:
        shown = ", ".join(
            f"{path.rsplit('.', 1)[-1]}={_short(value)}" for path, value in self.params.items() if not self.varying or path in self.varying
        )
        return f"job {self.index}" + (f" ({shown})" if shown else "")


def _short(value, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prompt_key(prompt: dict) -> str:
    canonical = json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------
# parsing


def _split_unescaped(text: str, separator: str = ",") -> list[str]:
    """Split on separators not preceded by a backslash; keep the escapes (removed later)."""
    items, current, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == separator:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    items.append("".join(current))
    return items


def _unescape(text: str) -> str:
    r"""\, \\ \@ and \. stand for the character itself; other backslashes are kept as written."""
    return re.sub(r"\\([,\\@.])", r"\1", text)


def _number(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else Decimal(text)


def expand_range(text: str) -> list:
    """``1..5`` → [1, 2, 3, 4, 5]; ``10..0..5`` → [10, 5, 0]; ``0..1..0.25`` → floats."""
    match = RANGE.match(text)
    if not match:
        raise SweepError(f"{text!r} is not a range like 1..10 or 0..1..0.25")
    start, end = _number(match.group(1)), _number(match.group(2))
    if match.group(3) is not None:
        step = _number(match.group(3))
    elif isinstance(start, int) and isinstance(end, int):
        step = 1 if end >= start else -1
    else:
        raise SweepError(f"range {text!r} has non-integer ends; give a step, e.g. {match.group(1)}..{match.group(2)}..0.1")
    if step == 0 or (end - start) * step < 0:
        raise SweepError(f"range {text!r}: the step {step} never reaches {match.group(2)}")
    count = int((Decimal(end) - Decimal(start)) / Decimal(step)) + 1
    if count > MAX_JOBS:
        raise SweepError(f"range {text!r} has {count} values; that is too many")
    as_int = all(isinstance(v, int) for v in (start, end, step))
    values = [start + i * step for i in range(count)]
    return [int(v) for v in values] if as_int else [float(v) for v in values]


def parse_values(spec: str, base_dir: Path | None = None) -> list:
    """The values of one --set (see the module docstring for the syntax)."""
    if spec.startswith("@"):
        path = Path(spec[1:]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise SweepError(f"cannot read the values file {path}: {error.strerror or error}") from error
        values = [line for line in lines if line.strip()]
        if not values:
            raise SweepError(f"the values file {path} has no non-blank lines")
        return values
    stripped = spec.strip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError:
            values = None
        if isinstance(values, list):
            if not values:
                raise SweepError(f"{spec!r} is an empty list")
            return values
    values = []
    for item in _split_unescaped(spec):
        if "\\" not in item and RANGE.match(item):
            values.extend(expand_range(item))
        else:
            values.append(_unescape(item))
    return values


def parse_set(text: str, base_dir: Path | None = None) -> Override:
    """``NODE.inputs.NAME=VALUES`` (or ``NODE.NAME=…``, ``NAME=…``) → Override."""
    target, separator, spec = text.partition("=")
    target = target.strip()
    if not separator or not target:
        raise SweepError(f"--set {text!r}: write it as NODE.inputs.NAME=VALUES, e.g. 3.inputs.seed=1..10")
    if ".inputs." in target:
        node, name = target.rsplit(".inputs.", 1)
    elif "." in target:
        node, name = target.rsplit(".", 1)
    else:
        node, name = None, target
    if not name or node == "":
        raise SweepError(f"--set {text!r}: the target {target!r} names no input")
    return Override(text, node, name, tuple(parse_values(spec, base_dir)))


# ------------------------------------------------------------------------------------------
# applying


def resolve_node(prompt: dict, override: Override) -> str:
    """The node id an override points at: by id, then title, then a class type found once."""
    if override.node is None:
        owners = [node_id for node_id, node in prompt.items() if override.input in node.get("inputs", {})]
        if len(owners) == 1:
            return owners[0]
        if not owners:
            raise SweepError(f"--set {override.text!r}: no node in the workflow has an input {override.input!r}")
        described = ", ".join(f"{i} ({prompt[i].get('class_type')})" for i in owners)
        raise SweepError(
            f"--set {override.text!r}: several nodes have an input {override.input!r}: {described}; write NODE.inputs.{override.input}"
        )
    if override.node in prompt:
        return override.node
    for what, get in (("title", lambda n: (n.get("_meta") or {}).get("title")), ("class type", lambda n: n.get("class_type"))):
        matches = [node_id for node_id, node in prompt.items() if get(node) == override.node]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise SweepError(
                f"--set {override.text!r}: {len(matches)} nodes have the {what} {override.node!r} (ids {', '.join(matches)}); use "
                "the node id"
            )
    nodes = ", ".join(f"{i} ({n.get('class_type')})" for i, n in prompt.items())
    raise SweepError(f"--set {override.text!r}: no node with id, title or class type {override.node!r}; nodes: {nodes}")


def coerce(value, current, where: str):
    """Give a --set value the type of the input's current value."""
    if is_link(current):
        raise SweepError(f"{where} is connected to node {current[0]}; --set changes values, not links")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise SweepError(f"{where}: {value!r} is not true or false")
    if isinstance(current, int):
        if isinstance(value, bool):
            raise SweepError(f"{where}: {value!r} is not an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            pass
        try:
            number = float(str(value).strip())
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise SweepError(f"{where}: {value!r} is not an integer")
        return int(number)
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise SweepError(f"{where}: {value!r} is not a number") from None
    if isinstance(current, str):
        return value if isinstance(value, str) else json.dumps(value)
    # The input is not in the workflow yet (an optional input): read numbers and booleans as such.
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, (int, float, bool)) else value
    return value


def expand_jobs(prompt: dict, overrides, zip_values: bool = False) -> list[Job]:
    """Every job of the sweep, in order; the workflow itself is not modified."""
    resolved = []
    for override in overrides:
        node_id = resolve_node(prompt, override)
        path = f"{node_id}.inputs.{override.input}"
        current = prompt[node_id].get("inputs", {}).get(override.input)
        values = [coerce(value, current, path) for value in override.values]
        resolved.append((node_id, override.input, path, values))
    paths = [path for _, _, path, _ in resolved]
    duplicates = {path for path in paths if paths.count(path) > 1}
    if duplicates:
        raise SweepError(f"--set names {', '.join(sorted(duplicates))} more than once")

    value_lists = [values for *_, values in resolved]
    if zip_values:
        lengths = {len(values) for values in value_lists if len(values) > 1}
        if len(lengths) > 1:
            described = ", ".join(f"{path} has {len(values)}" for _, _, path, values in resolved if len(values) > 1)
            raise SweepError(f"--zip needs lists of the same length: {described}")
        count = lengths.pop() if lengths else 1
        combos = [tuple(values[i] if len(values) > 1 else values[0] for values in value_lists) for i in range(count)]
    else:
        total = 1
        for values in value_lists:
            total *= len(values)
        if total > MAX_JOBS:
            raise SweepError(f"the sweep has {total} jobs; that is too many")
        combos = list(itertools.product(*value_lists))

    varying = tuple(path for _, _, path, values in resolved if len(values) > 1) or ("-",)
    jobs = []
    for index, combo in enumerate(combos):
        job_prompt = json.loads(json.dumps(prompt))
        params = {}
        for (node_id, name, path, _), value in zip(resolved, combo):
            job_prompt[node_id].setdefault("inputs", {})[name] = value
            params[path] = value
        jobs.append(Job(index, params, job_prompt, varying=varying))
    return jobs
