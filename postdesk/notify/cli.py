"""`postdesk outbox ...`: what postdesk has sent, is sending, and could not send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from postdesk.clikit import (
    ROW_ID,
    Context,
    format_options,
    output_format,
    pass_context,
    print_json,
)
from postdesk.models import OutboxState, utcnow
from postdesk.tables import Field, delimited, json_rows, note_lines, pick, table_lines
from postdesk.tickets.render import Screen, local_time, parse_time, screen


@click.group()
def outbox() -> None:
    """Outgoing mail: list it, and send failed or unconfirmed mail again.

    \b
    Example:
      $ postdesk outbox list --state failed
      $ postdesk outbox retry 17
    """


OUTBOX_TABLE = ("id", "state", "ticket", "kind", "to", "subject")


def _outbox_fields(out: Screen) -> list[Field]:
    return [
        Field("id", "id", right=True),
        Field("state", "state"),
        Field("ticket", "ticket", lambda r: f"#{r['ticket']}" if r["ticket"] else "-", right=True),
        Field("kind", "kind", max_width=16, shrink_to=8),
        Field("to", "to", max_width=30, shrink_to=12),
        Field("subject", "subject", lambda r: r["subject"] or "(no subject)"),
        Field(
            "created",
            "created",
            lambda r: local_time(r["created_at"], out),
            _local_iso(out, "created_at"),
        ),
        Field("attempts", "tries", right=True),
        Field(
            "next_attempt",
            "next try",
            lambda r: local_time(r["next_attempt_at"], out),
            _local_iso(out, "next_attempt_at"),
        ),
        Field("sent", "sent", lambda r: local_time(r["sent_at"], out), _local_iso(out, "sent_at")),
        Field("error", "error", value=lambda r: r["last_error"]),
        Field("message_id", "message-id"),
    ]


def _local_iso(out: Screen, key: str) -> Callable[[dict[str, Any]], str | None]:
    """A row's ISO time in the display zone (for CSV, TSV and JSON --columns)."""

    def value(row: dict[str, Any]) -> str | None:
        when = parse_time(row[key])
        return when.astimezone(out.zone).isoformat() if when is not None else None

    return value


@outbox.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in OutboxState]),
    help="Only mail in this state.",
)
@format_options(
    (
        "id",
        "state",
        "ticket",
        "kind",
        "to",
        "subject",
        "created",
        "attempts",
        "next_attempt",
        "sent",
        "error",
        "message_id",
    )
)
@pass_context
def outbox_list(
    obj: Context, state: str | None, output: str | None, columns: str | None, as_json: bool
) -> None:
    """List outgoing mail, the newest first, with why any is waiting or failed.

    The table shows id, state, ticket, kind, recipients and subject, and under a mail
    that failed or waits for a retry, the last error. CSV, TSV and JSON carry every
    mail whole (JSON: all its fields unless --columns names some).

    \b
    Example:
      $ postdesk outbox list --state failed
      $ postdesk outbox list --format csv --columns id,state,to,subject,error > outbox.csv
    """
    from postdesk.notify.outbox import list_outbox

    fmt = output_format(output, as_json)
    out = screen(obj.settings().display_zone(), utcnow())
    fields = pick(_outbox_fields(out), columns, OUTBOX_TABLE if fmt == "table" else None)
    rows = list_outbox(obj.database(), state)
    if fmt == "json":
        print_json(rows if columns is None else json_rows(rows, fields))
        return
    if fmt in ("csv", "tsv"):
        click.echo(delimited(rows, fields, "," if fmt == "csv" else "\t"), nl=False)
        return
    if not rows:
        click.echo("the outbox is empty" if state is None else f"no {state} mail")
        return
    lines = table_lines(rows, fields, out, _outbox_style)
    click.echo(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        click.echo(line)
        if row["last_error"] and columns is None:
            # Errors come from servers: through terminal_safe like mail.
            click.echo("\n".join(note_lines("error", row["last_error"], out.width)))


def _outbox_style(name: str, cell: str, row: dict[str, Any]) -> str | None:
    if name == "state":
        return {"failed": "bold red", "unconfirmed": "yellow", "queued": "cyan"}.get(cell)
    return None


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@pass_context
def outbox_retry(obj: Context, ids: tuple[int, ...]) -> None:
    """Queue failed or unconfirmed mail (ids from `outbox list`) to be sent again.

    An unconfirmed mail may already have been delivered: retry it only when you know
    it did not arrive.

    \b
    Example:
      $ postdesk outbox retry 17 18
    """
    from postdesk.notify.outbox import retry

    queued = retry(obj.database(), list(ids))
    click.echo(f"queued {len(queued)} mail(s) again; `postdesk run --once` sends them")
