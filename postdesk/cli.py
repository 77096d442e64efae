"""The `postdesk` command. Thin: parse options, call the library, print.

Every expected failure (bad config, unreachable database or server, unknown ticket)
is a `PostdeskError` and reaches the user as one line on stderr with exit status 1;
click's usage errors exit with 2; an unexpected one (a bug) is one line naming the file
its traceback was written to, exit status 70 (see `postdesk.clikit.PostdeskGroup`).

Each feature's commands live beside the feature (`classify/cli.py`) and are registered
at the bottom; what commands share (the context, `--json`, the JSON printer) comes from
`postdesk.clikit`, never from here, so no command module imports this one.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from postdesk import __version__
from postdesk.classify.cli import model as model_commands
from postdesk.clikit import (
    EXIT_INTERRUPTED,
    ROW_ID,
    TICKET_NUMBER,
    Context,
    PostdeskGroup,
    format_options,
    json_option,
    output_format,
    pass_context,
    print_json,
    terminal_safe,
)
from postdesk.errors import ConfigError, PostdeskError
from postdesk.health.cli import doctor as doctor_command
from postdesk.health.cli import status as status_command
from postdesk.models import RawStatus, utcnow
from postdesk.models.migrate import upgrade
from postdesk.notify.cli import outbox as outbox_commands
from postdesk.qa.cli import kpi as kpi_command
from postdesk.qa.cli import qa as qa_commands
from postdesk.tables import Field, delimited, json_rows, note_lines, pick, table_lines
from postdesk.tickets.render import Screen, local_time, parse_time, screen

if TYPE_CHECKING:
    from postdesk.ingest.sources import ImportedMessage


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is when a record is logged, not as it was at start: a
    live progress display (`import` on a terminal) stands in for it and prints the log
    lines above itself instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


log = logging.getLogger("postdesk")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 3:
        # SQLAlchemy and imapclient are chatty at INFO/DEBUG; -vvv shows them too.
        for name in ("sqlalchemy", "imapclient", "alembic"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))


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
    """postdesk: an email helpdesk engine.

    Exit status: 0 done, 1 an error of yours or of the environment (one line on stderr),
    2 a usage error, 70 a bug in postdesk (the line names the file holding the
    traceback), 130 interrupted. Shell completion: see "Shell completion" in the README.

    \b
    Example:
      $ postdesk -c /etc/postdesk.toml init
      $ postdesk tickets list --needs-triage
    """
    _setup_logging(verbose)
    ctx.obj = Context(config, verbose)


@main.command()
@pass_context
def init(obj: Context) -> None:
    """Create the database, or upgrade it to the current schema.

    \b
    Example:
      $ postdesk -c /etc/postdesk.toml init
    """
    obj.writable_data_dir()
    db = obj.database(migrated=False)
    # Upgrades can be long on a large database (building the search index over every
    # stored message): a line when one starts and one per step, on stderr. Creating a
    # new database is quick and says nothing until it is done.
    upgrading = False

    def starting(before: str | None, head: str) -> None:
        nonlocal upgrading
        upgrading = before is not None and before != head
        if upgrading:
            click.echo(f"init: upgrading schema {before} to {head}...", err=True)

    def applied(revision: str, what: str, seconds: float) -> None:
        if upgrading:
            click.echo(f"init: schema {revision} ({what}) done in {seconds:.1f} s", err=True)

    before, after = upgrade(db, applied, starting)
    # At the current schema an upgrade writes nothing: prove postdesk may write.
    db.check_writable()
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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with time, level, logger, message and the event's "
    "fields (mailbox, uid, message_id, ticket), for log shippers.",
)
@pass_context
def run(obj: Context, once: bool, log_format: str) -> None:
    """Fetch mail from every mailbox, turn it into tickets, and send the outbox.

    Without --once it runs until SIGTERM or SIGINT (it finishes the message in hand,
    then exits 0); SIGHUP re-reads the config file. It logs at INFO without -v: a
    startup line and one summary line per pass; -vv adds a line per message. Under
    systemd it reports readiness and feeds the watchdog (systemd/postdesk.service).

    \b
    Example:
      $ postdesk run --once
      $ postdesk run --log-format json
    """
    from postdesk.daemon import PassResult, Service, signals_stop
    from postdesk.logs import secrets_of, use_format
    from postdesk.sdnotify import Notifier

    settings = obj.settings()
    use_format(log_format, secrets_of(settings))
    if not once and logging.getLogger().level > logging.INFO:
        # A service's journal should show what it does; -v is still needed for --once.
        logging.getLogger().setLevel(logging.INFO)
    if not settings.mailboxes:
        raise PostdeskError(f"{settings.path}: no [[mailbox]] configured, nothing to fetch")
    obj.writable_data_dir()  # attachments, models and the reply-token key go there
    db = obj.database()
    service = Service(settings, db)
    notifier = Notifier.from_environ()
    logging.getLogger("postdesk").info(
        "postdesk %s starting%s: config %s, %d mailbox(es): %s; database %s; poll every %g s%s",
        __version__,
        " (one pass)" if once else "",
        settings.path,
        len(settings.mailboxes),
        ", ".join(box.name for box in settings.mailboxes),
        db.display_url,
        settings.run.poll_interval,
        "; systemd notify on" if notifier.enabled else "",
        extra={
            "event": "startup",
            "version": __version__,
            "config": str(settings.path),
            "mailboxes": [box.name for box in settings.mailboxes],
            "database": db.display_url,
        },
    )

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

    with signals_stop(service, reload=not once):
        if once:
            outcome = service.run_forever(report, once=True, notifier=notifier)
            if (
                outcome is not None
                and outcome.errors
                and len(outcome.errors) == len(service.settings.mailboxes)
            ):
                sys.exit(1)
        else:
            from postdesk.health.metrics import served

            # The summary of each pass is a log line (daemon.py); the callback only
            # records the metrics when [metrics] listen is set.
            with served(service.settings, service.db) as on_pass:
                service.run_forever(on_pass, notifier=notifier)
    logging.getLogger("postdesk").info("postdesk stopped", extra={"event": "stopped"})


@main.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--mailbox", metavar="NAME", help="Record the mail as received by this mailbox.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read everything and count what would be stored; write nothing.",
)
@pass_context
def import_(obj: Context, path: Path, mailbox: str | None, dry_run: bool) -> None:
    """Backfill mail from an mbox file, a Maildir or a folder of .eml files.

    Mail already stored (imported or fetched before) is not stored twice, so an import
    stopped with Ctrl-C (exit status 130) is finished by running it again. Files that
    are not mail are skipped and counted (-v lists them all). On a terminal a progress
    bar shows on stderr; otherwise one line per stage.

    \b
    Example:
      $ postdesk import ~/mail/support.mbox --mailbox support
      $ postdesk import ./old-mail --dry-run
    """
    from postdesk.daemon import Service, count_import, import_messages, signals_stop
    from postdesk.ingest.sources import read_messages

    settings = obj.settings()
    if mailbox:
        settings.mailbox(mailbox)
    if not dry_run:
        obj.writable_data_dir()  # attachments and the reply-token key go there
    skipped: list[Path] = []
    if dry_run:
        counted = count_import(obj.database(), read_messages(path, skipped=skipped))
        _nothing_to_import(path, counted.read, skipped)
        click.echo(
            f"dry run: read {counted.read} message(s): {counted.stored} would be stored, "
            f"{counted.duplicates} already stored; nothing was written"
        )
        _report_skipped(skipped, obj.verbose)
        return
    service = Service(settings, obj.database())
    with signals_stop(service), _ImportProgress(path) as shown:
        result = import_messages(
            service,
            shown.reading(read_messages(path, skipped=skipped)),
            mailbox=mailbox,
            processing=shown.processing,
        )
    if not result.interrupted:
        _nothing_to_import(path, result.read, skipped)
    p = result.processed
    click.echo(
        f"read {result.read} message(s): {result.stored} stored, {result.duplicates} already "
        f"stored; {p.created} new ticket(s), {p.appended} added to tickets, "
        f"{p.quarantined + result.too_large} quarantined"
        + (f" ({result.too_large} too large)" if result.too_large else "")
    )
    _report_skipped(skipped, obj.verbose)
    if p.quarantined:
        click.echo("see why with `postdesk inbound list --quarantined`")
    if result.interrupted:
        unread = "" if result.read_all else f" and the rest of {path} not read"
        click.echo(
            f"postdesk: interrupted: {result.read} message(s) read and stored, "
            f"{p.processed + p.quarantined} processed; {result.pending} stored message(s) "
            f"not yet processed{unread}. Run the same command again to finish (nothing "
            "is stored twice).",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)


def _nothing_to_import(path: Path, read: int, skipped: list[Path]) -> None:
    """A user's error when a folder held no mail at all (an empty file is caught earlier)."""
    if read:
        return
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        raise PostdeskError(
            f"nothing to import in {path}: {len(skipped)} file(s), none of them mail ({names})"
        )
    raise PostdeskError(f"nothing to import in {path}: no files in it")


def _report_skipped(skipped: list[Path], verbose: int) -> None:
    """Say which files were not mail: the first three, or every one with -v."""
    if not skipped:
        return

    def label(path: Path) -> str:
        try:
            return f"{path} (empty)" if path.stat().st_size == 0 else str(path)
        except OSError:
            return str(path)

    if verbose:
        click.echo(f"skipped {len(skipped)} file(s) that are not mail:")
        for path in skipped:
            click.echo(f"  {label(path)}")
        return
    shown = ", ".join(label(path) for path in skipped[:3])
    more = f" and {len(skipped) - 3} more (-v lists them all)" if len(skipped) > 3 else ""
    click.echo(f"skipped {len(skipped)} file(s) that are not mail: {shown}{more}")


class _ImportProgress:
    """Progress of `postdesk import` on stderr: a live display on a terminal (rich),
    one line per stage otherwise (logs, cron, pipes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.live = sys.stderr.isatty()
        self.read = 0
        self._progress: Any = None
        self._reading: Any = None
        self._processing: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> _ImportProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._reading = self._progress.add_task("reading and storing", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def reading(self, messages: Iterator[ImportedMessage]) -> Iterator[ImportedMessage]:
        for message in messages:
            self.read += 1
            if self._progress is not None:
                self._progress.update(self._reading, completed=self.read)
            yield message

    def processing(self, done: int, total: int) -> None:
        if self._progress is not None:
            if self._processing is None:
                self._progress.update(self._reading, total=self.read, completed=self.read)
                self._processing = self._progress.add_task("processing", total=total)
            self._progress.update(self._processing, completed=done)
            return
        if done == 0 and (self.read or total):
            took = time.monotonic() - self._started
            click.echo(
                f"import: read and stored {self.read} message(s) from {self.path} "
                f"in {took:.1f} s; processing {total} new",
                err=True,
            )
            self._started = time.monotonic()
        elif done == total and total:
            took = time.monotonic() - self._started
            click.echo(f"import: processed {total} message(s) in {took:.1f} s", err=True)


@main.group()
def tickets() -> None:
    """List, read and work on tickets: notes, status, labels, assignment, replies.

    \b
    Example:
      $ postdesk tickets list --status open
      $ postdesk tickets show 42
    """


@tickets.command("list")
@click.option(
    "--status",
    "statuses",
    metavar="STATUS",
    multiple=True,
    help="Only tickets in this status: new, open, pending, solved or closed "
    "(repeat, or separate with commas, for several).",
)
@click.option("--mailbox", metavar="NAME", help="Only tickets of this mailbox (queue).")
@click.option("--category", metavar="NAME", help="Only tickets of this category.")
@click.option("--priority", metavar="LEVEL", help="Only tickets of this priority.")
@click.option(
    "--requester", metavar="TEXT", help="Only tickets whose requester's address contains TEXT."
)
@click.option(
    "--assignee",
    metavar="TEXT",
    help="Only tickets whose assignee's address contains TEXT; 'none': unassigned.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only tickets created at or after WHEN: a date, a time (ISO 8601, local in "
    "display_timezone unless it has an offset) or an age such as 7d or 12h.",
)
@click.option(
    "--until",
    metavar="WHEN",
    help="Only tickets created before WHEN (as --since; a date includes that whole day).",
)
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
@click.option(
    "--sort",
    default="-number",
    show_default=True,
    metavar="KEY",
    help="Order by number, created, updated, status, priority, category or requester; "
    "a leading '-' reverses.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="Show at most N tickets (0: all). Default: 50 in a table, all in json/csv/tsv.",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N", help="Skip N.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "csv", "tsv"]),
    default=None,
    help="Output format (default: table); --json is --format json.",
)
@click.option(
    "--columns",
    metavar="NAMES",
    help="Comma-separated columns: number, status, priority, category, requester, "
    "assignee, mailbox, sla, age, created, updated, messages, subject.",
)
@json_option
@pass_context
def tickets_list(
    obj: Context,
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
    output: str | None,
    columns: str | None,
    as_json: bool,
) -> None:
    """List tickets, newest first, as a table fitted to the terminal.

    \b
    Example:
      $ postdesk tickets list --status new,open --needs-triage
      $ postdesk tickets list --requester @example.org --since 7d --sort -updated
      $ postdesk tickets list --format csv --columns number,status,subject > tickets.csv
    """
    from postdesk.ticket_commands import run_list

    run_list(
        obj,
        statuses=statuses,
        mailbox=mailbox,
        category=category,
        priority=priority,
        requester=requester,
        assignee=assignee,
        since=since,
        until=until,
        needs_triage=needs_triage,
        sla=sla,
        sort=sort,
        limit=limit,
        offset=offset,
        output="json" if as_json and output is None else (output or "table"),
        columns=columns,
    )


@tickets.command("search")
@click.argument("query", nargs=-1)
@click.option(
    "--message-id",
    metavar="ID",
    help="Find the ticket holding the message with this Message-ID instead.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="At most this many tickets.",
)
@format_options(("number", "status", "subject", "snippet", "score", "message"))
@pass_context
def tickets_search(
    obj: Context,
    query: tuple[str, ...],
    message_id: str | None,
    limit: int,
    output: str | None,
    columns: str | None,
    as_json: bool,
) -> None:
    """Find tickets by words of their subjects and messages, best match first.

    Every word must appear in one message of the ticket; "quoted phrases" must appear
    as written. Case, Arabic or Persian ye and kaf, Persian digits and the zero-width
    non-joiner do not matter. A QUERY that is a Message-ID (<...@...>) finds the ticket
    holding that message.

    \b
    Example:
      $ postdesk tickets search refund invoice
      $ postdesk tickets search '"cannot log in"' --format json
      $ postdesk tickets search اشتراک لغو
      $ postdesk tickets search '<CAF123@mail.example.com>'
      $ postdesk tickets search refund --format csv --columns number,subject,score
    """
    from postdesk.ticket_commands import run_search

    fmt = output_format(output, as_json)
    run_search(obj, " ".join(query), message_id, limit=limit, fmt=fmt, columns=columns)


@tickets.command("show")
@click.argument("number", type=TICKET_NUMBER)
@click.option("--full", is_flag=True, help="Show each message whole, quoted history included.")
@json_option
@pass_context
def tickets_show(obj: Context, number: int, full: bool, as_json: bool) -> None:
    """Show one ticket: its messages (the visible reply of each), attachments and history.

    \b
    Example:
      $ postdesk tickets show 42 --full
      $ postdesk tickets show 42 --json
    """
    from postdesk.ticket_commands import run_show

    run_show(obj, number, full=full, as_json=as_json)


@tickets.command("merge")
@click.argument("target", type=TICKET_NUMBER)
@click.argument("source", type=TICKET_NUMBER)
@pass_context
def tickets_merge(obj: Context, target: int, source: int) -> None:
    """Merge ticket SOURCE into TARGET; later replies to either land on TARGET.

    \b
    Example:
      $ postdesk tickets merge 42 57
    """
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
@click.argument("number", type=TICKET_NUMBER)
@_text_argument
@_file_option
@_as_option
@pass_context
def tickets_note(
    obj: Context, number: int, text: str | None, file: Path | None, as_: str | None
) -> None:
    """Add an internal note to ticket NUMBER: for the team, never sent to anyone.

    The note is TEXT, the content of --file, or stdin when neither is given.

    \b
    Example:
      $ postdesk tickets note 42 "Called her back; waiting for the invoice."
      $ postdesk tickets note 42 --file notes.txt --as sara@example.com
    """
    from postdesk.tickets import add_note

    body = _text_of(text, file)
    actor = _acting_agent(obj, as_)
    with obj.database().transaction() as session:
        add_note(session.connection(), number, body, actor=actor)
    click.echo(f"noted on #{number} by {actor}")


@tickets.command("set")
@click.argument("number", type=TICKET_NUMBER)
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

    \b
    Example:
      $ postdesk tickets set 42 --status open --priority high --assign sara@example.com
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
@click.argument("number", type=TICKET_NUMBER)
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

    \b
    Example:
      $ postdesk tickets reply 42 "Your refund was sent today." --status solved
      $ postdesk tickets reply 42 --file answer.txt --as sara@example.com
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
    """Look at stored inbound mail; view, retry or discard quarantined messages.

    A message is quarantined when processing it failed (the reason is kept); it stays
    in the database until someone retries it (after fixing the cause, or giving it a
    sender with --sender) or discards it.

    \b
    Example:
      $ postdesk inbound list --quarantined
      $ postdesk inbound show 42
      $ postdesk inbound retry 42 --sender alice@example.org
    """


_INBOUND_PAGE = 50
_STATUS_FLAGS = (
    ("quarantined", RawStatus.QUARANTINED),
    ("pending", RawStatus.PENDING),
    ("processed", RawStatus.PROCESSED),
    ("discarded", RawStatus.DISCARDED),
)


def _printable(text: str, *, one_line: bool = False) -> str:
    """`text` from mail made safe for a terminal (`terminal_safe`); `one_line` also folds
    newlines and tabs."""
    text = terminal_safe(text)
    return " ".join(text.split()) if one_line else text


INBOUND_COLUMNS = (
    "id",
    "status",
    "from",
    "subject",
    "reason",
    "received",
    "source",
    "origin",
    "attempts",
    "size",
    "message_id",
)
INBOUND_TABLE = ("id", "status", "from", "subject")


def _inbound_sender(row: dict[str, Any]) -> str:
    """The address says who it is; the display name is in `inbound show`."""
    address = parseaddr(row["from"])[1] if row["from"] else ""
    return address or row["from"] or row["given_sender"] or "(no From)"


def _inbound_fields(out: Screen) -> list[Field]:
    def received(row: dict[str, Any]) -> str | None:
        when = parse_time(row["received_at"])
        return when.astimezone(out.zone).isoformat() if when is not None else None

    return [
        Field("id", "id", right=True),
        Field("status", "status"),
        Field("from", "from", _inbound_sender, max_width=28, shrink_to=12),
        Field("subject", "subject", lambda r: r["subject"] or "(no subject)"),
        Field("reason", "reason", max_width=40, shrink_to=12),
        Field("received", "received", lambda r: local_time(r["received_at"], out), received),
        Field("source", "source", max_width=20, shrink_to=8),
        Field("origin", "origin", max_width=30, shrink_to=10),
        Field("attempts", "tries", right=True),
        Field("size", "size", right=True),
        Field("message_id", "message-id", max_width=30, shrink_to=12),
    ]


@inbound.command("list")
@click.option("--quarantined", is_flag=True, help="Only quarantined messages.")
@click.option("--pending", is_flag=True, help="Only messages waiting to be processed.")
@click.option("--processed", is_flag=True, help="Only processed messages.")
@click.option("--discarded", is_flag=True, help="Only discarded messages.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    help="Show at most this many, the newest (default: 50 in a table, all otherwise).",
)
@click.option(
    "--offset", type=click.IntRange(0, 2**31 - 1), default=0, help="Skip this many first."
)
@format_options(INBOUND_COLUMNS)
@pass_context
def inbound_list(
    obj: Context,
    quarantined: bool,
    pending: bool,
    processed: bool,
    discarded: bool,
    limit: int | None,
    offset: int,
    output: str | None,
    columns: str | None,
    as_json: bool,
) -> None:
    """List stored inbound messages, the newest first: id, status, sender, subject and,
    under a quarantined or discarded one, the reason. Status flags combine
    (--quarantined --pending). CSV, TSV and JSON list every match unless --limit is
    given (JSON: every field unless --columns names some).

    \b
    Example:
      $ postdesk inbound list --quarantined --limit 20
      $ postdesk inbound list --quarantined --format tsv --columns id,from,reason
    """
    from postdesk.ingest.quarantine import list_inbound

    fmt = output_format(output, as_json)
    out = screen(obj.settings().display_zone(), utcnow())
    fields = pick(_inbound_fields(out), columns, INBOUND_TABLE if fmt == "table" else None)
    flags = {"quarantined": quarantined, "pending": pending}
    flags.update(processed=processed, discarded=discarded)
    statuses = [status.value for name, status in _STATUS_FLAGS if flags[name]]
    if limit is None and fmt == "table":
        limit = _INBOUND_PAGE  # a person reads a page; a script gets everything
    rows, total = list_inbound(obj.database(), statuses or None, limit=limit, offset=offset)
    if fmt == "json":
        print_json(rows if columns is None else json_rows(rows, fields))
        return
    if fmt in ("csv", "tsv"):
        click.echo(delimited(rows, fields, "," if fmt == "csv" else "\t"), nl=False)
        return
    if not rows:
        click.echo("nothing to show" if not offset else f"nothing after the first {offset}")
        return
    lines = table_lines(rows, fields, out, _inbound_style)
    click.echo(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        click.echo(line)
        quarantine = row["status"] in (RawStatus.QUARANTINED, RawStatus.DISCARDED)
        if row["reason"] and quarantine and columns is None:
            click.echo("\n".join(note_lines("reason", row["reason"], out.width)))
    more = total - offset - len(rows)
    if more > 0:
        click.echo(
            f"... {more} more; see them with --offset {offset + len(rows)} or a larger --limit"
        )


def _inbound_style(name: str, cell: str, row: dict[str, Any]) -> str | None:
    if name == "status":
        return {"quarantined": "bold red", "pending": "yellow", "discarded": "dim"}.get(cell)
    return None


@inbound.command("show")
@click.argument("raw_id", metavar="ID", type=ROW_ID)
@click.option(
    "--raw",
    is_flag=True,
    help="Print the stored bytes as they arrived (on a terminal, control bytes are "
    "shown as \\xNN).",
)
@json_option
@pass_context
def inbound_show(obj: Context, raw_id: int, raw: bool, as_json: bool) -> None:
    """Show stored inbound message ID: where it came from, its status and reason, its
    headers and its text (control characters and escape sequences removed).

    \b
    Example:
      $ postdesk inbound show 42
      $ postdesk inbound show 42 --raw > message.eml
    """
    from postdesk.ingest.quarantine import get_inbound, show_inbound

    if raw:
        content = get_inbound(obj.database(), raw_id).content
        stdout = sys.stdout.buffer
        if sys.stdout.isatty():
            # Mail may carry escape sequences meant for a terminal: show them, not obey.
            content = re.sub(
                rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]",
                lambda m: b"\\x%02x" % m.group()[0],
                content,
            )
        stdout.write(content)
        stdout.flush()
        return
    data = show_inbound(obj.database(), raw_id)
    if as_json:
        print_json(data)
        return

    def line(label: str, value: object) -> None:
        if value:
            click.echo(f"{label + ':':<13} {_printable(str(value), one_line=True)}")

    status = data["status"]
    click.echo(f"Inbound message {data['id']} ({status}, {data['attempts']} attempt(s))")
    line("Reason", data["reason"])
    line("From", data["from"] or "(none)")
    line("Given sender", data["given_sender"])
    line("To", data["to"])
    line("Date", data["date"])
    line("Subject", data["subject"] or "(no subject)")
    line("Message-ID", data["message_id"])
    line("Came from", f"{data['source']}: {data['origin']}")
    line("Stored at", data["received_at"])
    line("Size", f"{data['size']} bytes")
    click.echo("")
    if data["parse_error"]:
        click.echo(f"(the text cannot be read: {_printable(data['parse_error'], one_line=True)})")
        click.echo(f"(see the stored bytes with `postdesk inbound show {raw_id} --raw`)")
    else:
        click.echo(_printable(data["text"]).rstrip() or "(no text)")
    if status == RawStatus.QUARANTINED:
        click.echo("")
        click.echo(
            f"(`postdesk inbound retry {raw_id}` processes it again; "
            f"`postdesk inbound discard {raw_id}` sets it aside)"
        )


@inbound.command("retry")
@click.argument("ids", metavar="[ID]...", nargs=-1, type=ROW_ID)
@click.option("--all", "retry_all", is_flag=True, help="Retry every quarantined message.")
@click.option(
    "--sender",
    metavar="EMAIL",
    help="For one message without a usable From, Sender or Reply-To: process it as "
    "sent by EMAIL (kept beside the mail, which is not changed).",
)
@pass_context
def inbound_retry(obj: Context, ids: tuple[int, ...], retry_all: bool, sender: str | None) -> None:
    """Process quarantined (or discarded) messages again: by ID, or --all quarantined.

    An ID that does not exist, or names a message that is neither quarantined nor
    discarded, is an error and nothing is retried.

    \b
    Example:
      $ postdesk inbound retry 42 43
      $ postdesk inbound retry --all
      $ postdesk inbound retry 42 --sender alice@example.org
    """
    from postdesk.daemon import Service
    from postdesk.ingest.process import requeue
    from postdesk.ingest.quarantine import give_sender, requeue_ids

    if ids and retry_all:
        raise PostdeskError("give message ids or --all, not both")
    if not ids and not retry_all:
        raise PostdeskError("name the messages to retry (ids from `inbound list`) or use --all")
    if sender is not None and len(ids) != 1:
        raise PostdeskError("--sender is for one message: give exactly one ID")
    obj.writable_data_dir()  # attachments and the reply-token key go there
    service = Service(obj.settings(), obj.database())
    if sender is not None:
        given = give_sender(service.db, ids[0], sender)
        click.echo(f"inbound message {ids[0]}: sender set to {given}")
    requeued = requeue(service.db, None) if retry_all else requeue_ids(service.db, ids)
    if not requeued:
        click.echo("no quarantined message to retry")
        return
    result = service.processor().run_ids(requeued)
    click.echo(
        f"retried {len(requeued)}: {result.processed} processed, "
        f"{result.quarantined} quarantined again"
    )
    for raw_id in result.quarantined_ids:
        click.echo(f"still quarantined: {raw_id} (see `postdesk inbound show {raw_id}`)")


@inbound.command("discard")
@click.argument("ids", metavar="ID...", nargs=-1, type=ROW_ID, required=True)
@pass_context
def inbound_discard(obj: Context, ids: tuple[int, ...]) -> None:
    """Set quarantined messages aside for good: they are never processed.

    The stored bytes and the reason are kept for the record (`inbound show` still reads
    them, `inbound retry` brings one back), and a copy of the same mail fetched or
    imported again is not processed either. Only quarantined messages can be discarded;
    an unknown ID is an error and nothing is discarded.

    \b
    Example:
      $ postdesk inbound discard 42
    """
    from postdesk.ingest.quarantine import discard

    done = discard(obj.database(), ids)
    click.echo(f"discarded {len(done)}: {', '.join(str(i) for i in done)}")


# Each feature's commands live beside the feature and are registered here, in one place.
for feature_commands in (
    model_commands,
    outbox_commands,
    qa_commands,
    kpi_command,
    status_command,
    doctor_command,
):
    main.add_command(feature_commands)

if __name__ == "__main__":  # pragma: no cover
    main()
