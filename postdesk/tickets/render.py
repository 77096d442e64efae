"""Tickets for people: the table of `tickets list`, the page of `tickets show`, and the
CSV/TSV/JSON forms of the list.

Decisions, for a support team reading a terminal:

- Widths are measured in terminal cells (rich's `cell_len`: a CJK letter takes two, a
  combining mark or ZWNJ none), so columns stay aligned with Persian or Chinese text.
- The table fits the terminal: the subject is the last column and gets what is left,
  shortened with "…"; addresses are shortened too. It is never wrapped: one ticket, one
  line. Not on a terminal, the width is `$COLUMNS`, else 80 (use `--format tsv` or
  `json` for scripts: those are never shortened).
- Text in a right-to-left script (Persian, Arabic, Hebrew) is put between the Unicode
  isolation marks FSI (U+2068) and PDI (U+2069), one pair per shown line, so brackets
  and numbers inside it keep their place and the columns after it stay in order; the
  marks take no cell. Shortening and wrapping happen before isolating, so a mark is
  never cut off.
- Colours (status, needs-triage, SLA state) only on a terminal and never with
  `NO_COLOR` set; without colours everything is still said in words.
- Everything that came from mail passes `terminal_safe` before it is shown.
- Times are local in `display_timezone`; the age of a ticket is relative ("3h", "2d").
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from postdesk.termsafe import terminal_safe

FSI = "\u2068"  # FIRST STRONG ISOLATE: the text's own first letter decides its direction
PDI = "\u2069"  # POP DIRECTIONAL ISOLATE
ELLIPSIS = "…"


@dataclass(frozen=True)
class Screen:
    """Where the output goes: its width in cells, whether to colour, the local zone."""

    width: int
    color: bool
    zone: tzinfo
    now: datetime


def screen(zone: tzinfo, now: datetime) -> Screen:
    """The screen of this process: the terminal's width ($COLUMNS first, 80 when there is
    no terminal), colours on a terminal unless $NO_COLOR is set (to anything)."""
    width = shutil.get_terminal_size((80, 24)).columns
    tty = sys.stdout.isatty()
    color = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    return Screen(max(width, 40), color, zone, now)


def _console(out: Screen, file: io.StringIO) -> Console:
    return Console(
        file=file,
        width=out.width,
        force_terminal=out.color,
        no_color=not out.color,
        color_system="standard" if out.color else None,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
        soft_wrap=False,
    )


# --- text ---------------------------------------------------------------------------


def has_rtl(text: str) -> bool:
    """Whether `text` has a letter of a right-to-left script."""
    return any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text if ord(ch) >= 0x590)


def isolate(text: str) -> str:
    """`text` between FSI and PDI when it has right-to-left letters (one line of it)."""
    return f"{FSI}{text}{PDI}" if has_rtl(text) else text


def one_line(text: str) -> str:
    """Mail text made safe and put on one line (runs of whitespace become one space)."""
    return " ".join(terminal_safe(text).split())


def shorten(text: str, width: int) -> str:
    """`text` cut to at most `width` cells, ending in "…" when it was cut."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    kept, used = [], 0
    for ch in text:
        size = cell_len(ch)
        if used + size > width - 1:
            break
        kept.append(ch)
        used += size
    return "".join(kept).rstrip() + ELLIPSIS


def wrap(text: str, width: int) -> list[str]:
    """One paragraph of mail text as lines of at most `width` cells, by words (a word
    longer than a line is split); each line isolated on its own when it is right-to-left."""
    if not text.strip():
        return [""]
    lines = Text(text).wrap(
        _console(Screen(width, False, UTC, datetime.now(UTC)), io.StringIO()), width
    )
    return [isolate(line.plain.rstrip()) for line in lines]


# --- times --------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value)


def local_time(value: str | None, out: Screen) -> str:
    """An ISO time as "2026-12-05 14:03" in the display zone ("-" when unset)."""
    when = parse_time(value)
    return when.astimezone(out.zone).strftime("%Y-%m-%d %H:%M") if when is not None else "-"


def local_stamp(value: str | None, out: Screen) -> str:
    """An ISO time in the display zone with its offset, e.g. "2026-12-05 17:33 +0330"."""
    when = parse_time(value)
    return when.astimezone(out.zone).strftime("%Y-%m-%d %H:%M %z") if when is not None else "-"


def relative(value: str | None, now: datetime) -> str:
    """How long ago, compactly: "now", "45m", "3h", "2d", "5w", "14mo", "2y"."""
    when = parse_time(value)
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "now"
    for size, unit in ((31_557_600, "y"), (2_629_800, "mo"), (604_800, "w"), (86_400, "d")):
        if seconds >= size * (2 if unit in ("y", "mo", "w") else 1):
            return f"{int(seconds // size)}{unit}"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 60)}m"


# --- the list -----------------------------------------------------------------------

STATUS_STYLE = {
    "new": "bold cyan",
    "open": "green",
    "pending": "yellow",
    "solved": "blue",
    "closed": "dim",
}
SLA_STYLE = {"breached": "bold red", "at risk": "yellow"}
TRIAGE = "?"  # a label a person must set (the ticket needs triage)


@dataclass(frozen=True)
class Column:
    """One column of `tickets list`: its header, its cell for a row as text, and for the
    table its widest size (None: as wide as its cells) and whether it may be cut."""

    name: str
    header: str
    cell: Callable[[dict[str, Any], Screen], str]
    max_width: int | None = None
    right: bool = False


def _email(contact: dict[str, Any] | None) -> str:
    return one_line(contact["email"]) if contact else "-"


def _label(row: dict[str, Any], target: str) -> str:
    """The label, "?" when a model was asked and unsure (a person must set it), else "-"."""
    value = row[target]
    if value:
        return one_line(value)
    asked = (row.get("triage") or {}).get(target) or {}
    return TRIAGE if row["needs_triage"] and asked.get("model") else "-"


def _updated_header(out: Screen) -> str:
    """ "updated (+0330)", "updated (UTC)": the zone's short name or offset."""
    return f"updated ({out.now.astimezone(out.zone).strftime('%Z')})"


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("number", "#", lambda r, o: str(r["number"]), right=True),
        Column("status", "status", lambda r, o: r["status"]),
        Column("priority", "priority", lambda r, o: _label(r, "priority"), 10),
        Column("category", "category", lambda r, o: _label(r, "category"), 14),
        Column("requester", "requester", lambda r, o: _email(r["requester"]), 26),
        Column("assignee", "assignee", lambda r, o: _email(r["assignee"]), 18),
        Column("mailbox", "mailbox", lambda r, o: one_line(r["mailbox"] or "-"), 12),
        Column("sla", "sla", lambda r, o: r.get("sla") or "-"),
        Column("age", "age", lambda r, o: relative(r["created_at"], o.now), right=True),
        Column("created", "created", lambda r, o: local_time(r["created_at"], o)),
        Column("updated", "updated", lambda r, o: local_time(r["updated_at"], o)),
        Column("messages", "msgs", lambda r, o: str(r.get("message_count", 0)), right=True),
        Column("subject", "subject", lambda r, o: one_line(r["subject"] or "(no subject)")),
    )
}
NARROW = ("number", "status", "priority", "category", "requester", "age", "subject")
MEDIUM = (*NARROW[:5], "assignee", "age", "subject")
WIDE = (*MEDIUM[:-1], "updated", "messages", "subject")
MEDIUM_FROM = 100  # terminals at least this wide also show the assignee
WIDE_FROM = 140  # and from this wide the time of the last change and the message count


def default_columns(out: Screen, sla: bool) -> list[str]:
    """The columns of a plain `tickets list` on this screen (`sla` with [sla] set): on
    80 columns the subject keeps about 30 cells; wider screens add columns."""
    if out.width >= WIDE_FROM:
        names = list(WIDE)
    else:
        names = list(MEDIUM if out.width >= MEDIUM_FROM else NARROW)
    if sla:
        names.insert(names.index("priority"), "sla")
    return names


def check_columns(spec: str) -> list[str]:
    """The column names of a `--columns` value ("number,status,subject")."""
    from postdesk.errors import PostdeskError

    names = [name.strip().lower() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or not names:
        problem = f"unknown column {unknown[0]!r}" if unknown else "--columns names no column"
        raise PostdeskError(f"{problem}; choose from {', '.join(COLUMNS)}")
    return names


def _style(name: str, text: str, row: dict[str, Any]) -> str | None:
    if name == "status":
        return STATUS_STYLE.get(text)
    if name == "sla":
        return SLA_STYLE.get(text)
    if name in ("priority", "category") and text == TRIAGE:
        return "bold magenta"
    if name == "number" and row["needs_triage"]:
        return "magenta"
    return None


GAP = 2  # cells between two columns
# Which columns give cells to the subject on a narrow screen (the widest first) and how
# narrow each may become; the others (number, status, age, times, counts) are never cut.
SHRINKABLE = {"requester": 12, "assignee": 10, "mailbox": 8, "category": 8, "priority": 8}


def _fit(columns: list[Column], headers: list[str], widths: list[int], width: int) -> None:
    """Set `widths` so the row fits `width` cells with the subject (when shown) getting
    at least about a third of the screen (or all it needs, if less); the subject is
    the column that gives way last, and what is left over goes to it."""
    names = [c.name for c in columns]
    subject = names.index("subject") if "subject" in names else None
    natural = widths[subject] if subject is not None else 0
    others = sum(w for i, w in enumerate(widths) if i != subject)
    room = width - others - GAP * (len(widths) - 1)
    need = min(natural, max(20, width // 3)) if subject is not None else 0
    floors = {
        names.index(name): max(floor, cell_len(headers[names.index(name)]))
        for name, floor in SHRINKABLE.items()
        if name in names
    }
    while room < need:
        # A cell at a time from the widest column that can still give one.
        able = [i for i, floor in floors.items() if widths[i] > floor]
        if not able:
            break
        widest = max(able, key=lambda i: widths[i])
        widths[widest] -= 1
        room += 1
    if subject is not None:
        widths[subject] = max(min(natural, room), cell_len(headers[subject]))


def render_table(rows: Sequence[dict[str, Any]], names: Sequence[str], out: Screen) -> str:
    """`rows` as a table for a person, fitted to `out.width` (see the module docstring)."""
    columns = [COLUMNS[name] for name in names]
    cells = [[c.cell(row, out) for c in columns] for row in rows]
    headers = [_updated_header(out) if c.name == "updated" else c.header for c in columns]
    widths = [
        max([cell_len(h)] + [cell_len(row[i]) for row in cells]) for i, h in enumerate(headers)
    ]
    for i, column in enumerate(columns):
        if column.max_width is not None:
            widths[i] = max(min(widths[i], column.max_width), cell_len(headers[i]))
    _fit(columns, headers, widths, out.width)
    styled = [
        [(values[i], _style(column.name, values[i], row)) for i, column in enumerate(columns)]
        for row, values in zip(rows, cells, strict=True)
    ]
    lines = table_text(headers, widths, [c.right for c in columns], styled, out)
    return "\n".join(lines) + "\n"


def table_text(
    headers: Sequence[str],
    widths: Sequence[int],
    right: Sequence[bool],
    rows: Iterable[Sequence[tuple[str, str | None]]],
    out: Screen,
) -> list[str]:
    """Table lines for a person: `headers`, then each row's (cell, style) pairs, each
    cell shortened to its column's width and isolated (right-to-left text stays in its
    cell); styles show only when `out.color`. Shared by the tickets table and every other
    list (postdesk/tables.py), which choose the widths their own way."""
    table = Table(
        box=None,
        padding=(0, GAP, 0, 0),
        pad_edge=False,
        show_edge=False,
        header_style="bold" if out.color else None,
        collapse_padding=True,
    )
    for header, width, at_right in zip(headers, widths, right, strict=True):
        table.add_column(
            header,
            justify="right" if at_right else "left",
            width=width,
            no_wrap=True,
            overflow="crop",
        )
    for row in rows:
        table.add_row(
            *(
                Text(isolate(shorten(cell, width)), style=style or "")
                for (cell, style), width in zip(row, widths, strict=True)
            )
        )
    file = io.StringIO()
    _console(out, file).print(table)
    return [line.rstrip() for line in file.getvalue().splitlines()]


def plain_cells(row: dict[str, Any], names: Sequence[str], out: Screen) -> list[str]:
    """A row's cells for CSV/TSV/`--format json --columns`: whole (never shortened), no
    marks, no colour, no control characters; times ISO 8601 with the display zone's offset."""
    values = []
    for name in names:
        if name in ("created", "updated"):
            when = parse_time(row[f"{name}_at"])
            values.append(when.astimezone(out.zone).isoformat() if when is not None else "")
        elif name in ("priority", "category"):
            values.append(row[name] or "")
        elif name in ("requester", "assignee"):
            values.append(row[name]["email"] if row[name] else "")
        elif name == "sla":
            values.append(row.get("sla") or "")
        else:
            values.append(COLUMNS[name].cell(row, out))
    # CSV and TSV end up on terminals too (`| column -t`): no control character from mail.
    return [terminal_safe(value) for value in values]


def render_delimited(
    rows: Iterable[dict[str, Any]], names: Sequence[str], out: Screen, delimiter: str
) -> str:
    """CSV (RFC 4180 quoting) or TSV (tabs and newlines inside a value become spaces)."""
    file = io.StringIO()
    if delimiter == "\t":
        file.write("\t".join(names) + "\n")
        for row in rows:
            cells = [" ".join(v.split()) for v in plain_cells(row, names, out)]
            file.write("\t".join(cells) + "\n")
        return file.getvalue()
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(plain_cells(row, names, out))
    return file.getvalue()


# --- one ticket ---------------------------------------------------------------------


def _name(contact: dict[str, Any] | None) -> str:
    if not contact:
        return "-"
    email = one_line(contact.get("email") or "")
    name = one_line(contact.get("name") or "")
    return f"{isolate(name)} <{email}>" if name else email


def _triaged(value: str | None, how: dict[str, Any]) -> str:
    """A category or priority with who set it, e.g. "billing (model 0.93)"."""
    source, probability = how["source"], how["probability"]
    if value is None:
        return f"- (model unsure, {probability:.2f})" if probability is not None else "-"
    if source == "model" and probability is not None:
        return f"{one_line(value)} (model {probability:.2f})"
    return f"{one_line(value)} ({source})" if source else one_line(value)


def describe_event(kind: str, actor: str, data: Any, emails: dict[int, str]) -> str:
    """One line saying what an event of the ticket's history did, in words."""
    data = data if isinstance(data, dict) else {}
    if kind == "created":
        if data.get("follow_up"):
            return f"opened as a follow-up of #{data['follow_up']}"
        if data.get("closed"):
            return f"opened closed: {data['closed']}"
        return "opened"
    if kind == "status":
        why = f" ({data['why']})" if data.get("why") else ""
        return f"status {data.get('from', '?')} -> {data.get('to', '?')}{why}"
    if kind in ("category", "priority"):
        return _describe_label(kind, data)
    if kind == "assigned":
        before = emails.get(data.get("from") or -1, "nobody")
        after = emails.get(data.get("to") or -1, "nobody")
        return f"assigned {before} -> {after}"
    if kind == "merged":
        moved = data.get("messages", 0)
        return f"ticket #{data.get('from')} merged into this one ({moved} message(s) moved)"
    if kind == "note":
        first = one_line(str(data.get("text", "")))
        return f"note: {first}"
    if kind == "csat":
        comment = one_line(str(data.get("comment") or ""))
        return f"satisfaction {data.get('score')}/5" + (f": {comment}" if comment else "")
    if kind == "agent-mail":
        return "agent's mail: " + ", ".join(f"{k}={one_line(str(v))}" for k, v in data.items())
    details = ", ".join(f"{k}={one_line(str(v))}" for k, v in data.items())
    return f"{kind}" + (f": {details}" if details else "")


def _describe_label(kind: str, data: dict[str, Any]) -> str:
    source = str(data.get("source") or "?")
    value = data.get("to")
    if source == "human":
        if data.get("confirmed"):
            return f"{kind} {value} confirmed by a person"
        if value is None:
            return f"{kind} cleared by a person (was {data.get('from') or '-'})"
        return f"{kind} set to {value} by a person (was {data.get('from') or '-'})"
    if source == "model":
        return f"{kind}: " + _guess(data.get("model"), data.get("suggestion"), data)
    parts = [f"{kind} {value} by {source}" if value is not None else f"{kind} left unset"]
    suggestion = data.get("model_suggestion")
    if isinstance(suggestion, dict):
        parts.append(
            "model " + _guess(suggestion.get("model"), suggestion.get("label"), suggestion)
        )
    return "; ".join(parts)


def _guess(model: Any, label: Any, data: dict[str, Any]) -> str:
    probability = data.get("probability")
    p = f"p={probability:.2f}" if isinstance(probability, (int, float)) else "p=?"
    if data.get("confident"):
        return f"{model or 'model'} set {label} ({p}, confident)"
    return f"{model or 'model'} guessed {label} ({p}, unsure: left to a person)"


@dataclass
class _Page:
    out: Screen
    console: Console

    def line(self, text: str = "", style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""), soft_wrap=True)

    def hanging(self, first: str, text: str) -> None:
        """`first`, then `text` wrapped to the width, later lines indented under it."""
        indent = " " * cell_len(first)
        pieces = wrap(text, max(self.out.width - len(indent), 20))
        for i, piece in enumerate(pieces):
            self.line((first if i == 0 else indent) + piece)

    def body(self, text: str, indent: str = "  ") -> None:
        width = max(self.out.width - len(indent), 20)
        for paragraph in terminal_safe(text).rstrip().split("\n"):
            for piece in wrap(paragraph.expandtabs(4), width):
                self.line(indent + piece if piece else "")


def render_ticket(data: dict[str, Any], out: Screen, *, full: bool = False) -> str:
    """`tickets show` for a person: the ticket, its SLA lines (already written into
    `data["sla_lines"]` by the command), each message's visible reply with who, when and
    how it was threaded, attachments with their stored path, links, and the history."""
    file = io.StringIO()
    page = _Page(out, _console(out, file))
    subject = isolate(one_line(data["subject"] or "(no subject)"))
    page.line(f"Ticket #{data['number']}: {subject}", "bold")
    status = data["status"]
    if data.get("merged_into"):
        status = f"{status}, merged into #{data['merged_into']}"
    page.line(
        f"Status: {status}   Requester: {_name(data['requester'])}   "
        f"Assignee: {_name(data['assignee'])}",
    )
    page.line(
        f"Category: {_triaged(data['category'], data['triage']['category'])}   "
        f"Priority: {_triaged(data['priority'], data['triage']['priority'])}"
        + ("   [needs triage]" if data["needs_triage"] else ""),
        "magenta" if data["needs_triage"] else None,
    )
    page.line(
        f"Queue: {one_line(data['queue'] or '-')}   "
        f"Created: {local_stamp(data['created_at'], out)} "
        f"({_ago(data['created_at'], out.now)})"
        f"   Updated: {local_stamp(data['updated_at'], out)}"
    )
    page.line(
        f"First response: {local_stamp(data['first_response_at'], out)}   "
        f"Solved: {local_stamp(data['solved_at'], out)}"
        + (f"   CSAT: {data['csat']['score']}" if data["csat"] else "")
    )
    for text, style in data.get("sla_lines", []):
        page.line(text, style if out.color else None)
    if data.get("merged_into"):
        page.line(
            f"This ticket was merged into #{data['merged_into']}; its messages are there "
            f"(postdesk tickets show {data['merged_into']}).",
            "bold yellow",
        )
    for link in data.get("links", []):
        page.line(_describe_link(link, data["number"]))
    for message in data["messages"]:
        page.line()
        page.line(_message_header(message, out), "bold")
        text = message["text"] if full else message["visible_text"]
        page.body(text or "")
        if not full and (message["text"] or "").strip() != (message["visible_text"] or "").strip():
            page.line("  [quoted text or signature hidden; --full shows it]", "dim")
        if message.get("agent_check"):
            page.line(f"  [agent check: {one_line(str(message['agent_check']))}]")
        for attachment in message["attachments"]:
            name = isolate(one_line(attachment["filename"] or "(unnamed)"))
            where = one_line(attachment.get("stored_at") or attachment["path"] or "")
            page.line(
                f"  [attachment: {name}, {one_line(attachment['content_type'] or '?')}, "
                f"{attachment['size']} bytes]"
            )
            page.line(f"    stored at {where}", "dim")
    if data.get("events"):
        page.line()
        page.line("History", "bold")
        for event in data["events"]:
            when = local_time(event["at"], out)
            actor = one_line(event["actor"] or "")
            summary = one_line(event.get("summary") or event["kind"])
            page.hanging(f"  {when}  ", f"{summary}  ({actor})")
    return file.getvalue()


def _ago(value: str | None, now: datetime) -> str:
    age = relative(value, now)
    return "just now" if age == "now" else f"{age} ago"


def _describe_link(link: dict[str, Any], number: int) -> str:
    kind = link["kind"]
    other = link["other"] if link["ticket"] == number else link["ticket"]
    if kind == "merged":
        if link["ticket"] == number:
            return f"Merged into this one: #{other}"
        return f"Merged into #{other}"
    if kind == "follow-up":
        if link["ticket"] == number:
            return f"Follow-up of #{other}"
        return f"Followed up by #{other}"
    if kind == "related":
        return f"Related to #{other}"
    return f"Related ({kind}): #{other}"


def _message_header(message: dict[str, Any], out: Screen) -> str:
    when = local_stamp(message["date"] or message["received_at"], out)
    sender = _name(message["from"])
    direction = message["direction"]
    if direction == "note":
        return f"--- note {when}  {sender}  (internal, never sent)"
    if direction == "out":
        outbox = message.get("outbox") or {}
        state = f"{outbox.get('kind', 'mail')}, {outbox.get('state', '?')}"
        to = ", ".join(one_line(str(r.get("email", ""))) for r in message["to"]) or "?"
        return f"--- sent {when}  to {to}  [{state}]"
    rule = message["thread_rule"] or "?"
    reason = one_line(message.get("thread_reason") or "")
    how = f"threaded by {rule}" + (f": {reason}" if reason and rule != "new" else "")
    if rule == "new":
        how = "opened the ticket"
    kind = message.get("kind")
    extra = f", {kind}" if kind and kind != "human" else ""
    return f"--- {when}  from {sender}  [{how}{extra}]"
