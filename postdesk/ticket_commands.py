"""The bodies of `postdesk tickets list` and `tickets show` (their options are in
`postdesk.cli`; this module belongs to the command line, above the ticket views and the
SLA): read the filters, ask the views, print through `postdesk.tickets.render`.

A plain `tickets list` shows at most 50 tickets (a table is for reading; a note says how
many more there are and how to see them); `--format json|csv|tsv` prints every match
unless `--limit` is given, so scripts never lose rows silently. `--limit 0` means all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

import click

from postdesk.clikit import Context, print_json
from postdesk.errors import ConfigError, PostdeskError
from postdesk.models import utcnow
from postdesk.tables import Field, delimited, json_rows, pick, table_lines
from postdesk.tickets.render import (
    COLUMNS,
    TRIAGE,
    Screen,
    check_columns,
    default_columns,
    plain_cells,
    render_delimited,
    render_table,
    render_ticket,
    screen,
)
from postdesk.tickets.search import Hit, find_hits
from postdesk.tickets.views import TicketFilter, check_sort, find_tickets, show_ticket

LABELS = ("priority", "category")
TABLE_LIMIT = 50
"""How many tickets a plain `tickets list` shows without --limit."""

_AGE = re.compile(r"(\d{1,6})\s*([mhdw])")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, option: str, zone: tzinfo, now: datetime, *, end: bool) -> datetime:
    """A --since/--until value as a UTC time: an age ("7d", "12h", "30m", "2w": that long
    before now), a date (the start of that day in `zone`; for --until, `end`, the end of
    it, so `--until 2026-12-05` includes the 5th) or an ISO 8601 time (in `zone` unless it
    has an offset)."""
    text = value.strip()
    age = _AGE.fullmatch(text.lower())
    if age:
        return now - timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            start = datetime.combine(day + timedelta(days=1 if end else 0), time(), zone)
            return start
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PostdeskError(
            f"{option} {value!r}: expected a date (2026-12-05), a time "
            "(2026-12-05T14:30 or with an offset) or an age (30m, 12h, 7d, 2w)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _statuses(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s.strip().lower() for v in values for s in v.split(",") if s.strip())


def run_list(
    obj: Context,
    *,
    statuses: tuple[str, ...],
    mailbox: str | None,
    category: str | None,
    priority: str | None,
    requester: str | None,
    assignee: str | None,
    since: str | None,
    until: str | None,
    needs_triage: bool,
    sla: str | None,
    sort: str,
    limit: int | None,
    offset: int,
    output: str,
    columns: str | None,
) -> None:
    """`postdesk tickets list`."""
    settings = obj.settings()
    now = utcnow()
    out = screen(settings.display_zone(), now)
    names = check_columns(columns) if columns is not None else None
    check_sort(sort)
    if mailbox is not None:
        settings.mailbox(mailbox)  # an unknown name is an error listing the known ones
    levels = settings.triage.priority_levels
    if priority is not None and levels and priority.strip().lower() not in levels:
        raise PostdeskError(
            f"unknown priority {priority!r}; [triage] priority_levels: {', '.join(levels)}"
        )
    zone = out.zone
    wanted = TicketFilter(
        statuses=_statuses(statuses),
        mailbox=mailbox,
        category=category,
        priority=priority,
        requester=requester,
        assignee=assignee,
        since=parse_when(since, "--since", zone, now, end=False) if since else None,
        until=parse_when(until, "--until", zone, now, end=True) if until else None,
        needs_triage=needs_triage,
        sort=sort,
        priority_order=settings.triage.priority_levels,
        limit=(TABLE_LIMIT if output == "table" else None) if limit is None else (limit or None),
        offset=offset,
    )
    db = obj.database()
    if sla is not None:
        from postdesk.sla.view import tickets_by_sla

        if settings.sla is None:
            raise ConfigError(str(settings.path), "sla", "is needed for --sla; add [sla]")
        only = frozenset(tickets_by_sla(db, settings, sla, now))
        wanted = TicketFilter(**{**wanted.__dict__, "only": only})
    rows, total = find_tickets(db, wanted)
    if names is None and output != "json":
        names = default_columns(out, settings.sla is not None) if output == "table" else None
        if names is None:
            names = [n for n in COLUMNS if n != "sla" or settings.sla is not None]
    if settings.sla is not None and names is not None and "sla" in names:
        _add_sla_state(obj, rows, now)
    if output == "json":
        if names is None:
            print_json(rows)
        else:
            print_json([_json_cells(row, names, out) for row in rows])
        return
    if output in ("csv", "tsv"):
        assert names is not None
        click.echo(render_delimited(rows, names, out, "," if output == "csv" else "\t"), nl=False)
        return
    assert names is not None
    if not rows:
        click.echo("no tickets" if total == 0 else f"no tickets past the first {total}")
        return
    click.echo(render_table(rows, names, out), nl=False)
    shown = any(COLUMNS[n].cell(row, out) == TRIAGE for row in rows for n in names if n in LABELS)
    if shown:
        click.echo(f"{TRIAGE} = not set yet, a person must triage it")
    rest = total - offset - len(rows)
    if rest > 0:
        click.echo(
            f"{len(rows)} of {total} tickets shown; {rest} more "
            f"(--limit N, --limit 0 for all, --offset {offset + len(rows)} for the next page)"
        )


def _json_cells(row: dict[str, Any], names: list[str], out: Screen) -> dict[str, Any]:
    cells: dict[str, Any] = dict(zip(names, plain_cells(row, names, out), strict=True))
    for name in ("number", "messages"):
        if name in cells:
            cells[name] = int(cells[name])
    for name in ("priority", "category", "requester", "assignee", "sla"):
        if name in cells and cells[name] == "":
            cells[name] = None
    return cells


def _add_sla_state(obj: Context, rows: list[dict[str, Any]], now: datetime) -> None:
    """Each open row's SLA state: "breached", "at risk" or None."""
    from postdesk.sla.view import tickets_by_sla

    settings, db = obj.settings(), obj.database()
    breached = tickets_by_sla(db, settings, "breached", now)
    at_risk = tickets_by_sla(db, settings, "at-risk", now)
    for row in rows:
        number = row["number"]
        row["sla"] = "breached" if number in breached else "at risk" if number in at_risk else None


def run_show(obj: Context, number: int, *, full: bool, as_json: bool) -> None:
    """`postdesk tickets show N`."""
    from postdesk.sla.clock import state_json
    from postdesk.sla.view import calendar_for, ticket_sla_state

    settings = obj.settings()
    now = utcnow()
    data = show_ticket(obj.database(), number)
    sla = ticket_sla_state(obj.database(), settings, number, now)
    data["sla"] = state_json(sla) if sla is not None else None
    store = settings.data_dir / "attachments"
    for message in data["messages"]:
        for attachment in message["attachments"]:
            attachment["stored_at"] = str(store / attachment["path"])
    if as_json:
        print_json(data)
        return
    lines: list[tuple[str, str | None]] = []
    if sla is not None:
        zone = calendar_for(settings, data["mailbox"]).zone
        paused = "   [paused: pending]" if sla.paused else ""
        lines.append((f"SLA: {sla.priority}, calendar {sla.calendar}{paused}", None))
        for label, clock in (
            ("first response", sla.first_response),
            ("resolution", sla.resolution),
        ):
            due = clock.due.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")
            if clock.met_at is not None:
                met = clock.met_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")
                note, style = f"   met {met}" + (" (late)" if clock.breached else ""), None
            elif clock.breached:
                note, style = "   [BREACHED]", "bold red"
            else:
                note, style = ("   [at risk]", "yellow") if clock.at_risk else ("", None)
            lines.append((f"  {label} due {due}{note}", style))
    data["sla_lines"] = lines
    click.echo(render_ticket(data, screen(settings.display_zone(), now), full=full), nl=False)


# --- tickets search -------------------------------------------------------------------

SEARCH_COLUMNS = ("number", "status", "subject", "snippet", "score", "message")
SEARCH_TABLE = ("number", "status", "subject", "snippet")


def search_fields(width: int) -> list[Field]:
    """The columns of `tickets search`: on a screen of `width` cells the subject keeps
    at most about half of it, the snippet (of the best message) takes the rest."""
    return [
        Field("number", "#", right=True),
        Field("status", "status"),
        Field("subject", "subject", max_width=max(20, width // 2 - 10), shrink_to=12),
        Field("snippet", "snippet", value=lambda r: " ".join(r["snippet"].split())),
        Field("score", "score", lambda r: f"{r['score']:.3f}", right=True),
        Field("message", "message", right=True),
    ]


def render_hits(hits: Sequence[Hit], fmt: str, out: Screen, columns: str | None = None) -> str:
    """`hits` in `fmt` (table, json, csv, tsv); "" for a table of none. JSON without
    `columns` has every field of a hit; CSV and TSV default to the table's columns."""
    rows = [
        {
            "number": h.number,
            "status": h.status,
            "subject": h.subject,
            "snippet": h.snippet,
            "message": h.message,
            "score": h.score,
        }
        for h in hits
    ]
    fields = pick(search_fields(out.width), columns, SEARCH_TABLE)
    if fmt == "json":
        return json.dumps(
            rows if columns is None else json_rows(rows, fields), ensure_ascii=False, indent=2
        )
    if fmt in ("csv", "tsv"):
        return delimited(rows, fields, "," if fmt == "csv" else "\t").rstrip("\n")
    if not rows:
        return ""
    return "\n".join(table_lines(rows, fields, out))


def run_search(
    obj: Context,
    query: str,
    message_id: str | None,
    *,
    limit: int,
    fmt: str,
    columns: str | None,
) -> None:
    """`postdesk tickets search`."""
    out = screen(obj.settings().display_zone(), utcnow())
    pick(search_fields(out.width), columns, None)  # a bad --columns before any search
    hits = find_hits(obj.database(), query, message_id, limit=limit)
    text = render_hits(hits, fmt, out, columns)
    click.echo(text if text or fmt != "table" else "no tickets found")
