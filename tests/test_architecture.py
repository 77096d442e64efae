"""The structure the README's architecture section promises, checked on the source.

The import graph of postdesk's modules: no import cycles, and the layers of DESIGN.md.

The graph is read from the source with `ast`, not by importing: every `import postdesk…`
and `from postdesk… import …` counts, at module level and inside functions (a lazy import
is still a dependency), except those under `if TYPE_CHECKING:`, which never run.
`from postdesk.x import y` is an edge to `postdesk.x.y` when that is a module, else to
`postdesk.x`.

And the one writer of ticket state: no module but postdesk/tickets/lifecycle.py inserts
or updates the tickets and ticket_events tables.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "postdesk"

# Import cycles that exist today and are known; each entry is one strongly connected
# component (its modules, sorted). The list may only shrink: the test fails when a cycle
# not listed appears, and also when a listed one is gone, so that its entry gets removed.
# Empty: no module cycle exists today (cli.py and classify/cli.py met only through an
# import under TYPE_CHECKING, and since clikit.py that one is gone too).
KNOWN_CYCLES: list[tuple[str, ...]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(module: str, tree: ast.AST) -> Iterator[str]:
    """Every postdesk module name `module` imports, outside `if TYPE_CHECKING:` blocks."""
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and is_type_checking(node):
            # The else branch of `if TYPE_CHECKING:` is what runs.
            for child in node.orelse:
                yield from imported_names(module, ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if in_package(alias.name, "postdesk"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            if not in_package(base, "postdesk"):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in MODULES else base
        yield from imported_names(module, node)


@cache
def import_graph() -> dict[str, set[str]]:
    """Each postdesk module and the postdesk modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = set(imported_names(module, tree))
        graph[module] = {name for name in names if name in MODULES and name != module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Tarjan's algorithm: the components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def importers_of(prefixes: tuple[str, ...], among: str = "postdesk") -> dict[str, set[str]]:
    """Modules under `among` that import a module under one of `prefixes`, with what."""
    hits: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if not in_package(module, among):
            continue
        bad = {t for t in targets if any(in_package(t, prefix) for prefix in prefixes)}
        if bad:
            hits[module] = bad
    return hits


def test_the_graph_is_read() -> None:
    # Guards the reader: an empty or edgeless graph would pass every check below.
    assert "postdesk.classify.cli" in import_graph()["postdesk.cli"]
    # A lazy import inside a function counts.
    assert "postdesk.daemon" in import_graph()["postdesk.cli"]
    # `from postdesk.models import Ticket` is an edge to the package, not to a module `Ticket`.
    assert "postdesk.models" in import_graph()["postdesk.tickets.views"]


def test_the_reader_follows_the_rules_it_states() -> None:
    source = """
from typing import TYPE_CHECKING
import postdesk.errors
from postdesk import config
from postdesk.models import Ticket
from . import text
from .store import ModelStore
if TYPE_CHECKING:
    from postdesk.cli import Context
else:
    from postdesk import files
def lazy():
    from postdesk.daemon import Service
"""
    names = set(imported_names("postdesk.classify.triage", ast.parse(source)))
    assert names == {
        "postdesk.errors",
        "postdesk.config",
        "postdesk.models",
        "postdesk.classify.text",
        "postdesk.classify.store",
        "postdesk.files",
        "postdesk.daemon",
    }
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]


def test_no_import_cycles_beyond_the_known_ones() -> None:
    cycles = strongly_connected(import_graph())
    new = [cycle for cycle in cycles if cycle not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in new)
    gone = [cycle for cycle in KNOWN_CYCLES if cycle not in cycles]
    assert not gone, "no longer cycles, remove them from KNOWN_CYCLES: " + repr(gone)


def test_nothing_below_the_entry_point_imports_it() -> None:
    # Feature commands (classify/cli.py, notify/cli.py, qa/cli.py) take what they share
    # from clikit; only `python -m postdesk` starts the entry point, and the test harness
    # in postdesk.testing, which drives the whole program from above as tests do.
    importers = {
        module
        for module, targets in import_graph().items()
        if "postdesk.cli" in targets and not in_package(module, "postdesk.testing")
    }
    assert importers <= {"postdesk.__main__"}, importers


def test_the_shared_cli_module_imports_no_commands() -> None:
    commands = {
        t for t in import_graph()["postdesk.clikit"] if t == "postdesk.cli" or t.endswith(".cli")
    }
    assert not commands, commands


def test_ingest_never_imports_triage_notification_or_qa() -> None:
    hits = importers_of(("postdesk.classify", "postdesk.notify", "postdesk.qa"), "postdesk.ingest")
    assert not hits, hits


def test_qa_never_imports_ingest_triage_or_notification() -> None:
    # QA reads tickets (tickets, models) and writes only its own tables; the features
    # beside it in the layer are not its business.
    hits = importers_of(("postdesk.ingest", "postdesk.classify", "postdesk.notify"), "postdesk.qa")
    assert not hits, hits


def test_the_qa_layer_is_checked() -> None:
    # Guards the test above: the qa modules are in the graph with their edges.
    assert "postdesk.models" in import_graph()["postdesk.qa.frame"]
    assert "postdesk.qa.cli" in import_graph()["postdesk.cli"]


# DESIGN.md's layers, top first; a layer may import the ones after it, never before.
LAYERS = (
    ("postdesk.demo", "postdesk.testing"),
    ("postdesk.cli", "postdesk.clikit"),
    ("postdesk.daemon",),
    ("postdesk.pipeline",),
    ("postdesk.ingest", "postdesk.classify", "postdesk.notify", "postdesk.qa", "postdesk.sla"),
    ("postdesk.tickets",),
    ("postdesk.models",),
)


def above(package: str) -> tuple[str, ...]:
    """The packages of the layers above `package`'s."""
    index = next(i for i, layer in enumerate(LAYERS) if package in layer)
    return tuple(name for layer in LAYERS[:index] for name in layer)


def test_models_import_nothing_above_them() -> None:
    assert not importers_of(above("postdesk.models"), "postdesk.models")


def test_tickets_import_nothing_above_them() -> None:
    # The lifecycle is what ingest, triage, notify and soon SLA/QA call: it calls none of them.
    assert not importers_of(above("postdesk.tickets"), "postdesk.tickets")


# --- one writer of ticket state ---------------------------------------------------------

LIFECYCLE = PACKAGE / "tickets" / "lifecycle.py"

# What writing a ticket or its events looks like: Core statements on their tables (by
# model, by table variable, or through table_of), ORM rows made from their models, and
# SQL text naming the tables.
_TICKET_MODELS = {"Ticket", "TicketEvent"}
_TICKET_TABLES = {"_tickets", "_events", "tickets", "ticket_events"}
_WRITES = {"insert", "update", "delete"}
# Columns only tickets have: setting one on a loaded row is an ORM write of the ticket.
_TICKET_COLUMNS = {
    "status",
    "closed_at",
    "merged_into_id",
    "assignee_id",
    "needs_triage",
    "category",
    "priority",
    "last_message_at",
}
_SQL_WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(?:tickets|ticket_events)\b", re.IGNORECASE
)


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _ticket_table(node: ast.AST) -> bool:
    name = _name(node)
    if name in _TICKET_MODELS or name in _TICKET_TABLES:
        return True
    if isinstance(node, ast.Call) and _name(node.func) == "table_of" and node.args:
        return _name(node.args[0]) in _TICKET_MODELS
    return False


def ticket_writes(path: Path) -> list[str]:
    """Lines of `path` that write the tickets or ticket_events tables."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = _name(node.func)
            if func in _WRITES and node.args and _ticket_table(node.args[0]):
                found.append(f"{path.name}:{node.lineno}: {func}() of a ticket table")
            elif func in _TICKET_MODELS:
                found.append(f"{path.name}:{node.lineno}: a new {func} row")
            elif isinstance(node.func, ast.Name) and func == "setattr":
                found.append(f"{path.name}:{node.lineno}: setattr() on a row")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in _TICKET_COLUMNS:
                    found.append(f"{path.name}:{node.lineno}: sets .{target.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SQL_WRITE.search(node.value)
        ):
            found.append(f"{path.name}:{node.lineno}: SQL writing a ticket table")
    return found


def test_only_the_lifecycle_writes_tickets_and_their_events() -> None:
    writers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == LIFECYCLE or "migrations" in path.relative_to(PACKAGE).parts:
            continue
        if found := ticket_writes(path):
            writers[str(path.relative_to(PACKAGE))] = found
    assert writers == {}


def test_the_writer_check_sees_writes() -> None:
    """The check above would notice a write outside the lifecycle (it is not vacuous)."""
    assert len(ticket_writes(LIFECYCLE)) >= 5
