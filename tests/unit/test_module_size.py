"""No shipped module is over about 400 lines unless its docstring says why."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 420  # "about 400"
REASON = "Over 400 lines because"


def long_modules_without_a_reason(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] == "tests" or any(part.startswith(".") for part in parts):
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + 1
        if lines > LIMIT and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_long_modules_say_why():
    assert long_modules_without_a_reason() == []


def test_the_check_sees_a_long_module(tmp_path):
    (tmp_path / "long.py").write_text('"""Short."""\n' + "x = 1\n" * 500)
    (tmp_path / "explained.py").write_text(f'"""Big. {REASON} it is one table."""\n' + "x = 1\n" * 500)
    assert long_modules_without_a_reason(tmp_path) == ["long.py: 502 lines"]
