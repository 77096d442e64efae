"""Turn stored raw messages into tickets: the pipeline's runner, all or nothing.

The Processor owns the loop and the transactions; each step (the list is in
postdesk/pipeline.py) does one thing to a typed work item and either returns or raises.
Steps read and write through the item's connection with SQLAlchemy Core statements built
once, from the models' tables: this path runs for every message, and building ORM objects
and statements per message used to cost most of its time.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError

from postdesk.errors import PostdeskError
from postdesk.ingest.automatic import KindOfMail
from postdesk.ingest.parse import ParsedMessage
from postdesk.ingest.sender import Sender
from postdesk.ingest.threader import ThreadMatch
from postdesk.models import RawMessage, RawStatus, UTCDateTime, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database, is_outage
from postdesk.tickets.lifecycle import NewTicket

log = logging.getLogger(__name__)


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
    arrived: datetime | None = None  # when it reached the team (see steps.arrival_time)
    sender: Sender | None = None
    kind: KindOfMail | None = None  # human, automatic, bounce or our own
    match: ThreadMatch | None = None
    visible: str | None = None  # the text without quoted history and signature
    ticket_id: int | None = None
    created_ticket: bool = False
    opened: NewTicket | None = None  # the ticket it opened, if a customer's
    survey_answer: bool = False  # it answered the satisfaction survey: no reopening
    # A reply proven to be the agent's (ingest/author.py): (ticket, agent contact id) of
    # its token; the relay acts only on these. `refused_token`: a token that was not
    # honoured. `agent_check`: what was decided about an agent's address, and why.
    agent_token: tuple[int, int] | None = None
    refused_token: tuple[int, int] | None = None
    agent_check: str | None = None
    message_pk: int | None = None

    def need_parsed(self) -> ParsedMessage:
        assert self.parsed is not None, "the parse step runs first"
        return self.parsed

    def need_arrived(self) -> datetime:
        assert self.arrived is not None, "the parse step runs first"
        return self.arrived

    def need_sender(self) -> Sender:
        assert self.sender is not None, "the sender step runs before this one"
        return self.sender


class Step(Protocol):
    """One stage of processing: a name for logs and quarantine reasons, and the work."""

    name: str

    def __call__(self, item: WorkItem) -> None: ...


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


_raw = table_of(RawMessage)
_now = bindparam("now", type_=UTCDateTime())
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
        .where(_claimable.c.id == bindparam("raw_id"), _claimable.c.status == RawStatus.PENDING)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(
        status=RawStatus.PROCESSED, reason=None, attempts=_raw.c.attempts + 1, processed_at=_now
    )
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
                _claimable.c.status == RawStatus.PENDING,
            )
            .with_for_update(skip_locked=True)
        )
    )
    .values(
        status=RawStatus.PROCESSED, reason=None, attempts=_raw.c.attempts + 1, processed_at=_now
    )
    .returning(_raw.c.id, _raw.c.content, _raw.c.mailbox_id, _raw.c.source, _raw.c.received_at)
)
_UNCLAIM = (
    update(_raw)
    .where(_raw.c.id.in_(bindparam("ids", expanding=True)))
    .values(status=RawStatus.PENDING, attempts=_raw.c.attempts - 1, processed_at=None)
)
_SIZES = select(_raw.c.id, _raw.c.size).where(_raw.c.id.in_(bindparam("ids", expanding=True)))
_QUARANTINE_CLAIMED = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"))
    .values(status=RawStatus.QUARANTINED, reason=bindparam("reason"))
)
_QUARANTINE = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"), _raw.c.status == RawStatus.PENDING)
    .values(
        status=RawStatus.QUARANTINED,
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
                    .where(RawMessage.status == RawStatus.PENDING, RawMessage.id > after)
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
            if is_outage(exc):
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
            if is_outage(exc):
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
            if is_outage(exc):
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
        # Per message at DEBUG: `postdesk run` logs a summary line per pass at INFO.
        log.debug(
            "raw %d message-id <%s> %s ticket %s (%s)",
            item.raw.id,
            parsed.message_id if parsed else "",
            "opened" if item.created_ticket else "added to",
            item.ticket_id if item.ticket_id is not None else "?",
            item.match.rule if item.match else "?",
            extra={
                "raw_id": item.raw.id,
                "mailbox_id": item.raw.mailbox_id,
                "message_id": parsed.message_id if parsed else None,
                "ticket": item.ticket_id,
            },
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
        query = select(RawMessage.id).where(RawMessage.status == RawStatus.QUARANTINED)
        if raw_ids is not None:
            query = query.where(RawMessage.id.in_(list(raw_ids)))
        ids = list(session.execute(query.order_by(RawMessage.id)).scalars())
        if ids:
            session.execute(
                update(RawMessage).where(RawMessage.id.in_(ids)).values(status=RawStatus.PENDING)
            )
        return ids


def count_by_status(db: Database) -> dict[str, int]:
    """How many raw messages are pending, processed and quarantined."""
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.status, func.count()).group_by(RawMessage.status)
        ).all()
    counts = {status.value: 0 for status in RawStatus}
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
