"""`postdesk status` and `postdesk doctor`: is the service healthy, and if not, why."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from postdesk.clikit import Context, fail, json_option, pass_context, print_json
from postdesk.health.status import Status, span
from postdesk.termsafe import terminal_safe


@click.command()
@click.option(
    "--max-lag",
    metavar="SECONDS",
    type=click.FloatRange(min=1),
    help="A mailbox not fetched (or mail queued) for longer is a problem "
    "(default: 5 poll intervals, at least 300).",
)
@json_option
@pass_context
def status(obj: Context, max_lag: float | None, as_json: bool) -> None:
    """Show each mailbox's last fetch and lag, the queues, the models and the schema.

    Reads only the database (and the model store): no server is contacted. Exit status
    0 when healthy, 1 when there is a problem (a mailbox's last fetch failed, it was not
    fetched within --max-lag, mail is stuck in the outbox, or the schema is behind), so
    monitoring can run it; the problems are listed on stdout and counted on stderr.

    \b
    Example:
      $ postdesk status
      $ postdesk status --json --max-lag 600
    """
    from postdesk.errors import DatabaseError
    from postdesk.health.status import collect
    from postdesk.models.db import sqlite_file

    settings = obj.settings()
    path = sqlite_file(settings.database.url)
    if path is not None and not path.exists():
        # Connecting would create an empty file; an older schema is reported, not refused.
        raise DatabaseError(f"database file {path} does not exist; run `postdesk init`")
    limit = timedelta(seconds=max_lag) if max_lag is not None else None
    found = collect(settings, obj.database(migrated=False), max_lag=limit)
    if as_json:
        print_json(found.as_json())
    else:
        for line in status_lines(found):
            # A recorded error may quote a server: never let it drive the terminal.
            click.echo(" ".join(terminal_safe(line).split("\n")))
    if found.problems:
        fail(f"unhealthy: {len(found.problems)} problem(s), listed above")


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({span(max((now - moment).total_seconds(), 0))} ago)"


def _trained(when: str | None) -> str:
    return f" (trained {when})" if when else ""


def status_lines(found: Status) -> list[str]:
    """`postdesk status` as text."""
    now = found.now
    lines: list[str] = []
    for box in found.mailboxes:
        lines.append(
            f"mailbox {box.name} ({box.folder}): last fetched {_when(box.last_success_at, now)}; "
            f"{box.pending} pending, {box.quarantined} quarantined"
        )
        if box.last_error:
            lines.append(f"  last error {_when(box.last_error_at, now)}: {box.last_error}")
            if box.retry_at is not None:
                wait = (box.retry_at - now).total_seconds()
                due = f"in {span(wait)}" if wait > 0 else "due now"
                lines.append(f"  next try {box.retry_at:%Y-%m-%d %H:%M:%S} UTC ({due})")
    if found.unassigned_pending or found.unassigned_quarantined:
        lines.append(
            f"without a configured mailbox: {found.unassigned_pending} pending, "
            f"{found.unassigned_quarantined} quarantined"
        )
    if found.schema == found.schema_head:
        out = found.outbox
        queued = out.get("queued", 0) + out.get("sending", 0) + out.get("completing", 0)
        oldest = (
            f" (oldest {span(found.oldest_queued_seconds)})"
            if found.oldest_queued_seconds is not None
            else ""
        )
        lines.append(
            f"outbox: {queued} queued{oldest}, {out.get('failed', 0)} failed, "
            f"{out.get('unconfirmed', 0)} unconfirmed, {out.get('sent', 0)} sent"
        )
        if found.models_error:
            lines.append(f"models: cannot read the model store: {found.models_error}")
        elif found.models:
            lines.append(
                "models: "
                + ", ".join(
                    f"{m.target} {m.version}"
                    + (f" (trained {m.trained_at})" if m.trained_at else "")
                    for m in found.models
                )
            )
        else:
            lines.append("models: none active")
        lines.append(f"schema: {found.schema} (current)")
    else:
        lines.append(
            f"schema: {found.schema or 'none'}, this postdesk needs {found.schema_head}: "
            "upgrade needed, run `postdesk init`"
        )
    if found.problems:
        lines.append(f"{len(found.problems)} problem(s):")
        lines.extend(f"  - {problem}" for problem in found.problems)
    else:
        lines.append("healthy")
    return lines


@click.command()
@click.option(
    "--timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="How long each server may take to answer.",
)
@pass_context
def doctor(obj: Context, timeout: float) -> None:
    """Check the config, the database and every IMAP and SMTP server; say how to fix it.

    One line per check: "ok", "warn" or "FAIL", what was found and, for a problem, how to
    fix it. Logs in to each mailbox and examines its folder read-only; connects and logs
    in to the SMTP relay without sending anything. Exit status 1 when a check failed.

    \b
    Example:
      $ postdesk doctor
      $ postdesk -c /etc/postdesk.toml doctor --timeout 30
    """
    from postdesk.config import config_path
    from postdesk.health.doctor import check_config, diagnose

    first, settings = check_config(config_path(obj.config))
    checks = [first]
    if settings is not None:
        checks.extend(diagnose(settings, timeout=timeout))
    for check in checks:
        click.echo(check.line())
    failed = sum(1 for check in checks if check.failed)
    if failed:
        fail(f"{failed} of {len(checks)} checks failed, listed above")
