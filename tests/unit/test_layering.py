"""The layers import only downward, read from the source (AST), not by importing it.

Top to bottom: the front end (cli/, and benchmarks/, which `steer bench` runs) → the ComfyUI
nodes and adapters (nodes/) and the HTTP client (batch/) → the plain-torch layers (guidance/,
personalize/, world/, digits/) → the root helpers (errors.py, patching.py, safe_files.py).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_MODULES = frozenset(
    {
        "comfy",
        "comfy_extras",
        "comfy_api",
        "comfy_config",
        "comfy_execution",
        "folder_paths",
        "nodes",
        "server",
        "execution",
        "latent_preview",
        "node_helpers",
    }
)
PLAIN = ("guidance", "personalize", "world", "digits")
ROOT_HELPERS = ("errors", "patching", "safe_files")
# Which of the pack's top-level packages each layer may import (besides itself).
MAY_IMPORT = {
    **{layer: {"guidance", *ROOT_HELPERS} for layer in PLAIN},
    "guidance": set(ROOT_HELPERS),
    "nodes": {*PLAIN, *ROOT_HELPERS},
    "batch": set(ROOT_HELPERS),
    **{helper: set(ROOT_HELPERS) for helper in ROOT_HELPERS},
}
TEST_PACKAGES = frozenset({"tests", "unit", "integration", "fixtures"})  # pytest puts tests/ on sys.path


def _shipped_files():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] != "tests" and not any(part.startswith(".") for part in parts):
            yield path


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["steer", *parts])


def imports(path: Path, name: str):
    """(absolute module, imported names, line) for every import in the file, lazy ones included.
    Relative imports are resolved against `name`, the file's module name."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module, tuple(alias.name for alias in node.names), node.lineno


def offences(path: Path, root: Path = ROOT) -> list[str]:
    """What in one shipped file breaks the layering."""
    name = module_name(path, root)
    layer = name.split(".")[1] if "." in name else ""
    where = path.relative_to(root)
    found = []
    for module, names, line in imports(path, name):
        parts = module.split(".")
        if parts[0] == "steer" and len(parts) > 1:
            target = parts[1]
            if layer in MAY_IMPORT and target != layer and target not in MAY_IMPORT[layer]:
                found.append(f"{where}:{line}: the {layer} layer imports {module}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and module != name:
                found.append(f"{where}:{line}: imports private {', '.join(private)} from {module}")
        elif parts[0] in COMFYUI_MODULES and (layer in PLAIN or layer in ROOT_HELPERS or layer == "batch"):
            found.append(f"{where}:{line}: the {layer} layer imports ComfyUI ({module})")
        elif parts[0] == "torch" and layer == "batch":  # `steer queue` runs on machines without torch
            found.append(f"{where}:{line}: the batch layer imports torch")
        elif parts[0] in TEST_PACKAGES:
            found.append(f"{where}:{line}: shipped code imports the tests ({module})")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split("/")[0] == "tests":
            found.append(f"{where}:{node.lineno}: shipped code names the tests folder ({node.value!r})")
    return found


def test_every_shipped_module_imports_only_downward():
    found = [offence for path in _shipped_files() for offence in offences(path)]
    assert not found, "\n".join(found)


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of the pack's modules, following every import (lazy ones too)."""
    files = {module_name(path): path for path in _shipped_files()}
    graph = {}
    for name, path in files.items():
        edges = set()
        for module, names, _ in imports(path, name):
            for candidate in (module, *(f"{module}.{n}" for n in names)):
                if candidate in files and candidate != name:
                    edges.add(candidate)
        graph[name] = edges
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_there_are_no_import_cycles():
    assert import_cycles() == []


def _pack(tmp_path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return tmp_path


def test_the_check_fails_on_what_personalize_cli_train_used_to_import(tmp_path):
    # The lines personalize/cli_train.py had before the front end took them (issue 14).
    root = _pack(
        tmp_path,
        {
            "personalize/cli_train.py": (
                "def open_backbone():\n"
                "    import comfy.cli_args\n"
                "    import comfy.sd\n"
                "    from ..nodes.comfy_personalize import ComfyBackbone\n"
            )
        },
    )
    found = offences(root / "personalize/cli_train.py", root)
    assert len(found) == 3 and "imports ComfyUI (comfy.cli_args)" in found[0] and "steer.nodes.comfy_personalize" in found[2]


def test_the_check_sees_private_names_tests_and_upward_imports(tmp_path):
    root = _pack(
        tmp_path,
        {
            "nodes/comfy_personalize.py": "from ..guidance.checkpointing import _MISSING\nfrom .comfy_guidance import _identity\n",
            "benchmarks/cost.py": "FIXTURE = ROOT / 'tests' / 'fixtures' / 'sd15_checkpoint.py'\nfrom fixtures import build\n",
            "guidance/sampler.py": "from ..cli.progress import TerminalProgress\nfrom ..nodes import comfy_common\n",
            "batch/runner.py": "import torch\nfrom ..guidance import config\n",
        },
    )
    assert [len(offences(root / f, root)) for f in ("nodes/comfy_personalize.py", "benchmarks/cost.py", "guidance/sampler.py")] == [2, 2, 2]
    assert offences(root / "batch/runner.py", root) == [
        "batch/runner.py:1: the batch layer imports torch",
        "batch/runner.py:2: the batch layer imports steer.guidance",
    ]
