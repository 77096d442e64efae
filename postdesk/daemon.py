"""The long-running service: watch every mailbox, and turn what arrives into tickets.

`run --once` is one *pass*: for each configured mailbox in turn, fetch new mail into the
raw store (each mailbox isolated: a failing server is logged and recorded, the others go
on), then run every pending raw message through the processing steps, then check the SLA
clocks (the alerts, postdesk/sla/alerts.py) and send the outbox.

`run` serves each mailbox on its own thread (postdesk/watch.py: IDLE or polling, its own
back-off), so that no mailbox waits for another, and the main thread repeats the rest of
the pass (process, SLA alerts, outbox, scheduled retraining) whenever a mailbox thread
stored mail, and at least every `run.poll_interval` seconds, until SIGTERM/SIGINT: it
finishes the message in hand, the mailbox threads end IDLE and log out, and it exits.
SIGHUP re-reads the config file between passes and restarts the mailbox threads.

Under systemd (`Type=notify`, see systemd/postdesk.service) the loop reports READY=1 once
the first pass has tried every mailbox (each synced or failed; a database outage in that
pass counts as a failure, so the service does not restart in a loop while the database
is down: it says so in its STATUS and retries), STATUS= after every pass, STOPPING=1 on
the way out, and keeps the watchdog alive: WATCHDOG=1 is sent from the loop itself
(between messages while a pass works, in slices while it sleeps), so a loop stuck
anywhere stops the pings and systemd restarts the service. Until READY, the same
progress extends systemd's start timeout instead, so a first sync of a large mailbox
is not mistaken for a hang.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from postdesk.classify.step import ActiveTriage, TriageStep
from postdesk.config import MailboxSettings, Settings, load_settings
from postdesk.errors import ConfigError, MailboxError, MailboxLoginError, PostdeskError
from postdesk.ingest.fetch import FetchResult, FolderFetcher, record_failure
from postdesk.ingest.imap import ImapSource
from postdesk.ingest.lease import make_owner
from postdesk.ingest.parse import header_summary
from postdesk.ingest.process import Processor, ProcessResult, Step
from postdesk.ingest.sources import ImportedMessage
from postdesk.ingest.store import IMPORT, Incoming, dedupe_key, store_many
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.ingest.worker import Budget, warm_up
from postdesk.models import Contact, Mailbox, RawMessage, RawStatus, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database, describe_error
from postdesk.models.tickets import AGENT
from postdesk.notify.smtp import DrainResult, OutboxSender
from postdesk.notify.templates import Templates
from postdesk.pausepoints import pause_point
from postdesk.pipeline import notify_steps, parse_budget, steps
from postdesk.sdnotify import Notifier
from postdesk.sla.alerts import AlertResult, SlaAlerts
from postdesk.watch import MailboxWatcher

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What one pass did over all mailboxes."""

    fetches: list[FetchResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    processed: ProcessResult = field(default_factory=ProcessResult)
    outbox: DrainResult | None = None  # None when no [smtp] is configured
    sla: AlertResult | None = None  # None without [sla] and [smtp]


_MAILBOX_ROWS = select(
    table_of(Mailbox).c.name, table_of(Mailbox).c.id, table_of(Mailbox).c.address
)
_AGENT_ROWS = select(table_of(Contact).c.email, table_of(Contact).c.name, table_of(Contact).c.role)


def sync_config(db: Database, settings: Settings) -> dict[str, int]:
    """Make the mailboxes and agents of the config exist in the database.

    Mailbox rows are never deleted when a mailbox leaves the config, so tickets keep
    pointing at where they came from. Returns mailbox name -> id.

    Runs at every `--once` pass and whenever the mailbox threads start: the rows are read
    first and written only when the config says something they do not (a new mailbox or
    agent, a changed address, role or name), so the usual call takes no write lock.
    """
    ids = _config_ids(db, settings)
    if ids is not None:
        return ids
    mailboxes, contacts = table_of(Mailbox), table_of(Contact)
    ids = {}
    with db.transaction() as session:
        for box in settings.mailboxes:
            address = box.address.lower()
            found = session.execute(_MAILBOX_ROWS.where(mailboxes.c.name == box.name)).first()
            if found is None:
                ids[box.name] = session.execute(
                    insert(mailboxes)
                    .values(name=box.name, address=address)
                    .returning(mailboxes.c.id)
                ).scalar_one()
                continue
            ids[box.name] = found.id
            if found.address != address:
                session.execute(
                    update(mailboxes).where(mailboxes.c.id == found.id).values(address=address)
                )
        for agent in settings.agents:
            email = agent.email.lower()
            person = session.execute(_AGENT_ROWS.where(contacts.c.email == email)).first()
            if person is None:
                session.execute(insert(contacts).values(email=email, name=agent.name, role=AGENT))
                continue
            values: dict[str, str] = {}
            if person.role != AGENT:
                values["role"] = AGENT
            if agent.name and person.name != agent.name:
                values["name"] = agent.name
            if values:
                session.execute(update(contacts).where(contacts.c.email == email).values(**values))
    return ids


def _config_ids(db: Database, settings: Settings) -> dict[str, int] | None:
    """Mailbox name -> id when the database already says what the config says, else None."""
    boxes = {box.name: box.address.lower() for box in settings.mailboxes}
    agents = {agent.email.lower(): agent.name for agent in settings.agents}
    mailboxes, contacts = table_of(Mailbox), table_of(Contact)
    with db.read_session() as session:
        conn = session.connection()
        # (An empty IN list is valid here: SQLAlchemy renders it as a false condition.)
        stored = {
            r.name: r for r in conn.execute(_MAILBOX_ROWS.where(mailboxes.c.name.in_(list(boxes))))
        }
        people = {
            r.email: r for r in conn.execute(_AGENT_ROWS.where(contacts.c.email.in_(list(agents))))
        }
    for name, address in boxes.items():
        box_row = stored.get(name)
        if box_row is None or box_row.address != address:
            return None
    for email, agent_name in agents.items():
        person = people.get(email)
        if person is None or person.role != AGENT or (agent_name and person.name != agent_name):
            return None
    return {name: stored[name].id for name in boxes}


MAX_BACKOFF = 900.0
# Until READY, each sign of progress asks systemd for this much more start-up time.
START_EXTEND_USEC = 120_000_000
START_BEAT = 20.0
# The sleep between passes wakes at least this often (watchdog, signals).
MAX_SLICE = 5.0
# Scheduled retraining cannot report progress; the watchdog is fed for it this long.
RETRAIN_KEEPALIVE = 3600.0
# On the way out, watchers get this long in all to end IDLE and log out.
WATCHER_STOP_SECONDS = 5.0
# In watcher mode a pass files mail for at most this long before it sends what is queued
# and checks SLA timers; a larger backlog goes on in the passes that follow at once. So
# a first sync of 50,000 messages, or mail arriving faster than it is filed, never holds
# acknowledgements, agents' replies and SLA alerts back for longer than this.
PASS_PROCESSING_SECONDS = 30.0


class Service:
    """Fetch and process, once or on a schedule.

    In sequential passes (`run_once`), a mailbox that fails (server down, wrong
    password) is skipped for a while before the next attempt: the wait doubles from one
    poll interval up to 15 minutes, and resets on the first success. The other mailboxes
    are polled as usual meanwhile. The mailbox threads of `run_forever` have their own
    back-off with jitter (postdesk/watch.py). Either way a refused login is reported
    once (an ERROR line, and a mail to `[notify] operators`) until the mailbox recovers.

    `clock` paces the back-off (monotonic seconds); `now` is the wall-clock time the SLA
    clocks are read at and the outbox sends by (tests move it to reach due times).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.now = now
        self._alerts: SlaAlerts | None = None
        self.owner = make_owner()
        self._stop = threading.Event()
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        # Kept from pass to pass, so that the active models are loaded once.
        self.triage = TriageStep(ActiveTriage(settings))
        self._notify: list[Step] | None = None  # the steps that write mail, once built
        self._retrain_failed_at: float | None = None
        # What parsing one message may cost (None: in-process, no budget).
        self.budget: Budget | None = parse_budget(settings)
        # Service manager notifications (a no-op one unless `run_forever` gets one).
        self.notifier = Notifier(None)
        self._ready = False
        self._last_beat = 0.0
        self._reload = False
        self._wake = threading.Event()  # cuts the sleep between passes short
        # Watcher mode (`run` without --once): one thread per mailbox fetches; the main
        # loop processes. What the watchers did since the last pass is collected here.
        self._watchers: list[MailboxWatcher] = []
        self._watch_stop = threading.Event()
        self._lock = threading.Lock()
        self._collected = PassResult()
        self._reported: set[str] = set()  # mailboxes that have synced or failed once
        self._pass_saw_all = False
        self._auth_reported: set[str] = set()  # login refusals reported, until recovery
        # Failed attempts per mailbox since its last sync (kept across a reload, which
        # restarts the watchers, so the fix a reload brings still logs "recovered").
        self._watch_failures: dict[str, int] = {}

    def stop(self) -> None:
        """Ask the service to finish the message in hand and return."""
        self._stop.set()
        self._watch_stop.set()
        self._wake.set()

    def stopping(self) -> bool:
        """Whether to stop; asked between messages, so it also keeps the watchdog fed."""
        self.heartbeat()
        return self._stop.is_set()

    def request_reload(self) -> None:
        """Re-read the config file before the next pass (SIGHUP)."""
        self._reload = True
        self._wake.set()

    def heartbeat(self) -> None:
        """Tell systemd the loop is alive: WATCHDOG=1 every half watchdog interval once
        READY, EXTEND_TIMEOUT_USEC before it. Cheap enough to call per message."""
        notifier = self.notifier
        if not notifier.enabled:
            return
        now = time.monotonic()
        if self._ready:
            every = notifier.watchdog_interval
            if every is None or now - self._last_beat < every:
                return
            self._last_beat = now
            notifier.watchdog()
        elif now - self._last_beat >= START_BEAT:
            self._last_beat = now
            notifier.send(extend_timeout_usec=START_EXTEND_USEC)

    def reload_config(self) -> bool:
        """Re-read the config file. On an error the running config stays and one line
        says why. `database.url` is not switched while running (open transactions and
        leases belong to the old one): a change is logged and needs a restart."""
        path = self.settings.path
        try:
            new = load_settings(path)
            if not new.mailboxes:
                raise ConfigError(str(path), "mailbox", "no [[mailbox]] configured")
            # Built now, so that a broken template override is refused here rather
            # than failing every pass after the reload.
            notify = notify_steps(new)
        except PostdeskError as exc:
            log.error("reload: keeping the running config: %s", " ".join(str(exc).split()))
            return False
        if new.database.url != self.settings.database.url:
            log.warning("reload: database.url changed; restart postdesk to use the new database")
            new = replace(new, database=self.settings.database)
        from postdesk.logs import add_secrets, secrets_of

        add_secrets(secrets_of(new))  # the old ones stay masked too
        names = {box.name for box in new.mailboxes}
        for table in (self._failures, self._retry_at):
            for name in [n for n in table if n not in names]:
                del table[name]
        # A reload usually follows a fix (a password, a password file, a host): every
        # failing mailbox is tried at the next pass instead of at the end of its
        # back-off; one still failing starts a longer back-off from there.
        self._retry_at.clear()
        self.settings = new
        self.triage = TriageStep(ActiveTriage(new))
        self._notify = notify
        self._alerts = None
        log.info(
            "reloaded %s: %d mailbox(es): %s",
            path,
            len(new.mailboxes),
            ", ".join(box.name for box in new.mailboxes),
        )
        return True

    def processor(self) -> Processor:
        """A processor running the pipeline's steps, with the models active now."""
        self.triage.refresh()
        if self._notify is None:
            # Built at the first pass, not with the service: commands that never
            # process mail must not fail on a broken template override.
            self._notify = notify_steps(self.settings)
        pipeline = steps(self.settings, triage=self.triage, notify=self._notify, budget=self.budget)
        return Processor(
            self.db,
            pipeline,
            should_stop=self.stopping,
            max_attempts=self.settings.processing.max_attempts,
        )

    def retrain_if_due(self) -> None:
        """Scheduled retraining (`[triage] retrain_interval_hours`), between passes.

        Trains on the labels people gave; a new model becomes active only if it is not
        worse than the active one. A failure is logged and tried again an interval later.
        """
        hours = self.settings.triage.retrain_interval_hours
        if hours <= 0:
            return
        if (
            self._retrain_failed_at is not None
            and self._clock() - self._retrain_failed_at < hours * 3600
        ):
            return
        from postdesk.classify.promotion import retrain_due, retrain_from_db

        if not retrain_due(self.settings, self.now()):
            return
        log.info("triage: scheduled retraining from the labelled tickets")
        try:
            with self._keepalive(RETRAIN_KEEPALIVE):
                outcomes = retrain_from_db(self.settings, self.db, n_jobs=1)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            self._retrain_failed_at = self._clock()
            log.error("triage: scheduled retraining failed: %s", " ".join(str(exc).split()))
            return
        self._retrain_failed_at = None
        for outcome in outcomes:
            if outcome.registration is not None:
                log.info("triage: %s: %s", outcome.target, outcome.registration.reason)
            else:
                log.info("triage: %s not retrained: %s", outcome.target, outcome.skipped)

    @contextmanager
    def _keepalive(self, limit: float) -> Iterator[None]:
        """Feed the watchdog from a helper thread for at most `limit` seconds while the
        loop runs something that cannot report progress (model training): a slow
        retrain is not a hang, but one running past `limit` lets systemd restart us."""
        every = self.notifier.watchdog_interval
        if every is None or not self._ready:
            yield
            return
        done = threading.Event()
        until = time.monotonic() + limit

        def ping() -> None:
            while not done.wait(every) and time.monotonic() < until:
                self.notifier.watchdog()

        thread = threading.Thread(target=ping, name="postdesk-keepalive", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def fetch_mailbox(self, box: MailboxSettings, mailbox_id: int) -> FetchResult:
        fetcher = FolderFetcher(
            self.db,
            box,
            mailbox_id,
            owner=self.owner,
            should_stop=self.stopping,
            limits=self.settings.limits,
        )
        with ImapSource(box) as source:
            return fetcher.run(source)

    def run_once(
        self, *, fetch: bool = True, process_time_limit: float | None = None
    ) -> PassResult:
        """One pass: fetch every mailbox (unless `fetch` is false), then process (for at
        most `process_time_limit` seconds, if given: see Processor.run), then SLA alerts
        and the outbox."""
        result = PassResult()
        if self.budget is not None:
            warm_up(self.budget)  # the parse worker starts while mailboxes are fetched
        ids = sync_config(self.db, self.settings)
        if fetch:
            for box in self.settings.mailboxes:
                if self.stopping():
                    break
                if self._clock() < self._retry_at.get(box.name, 0.0):
                    continue
                try:
                    fetched = self.fetch_mailbox(box, ids[box.name])
                except MailboxError as exc:
                    self._mailbox_failed(
                        box,
                        ids[box.name],
                        str(exc),
                        result,
                        auth=isinstance(exc, MailboxLoginError),
                    )
                    continue
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    # A bug or a database problem in one mailbox's pass must not keep
                    # the others from being polled, nor stored mail from being processed.
                    log.debug("mailbox %s: traceback", box.name, exc_info=True)
                    detail = " ".join(str(exc).split())[:500]
                    message = f"mailbox {box.name!r}: unexpected {type(exc).__name__}: {detail}"
                    self._mailbox_failed(box, ids[box.name], message, result)
                    continue
                failed_before = self._failures.pop(box.name, 0)
                self._retry_at.pop(box.name, None)
                self._auth_reported.discard(box.name)
                result.fetches.append(fetched)
                if failed_before:
                    log.info(
                        "mailbox %s: recovered after %d failed attempt(s)",
                        box.name,
                        failed_before,
                        extra={"mailbox": box.name, "event": "recovered"},
                    )
                log.debug(
                    "mailbox %s: %d new, %d already stored",
                    box.name,
                    fetched.stored,
                    fetched.duplicates,
                    extra={"mailbox": box.name},
                )
        if fetch:
            pause_point("fetched")
        result.processed = self.processor().run(time_limit=process_time_limit)
        if self.settings.smtp is not None and self.settings.sla is not None and not self.stopping():
            result.sla = self.sla_alerts().check(self.now())
        if self.settings.smtp is not None and not self.stopping():
            result.outbox = self.outbox_sender().drain()
        return result

    def sla_alerts(self) -> SlaAlerts:
        """The SLA alert checker, kept from pass to pass (it remembers quiet tickets)."""
        if self._alerts is None:
            templates = Templates(self.settings.notify.templates_dir)
            templates.check()
            tokens = ReplyTokens(load_key(self.settings))
            self._alerts = SlaAlerts(self.settings, self.db, templates, tokens)
        return self._alerts

    def outbox_sender(self) -> OutboxSender:
        """The sender that drains the outbox through the configured SMTP relay."""
        if self.settings.smtp is None:
            raise ConfigError(str(self.settings.path), "smtp", "is needed to send mail; add [smtp]")
        outbox = self.settings.outbox
        return OutboxSender(
            self.db,
            self.settings.smtp,
            owner=self.owner,
            retry_for=timedelta(hours=outbox.retry_hours),
            batch_size=outbox.batch_size,
            should_stop=self.stopping,
            clock=self.now,
        )

    def _mailbox_failed(
        self,
        box: MailboxSettings,
        mailbox_id: int,
        message: str,
        result: PassResult,
        *,
        auth: bool = False,
    ) -> None:
        result.errors[box.name] = message
        self._report_failure(box, mailbox_id, message, self._backoff(box.name), auth)

    def _report_failure(
        self, box: MailboxSettings, mailbox_id: int, message: str, wait: float, auth: bool
    ) -> None:
        """Log and record a mailbox failure. A refused login is logged at ERROR and
        mailed to `[notify] operators` once, until the mailbox recovers; its retries are
        logged at DEBUG only. Every other failure is an ERROR line per attempt."""
        if auth and box.name in self._auth_reported:
            log.debug("%s (still; next try in %.0f s)", message, wait)
        else:
            log.error(
                "%s (next try in %.0f s)",
                message,
                wait,
                extra={"mailbox": box.name, "event": "mailbox_failed"},
            )
            if auth:
                self._auth_reported.add(box.name)
                self._mail_operators(box, message)
        try:
            retry_at = self.now() + timedelta(seconds=wait)
            record_failure(self.db, mailbox_id, box.folder, message, retry_at=retry_at)
        except SQLAlchemyError as exc:
            log.error("mailbox %s: could not record the failure: %s", box.name, exc)

    def _mail_operators(self, box: MailboxSettings, message: str) -> None:
        """Queue one plain-text mail to `[notify] operators` saying that `box` cannot
        log in. Nothing without operators; without [smtp] it is queued all the same
        and one line says it cannot be sent."""
        operators = self.settings.notify.operators
        if not operators:
            return
        from email.message import EmailMessage
        from email.utils import make_msgid

        from postdesk.notify.outbox import enqueue

        mail = EmailMessage()
        mail["From"] = box.address
        mail["To"] = ", ".join(operators)
        mail["Subject"] = f"[postdesk] cannot log in to mailbox {box.name}"
        mail["Message-ID"] = make_msgid(domain=box.address.rpartition("@")[2] or None)
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(
            f"postdesk cannot log in to the mailbox {box.name!r} ({box.address}):\n\n"
            f"    {message}\n\n"
            "Mail to this mailbox is not being fetched. postdesk keeps retrying with a\n"
            "growing wait. Fix the credentials in the config (or the password file), then\n"
            "reload the service (systemctl reload postdesk, or SIGHUP). You get this\n"
            "mail once; the log says when the mailbox has recovered.\n"
        )
        try:
            with self.db.transaction() as session:
                enqueue(session.connection(), mail, kind="operator", automatic=True)
        except (PostdeskError, SQLAlchemyError) as exc:
            log.error("mailbox %s: could not queue the mail to operators: %s", box.name, exc)
            return
        if self.settings.smtp is None:
            log.warning("mailbox %s: operators' mail queued, but no [smtp] to send it", box.name)

    def _watcher_stored(self, count: int) -> None:
        """A watcher committed a batch of new mail in the middle of its fetch: process it
        now rather than after the whole backlog (the pass that follows picks it up)."""
        self._wake.set()

    def _watcher_fetched(self, fetched: FetchResult) -> None:
        with self._lock:
            self._collected.fetches.append(fetched)
            self._collected.errors.pop(fetched.mailbox, None)
            self._reported.add(fetched.mailbox)
        log.debug(
            "mailbox %s: %d new message(s) stored",
            fetched.mailbox,
            fetched.stored,
            extra={"mailbox": fetched.mailbox},
        )
        with self._lock:
            failures = self._watch_failures.pop(fetched.mailbox, 0)
        if failures:
            self._auth_reported.discard(fetched.mailbox)
            log.info(
                "mailbox %s: recovered after %d failed attempt(s)",
                fetched.mailbox,
                failures,
                extra={"mailbox": fetched.mailbox, "event": "recovered"},
            )
        if fetched.stored or not self._ready:
            self._wake.set()

    def _watcher_failed(
        self, box: MailboxSettings, mailbox_id: int, message: str, wait: float, auth: bool
    ) -> None:
        with self._lock:
            self._collected.errors[box.name] = message
            self._reported.add(box.name)
            self._watch_failures[box.name] = self._watch_failures.get(box.name, 0) + 1
        self._report_failure(box, mailbox_id, message, wait, auth)
        if not self._ready:
            self._wake.set()

    def start_watchers(self) -> None:
        """One watcher thread per configured mailbox (postdesk/watch.py)."""
        ids = sync_config(self.db, self.settings)
        self._watch_stop = threading.Event()
        if self._stop.is_set():
            self._watch_stop.set()
        self._reported = set()
        with self._lock:
            for name in [n for n in self._watch_failures if n not in ids]:
                del self._watch_failures[name]
        self._watchers = [
            MailboxWatcher(
                self.db,
                box,
                ids[box.name],
                owner=self.owner,
                poll_interval=self.settings.run.poll_interval,
                limits=self.settings.limits,
                stop=self._watch_stop,
                on_fetched=self._watcher_fetched,
                on_failure=self._watcher_failed,
                on_stored=self._watcher_stored,
            )
            for box in self.settings.mailboxes
        ]
        for watcher in self._watchers:
            watcher.start()

    def stop_watchers(self, timeout: float = WATCHER_STOP_SECONDS) -> None:
        """Ask every watcher to end IDLE and log out; wait at most `timeout` seconds in
        all. One stuck in a server call is left behind (a daemon thread, it cannot keep
        the process alive; its socket times out) and named in the log."""
        self._watch_stop.set()
        end = time.monotonic() + timeout
        for watcher in self._watchers:
            if not watcher.join(max(0.0, end - time.monotonic())):
                log.warning(
                    "mailbox %s: still waiting for the server; not waiting for it",
                    watcher.box.name,
                )
        self._watchers = []

    def _take_collected(self) -> PassResult:
        with self._lock:
            # READY follows a pass whose start had every mailbox's first outcome in.
            self._pass_saw_all = all(b.name in self._reported for b in self.settings.mailboxes)
            collected, self._collected = self._collected, PassResult()
        return collected

    def _watched_pass(self) -> PassResult:
        """A pass in watcher mode: the watchers fetched; process, alerts, outbox."""
        collected = self._take_collected()
        result = self.run_once(fetch=False, process_time_limit=PASS_PROCESSING_SECONDS)
        if result.processed.more_pending:
            self._wake.set()  # the next pass follows at once, after alerts and outbox
        result.fetches = collected.fetches
        result.errors = collected.errors
        return result

    def _backoff(self, name: str) -> float:
        failures = self._failures.get(name, 0) + 1
        self._failures[name] = failures
        interval = max(self.settings.run.poll_interval, 1.0)
        wait = min(interval * (1 << min(failures - 1, 20)), MAX_BACKOFF)
        self._retry_at[name] = self._clock() + wait
        return wait

    def run_forever(
        self,
        on_pass: Callable[[PassResult], None] | None = None,
        *,
        once: bool = False,
        notifier: Notifier | None = None,
    ) -> PassResult | None:
        """Pass after pass until stop() (SIGTERM/SIGINT through `signals_stop`).

        `once`: exactly one iteration of the same loop (`run --once`), and a database
        outage raises instead of being waited out. Returns the last pass's result (None
        if no pass completed).
        """
        self.notifier = notifier if notifier is not None else Notifier(None)
        outages = 0
        last: PassResult | None = None
        watching = False
        try:
            while not self.stopping():
                if self._reload:
                    self._reload = False
                    self.notifier.reloading()
                    if self.reload_config() and watching:
                        self.stop_watchers()
                        watching = False
                    self.notifier.ready(self._status(last))
                self._wake.clear()
                interval = self.settings.run.poll_interval
                started = time.monotonic()
                try:
                    if not once and not watching:
                        self.start_watchers()
                        watching = True
                    outcome = self._watched_pass() if watching else self.run_once()
                except SQLAlchemyError as exc:
                    if once:
                        raise
                    # The database is down or unreachable: nothing can be stored, so wait
                    # and try again rather than exit (mail stays safe on the server).
                    outages += 1
                    wait = min(interval * (1 << min(outages - 1, 20)), MAX_BACKOFF)
                    reason = describe_error(exc)
                    log.error(
                        "database unavailable (%s); next pass in %.0f s",
                        reason,
                        wait,
                        extra={"event": "database_unavailable"},
                    )
                    self._mark_ready(f"database unavailable, retrying in {wait:.0f} s")
                    self._sleep(wait)
                    continue
                if outages:
                    log.info(
                        "database reachable again after %d failed pass(es)",
                        outages,
                        extra={"event": "recovered"},
                    )
                outages = 0
                last = outcome
                self._log_pass(outcome, time.monotonic() - started)
                if not watching or self._ready or self._pass_saw_all:
                    self._mark_ready(self._status(outcome))
                # else: READY waits until every mailbox has synced once or failed, while
                # the mail of those that did is processed meanwhile (heartbeat() keeps
                # extending the start timeout).
                if on_pass is not None:
                    on_pass(outcome)
                if once:
                    break
                if not self.stopping():
                    self.retrain_if_due()
                self._sleep(interval)
        finally:
            self.notifier.stopping("stopping: finishing the message in hand")
            if watching:
                self.stop_watchers()
        return last

    def _mark_ready(self, status: str) -> None:
        if not self._ready:
            self._ready = True
            self._last_beat = time.monotonic()
            self.notifier.ready(status)
            self.notifier.watchdog()
        else:
            self.notifier.status(status)

    def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, waking in slices to feed the watchdog; stop(), a reload
        request and a watcher that stored mail end the wait early."""
        end = time.monotonic() + seconds
        every = self.notifier.watchdog_interval
        # Twice per ping interval, so a ping is never late by a whole slice.
        slice_ = min(MAX_SLICE, every / 2) if every else MAX_SLICE
        while not self.stopping() and not self._reload:
            left = end - time.monotonic()
            if left <= 0:
                break
            if self._wake.wait(min(left, slice_)):
                break  # stop, reload, or (watcher mode) new mail stored

    def _log_pass(self, outcome: PassResult, seconds: float) -> None:
        """The summary line of a pass (per-message lines are at DEBUG)."""
        p = outcome.processed
        sent = outcome.outbox
        counts: dict[str, int] = {
            "fetched": sum(f.fetched for f in outcome.fetches),
            "stored": sum(f.stored for f in outcome.fetches),
            "duplicates": sum(f.duplicates for f in outcome.fetches),
            "processed": p.processed,
            "tickets_opened": p.created,
            "appended": p.appended,
            "quarantined": p.quarantined,
            "sent": sent.sent if sent is not None else 0,
            "send_failed": (sent.failed if sent is not None else 0),
            "sla_alerts": outcome.sla.alerts if outcome.sla is not None else 0,
        }
        failed = sorted(outcome.errors)
        # In watcher mode a mailbox thread may fetch several times during one long pass
        # (a first pass that loads the models, a large backlog): a mailbox counts once.
        synced = list(dict.fromkeys(f.mailbox for f in outcome.fetches))
        log.info(
            "pass: %d mailbox(es) synced, %d failed%s; fetched %d, stored %d, processed %d "
            "(%d new tickets, %d added), quarantined %d, sent %d; %.2f s",
            len(synced),
            len(failed),
            f" ({', '.join(failed)})" if failed else "",
            counts["fetched"],
            counts["stored"],
            counts["processed"],
            counts["tickets_opened"],
            counts["appended"],
            counts["quarantined"],
            counts["sent"],
            seconds,
            extra={
                "event": "pass",
                **counts,
                "mailboxes_synced": synced,
                "mailboxes_failed": failed,
                "duration_s": round(seconds, 3),
            },
        )

    def _status(self, outcome: PassResult | None) -> str:
        """A short STATUS= line for `systemctl status`."""
        if outcome is None:
            return "waiting for the first pass"
        boxes = len(self.settings.mailboxes)
        failing = sorted(outcome.errors)
        if self._watchers:
            # A pass lists only what the mailbox threads did since the last one; the
            # status says which mailboxes are failing now.
            with self._lock:
                failing = sorted(self._watch_failures)
            ok = boxes - len(failing)
        else:
            ok = len(outcome.fetches)
        text = f"{ok}/{boxes} mailbox(es) synced, {outcome.processed.processed} processed"
        if failing:
            text += f"; failing: {', '.join(failing)}"
        return text


@contextmanager
def signals_stop(service: Service, *, reload: bool = False) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT ask `service` to stop instead of killing it;
    with `reload`, SIGHUP asks it to re-read its config before the next pass."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, finishing the current message", signal.Signals(signum).name)
        service.stop()

    def hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP, reloading the config before the next pass")
        service.request_reload()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    if reload:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class ImportResult:
    """What `postdesk import` did.

    `interrupted`: stopped early (SIGINT/SIGTERM); `pending` messages were then stored but
    not processed, and reading may have stopped before the end of the source. Running the
    same import again stores nothing twice and finishes both.
    """

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    too_large: int = 0  # stored quarantined, over [limits]
    processed: ProcessResult = field(default_factory=ProcessResult)
    interrupted: bool = False
    read_all: bool = False  # the source was read to its end
    pending: int = 0


IMPORT_BATCH = 200
# Processing runs in chunks of this many so that progress can be reported between them.
PROCESS_CHUNK = 100


def import_messages(
    service: Service,
    messages: Iterable[ImportedMessage],
    *,
    mailbox: str | None = None,
    progress: Callable[[int], None] | None = None,
    processing: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Store `messages` (batched, durable commits), then process them oldest first.

    A batch is at most IMPORT_BATCH messages and [limits] import_batch_bytes (a message
    larger than that is a batch of its own).

    Messages are processed in Date-header order so that a thread read out of order on
    disk still opens its ticket with the first message. Anything else left pending is
    processed afterwards. `progress(n)` is called after each stored batch of n;
    `processing(done, total)` before processing starts and after each chunk.
    When the service is asked to stop, storing and processing stop at the next message
    boundary and the result says what is left.
    """
    db = service.db
    ids = sync_config(db, service.settings)
    mailbox_id = ids[service.settings.mailbox(mailbox).name] if mailbox else None
    result = ImportResult()
    raw_ids: list[int] = []
    batch: list[ImportedMessage] = []

    def flush() -> None:
        with db.transaction(durable=True) as session:
            outcomes = store_many(
                session,
                [Incoming(item.raw, item.origin) for item in batch],
                source=IMPORT,
                mailbox_id=mailbox_id,
                limits=service.settings.limits,
            )
        for stored in outcomes:
            raw_ids.append(stored.raw_id)
            if stored.too_large is not None:
                result.too_large += 1
            if stored.new:
                result.stored += 1
            else:
                result.duplicates += 1
        if progress is not None:
            progress(len(batch))
        batch.clear()

    batch_bytes = 0
    cap = service.settings.limits.import_batch_bytes
    for item in messages:
        result.read += 1
        if batch and batch_bytes + len(item.raw) > cap:
            flush()
            batch_bytes = 0
        batch.append(item)
        batch_bytes += len(item.raw)
        if len(batch) >= IMPORT_BATCH:
            flush()
            batch_bytes = 0
        if service.stopping():
            break
    else:
        result.read_all = True
    if batch:
        flush()
    ordered = _in_date_order(db, raw_ids)
    processor = service.processor()
    if processing is not None:
        processing(0, len(ordered))
    for start in range(0, len(ordered), PROCESS_CHUNK):
        if service.stopping():
            break
        result.processed.add(processor.run_ids(ordered[start : start + PROCESS_CHUNK]))
        if processing is not None:
            processing(min(start + PROCESS_CHUNK, len(ordered)), len(ordered))
    if not service.stopping():
        result.processed.add(processor.run())
    result.interrupted = service.stopping()
    with db.read_session() as session:
        result.pending = session.execute(
            select(func.count())
            .select_from(RawMessage)
            .where(RawMessage.status == RawStatus.PENDING)
        ).scalar_one()
    return result


def count_import(db: Database, messages: Iterable[ImportedMessage]) -> ImportResult:
    """What importing `messages` would store, writing nothing (`import --dry-run`).

    `stored` counts the messages the raw store would take as new, `duplicates` those it
    holds already or that repeat an earlier one of `messages`: the same dedupe key the
    store uses decides.
    """
    result = ImportResult()
    seen: set[str] = set()
    batch: list[str] = []

    def check() -> None:
        with db.read_session() as session:
            known = set(
                session.execute(
                    select(RawMessage.dedupe_key).where(RawMessage.dedupe_key.in_(batch))
                ).scalars()
            )
        result.duplicates += sum(1 for key in batch if key in known)
        result.stored += sum(1 for key in batch if key not in known)
        batch.clear()

    for item in messages:
        result.read += 1
        key = dedupe_key(header_summary(item.raw))
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        batch.append(key)
        if len(batch) >= IMPORT_BATCH:
            check()
    if batch:
        check()
    return result


def _in_date_order(db: Database, raw_ids: list[int]) -> list[int]:
    wanted = set(raw_ids)
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.id)
            .where(RawMessage.status == RawStatus.PENDING)
            .order_by(func.coalesce(RawMessage.header_date, RawMessage.received_at), RawMessage.id)
        ).scalars()
        return [raw_id for raw_id in rows if raw_id in wanted]
