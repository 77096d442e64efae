"""Lists for people and for scripts: one description of a command's columns gives its
table, CSV, TSV and JSON (`--format table|json|csv|tsv`) and the choice of columns
(`--columns a,b,c`).

Used by `inbound list`, `outbox list`, `model list` and `tickets search`; `tickets list`
has its own columns (postdesk/tickets/render.py) drawn with the same pieces, so every
list of postdesk looks and behaves alike:

- a table measures text in terminal cells (Persian, CJK, combining marks), fits the
  screen by shortening the wide columns with "…", the last column taking what is left;
  right-to-left text is isolated (FSI ... PDI) so numbers and brackets stay in place;
  one row, one line; colours only on a terminal without NO_COLOR;
- CSV (RFC 4180) and TSV (tabs and newlines inside a value become spaces) carry whole
  values, never shortened, without any control character from mail;
- JSON without `--columns` is the command's full, unchanged JSON; with `--columns`, a
  list of objects with just those keys.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len

from postdesk.errors import PostdeskError
from postdesk.termsafe import terminal_safe
from postdesk.tickets.render import GAP, Screen, one_line, table_text, wrap

Row = dict[str, Any]


@dataclass(frozen=True)
class Field:
    """A column of a list: its name (for --columns, CSV headers and JSON keys), its
    header in a table, its cell in a table (`text`, made one safe line), its value for
    JSON (`value`, default `row[name]`) and CSV/TSV (that value as text), how wide it may
    grow in a table, whether it is right-aligned, and down to how many cells it may be
    shortened when the screen is narrow (None: never)."""

    name: str
    header: str
    text: Callable[[Row], str] | None = None
    value: Callable[[Row], Any] | None = None
    max_width: int | None = None
    right: bool = False
    shrink_to: int | None = None

    def json(self, row: Row) -> Any:
        return self.value(row) if self.value is not None else row.get(self.name)

    def cell(self, row: Row) -> str:
        if self.text is not None:
            return one_line(self.text(row))
        return one_line(plain(self.json(row)) or "-")


def plain(value: Any) -> str:
    """A JSON value as CSV/TSV text: "" for null, lists joined with ", "."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    return str(value)


def pick(fields: Sequence[Field], spec: str | None, default: Sequence[str] | None) -> list[Field]:
    """The fields named by a `--columns` value ("id,status,subject"), else `default`'s
    (None: all). An unknown name is a one-line error listing the known ones."""
    by_name = {f.name: f for f in fields}
    if spec is None:
        return list(fields) if default is None else [by_name[name] for name in default]
    names = [name.strip().lower() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        problem = f"unknown column {unknown[0]!r}" if unknown else "--columns names no column"
        raise PostdeskError(f"{problem}; choose from {', '.join(by_name)}")
    return [by_name[name] for name in names]


def fit_widths(
    fields: Sequence[Field], headers: Sequence[str], widths: list[int], width: int
) -> None:
    """Set `widths` (the cells' natural widths) so a row fits `width` cells: the last
    column is the one that gives way last and gets what is left, at least about a third
    of the screen (or all it needs, if less); the others with a `shrink_to` give a cell
    at a time, the widest first, down to their floor."""
    last = len(widths) - 1
    natural = widths[last]
    room = width - sum(widths[:last]) - GAP * last
    need = min(natural, max(20, width // 3))
    floors = {
        i: max(f.shrink_to, cell_len(headers[i]))
        for i, f in enumerate(fields[:last])
        if f.shrink_to is not None
    }
    while room < need:
        able = [i for i, floor in floors.items() if widths[i] > floor]
        if not able:
            break
        widest = max(able, key=lambda i: widths[i])
        widths[widest] -= 1
        room += 1
    widths[last] = max(min(natural, room), cell_len(headers[last]))


def table_lines(
    rows: Sequence[Row],
    fields: Sequence[Field],
    out: Screen,
    style: Callable[[str, str, Row], str | None] | None = None,
) -> list[str]:
    """`rows` as table lines fitted to `out.width`: the header, then one line per row
    (in order, so a caller may put a note under a row). `style(name, cell, row)` may
    colour a cell (used only when `out.color`)."""
    cells = [[f.cell(row) for f in fields] for row in rows]
    headers = [f.header for f in fields]
    widths = [max([cell_len(h)] + [cell_len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    for i, f in enumerate(fields):
        if f.max_width is not None:
            widths[i] = max(min(widths[i], f.max_width), cell_len(headers[i]))
    fit_widths(fields, headers, widths, out.width)
    styled = [
        [
            (values[i], style(f.name, values[i], row) if style is not None else None)
            for i, f in enumerate(fields)
        ]
        for row, values in zip(rows, cells, strict=True)
    ]
    return table_text(headers, widths, [f.right for f in fields], styled, out)


def note_lines(label: str, text: str, width: int, indent: int = 8) -> list[str]:
    """A note under a table row ("reason: ...", "error: ..."): indented, wrapped to
    `width` by words with later lines under the first word, never cut."""
    first = f"{' ' * indent}{label}: "
    pieces = wrap(one_line(text), max(width - cell_len(first), 20))
    return [(first if i == 0 else " " * cell_len(first)) + p for i, p in enumerate(pieces)]


def delimited(rows: Iterable[Row], fields: Sequence[Field], delimiter: str) -> str:
    """CSV (RFC 4180 quoting) or TSV of whole values, a header row of the field names."""
    names = [f.name for f in fields]
    file = io.StringIO()
    if delimiter == "\t":
        file.write("\t".join(names) + "\n")
        for row in rows:
            values = [" ".join(terminal_safe(plain(f.json(row))).split()) for f in fields]
            file.write("\t".join(values) + "\n")
        return file.getvalue()
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([terminal_safe(plain(f.json(row))) for f in fields])
    return file.getvalue()


def json_rows(rows: Iterable[Row], fields: Sequence[Field]) -> list[Row]:
    """The rows with only the chosen fields' values (`--format json --columns ...`)."""
    return [{f.name: f.json(row) for f in fields} for row in rows]
