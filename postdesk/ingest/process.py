"""Turn stored raw messages into tickets: a pipeline of small steps, all or nothing.

The Processor owns the loop and the transactions; each step does one thing to a typed
work item and either returns or raises. Steps read and write through the item's
connection with SQLAlchemy Core statements built once, from the models' tables: this path
runs for every message, and building ORM objects and statements per message used to cost
most of its time.

Messages are processed in batches (up to 50 messages, 8 MiB or 0.25 s), one transaction
per batch and one savepoint per message: what one message does is kept or undone as a
whole, and a message whose steps raise is rolled back to its savepoint and set aside as
quarantined with a one-line reason (never dropped, never retried forever) while the rest
of the batch goes on; `postdesk inbound retry` replays it. A batch costs one claim and
one commit instead of one per message. Database outages are not the message's fault and
stop the pass instead, so the batch is tried again on the next one.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, overload

from sqlalchemy import Connection, bindparam, case, exists, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError

from postdesk.errors import PostdeskError
from postdesk.ingest.attachments import AttachmentStore
from postdesk.ingest.automatic import KindOfMail, kind_of_mail
from postdesk.ingest.parse import Address, ParsedMessage, parse_message
from postdesk.ingest.quotes import visible_text
from postdesk.ingest.sender import Sender, get_or_create_contact, sender_address
from postdesk.ingest.store import IMPORT, MESSAGE_ID_WIDTH, table_of
from postdesk.ingest.threader import (
    DEFAULT_OPTIONS,
    NEW,
    ThreadMatch,
    ThreadOptions,
    find_ticket,
)
from postdesk.ingest.tokens import may_be_ours
from postdesk.models import (
    PENDING,
    PROCESSED,
    QUARANTINED,
    Attachment,
    Contact,
    MailKind,
    Message,
    MessageRef,
    RawMessage,
    Ticket,
    TicketEvent,
    TicketLink,
    UTCDateTime,
    utcnow,
)
from postdesk.models import tickets as ticket_states
from postdesk.models.db import Database
from postdesk.models.tickets import AGENT, FOLLOW_UP, SYSTEM_ACTOR

log = logging.getLogger(__name__)

NO_SUBJECT = "(no subject)"


@dataclass(frozen=True)
class RawInput:
    """The stored message being processed: what the steps may read of its raw row."""

    id: int
    content: bytes
    mailbox_id: int | None
    source: str
    received_at: datetime


@dataclass
class WorkItem:
    """One raw message on its way through the pipeline, and what the steps found.

    `conn` is the message's own transaction: steps read and write through it (Core
    statements on the models' tables) and everything they do commits, or rolls back,
    together.
    """

    conn: Connection
    raw: RawInput
    parsed: ParsedMessage | None = None
    sender: Sender | None = None
    classification: KindOfMail | None = None
    match: ThreadMatch | None = None
    ticket_id: int | None = None
    message_pk: int | None = None
    created_ticket: bool = False

    def need_parsed(self) -> ParsedMessage:
        assert self.parsed is not None, "the parse step runs first"
        return self.parsed

    def need_sender(self) -> Sender:
        assert self.sender is not None, "the sender step runs before this one"
        return self.sender


class Step(Protocol):
    """One stage of processing: a name for logs and quarantine reasons, and the work."""

    name: str

    def __call__(self, item: WorkItem) -> None: ...


class ParseStep:
    """Decode the raw bytes into headers, text and attachments."""

    name = "parse"

    def __call__(self, item: WorkItem) -> None:
        item.parsed = parse_message(item.raw.content)


class SenderStep:
    """Find or create the contact who wrote the message."""

    name = "sender"

    def __init__(self, team_addresses: Collection[str]) -> None:
        self.team_addresses = frozenset(e.lower() for e in team_addresses)

    def __call__(self, item: WorkItem) -> None:
        address = sender_address(item.need_parsed())
        item.sender = get_or_create_contact(item.conn, address, team_addresses=self.team_addresses)


_OUR_MESSAGE = select(
    exists().where(
        table_of(Message).c.message_id == bindparam("message_id"),
        table_of(Message).c.direction == "out",
    )
)


class ClassifyStep:
    """Tell human mail from automatic replies, bounces and our own mail coming back."""

    name = "classify"

    def __init__(self, own_addresses: Collection[str]) -> None:
        self.own_addresses = frozenset(a.lower() for a in own_addresses)

    def __call__(self, item: WorkItem) -> None:
        conn = item.conn

        def ours(message_id: str) -> bool:
            if not may_be_ours(message_id):
                return False  # not an id we make: no query (see tokens.new_message_id)
            return bool(conn.execute(_OUR_MESSAGE, {"message_id": _fit(message_id)}).scalar())

        item.classification = kind_of_mail(
            item.need_parsed(), own_message_ids=ours, own_addresses=self.own_addresses
        )


class ThreadStep:
    """Decide whether the message opens a ticket or continues one."""

    name = "thread"

    def __init__(self, options: ThreadOptions = DEFAULT_OPTIONS) -> None:
        self.options = options

    def __call__(self, item: WorkItem) -> None:
        parsed = item.need_parsed()
        found = item.classification
        item.match = find_ticket(
            item.conn,
            parsed,
            item.need_sender(),
            kind=found.kind if found else MailKind.HUMAN,
            bounced_id=found.original_message_id if found else None,
            arrived=arrival_time(item.raw, parsed),
            options=self.options,
        )


def _addresses(addresses: Sequence[Address]) -> list[dict[str, str]]:
    return [{"email": a.email, "name": a.name} for a in addresses]


_tickets = table_of(Ticket)
_messages = table_of(Message)
_events = table_of(TicketEvent)
_now = bindparam("now", type_=UTCDateTime())
_OPEN_TICKET = insert(_tickets).returning(_tickets.c.id)
# A message may arrive out of order (imports): the ticket's clocks only move forward.
_TOUCH_TICKET = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(
        updated_at=case((_tickets.c.updated_at < _now, _now), else_=_tickets.c.updated_at),
        last_message_at=case(
            (_tickets.c.last_message_at < _now, _now), else_=_tickets.c.last_message_at
        ),
    )
    .returning(_tickets.c.status, _tickets.c.closed_at)
)
_REOPENABLE = (ticket_states.PENDING, ticket_states.SOLVED, ticket_states.CLOSED)
_contacts = table_of(Contact)
_MARK_BOUNCING = (
    update(_contacts)
    .where(_contacts.c.email.in_(bindparam("emails", expanding=True)))
    .values(bouncing_since=_now, bounce_reason=bindparam("reason"))
)
_CLEAR_BOUNCING = (
    update(_contacts)
    .where(_contacts.c.id == bindparam("contact_id"), _contacts.c.bouncing_since.is_not(None))
    .values(bouncing_since=None, bounce_reason=None)
)
_ADD_LINK = insert(table_of(TicketLink))
_REOPEN_TICKET = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(status=ticket_states.OPEN, closed_at=None)
)
_ADD_MESSAGE = insert(_messages).returning(_messages.c.id)
_ADD_REFS = insert(table_of(MessageRef))
_ADD_ATTACHMENTS = insert(table_of(Attachment))
_ADD_EVENTS = insert(_events)


def _event(ticket_id: int, at: datetime, kind: str, actor: str, data: Any) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "at": at, "kind": kind, "actor": actor, "data": data}


# Triage of a new ticket, as the file step uses it: (subject, visible text of the
# customer's first message, sender address) -> (ticket column values, events as
# (kind, data)). Built by the service from the active models (postdesk.classify), so
# that ingestion does not import scikit-learn when no model is in use.
TicketTriage = Callable[[str, str, str], tuple[dict[str, Any], list[tuple[str, Any]]]]


class FileStep:
    """Open the ticket or append to it: the message row, its attachments, the events."""

    name = "file"

    def __init__(
        self,
        attachments: AttachmentStore,
        *,
        closed_after: timedelta = timedelta(days=30),
        triage: TicketTriage | None = None,
    ) -> None:
        self.attachments = attachments
        self.closed_after = closed_after
        self.triage = triage

    def _open(
        self,
        item: WorkItem,
        sender: Sender,
        now: datetime,
        human: bool,
        visible: str,
        events: list[dict[str, Any]],
    ) -> int:
        parsed = item.need_parsed()
        subject = parsed.subject.strip() or NO_SUBJECT
        # Mail nobody has to answer (automatic, bounces, our own) is kept on a ticket that
        # is closed from the start, so it never waits in anyone's queue.
        status = ticket_states.NEW if human else ticket_states.CLOSED
        row: dict[str, Any] = {
            "subject": subject,
            "status": status,
            "requester_id": sender.id,
            "mailbox_id": item.raw.mailbox_id,
            "created_at": now,
            "updated_at": now,
            "last_message_at": now,
            "closed_at": None if human else now,
        }
        triage_events: list[tuple[str, Any]] = []
        if human and self.triage is not None:
            try:
                values, triage_events = self.triage(subject, visible, sender.email)
            except Exception as exc:
                # A model that fails must not keep mail from its ticket: a person sorts it.
                log.warning("raw %d: triage failed, needs triage: %s", item.raw.id, exc)
                values, triage_events = {"needs_triage": True}, []
            row.update(values)
        ticket_id: int = item.conn.execute(_OPEN_TICKET, row).scalar_one()
        events.extend(_event(ticket_id, now, k, SYSTEM_ACTOR, d) for k, d in triage_events)
        item.created_ticket = True
        return ticket_id

    def __call__(self, item: WorkItem) -> None:
        parsed = item.need_parsed()
        sender = item.need_sender()
        match = item.match or ThreadMatch(None, NEW, "no rule ran")
        found = item.classification
        kind = found.kind if found else MailKind.HUMAN
        human = kind == MailKind.HUMAN
        conn = item.conn
        now = arrival_time(item.raw, parsed)
        visible = visible_text(parsed.text, parsed.html)
        events: list[dict[str, Any]] = []
        # Triage events follow the "created" event they belong to.
        opened: list[dict[str, Any]] = []
        if match.ticket_id is not None:
            ticket_id = match.ticket_id
            status, closed_at = conn.execute(
                _TOUCH_TICKET, {"ticket_id": ticket_id, "now": now}
            ).one()
            long_closed = (
                status == ticket_states.CLOSED
                and closed_at is not None
                and now - closed_at > self.closed_after
            )
            if human and long_closed:
                old = ticket_id
                ticket_id = self._open(item, sender, now, human, visible, opened)
                events.append(_event(ticket_id, now, "created", sender.email, {"follow_up": old}))
                conn.execute(
                    _ADD_LINK,
                    {"ticket_id": ticket_id, "other_id": old, "kind": FOLLOW_UP, "created_at": now},
                )
                match = ThreadMatch(
                    None,
                    match.rule,
                    f"{match.reason}; ticket {old} was closed on {closed_at:%Y-%m-%d}, "
                    f"so this opens follow-up ticket {ticket_id}",
                )
            elif human and sender.role != AGENT and status in _REOPENABLE:
                conn.execute(_REOPEN_TICKET, {"ticket_id": ticket_id})
                change = {"from": status, "to": ticket_states.OPEN, "why": "reply"}
                events.append(_event(ticket_id, now, "status", sender.email, change))
        else:
            ticket_id = self._open(item, sender, now, human, visible, opened)
            data = {} if human else {"closed": f"{kind} mail: {found.reason if found else ''}"}
            events.append(_event(ticket_id, now, "created", sender.email, data))
        events.extend(opened)
        item.ticket_id = ticket_id
        if found is not None and found.kind == MailKind.BOUNCE and found.failed_recipients:
            conn.execute(
                _MARK_BOUNCING,
                {"emails": list(found.failed_recipients), "now": now, "reason": found.reason[:500]},
            )
        elif human and sender.bouncing:
            conn.execute(_CLEAR_BOUNCING, {"contact_id": sender.id})

        message_pk: int = conn.execute(
            _ADD_MESSAGE,
            {
                "raw_message_id": item.raw.id,
                "ticket_id": ticket_id,
                "contact_id": sender.id,
                "direction": "in",
                "message_id": _fit(parsed.message_id),
                "in_reply_to": " ".join(parsed.in_reply_to) or None,
                "references": " ".join(parsed.references) or None,
                "subject": parsed.subject,
                "from_email": sender.email,
                "from_name": (parsed.from_.name if parsed.from_ else "") or sender.name,
                "to": _addresses(parsed.to),
                "cc": _addresses(parsed.cc),
                "sent_at": parsed.date,
                "received_at": item.raw.received_at,
                "text": parsed.text,
                "thread_rule": match.rule,
                "thread_reason": match.reason,
                "defects": list(parsed.defects),
                "kind": kind,
                "kind_reason": found.reason if found else "",
                "visible_text": visible,
            },
        ).scalar_one()
        item.message_pk = message_pk
        refs = dict.fromkeys(_fit(r) for r in [*parsed.in_reply_to, *parsed.references])
        if refs:
            conn.execute(
                _ADD_REFS, [{"message_pk": message_pk, "ref_message_id": ref} for ref in refs]
            )
        if parsed.attachments:
            rows = []
            for attachment in parsed.attachments:
                stored = self.attachments.save(attachment.data, attachment.filename)
                rows.append(
                    {
                        "message_pk": message_pk,
                        "filename": attachment.filename,
                        "content_type": attachment.content_type,
                        "size": stored.size,
                        "sha256": stored.sha256,
                        "relpath": stored.relpath,
                        "inline": attachment.inline,
                        "content_id": _fit(attachment.content_id),
                    }
                )
            conn.execute(_ADD_ATTACHMENTS, rows)
        if events:
            conn.execute(_ADD_EVENTS, events)


@overload
def _fit(identifier: str) -> str: ...
@overload
def _fit(identifier: None) -> None: ...
def _fit(identifier: str | None) -> str | None:
    """Cut a Message-ID/Content-ID to the column width (RFC 5322's line limit, 998).

    Longer ones exist only in broken or hostile mail; the cut copy still matches itself.
    """
    return identifier[:MESSAGE_ID_WIDTH] if identifier is not None else None


def arrival_time(raw: RawInput, parsed: ParsedMessage) -> datetime:
    """When the message reached the team, the clock tickets and SLAs run on.

    Fetched mail arrived when postdesk stored it. Imported mail is history: its Date
    header is used, unless missing or in the future (then the import time).
    """
    if raw.source == IMPORT and parsed.date is not None and parsed.date <= raw.received_at:
        return parsed.date
    return raw.received_at


def default_steps(
    *,
    data_dir: Path,
    team_addresses: Collection[str],
    own_addresses: Collection[str] = (),
    threading: ThreadOptions = DEFAULT_OPTIONS,
    closed_after: timedelta = timedelta(days=30),
    triage: TicketTriage | None = None,
) -> list[Step]:
    """The pipeline every inbound message goes through, in order."""
    return [
        ParseStep(),
        ClassifyStep(own_addresses),
        SenderStep(team_addresses),
        ThreadStep(threading),
        FileStep(
            AttachmentStore(data_dir / "attachments"), closed_after=closed_after, triage=triage
        ),
    ]


@dataclass
class ProcessResult:
    """Counts of what a processing pass did."""

    processed: int = 0
    created: int = 0
    appended: int = 0
    quarantined: int = 0
    quarantined_ids: list[int] = field(default_factory=list)

    def add(self, other: ProcessResult) -> None:
        self.processed += other.processed
        self.created += other.created
        self.appended += other.appended
        self.quarantined += other.quarantined
        self.quarantined_ids.extend(other.quarantined_ids)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, PostdeskError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


_raw = table_of(RawMessage)
_claimable = _raw.alias("claimable")
# Claim a pending message and mark it processed, in one statement of the message's own
# transaction. The row lock is taken with SKIP LOCKED, so another instance passes the
# message over instead of waiting, and is held until the transaction ends; if any step
# fails, the whole transaction rolls back, this mark included, and the message is then
# quarantined instead.
_CLAIM = (
    update(_raw)
    .where(
        _raw.c.id
        == select(_claimable.c.id)
        .where(_claimable.c.id == bindparam("raw_id"), _claimable.c.status == PENDING)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(status=PROCESSED, reason=None, attempts=_raw.c.attempts + 1, processed_at=_now)
    .returning(_raw.c.id, _raw.c.content, _raw.c.mailbox_id, _raw.c.source, _raw.c.received_at)
)
# On PostgreSQL the processing connection's commits do not wait for their WAL to reach
# the disk, as on SQLite (synchronous=NORMAL, see models/db.py): the raw message a
# transaction derives from was stored durably, so a crash of the server or the machine can
# only take the last few processed messages back to pending, each all or nothing, and they
# are processed again. Fetch transactions, on other connections, stay durable.
_NO_FLUSH_WAIT = text("SET synchronous_commit TO OFF")
# The batch versions: one statement claims (or gives back) a whole batch; a message
# that fails inside it was claimed (its attempt counted) by that statement.
_CLAIM_MANY = (
    update(_raw)
    .where(
        _raw.c.id.in_(
            select(_claimable.c.id)
            .where(
                _claimable.c.id.in_(bindparam("ids", expanding=True)),
                _claimable.c.status == PENDING,
            )
            .with_for_update(skip_locked=True)
        )
    )
    .values(status=PROCESSED, reason=None, attempts=_raw.c.attempts + 1, processed_at=_now)
    .returning(_raw.c.id, _raw.c.content, _raw.c.mailbox_id, _raw.c.source, _raw.c.received_at)
)
_UNCLAIM = (
    update(_raw)
    .where(_raw.c.id.in_(bindparam("ids", expanding=True)))
    .values(status=PENDING, attempts=_raw.c.attempts - 1, processed_at=None)
)
_SIZES = select(_raw.c.id, _raw.c.size).where(_raw.c.id.in_(bindparam("ids", expanding=True)))
_QUARANTINE_CLAIMED = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"))
    .values(status=QUARANTINED, reason=bindparam("reason"))
)
_QUARANTINE = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"), _raw.c.status == PENDING)
    .values(
        status=QUARANTINED,
        reason=bindparam("reason"),
        attempts=_raw.c.attempts + 1,
        processed_at=_now,
    )
)


class Processor:
    """Runs pending raw messages through the steps, one transaction per message."""

    def __init__(
        self,
        db: Database,
        steps: Sequence[Step],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        batch_size: int = 50,
        batch_bytes: int = 8 * 1024 * 1024,
        batch_seconds: float = 0.25,
    ) -> None:
        self.db = db
        self.steps = list(steps)
        self.should_stop = should_stop
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.batch_seconds = batch_seconds

    def pending_ids(self, *, after: int = 0, limit: int = 500) -> list[int]:
        """The next pending raw message ids in arrival order."""
        with self.db.read_session() as session:
            return list(
                session.execute(
                    select(RawMessage.id)
                    .where(RawMessage.status == PENDING, RawMessage.id > after)
                    .order_by(RawMessage.id)
                    .limit(limit)
                ).scalars()
            )

    def run(self) -> ProcessResult:
        """Process every pending message in arrival order until none is left or asked to stop."""
        result = ProcessResult()
        after = 0
        with self._connection() as conn:
            while not self.should_stop():
                ids = self.pending_ids(after=after)
                if not ids:
                    break
                result.add(self._run(conn, ids))
                after = ids[-1]
        return result

    def run_ids(self, raw_ids: Sequence[int]) -> ProcessResult:
        """Process the given raw messages in the given order (those still pending)."""
        with self._connection() as conn:
            return self._run(conn, raw_ids)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The connection a run works on; every message is still its own transaction on it."""
        with self.db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Closed when the run ends instead of going back to the pool, so that this
                # setting never reaches a transaction that must be durable.
                conn.detach()
                conn.execute(_NO_FLUSH_WAIT)
                conn.commit()
            yield conn

    def _run(self, conn: Connection, raw_ids: Sequence[int]) -> ProcessResult:
        result = ProcessResult()
        done = 0
        while done < len(raw_ids) and not self.should_stop():
            done += self._run_batch(conn, raw_ids[done:], result)
        return result

    def _run_batch(self, conn: Connection, raw_ids: Sequence[int], result: ProcessResult) -> int:
        """Process the first of `raw_ids` in one transaction, each message in a savepoint.

        Returns how many ids were taken. The batch is claimed with one statement (at most
        `batch_size` messages and `batch_bytes` of raw mail, at least one message). A
        message whose steps fail is rolled back to its savepoint and quarantined in the
        same transaction, so it costs the others nothing; when time runs out
        (`batch_seconds`) or the service is asked to stop, the messages not yet begun go
        back to pending before the commit. If the commit itself fails, the batch is rolled
        back and its messages are processed again one transaction each, so that a failure
        still quarantines exactly the message that caused it.
        """
        outcomes: list[WorkItem | tuple[int, str]] = []
        chosen: list[int] = []
        deadline = time.monotonic() + self.batch_seconds
        try:
            with conn.begin():
                chosen = self._choose(conn, raw_ids)
                claimed = {
                    row.id: RawInput(**row._mapping)
                    for row in conn.execute(_CLAIM_MANY, {"ids": chosen, "now": utcnow()})
                }
                for index, raw_id in enumerate(chosen):
                    if index and (time.monotonic() >= deadline or self.should_stop()):
                        rest = [i for i in chosen[index:] if i in claimed]
                        if rest:
                            conn.execute(_UNCLAIM, {"ids": rest})
                        chosen = chosen[:index]
                        break
                    raw = claimed.get(raw_id)
                    if raw is not None:  # else done meanwhile, or another process has it
                        outcomes.append(self._in_savepoint(conn, raw))
        except Exception as exc:
            if _is_database_outage(exc):
                raise
            taken = max(len(chosen), 1)
            log.warning("a batch of %d failed (%s); retrying one by one", taken, _one_line(exc))
            conn.rollback()
            for raw_id in raw_ids[:taken]:
                self.process_one(conn, raw_id, result)
            return taken
        for outcome in outcomes:
            if isinstance(outcome, tuple):
                raw_id, reason = outcome
                result.quarantined += 1
                result.quarantined_ids.append(raw_id)
                log.warning("raw %d quarantined: %s", raw_id, reason)
            else:
                self._count(outcome, result)
        return len(chosen)

    def _choose(self, conn: Connection, raw_ids: Sequence[int]) -> list[int]:
        """The first of `raw_ids` that fit a batch by count and by stored size."""
        head = list(raw_ids[: self.batch_size])
        sizes = {row.id: row.size for row in conn.execute(_SIZES, {"ids": head})}
        chosen: list[int] = []
        total = 0
        for raw_id in head:
            total += sizes.get(raw_id, 0)
            if chosen and total > self.batch_bytes:
                break
            chosen.append(raw_id)
        return chosen

    def _in_savepoint(self, conn: Connection, raw: RawInput) -> WorkItem | tuple[int, str]:
        """One claimed message inside the batch transaction: its work item, or its id and
        the reason it was quarantined."""
        step_name = "load"
        _driver_sql(conn, "SAVEPOINT postdesk_message")
        try:
            item = WorkItem(conn, raw)
            for step in self.steps:
                step_name = step.name
                step(item)
            step_name = "release"
            _driver_sql(conn, "RELEASE SAVEPOINT postdesk_message")
            return item
        except Exception as exc:
            if _is_database_outage(exc):
                raise
            _driver_sql(conn, "ROLLBACK TO SAVEPOINT postdesk_message")
            _driver_sql(conn, "RELEASE SAVEPOINT postdesk_message")
            reason = f"{step_name}: {_one_line(exc)}"
            log.debug("raw %d traceback:\n%s", raw.id, traceback.format_exc())
            conn.execute(_QUARANTINE_CLAIMED, {"raw_id": raw.id, "reason": reason[:2000]})
            return raw.id, reason

    def process_one(self, conn: Connection, raw_id: int, result: ProcessResult) -> None:
        """Run one message through the steps; quarantine it if a step fails."""
        step_name = "load"
        try:
            with conn.begin():
                claimed = conn.execute(_CLAIM, {"raw_id": raw_id, "now": utcnow()}).first()
                if claimed is None:
                    return  # done meanwhile, or another process holds it
                item = WorkItem(conn, RawInput(**claimed._mapping))
                for step in self.steps:
                    step_name = step.name
                    step(item)
                step_name = "commit"
        except Exception as exc:
            if _is_database_outage(exc):
                raise
            reason = f"{step_name}: {_one_line(exc)}"
            self._quarantine(conn, raw_id, reason)
            result.quarantined += 1
            result.quarantined_ids.append(raw_id)
            log.warning("raw %d quarantined: %s", raw_id, reason)
            log.debug("raw %d traceback:\n%s", raw_id, traceback.format_exc())
            return
        self._count(item, result)

    @staticmethod
    def _count(item: WorkItem, result: ProcessResult) -> None:
        result.processed += 1
        parsed = item.parsed
        if item.created_ticket:
            result.created += 1
        else:
            result.appended += 1
        log.info(
            "raw %d message-id <%s> %s ticket %s (%s)",
            item.raw.id,
            parsed.message_id if parsed else "",
            "opened" if item.created_ticket else "added to",
            item.ticket_id if item.ticket_id is not None else "?",
            item.match.rule if item.match else "?",
        )

    def _quarantine(self, conn: Connection, raw_id: int, reason: str) -> None:
        conn.rollback()  # whatever is left of the failed transaction (a failed commit)
        with conn.begin():
            conn.execute(_QUARANTINE, {"raw_id": raw_id, "reason": reason[:2000], "now": utcnow()})


def _driver_sql(conn: Connection, sql: str) -> None:
    """Run a statement on the driver's connection, past SQLAlchemy.

    For the per-message savepoints: SQLAlchemy's own nested transactions cost more than
    a whole commit here (~45 µs each in Python), these about one. SQLAlchemy does not
    track them, which is fine: they open and close within one call of `_in_savepoint`,
    inside the batch transaction SQLAlchemy does track.
    """
    dbapi = conn.dialect.loaded_dbapi
    try:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
    except dbapi.Error as exc:
        # As SQLAlchemy would raise it, so that outages are told from other failures.
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc


def requeue(db: Database, raw_ids: Sequence[int] | None) -> list[int]:
    """Put quarantined messages back to pending (all of them when `raw_ids` is None)."""
    with db.transaction() as session:
        query = select(RawMessage.id).where(RawMessage.status == QUARANTINED)
        if raw_ids is not None:
            query = query.where(RawMessage.id.in_(list(raw_ids)))
        ids = list(session.execute(query.order_by(RawMessage.id)).scalars())
        if ids:
            session.execute(update(RawMessage).where(RawMessage.id.in_(ids)).values(status=PENDING))
        return ids


def count_by_status(db: Database) -> dict[str, int]:
    """How many raw messages are pending, processed and quarantined."""
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.status, func.count()).group_by(RawMessage.status)
        ).all()
    counts = {PENDING: 0, PROCESSED: 0, QUARANTINED: 0}
    counts.update({status: n for status, n in rows})
    return counts


def list_raw(db: Database, statuses: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Stored inbound messages (optionally only some statuses), newest first."""
    with db.read_session() as session:
        query = select(
            RawMessage.id,
            RawMessage.status,
            RawMessage.source,
            RawMessage.origin,
            RawMessage.message_id,
            RawMessage.size,
            RawMessage.received_at,
            RawMessage.attempts,
            RawMessage.reason,
        ).order_by(RawMessage.id.desc())
        if statuses:
            query = query.where(RawMessage.status.in_(list(statuses)))
        return [
            {
                "id": row.id,
                "status": row.status,
                "source": row.source,
                "origin": row.origin,
                "message_id": row.message_id,
                "size": row.size,
                "received_at": row.received_at.isoformat() if row.received_at else None,
                "attempts": row.attempts,
                "reason": row.reason,
            }
            for row in session.execute(query)
        ]
