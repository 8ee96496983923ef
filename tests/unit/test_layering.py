"""The plain-torch layers never import ComfyUI or the node classes (read from the source, not by importing).

personalize/ is not listed yet: its cli_train.py still bootstraps ComfyUI (issue 14 moves that out)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAIN_LAYERS = ("guidance", "world", "digits")
FORBIDDEN = ("comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "server", "execution")


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


@pytest.mark.parametrize("layer", PLAIN_LAYERS)
def test_plain_torch_layer_imports_neither_comfyui_nor_the_nodes(layer):
    offenders = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for level, module in _imports(path):
            top = module.split(".")[0]
            if level == 0 and top in FORBIDDEN:
                offenders.append(f"{path.relative_to(ROOT)}: import {module}")
            if level >= 2 and top == "nodes":
                offenders.append(f"{path.relative_to(ROOT)}: from {'.' * level}{module}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import comfy.samplers\nfrom ..nodes import comfy_guidance\n")
    assert [m for _, m in _imports(bad)] == ["comfy.samplers", "nodes"]
