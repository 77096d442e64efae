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
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

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
from postdesk.qa.cli import kpi as kpi_command
from postdesk.qa.cli import qa as qa_commands

if TYPE_CHECKING:
    from postdesk.sla.clock import Clock

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
        alerts = outcome.sla
        if alerts is not None and (alerts.alerts or alerts.errors):
            click.echo(
                f"sla: {alerts.alerts} alert(s), {alerts.mails} mail(s) queued"
                + (f", {len(alerts.errors)} failed" if alerts.errors else "")
            )
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
        f"{p.quarantined + result.too_large} quarantined"
        + (f" ({result.too_large} too large)" if result.too_large else "")
    )
    if skipped:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        click.echo(f"skipped {len(skipped)} file(s) that are not mail: {skipped[0]}{more}")


@main.group()
def tickets() -> None:
    """List, read and work on tickets: notes, status, labels, assignment, replies."""


@tickets.command("list")
@click.option("--status", metavar="STATUS", help="Only tickets in this status.")
@click.option(
    "--needs-triage",
    is_flag=True,
    help="Only tickets whose category or priority a person must set.",
)
@click.option(
    "--sla",
    "sla",
    type=click.Choice(["at-risk", "breached"]),
    help="Only open tickets (new, open, pending) whose SLA clock is at risk or breached.",
)
@json_option
@pass_context
def tickets_list(
    obj: Context, status: str | None, needs_triage: bool, sla: str | None, as_json: bool
) -> None:
    """List tickets, newest first."""
    from postdesk.tickets import list_tickets

    rows = list_tickets(obj.database(), status=status, needs_triage=needs_triage)
    if sla is not None:
        from postdesk.models import utcnow
        from postdesk.sla.view import tickets_by_sla

        settings = obj.settings()
        if settings.sla is None:
            raise ConfigError(str(settings.path), "sla", "is needed for --sla; add [sla]")
        wanted = tickets_by_sla(obj.database(), settings, sla, utcnow())
        rows = [row for row in rows if row["number"] in wanted]
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
    from postdesk.models import utcnow
    from postdesk.sla.clock import state_json
    from postdesk.sla.view import calendar_for, ticket_sla_state
    from postdesk.tickets import show_ticket

    data = show_ticket(obj.database(), number)
    sla = ticket_sla_state(obj.database(), obj.settings(), number, utcnow())
    data["sla"] = state_json(sla) if sla is not None else None
    if as_json:
        print_json(data)
        return
    requester = data["requester"]["email"] if data["requester"] else "?"
    click.echo(f"Ticket #{data['number']}: {data['subject']}")
    assignee = data["assignee"]["email"] if data["assignee"] else "-"
    click.echo(f"Status: {data['status']}   Requester: {requester}   Assignee: {assignee}")
    click.echo(
        f"Category: {_triaged(data['category'], data['triage']['category'])}   "
        f"Priority: {_triaged(data['priority'], data['triage']['priority'])}"
        + ("   [needs triage]" if data["needs_triage"] else "")
    )
    click.echo(
        f"Queue: {data['queue'] or '-'}   First response: {data['first_response_at'] or '-'}   "
        f"Solved: {data['solved_at'] or '-'}"
        + (f"   CSAT: {data['csat']['score']}" if data["csat"] else "")
    )
    if sla is not None:
        zone = calendar_for(obj.settings(), data["mailbox"]).zone
        click.echo(
            f"SLA: {sla.priority}, calendar {sla.calendar}"
            + ("   [paused: pending]" if sla.paused else "")
        )
        for label, clock in (
            ("first response", sla.first_response),
            ("resolution", sla.resolution),
        ):
            click.echo(f"  {label} due {_local(clock.due, zone)}{_clock_note(clock, zone)}")
    for message in data["messages"]:
        sender = message["from"]["email"]
        when = message["date"] or message["received_at"]
        click.echo("")
        if message["direction"] == "note":
            click.echo(f"--- note {when}  {sender}  (internal, never sent)")
        elif message["direction"] == "out":
            outbox = message.get("outbox") or {}
            state = f"{outbox.get('kind', 'mail')}, {outbox.get('state', '?')}"
            click.echo(f"--- sent {when}  to {_recipients(message)}  [{state}]")
        else:
            click.echo(f"--- {when}  {sender}  [{message['thread_rule']}]")
        click.echo(message["text"].rstrip())
        if message.get("agent_check"):
            click.echo(f"[agent check: {message['agent_check']}]")
        for attachment in message["attachments"]:
            click.echo(f"[attachment: {attachment['filename']} {attachment['size']} bytes]")


def _local(when: datetime, zone: tzinfo) -> str:
    """A time in a calendar's zone, e.g. "2026-12-10 08:30 +0330"."""
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")


def _clock_note(clock: Clock, zone: tzinfo) -> str:
    if clock.met_at is not None:
        return f"   met {_local(clock.met_at, zone)}" + (" (late)" if clock.breached else "")
    if clock.breached:
        return "   [BREACHED]"
    return "   [at risk]" if clock.at_risk else ""


def _recipients(message: dict[str, Any]) -> str:
    return ", ".join(str(r.get("email", "")) for r in message["to"]) or "?"


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


def _text_of(text: str | None, file: Path | None) -> str:
    """The text a command was given: the argument, the file, or stdin; read as UTF-8.

    Empty (or only white space) is refused: nothing is recorded or sent.
    """
    if text is not None and file is not None:
        raise PostdeskError("give the text or --file, not both")
    if text is None:
        if file is not None and str(file) != "-":
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise PostdeskError(f"{file}: cannot read it ({exc.strerror or exc})") from None
            where = str(file)
        else:
            if file is None and sys.stdin.isatty():
                raise PostdeskError("give the text, --file F, or pipe it on stdin")
            data = sys.stdin.buffer.read()
            where = "stdin"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PostdeskError(f"{where}: is not UTF-8 text") from None
    if not text.strip():
        raise PostdeskError("the text is empty; nothing was done")
    return text.strip()


def _acting_agent(obj: Context, as_: str | None) -> str:
    """Who a ticket command acts as: --as, else the first configured [[agent]]."""
    if as_:
        return as_.strip().lower()
    agents = obj.settings().agents
    if not agents:
        raise PostdeskError("say who is acting with --as EMAIL (no [[agent]] is configured)")
    return agents[0].email


_as_option = click.option(
    "--as",
    "as_",
    metavar="EMAIL",
    help="Who is acting, recorded with the change (default: the first configured [[agent]]).",
)
_text_argument = click.argument("text", required=False)
_file_option = click.option(
    "--file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the text from this UTF-8 file ('-' for stdin) instead of the TEXT argument.",
)


@tickets.command("note")
@click.argument("number", type=int)
@_text_argument
@_file_option
@_as_option
@pass_context
def tickets_note(
    obj: Context, number: int, text: str | None, file: Path | None, as_: str | None
) -> None:
    """Add an internal note to ticket NUMBER: for the team, never sent to anyone.

    The note is TEXT, the content of --file, or stdin when neither is given.
    """
    from postdesk.tickets import add_note

    body = _text_of(text, file)
    actor = _acting_agent(obj, as_)
    with obj.database().transaction() as session:
        add_note(session.connection(), number, body, actor=actor)
    click.echo(f"noted on #{number} by {actor}")


@tickets.command("set")
@click.argument("number", type=int)
@click.option("--status", metavar="STATUS", help="New status: new, open, pending, solved, closed.")
@click.option(
    "--priority", metavar="LEVEL", help="Priority, one of [triage] priority_levels (a person's)."
)
@click.option("--category", metavar="NAME", help="Category (a person's label; trains the model).")
@click.option(
    "--assign",
    metavar="EMAIL",
    help="Give the ticket to this agent ([[agent]] or an agent contact); 'none' unassigns.",
)
@_as_option
@pass_context
def tickets_set(
    obj: Context,
    number: int,
    status: str | None,
    priority: str | None,
    category: str | None,
    assign: str | None,
    as_: str | None,
) -> None:
    """Change ticket NUMBER's status, priority, category or assignee, all at once.

    Everything is checked first and applied in one transaction: an unknown status,
    priority or agent changes nothing. Priority and category set here are a person's
    labels, which the next model learns from.
    """
    from postdesk.tickets import assign as assign_ticket
    from postdesk.tickets import check_status, set_status
    from postdesk.tickets.lifecycle import CATEGORY, PRIORITY, set_label
    from postdesk.tickets.views import current_labels, find_agent

    if status is None and priority is None and category is None and assign is None:
        raise PostdeskError("nothing to set; give --status, --priority, --category or --assign")
    settings = obj.settings()
    check_status(status)
    levels = settings.triage.priority_levels
    if priority is not None and priority not in levels:
        raise PostdeskError(f"unknown priority {priority!r}; use one of {', '.join(levels)}")
    if category is not None and not category.strip():
        raise PostdeskError("the category is empty")
    actor = _acting_agent(obj, as_)
    db = obj.database()
    if assign is not None and assign.strip().lower() != "none":
        from postdesk.daemon import sync_config

        # A newly configured agent gets their contact row here, as `init` would make it.
        sync_config(db, settings)
    done: list[str] = []
    with db.transaction() as session:
        conn = session.connection()
        current_labels(conn, number)  # an unknown ticket: one line, nothing else
        assignee: int | None = None
        if assign is not None and assign.strip().lower() != "none":
            agent = find_agent(conn, settings.agents, assign)
            if agent is None or agent.contact_id is None:
                raise PostdeskError(
                    f"{assign.strip()} is not an agent; add an [[agent]] to the config "
                    "or use one of theirs"
                )
            assignee = agent.contact_id
        if status is not None and set_status(conn, number, status, actor=actor, why="set by hand"):
            done.append(f"status {status}")
            if status == "solved" and settings.smtp is not None:
                from postdesk.notify.survey import queue_survey

                if queue_survey(conn, settings, number) is not None:
                    done.append("satisfaction survey queued")
        if priority is not None:
            set_label(conn, number, PRIORITY, priority, actor=actor)
            done.append(f"priority {priority}")
        if category is not None:
            set_label(conn, number, CATEGORY, category.strip(), actor=actor)
            done.append(f"category {category.strip()}")
        if assign is not None and assign_ticket(conn, number, assignee, actor=actor):
            done.append(f"assigned to {assign.strip().lower()}" if assignee else "unassigned")
    click.echo(f"#{number}: {', '.join(done)}" if done else f"#{number}: nothing changed")


@tickets.command("reply")
@click.argument("number", type=int)
@_text_argument
@_file_option
@_as_option
@click.option(
    "--status",
    metavar="STATUS",
    help="Status after the reply (default: a new or open ticket becomes pending).",
)
@pass_context
def tickets_reply(
    obj: Context,
    number: int,
    text: str | None,
    file: Path | None,
    as_: str | None,
    status: str | None,
) -> None:
    """Reply to ticket NUMBER's customer, by mail through the outbox.

    The reply is TEXT, the content of --file, or stdin when neither is given. It is
    sent in the ticket's language and thread from the ticket's mailbox, signed
    "<agent> via <team>"; the agent's own address is not in the mail. A new or open
    ticket becomes pending (waiting for the customer) unless --status says otherwise.
    `postdesk run` (or `run --once`) sends the outbox.
    """
    from postdesk.daemon import sync_config
    from postdesk.notify.reply import queue_reply
    from postdesk.tickets.views import find_agent

    body = _text_of(text, file)
    settings = obj.settings()
    if settings.smtp is None:
        raise ConfigError(str(settings.path), "smtp", "is needed to send a reply; add [smtp]")
    email = _acting_agent(obj, as_)
    db = obj.database()
    sync_config(db, settings)
    with db.transaction() as session:
        conn = session.connection()
        agent = find_agent(conn, settings.agents, email)
        if agent is None:
            raise PostdeskError(
                f"{email} is not an agent; replies go out signed by an [[agent]] of the config"
            )
        row_id = queue_reply(conn, settings, number, body, agent, status=status)
        survey = None
        if status == "solved":
            from postdesk.notify.survey import queue_survey

            survey = queue_survey(conn, settings, number)
    more = " and the satisfaction survey" if survey is not None else ""
    click.echo(f"queued reply #{row_id}{more} on ticket #{number}; `postdesk run --once` sends it")


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
for feature_commands in (model_commands, outbox_commands, qa_commands, kpi_command):
    main.add_command(feature_commands)

if __name__ == "__main__":  # pragma: no cover
    main()
