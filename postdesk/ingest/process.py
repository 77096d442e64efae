"""Turn stored raw messages into tickets: the pipeline's runner, all or nothing.

The Processor owns the loop and the transactions; each step (the list is in
postdesk/pipeline.py) does one thing to a typed work item and either returns or raises.
Steps read and write through the item's connection with SQLAlchemy Core statements built
once, from the models' tables: this path runs for every message, and building ORM objects
and statements per message used to cost most of its time.

Messages are processed in batches (up to 200 messages, 8 MiB or 0.25 s), one transaction
per batch and one savepoint per message: what one message does is kept or undone as a
whole, and a message whose steps raise is rolled back to its savepoint and set aside as
quarantined with a one-line reason (never dropped, never retried forever) while the rest
of the batch goes on; `postdesk inbound retry` replays it. A batch costs one claim and
one commit instead of one per message; 200 is as many as a fetched batch (with 50, a
pass over 1,000 messages on SQLite took 8% longer: median 1,193 against 1,290 msg/s,
`run --once`, eight interleaved runs). Database outages are not the message's fault and
stop the pass instead, so the batch is tried again on the next one.

A message that kills the process (out of memory, SIGKILL after the stop timeout) must not
block the mail behind it on every restart. So a batch is *claimed* first, in a short
transaction of its own: each row gets the processor's owner name and one more `attempts`
and `unfinished`; the batch transaction that files the messages clears the claim and sets
`unfinished` back to 0. A pending row still claimed by a process that is gone (same host
and its pid has died, or the claim is older than CLAIM_EXPIRY) was in hand when that
process died. Such messages, and those whose parse worker died (`TryAgain`), are then
processed alone, each attempt committed before it begins; one whose `unfinished` attempts
reach `max_attempts` (`[processing] max_attempts`, default 3) is quarantined "gave up after
N attempts" with the last error known, and the rest goes on. A batch that dies costs its
other messages one counted attempt each, never more: they are then taken one at a time.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, String, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError

from postdesk.errors import PostdeskError
from postdesk.ingest.attachments import DISK_FULL, AttachmentStore
from postdesk.ingest.automatic import KindOfMail
from postdesk.ingest.parse import ParsedMessage
from postdesk.ingest.sender import Sender
from postdesk.ingest.threader import ThreadMatch
from postdesk.ingest.worker import TryAgain, WorkerUnavailable
from postdesk.models import RawMessage, RawStatus, UTCDateTime, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database, is_outage
from postdesk.owner import make_owner, owner_is_dead
from postdesk.pausepoints import pause_point
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
    more_pending: bool = False  # `run` stopped at its time limit with mail still pending

    def add(self, other: ProcessResult) -> None:
        self.more_pending = self.more_pending or other.more_pending
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
_owner = bindparam("owner", type_=String())
_claimable = _raw.alias("claimable")

# A claim older than this is taken over whoever made it (a claimer on another machine
# cannot be seen dying). A live claim lasts one batch: up to `batch_seconds` plus one
# message's parse budget and steps.
CLAIM_EXPIRY = timedelta(minutes=5)
DIED = "the process died while processing it"
# Messages of a batch handed to the parse worker ahead of the one in hand. Enough to keep
# the worker busy while the steps of the current one run, also across a message that
# takes it milliseconds (attachments): the window is refilled when half of it is read, so
# 8 to 16 are ahead (with 8, at most 4 to 8, the processor waited for the worker 0.16 ms a
# message on average; with 16, 0.04); few, so that when a batch stops early
# (`batch_seconds`, a stop request) little parsing is thrown away. Handing it the whole
# batch at once made it parse, under load, several times the messages processed.
PREFETCH = 16


def _pending_in(ids_param: str = "ids") -> Any:
    """Pending rows among the ids, locked without waiting for rows another process holds."""
    return (
        select(_claimable.c.id)
        .where(
            _claimable.c.id.in_(bindparam(ids_param, expanding=True)),
            _claimable.c.status == RawStatus.PENDING,
        )
        .with_for_update(skip_locked=True)
    )


# What a batch is cut from: sizes, and whether a message was left claimed or unfinished.
_STATES = select(
    _raw.c.id,
    _raw.c.size,
    _raw.c.status,
    _raw.c.claimed_by,
    _raw.c.claimed_at,
    _raw.c.unfinished,
    _raw.c.reason,
).where(_raw.c.id.in_(bindparam("ids", expanding=True)))
# The claim, committed before processing begins: owner, one more attempt, one more that
# has not finished. Only rows nobody claims are taken.
_CLAIM_FRESH = (
    update(_raw)
    .where(_raw.c.id.in_(_pending_in().where(_claimable.c.claimed_by.is_(None))))
    .values(
        claimed_by=_owner,
        claimed_at=_now,
        attempts=_raw.c.attempts + 1,
        unfinished=_raw.c.unfinished + 1,
    )
    .returning(_raw.c.id, _raw.c.unfinished)
)
# One message's claim, taken over from `seen` (the claimer read a moment before, or None).
_CLAIM_ONE = (
    update(_raw)
    .where(
        _raw.c.id == bindparam("raw_id"),
        _raw.c.status == RawStatus.PENDING,
        _raw.c.claimed_by.is_not_distinct_from(bindparam("seen")),
    )
    .values(
        claimed_by=_owner,
        claimed_at=_now,
        attempts=_raw.c.attempts + 1,
        unfinished=_raw.c.unfinished + 1,
        reason=bindparam("last"),
    )
)
_GIVE_UP = (
    update(_raw)
    .where(
        _raw.c.id == bindparam("raw_id"),
        _raw.c.status == RawStatus.PENDING,
        _raw.c.claimed_by.is_not_distinct_from(bindparam("seen")),
    )
    .values(
        status=RawStatus.QUARANTINED,
        reason=bindparam("reason"),
        claimed_by=None,
        claimed_at=None,
        processed_at=_now,
    )
)
_FILED = {
    "status": RawStatus.PROCESSED,
    "reason": None,
    "claimed_by": None,
    "claimed_at": None,
    "unfinished": 0,
    "processed_at": _now,
}
# In the order of RawInput's fields: a row makes one positionally (`RawInput(*row)`: 0.7 µs,
# against 3 through the row's mapping).
_RETURNED = (_raw.c.id, _raw.c.content, _raw.c.mailbox_id, _raw.c.source, _raw.c.received_at)
assert [c.name for c in _RETURNED] == [f.name for f in fields(RawInput)]
# Take one claimed message in the transaction that files it, and mark it processed. The row
# lock (SKIP LOCKED) is held until the transaction ends; if the transaction rolls back, the
# mark goes with it and the claim stays.
_TAKE = (
    update(_raw)
    .where(
        _raw.c.id == bindparam("raw_id"),
        _raw.c.status == RawStatus.PENDING,
        _raw.c.claimed_by == _owner,
    )
    .values(**_FILED)
    .returning(*_RETURNED)
)
# On PostgreSQL the processing connection's commits do not wait for their WAL to reach
# the disk, as on SQLite (synchronous=NORMAL, see models/db.py): the raw message a
# transaction derives from was stored durably, so a crash of the server or the machine can
# only take the last few processed messages back to pending, each all or nothing, and they
# are processed again (a claim lost that way costs nothing but the count of one attempt).
# Fetch transactions, on other connections, stay durable.
_NO_FLUSH_WAIT = text("SET synchronous_commit TO OFF")
# The batch version: one statement takes the whole claimed batch.
_TAKE_MANY = (
    update(_raw)
    .where(_raw.c.id.in_(_pending_in()), _raw.c.claimed_by == _owner)
    .values(**_FILED)
    .returning(*_RETURNED)
)
# Messages of a batch not begun (time is up, or the service stops) go back as they were.
_UNCLAIM = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"))
    .values(
        status=RawStatus.PENDING,
        attempts=_raw.c.attempts - 1,
        unfinished=bindparam("left"),
        claimed_by=None,
        claimed_at=None,
        processed_at=None,
    )
)
# A message whose worker died: pending again, its attempt counted as unfinished.
_AGAIN = (
    update(_raw)
    .where(_raw.c.id == bindparam("raw_id"))
    .values(
        status=RawStatus.PENDING,
        reason=bindparam("reason"),
        unfinished=bindparam("left"),
        claimed_by=None,
        claimed_at=None,
        processed_at=None,
    )
)
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
        claimed_by=None,
        claimed_at=None,
        unfinished=0,
        processed_at=_now,
    )
)

# Processors running in this process now: their claims are live whatever their age.
_running: set[str] = set()
_THIS_PROCESS = ":".join(make_owner().split(":")[:3])


def _claim_is_live(owner: str, claimed_at: datetime | None, now: datetime) -> bool:
    """Whether the processor `owner` may still be working on what it claimed."""
    if owner in _running:
        return True
    if owner.startswith(_THIS_PROCESS + ":") or owner_is_dead(owner):
        return False  # one of ours that has stopped, or a process known to be gone
    return claimed_at is not None and now - claimed_at < CLAIM_EXPIRY


def give_up_reason(attempts: int, last: str | None) -> str:
    """The quarantine reason of a message given up after `attempts` unfinished attempts."""
    reason = f"gave up after {attempts} attempts"
    return f"{reason} (last: {last})" if last else reason


class Processor:
    """Runs pending raw messages through the steps, in batches (see the module docstring).

    `max_attempts`: how many attempts that never finished (the process or the parse
    worker died) a message gets before it is quarantined.
    """

    def __init__(
        self,
        db: Database,
        steps: Sequence[Step],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        batch_size: int = 200,
        batch_bytes: int = 8 * 1024 * 1024,
        batch_seconds: float = 0.25,
        max_attempts: int = 3,
    ) -> None:
        self.db = db
        self.steps = list(steps)
        self.should_stop = should_stop
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.batch_seconds = batch_seconds
        self.max_attempts = max_attempts
        self.owner = make_owner()

    def pending_ids(self, *, after: int = 0, limit: int = 500) -> list[int]:
        """The next pending raw message ids in arrival order."""
        with self.db.read_session() as session:
            return list(
                session.execute(
                    select(_raw.c.id)
                    .where(_raw.c.status == RawStatus.PENDING, _raw.c.id > after)
                    .order_by(_raw.c.id)
                    .limit(limit)
                ).scalars()
            )

    def run(self, *, time_limit: float | None = None) -> ProcessResult:
        """Process every pending message in arrival order until none is left or asked to stop.

        `time_limit` (seconds): begin no new batch after it and return with
        `more_pending` set when mail is still pending, so that the service can send what
        is queued and check SLA timers between slices of a large backlog (mail arriving
        faster than it is filed would otherwise hold them back until the backlog is
        gone). None: until nothing is pending.

        First, messages quarantined because the attachment disk was full go back to
        pending when the disk has room for them again (`requeue_disk_full`)."""
        self.requeue_disk_full()
        result = ProcessResult()
        deadline = None if time_limit is None else time.monotonic() + time_limit
        after = 0
        with self._connection() as conn:
            while not self.should_stop():
                ids = self.pending_ids(after=after)
                if not ids:
                    break
                if after and deadline is not None and time.monotonic() >= deadline:
                    result.more_pending = True  # (at least one batch is always begun)
                    break
                result.add(self._run(conn, ids, deadline))
                if result.more_pending:
                    break
                after = ids[-1]
        return result

    def requeue_disk_full(self) -> list[int]:
        """Put messages quarantined for a full attachment disk back to pending, each when
        the disk has more free space than the message's size (its attachments, decoded,
        are smaller); the ids put back. A support team wants them filed once an operator
        has made room, without anyone having to run `inbound retry`."""
        stores = [
            store
            for step in self.steps
            if isinstance(store := getattr(step, "attachments", None), AttachmentStore)
        ]
        if not stores:
            return []
        with self.db.read_session() as session:
            waiting = session.execute(
                select(_raw.c.id, _raw.c.size).where(
                    _raw.c.status == RawStatus.QUARANTINED,
                    _raw.c.reason.contains(DISK_FULL, autoescape=True),
                )
            ).all()
        ids = [row.id for row in waiting if all(s.has_room(row.size) for s in stores)]
        if ids:
            with self.db.transaction() as session:
                session.execute(
                    update(_raw)
                    .where(_raw.c.id.in_(ids), _raw.c.status == RawStatus.QUARANTINED)
                    .values(status=RawStatus.PENDING)
                )
            log.warning(
                "the attachment disk has room again: %d message(s) quarantined for lack of "
                "space put back to pending (raw %s)",
                len(ids),
                ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else ""),
            )
        return ids

    def run_ids(self, raw_ids: Sequence[int]) -> ProcessResult:
        """Process the given raw messages in the given order (those still pending)."""
        with self._connection() as conn:
            return self._run(conn, raw_ids)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The connection a run works on; every message is still its own transaction on it."""
        _running.add(self.owner)
        try:
            with self.db.engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    # Closed when the run ends instead of going back to the pool, so that
                    # this setting never reaches a transaction that must be durable.
                    conn.detach()
                    conn.execute(_NO_FLUSH_WAIT)
                    conn.commit()
                yield conn
        finally:
            _running.discard(self.owner)

    def _run(
        self, conn: Connection, raw_ids: Sequence[int], deadline: float | None = None
    ) -> ProcessResult:
        result = ProcessResult()
        done = 0
        while done < len(raw_ids) and not self.should_stop():
            if done and deadline is not None and time.monotonic() >= deadline:
                result.more_pending = True
                break
            done += self._run_batch(conn, raw_ids[done:], result)
        return result

    def _run_batch(self, conn: Connection, raw_ids: Sequence[int], result: ProcessResult) -> int:
        """Process the first of `raw_ids`: a batch, or one message alone. Returns how many
        ids were taken.

        A batch is at most `batch_size` messages and `batch_bytes` of raw mail, at least
        one. It is claimed in a transaction of its own, then processed in one transaction,
        each message in a savepoint: a message whose steps fail is rolled back to its
        savepoint and quarantined in the same transaction, so it costs the others
        nothing; when time runs out (`batch_seconds`) or the service is asked to stop, the
        messages not yet begun go back to pending before the commit. If the commit itself
        fails, the batch is rolled back and its messages are processed again one
        transaction each, so that a failure still quarantines exactly the message that
        caused it. A message left claimed by a process that died, or with an unfinished
        attempt, is processed alone (`_alone`).
        """
        head = list(raw_ids[: self.batch_size])
        now = utcnow()
        with conn.begin():
            states = {row.id: row for row in conn.execute(_STATES, {"ids": head})}
            fresh, taken, alone = self._cut(head, states, now)
            claimed: dict[int, int] = {}
            if fresh:
                params = {"ids": fresh, "owner": self.owner, "now": now}
                claimed = {row.id: row.unfinished for row in conn.execute(_CLAIM_FRESH, params)}
        if alone is not None:
            self._alone(conn, alone, result)
        if not claimed:
            return taken
        chosen = [raw_id for raw_id in fresh if raw_id in claimed]
        outcomes: list[WorkItem | tuple[int, str]] = []
        again: list[int] = []
        deadline = time.monotonic() + self.batch_seconds
        try:
            with conn.begin():
                taking = {
                    row.id: RawInput(*row)
                    for row in conn.execute(
                        _TAKE_MANY, {"ids": chosen, "owner": self.owner, "now": utcnow()}
                    )
                }
                order = [i for i in chosen if i in taking]
                at = 0  # the position in `order` of the message in hand
                for index, raw_id in enumerate(chosen):
                    if index and (time.monotonic() >= deadline or self.should_stop()):
                        rest = [i for i in chosen[index:] if i in taking]
                        if rest:
                            conn.execute(
                                _UNCLAIM, [{"raw_id": i, "left": claimed[i] - 1} for i in rest]
                            )
                        taken = head.index(raw_id)
                        chosen = chosen[:index]
                        break
                    raw = taking.get(raw_id)
                    if raw is None:
                        continue  # done meanwhile, or another process has it
                    self._prefetch([taking[i].content for i in order[at : at + PREFETCH]])
                    at += 1
                    outcome = self._in_savepoint(conn, raw, claimed[raw_id])
                    if outcome is None:
                        again.append(raw_id)
                    else:
                        outcomes.append(outcome)
                self._before_commit()
        except Exception as exc:
            if is_outage(exc) or isinstance(exc, WorkerUnavailable):
                raise
            log.warning("a batch of %d failed (%s); retrying one by one", taken, _one_line(exc))
            conn.rollback()
            for raw_id in chosen:
                self._alone(conn, raw_id, result)
            return taken
        for outcome in outcomes:
            if isinstance(outcome, tuple):
                raw_id, reason = outcome
                result.quarantined += 1
                result.quarantined_ids.append(raw_id)
                log.warning("raw %d quarantined: %s", raw_id, reason)
            else:
                self._count(outcome, result)
        for raw_id in again:
            self._alone(conn, raw_id, result)
        return taken

    def _before_commit(self) -> None:
        """What steps must finish before a transaction they worked in commits: a step may
        offer `before_commit()` (the file step flushes the attachments it wrote, so that
        no committed row points to a file a power cut could take away)."""
        for step in self.steps:
            before_commit = getattr(step, "before_commit", None)
            if before_commit is not None:
                before_commit()

    def _prefetch(self, contents: list[bytes]) -> None:
        if len(contents) > 1:
            for step in self.steps:
                # A step may offer `prefetch(contents)`: start on a batch's messages
                # before their turn (the parse step's worker). Looked up by name: an
                # isinstance against a runtime-checkable Protocol inspects the class on
                # every call and cost more than the prefetch itself.
                prefetch = getattr(step, "prefetch", None)
                if prefetch is not None:
                    prefetch(contents)

    def _cut(
        self, head: list[int], states: dict[int, Any], now: datetime
    ) -> tuple[list[int], int, int | None]:
        """The next batch among `head`: (its fresh ids, how many ids it takes, the id of a
        message to process alone instead)."""
        fresh: list[int] = []
        total = 0
        taken = 0
        for raw_id in head:
            row = states.get(raw_id)
            if row is None or row.status != RawStatus.PENDING:
                taken += 1  # done meanwhile
                continue
            owner = row.claimed_by
            if owner is not None or row.unfinished:
                if fresh:
                    break  # the batch ends before it
                if (
                    owner is None
                    or owner == self.owner
                    or not _claim_is_live(owner, row.claimed_at, now)
                ):
                    return [], taken + 1, raw_id
                return [], taken + 1, None  # another processor has it in hand
            total += row.size
            if fresh and total > self.batch_bytes:
                break
            fresh.append(raw_id)
            taken += 1
        return fresh, taken, None

    def _in_savepoint(
        self, conn: Connection, raw: RawInput, unfinished: int
    ) -> WorkItem | tuple[int, str] | None:
        """One claimed message inside the batch transaction: its work item, its id and the
        reason it was quarantined, or None when it is to be tried again (`TryAgain`)."""
        step_name = "load"
        _driver_sql(conn, "SAVEPOINT postdesk_message")
        try:
            item = WorkItem(conn, raw)
            for step in self.steps:
                step_name = step.name
                step(item)
            step_name = "release"
            _driver_sql(conn, "RELEASE SAVEPOINT postdesk_message")
            pause_point("process-filed")
            return item
        except Exception as exc:
            if is_outage(exc) or isinstance(exc, WorkerUnavailable):
                raise
            _driver_sql(conn, "ROLLBACK TO SAVEPOINT postdesk_message")
            _driver_sql(conn, "RELEASE SAVEPOINT postdesk_message")
            reason = f"{step_name}: {_one_line(exc)}"
            if isinstance(exc, TryAgain):
                log.warning("raw %d: %s; trying it again alone", raw.id, reason)
                conn.execute(
                    _AGAIN, {"raw_id": raw.id, "reason": reason[:2000], "left": unfinished}
                )
                return None
            log.debug("raw %d traceback:\n%s", raw.id, traceback.format_exc())
            conn.execute(_QUARANTINE_CLAIMED, {"raw_id": raw.id, "reason": reason[:2000]})
            return raw.id, reason

    def _alone(self, conn: Connection, raw_id: int, result: ProcessResult) -> None:
        """Process one message in transactions of its own, each attempt claimed (and
        counted) in a commit before it begins; give it up after `max_attempts` attempts
        that did not finish."""
        while not self.should_stop():
            now = utcnow()
            with conn.begin():
                row = conn.execute(_STATES, {"ids": [raw_id]}).first()
                if row is None or row.status != RawStatus.PENDING:
                    return
                seen = row.claimed_by
                if seen is not None and seen != self.owner:
                    if _claim_is_live(seen, row.claimed_at, now):
                        return  # another processor has it in hand
                    last = DIED  # its claimer died with it in hand
                else:
                    last = row.reason
                if row.unfinished >= self.max_attempts:
                    reason = give_up_reason(row.unfinished, last)
                    given = conn.execute(
                        _GIVE_UP,
                        {"raw_id": raw_id, "seen": seen, "reason": reason[:2000], "now": now},
                    )
                    if given.rowcount == 1:
                        result.quarantined += 1
                        result.quarantined_ids.append(raw_id)
                        log.warning("raw %d quarantined: %s", raw_id, reason)
                    return
                claim = conn.execute(
                    _CLAIM_ONE,
                    {
                        "raw_id": raw_id,
                        "seen": seen,
                        "owner": self.owner,
                        "now": now,
                        "last": last[:2000] if last else None,
                    },
                )
                if claim.rowcount != 1:
                    return  # someone else took it meanwhile
                unfinished = row.unfinished + 1
            if not self._attempt(conn, raw_id, unfinished, result):
                return

    def _attempt(
        self, conn: Connection, raw_id: int, unfinished: int, result: ProcessResult
    ) -> bool:
        """One attempt at a message claimed by this processor; True to try it again."""
        step_name = "load"
        try:
            with conn.begin():
                taken = conn.execute(
                    _TAKE, {"raw_id": raw_id, "owner": self.owner, "now": utcnow()}
                ).first()
                if taken is None:
                    return False  # done meanwhile, or another process holds it
                item = WorkItem(conn, RawInput(*taken))
                for step in self.steps:
                    step_name = step.name
                    step(item)
                step_name = "commit"
                self._before_commit()
        except Exception as exc:
            if is_outage(exc) or isinstance(exc, WorkerUnavailable):
                raise
            reason = f"{step_name}: {_one_line(exc)}"
            conn.rollback()  # whatever is left of the failed transaction (a failed commit)
            if isinstance(exc, TryAgain):
                log.warning("raw %d: %s (attempt %d)", raw_id, reason, unfinished)
                with conn.begin():
                    conn.execute(
                        _AGAIN, {"raw_id": raw_id, "reason": reason[:2000], "left": unfinished}
                    )
                return True
            self._quarantine(conn, raw_id, reason)
            result.quarantined += 1
            result.quarantined_ids.append(raw_id)
            log.warning("raw %d quarantined: %s", raw_id, reason)
            log.debug("raw %d traceback:\n%s", raw_id, traceback.format_exc())
            return False
        self._count(item, result)
        return False

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
            # A fresh start: `max_attempts` more tries, even for a message given up.
            session.execute(
                update(RawMessage)
                .where(RawMessage.id.in_(ids))
                .values(status=RawStatus.PENDING, unfinished=0, claimed_by=None, claimed_at=None)
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
