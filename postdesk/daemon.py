"""The long-running service: poll every mailbox, then turn what arrived into tickets.

One *pass* is: for each configured mailbox, fetch new mail into the raw store (each
mailbox isolated: a failing server is logged and recorded, the others go on), then run
every pending raw message through the processing steps, then check the SLA clocks (the
alerts, postdesk/sla/alerts.py) and send the outbox. `run --once` is one pass;
`run` repeats passes every `run.poll_interval` seconds until SIGTERM/SIGINT, finishing the
message in hand before it exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from postdesk.classify.step import ActiveTriage, TriageStep
from postdesk.config import MailboxSettings, Settings
from postdesk.errors import ConfigError, MailboxError
from postdesk.ingest.fetch import FetchResult, FolderFetcher, record_failure
from postdesk.ingest.imap import ImapSource
from postdesk.ingest.lease import make_owner
from postdesk.ingest.parse import header_summary
from postdesk.ingest.process import Processor, ProcessResult, Step
from postdesk.ingest.sources import ImportedMessage
from postdesk.ingest.store import IMPORT, Incoming, dedupe_key, store_many
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.ingest.worker import Budget
from postdesk.models import Contact, Mailbox, RawMessage, RawStatus, utcnow
from postdesk.models.db import Database, describe_error
from postdesk.models.tickets import AGENT
from postdesk.notify.smtp import DrainResult, OutboxSender
from postdesk.notify.templates import Templates
from postdesk.pausepoints import pause_point
from postdesk.pipeline import notify_steps, parse_budget, steps
from postdesk.sla.alerts import AlertResult, SlaAlerts

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What one pass did over all mailboxes."""

    fetches: list[FetchResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    processed: ProcessResult = field(default_factory=ProcessResult)
    outbox: DrainResult | None = None  # None when no [smtp] is configured
    sla: AlertResult | None = None  # None without [sla] and [smtp]


def sync_config(db: Database, settings: Settings) -> dict[str, int]:
    """Make the mailboxes and agents of the config exist in the database.

    Mailbox rows are never deleted when a mailbox leaves the config, so tickets keep
    pointing at where they came from. Returns mailbox name -> id.
    """
    ids: dict[str, int] = {}
    with db.transaction() as session:
        for box in settings.mailboxes:
            row = session.execute(
                select(Mailbox).where(Mailbox.name == box.name)
            ).scalar_one_or_none()
            if row is None:
                row = Mailbox(name=box.name, address=box.address.lower())
                session.add(row)
                session.flush()
            elif row.address != box.address.lower():
                row.address = box.address.lower()
            ids[box.name] = row.id
        for agent in settings.agents:
            email = agent.email.lower()
            contact = session.execute(
                select(Contact).where(Contact.email == email)
            ).scalar_one_or_none()
            if contact is None:
                session.add(Contact(email=email, name=agent.name, role=AGENT))
            else:
                contact.role = AGENT
                if agent.name:
                    contact.name = agent.name
    return ids


MAX_BACKOFF = 900.0


class Service:
    """Fetch and process, once or on a schedule.

    A mailbox that fails (server down, wrong password) is skipped for a while before
    the next attempt: the wait doubles from one poll interval up to 15 minutes, and
    resets on the first success. The other mailboxes are polled as usual meanwhile.

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

    def stop(self) -> None:
        """Ask the service to finish the message in hand and return."""
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

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

    def fetch_mailbox(self, box: MailboxSettings, mailbox_id: int) -> FetchResult:
        fetcher = FolderFetcher(
            self.db, box, mailbox_id, owner=self.owner, should_stop=self.stopping
        )
        with ImapSource(box) as source:
            return fetcher.run(source)

    def run_once(self, *, fetch: bool = True) -> PassResult:
        """One pass: fetch every mailbox (unless `fetch` is false), then process."""
        result = PassResult()
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
                    self._mailbox_failed(box, ids[box.name], str(exc), result)
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
                self._failures.pop(box.name, None)
                self._retry_at.pop(box.name, None)
                result.fetches.append(fetched)
                log.info(
                    "mailbox %s: %d new, %d already stored",
                    box.name,
                    fetched.stored,
                    fetched.duplicates,
                )
        if fetch:
            pause_point("fetched")
        result.processed = self.processor().run()
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
        self, box: MailboxSettings, mailbox_id: int, message: str, result: PassResult
    ) -> None:
        result.errors[box.name] = message
        wait = self._backoff(box.name)
        log.error("%s (next try in %.0f s)", message, wait)
        try:
            retry_at = self.now() + timedelta(seconds=wait)
            record_failure(self.db, mailbox_id, box.folder, message, retry_at=retry_at)
        except SQLAlchemyError as exc:
            log.error("mailbox %s: could not record the failure: %s", box.name, exc)

    def _backoff(self, name: str) -> float:
        failures = self._failures.get(name, 0) + 1
        self._failures[name] = failures
        interval = max(self.settings.run.poll_interval, 1.0)
        wait = min(interval * (1 << min(failures - 1, 20)), MAX_BACKOFF)
        self._retry_at[name] = self._clock() + wait
        return wait

    def run_forever(self, on_pass: Callable[[PassResult], None] | None = None) -> None:
        """Pass after pass until stop() (SIGTERM/SIGINT through `signals_stop`)."""
        interval = self.settings.run.poll_interval
        outages = 0
        while not self.stopping():
            try:
                outcome = self.run_once()
            except SQLAlchemyError as exc:
                # The database is down or unreachable: nothing can be stored, so wait
                # and try again rather than exit (mail stays safe on the server).
                outages += 1
                wait = min(interval * (1 << min(outages - 1, 20)), MAX_BACKOFF)
                log.error(
                    "database unavailable (%s); next pass in %.0f s", describe_error(exc), wait
                )
                self._stop.wait(wait)
                continue
            outages = 0
            if on_pass is not None:
                on_pass(outcome)
            if not self.stopping():
                self.retrain_if_due()
            self._stop.wait(interval)


@contextmanager
def signals_stop(service: Service) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT ask `service` to stop instead of killing it."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, finishing the current message", signal.Signals(signum).name)
        service.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
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
            )
        for stored in outcomes:
            raw_ids.append(stored.raw_id)
            if stored.new:
                result.stored += 1
            else:
                result.duplicates += 1
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for item in messages:
        result.read += 1
        batch.append(item)
        if len(batch) >= IMPORT_BATCH:
            flush()
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
