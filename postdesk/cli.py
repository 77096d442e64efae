"""The `postdesk` command. Thin: parse options, call the library, print.

Every expected failure (bad config, unreachable database or server, unknown ticket)
is a `PostdeskError` and reaches the user as one line on stderr with exit code 1; an
unexpected one is also a single line (with `-v` adding the traceback) and exit code 2.

Each feature's commands live beside the feature (`classify/cli.py`) and are registered
at the bottom; what commands share (the context, `--json`, the JSON printer) comes from
`postdesk.clikit`, never from here, so no command module imports this one.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from postdesk import __version__
from postdesk.classify.cli import model as model_commands
from postdesk.clikit import Context, json_option, pass_context, print_json
from postdesk.errors import ConfigError, PostdeskError
from postdesk.models import RawStatus
from postdesk.models.db import describe_error
from postdesk.models.migrate import upgrade
from postdesk.notify.cli import outbox as outbox_commands

log = logging.getLogger("postdesk")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 3:
        # SQLAlchemy and imapclient are chatty at INFO/DEBUG; -vvv shows them too.
        for name in ("sqlalchemy", "imapclient", "alembic"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"postdesk: error: {message}", err=True)
    sys.exit(code)


class PostdeskGroup(click.Group):
    """Turns every error escaping a command into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PostdeskError as exc:
            _fail(str(exc))
        except SQLAlchemyError as exc:
            _fail(describe_error(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`postdesk tickets list | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.exception("unexpected error")
            detail = " ".join(str(exc).split())
            _fail(f"unexpected {type(exc).__name__}: {detail} (run with -vv for the traceback)", 2)
        finally:
            obj = ctx.obj
            if isinstance(obj, Context):
                obj.close()


@click.group(cls=PostdeskGroup)
@click.option(
    "--config",
    "-c",
    metavar="PATH",
    help="Config file (default: $POSTDESK_CONFIG, then ./postdesk.toml).",
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(__version__, prog_name="postdesk")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: int) -> None:
    """postdesk: an email helpdesk engine."""
    _setup_logging(verbose)
    ctx.obj = Context(config, verbose)


@main.command()
@pass_context
def init(obj: Context) -> None:
    """Create the database, or upgrade it to the current schema."""
    db = obj.database(migrated=False)
    before, after = upgrade(db)
    settings = obj.settings()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            str(settings.path),
            "data_dir",
            f"cannot create {str(settings.data_dir)!r} ({exc.strerror or exc}); "
            "expected a directory postdesk may write to",
        ) from None
    from postdesk.daemon import sync_config

    sync_config(db, obj.settings())
    if before == after:
        click.echo(f"database {db.display_url} is up to date (schema {after})")
    elif before is None:
        click.echo(f"created database {db.display_url} (schema {after})")
    else:
        click.echo(f"upgraded database {db.display_url} from schema {before} to {after}")


@main.command()
@click.option(
    "--once", is_flag=True, help="One pass: fetch, process, send the outbox once, then exit."
)
@pass_context
def run(obj: Context, once: bool) -> None:
    """Fetch mail from every mailbox, turn it into tickets, and send the outbox."""
    from postdesk.daemon import PassResult, Service, signals_stop

    settings = obj.settings()
    if not settings.mailboxes:
        raise PostdeskError(f"{settings.path}: no [[mailbox]] configured, nothing to fetch")
    service = Service(settings, obj.database())

    def report(outcome: PassResult) -> None:
        fetched = sum(f.stored for f in outcome.fetches)
        p = outcome.processed
        click.echo(
            f"fetched {fetched} new message(s); {p.created} new ticket(s), "
            f"{p.appended} added to tickets, {p.quarantined} quarantined"
        )
        if outcome.errors:
            failed = ", ".join(sorted(outcome.errors))
            click.echo(f"{len(outcome.errors)} mailbox(es) failed: {failed} (see the log above)")
        sent = outcome.outbox
        if sent is not None and (sent.sent or sent.retrying or sent.failed or sent.unconfirmed):
            click.echo(
                f"outbox: {sent.sent} sent, {sent.retrying} to retry, {sent.failed} failed"
                + (f", {sent.unconfirmed} unconfirmed" if sent.unconfirmed else "")
            )

    with signals_stop(service):
        if once:
            outcome = service.run_once()
            report(outcome)
            if outcome.errors and len(outcome.errors) == len(settings.mailboxes):
                sys.exit(1)
        else:
            service.run_forever(report if obj.verbose else None)


@main.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--mailbox", metavar="NAME", help="Record the mail as received by this mailbox.")
@pass_context
def import_(obj: Context, path: Path, mailbox: str | None) -> None:
    """Backfill mail from an mbox file, a Maildir or a folder of .eml files."""
    from postdesk.daemon import Service, import_messages, signals_stop
    from postdesk.ingest.sources import read_messages

    settings = obj.settings()
    if mailbox:
        settings.mailbox(mailbox)
    service = Service(settings, obj.database())
    skipped: list[Path] = []
    with signals_stop(service):
        result = import_messages(service, read_messages(path, skipped=skipped), mailbox=mailbox)
    p = result.processed
    click.echo(
        f"read {result.read} message(s): {result.stored} stored, {result.duplicates} already "
        f"stored; {p.created} new ticket(s), {p.appended} added to tickets, "
        f"{p.quarantined} quarantined"
    )
    if skipped:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        click.echo(f"skipped {len(skipped)} file(s) that are not mail: {skipped[0]}{more}")


@main.group()
def tickets() -> None:
    """List and read tickets."""


@tickets.command("list")
@click.option("--status", metavar="STATUS", help="Only tickets in this status.")
@click.option(
    "--needs-triage",
    is_flag=True,
    help="Only tickets whose category or priority a person must set.",
)
@json_option
@pass_context
def tickets_list(obj: Context, status: str | None, needs_triage: bool, as_json: bool) -> None:
    """List tickets, newest first."""
    from postdesk.tickets import list_tickets

    rows = list_tickets(obj.database(), status=status, needs_triage=needs_triage)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no tickets")
        return
    for row in rows:
        requester = row["requester"]["email"] if row["requester"] else "?"
        created = (row["created_at"] or "")[:16].replace("T", " ")
        triage = "  [needs triage]" if row["needs_triage"] else ""
        click.echo(
            f"#{row['number']:<6} {row['status']:<8} {created}  {requester:<32} "
            f"{len(row['message_ids']):>3} msg  {row['subject']}{triage}"
        )


@tickets.command("show")
@click.argument("number", type=int)
@json_option
@pass_context
def tickets_show(obj: Context, number: int, as_json: bool) -> None:
    """Show one ticket and its messages."""
    from postdesk.tickets import show_ticket

    data = show_ticket(obj.database(), number)
    if as_json:
        print_json(data)
        return
    requester = data["requester"]["email"] if data["requester"] else "?"
    click.echo(f"Ticket #{data['number']}: {data['subject']}")
    click.echo(f"Status: {data['status']}   Requester: {requester}")
    click.echo(
        f"Category: {_triaged(data['category'], data['triage']['category'])}   "
        f"Priority: {_triaged(data['priority'], data['triage']['priority'])}"
        + ("   [needs triage]" if data["needs_triage"] else "")
    )
    for message in data["messages"]:
        sender = message["from"]["email"]
        click.echo("")
        click.echo(
            f"--- {message['date'] or message['received_at']}  {sender}  [{message['thread_rule']}]"
        )
        click.echo(message["text"].rstrip())
        for attachment in message["attachments"]:
            click.echo(f"[attachment: {attachment['filename']} {attachment['size']} bytes]")


def _triaged(value: str | None, how: dict[str, Any]) -> str:
    """A category or priority with who set it, e.g. "billing (model 0.93)"."""
    source, probability = how["source"], how["probability"]
    if value is None:
        return f"- (model unsure, {probability:.2f})" if probability is not None else "-"
    if source == "model" and probability is not None:
        return f"{value} (model {probability:.2f})"
    return f"{value} ({source})" if source else value


@tickets.command("merge")
@click.argument("target", type=int)
@click.argument("source", type=int)
@pass_context
def tickets_merge(obj: Context, target: int, source: int) -> None:
    """Merge ticket SOURCE into TARGET; later replies to either land on TARGET."""
    from postdesk.tickets import merge_tickets

    moved = merge_tickets(obj.database(), target, source)
    click.echo(f"merged #{source} into #{target} ({moved} message(s) moved); #{source} is closed")


@main.group()
def inbound() -> None:
    """Inspect stored inbound mail and replay quarantined messages."""


@inbound.command("list")
@click.option("--quarantined", is_flag=True, help="Only quarantined messages.")
@click.option("--pending", is_flag=True, help="Only messages waiting to be processed.")
@json_option
@pass_context
def inbound_list(obj: Context, quarantined: bool, pending: bool, as_json: bool) -> None:
    """List stored inbound messages (the newest first)."""
    from postdesk.ingest.process import list_raw

    statuses = [
        s for s, on in ((RawStatus.QUARANTINED, quarantined), (RawStatus.PENDING, pending)) if on
    ]
    rows = list_raw(obj.database(), statuses or None)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("nothing to show")
        return
    for row in rows:
        line = f"{row['id']:>7} {row['status']:<11} {row['origin']}"
        if row["reason"]:
            line += f"  -- {row['reason']}"
        click.echo(line)


@inbound.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Retry every quarantined message.")
@pass_context
def inbound_retry(obj: Context, ids: tuple[int, ...], retry_all: bool) -> None:
    """Process quarantined messages again (by raw id, or --all)."""
    from postdesk.daemon import Service
    from postdesk.ingest.process import requeue

    if not ids and not retry_all:
        raise PostdeskError("name the messages to retry (ids from `inbound list`) or use --all")
    service = Service(obj.settings(), obj.database())
    requeued = requeue(service.db, None if retry_all else list(ids))
    if not requeued:
        click.echo("no quarantined message to retry")
        return
    result = service.processor().run_ids(requeued)
    click.echo(
        f"retried {len(requeued)}: {result.processed} processed, "
        f"{result.quarantined} quarantined again"
    )
    for raw_id in result.quarantined_ids:
        click.echo(f"still quarantined: {raw_id} (see `postdesk inbound list --quarantined`)")


# Each feature's commands live beside the feature and are registered here, in one place.
for feature_commands in (model_commands, outbox_commands):
    main.add_command(feature_commands)

if __name__ == "__main__":  # pragma: no cover
    main()
