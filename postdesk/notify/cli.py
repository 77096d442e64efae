"""`postdesk outbox ...`: what postdesk has sent, is sending, and could not send."""

from __future__ import annotations

import click

from postdesk.clikit import ROW_ID, Context, json_option, pass_context, print_json, terminal_safe
from postdesk.models import OutboxState


@click.group()
def outbox() -> None:
    """Outgoing mail: list it, and send failed or unconfirmed mail again.

    \b
    Example:
      $ postdesk outbox list --state failed
      $ postdesk outbox retry 17
    """


@outbox.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in OutboxState]),
    help="Only mail in this state.",
)
@json_option
@pass_context
def outbox_list(obj: Context, state: str | None, as_json: bool) -> None:
    """List outgoing mail, the newest first, with why any is waiting or failed.

    \b
    Example:
      $ postdesk outbox list --state failed
    """
    from postdesk.notify.outbox import list_outbox

    rows = list_outbox(obj.database(), state)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("the outbox is empty" if state is None else f"no {state} mail")
        return
    for row in rows:
        ticket = f"#{row['ticket']}" if row["ticket"] is not None else "-"
        line = (
            f"{row['id']:>7} {row['state']:<11} {ticket:>7} {row['kind']:<16} "
            f"{', '.join(row['to'])}  {row['subject']}"
        )
        if row["last_error"]:
            line += f"  -- {row['last_error']}"
        # Subjects come from customers' mail, errors from servers: nothing of either may
        # drive the terminal.
        click.echo(terminal_safe(line))


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
