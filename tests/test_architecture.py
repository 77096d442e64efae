"""The structure the README's architecture section promises, checked on the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "postdesk"
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
            elif func == "setattr":
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
