"""The test suite's own layout: test modules never import each other.

Shared helpers live in `postdesk.testing` and shared fixtures in conftest.py, which pytest
loads; a test module importing another (or conftest.py) runs that module's collection
twice and couples tests that should be independent.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in `path`, function-level ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import can only mean a module beside this one.
            module = "." * node.level + (node.module or "")
            found.append((node.lineno, module))
    return found


def test_no_test_module_imports_another() -> None:
    local = {path.stem for path in TESTS.glob("*.py")} | {"tests"}
    offences = [
        f"{path.name}:{line}: imports {module}"
        for path in sorted(TESTS.glob("*.py"))
        for line, module in imported_modules(path)
        if module.startswith(".") or module.split(".")[0] in local
    ]
    assert offences == [], "move shared helpers to postdesk/testing/:\n" + "\n".join(offences)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import test_fetch\nfrom tests.support import x\nfrom . import conftest\n"
        "def f():\n    from conftest import y\n",
        encoding="utf-8",
    )
    modules = [module for _line, module in imported_modules(sample)]
    assert sorted(modules) == [".", "conftest", "test_fetch", "tests.support"]
