"""The ticket lifecycle: the one writer of tickets and of their event history.

Every change to a ticket goes through a function here, whoever makes it: the mail
pipeline (a message opens a ticket, joins one, reopens it, or opens a follow-up to a
long-closed one), triage (predictions), people at the command line (status, labels,
merge), and next agents' `#commands` (status, assignment, labels, internal notes), SLA
clocks and QA. Each function works on a
Connection inside the caller's transaction, writes the change and its event together, and
never commits. Statements are Core and built once: the pipeline calls these for every
message. No other module INSERTs or UPDATEs the `tickets` and `ticket_events` tables
(tests/test_architecture.py checks it).

Statuses: new (nobody has acted yet) -> open -> pending (waiting for the customer) ->
solved -> closed. A customer's reply moves pending, solved and closed back to open;
`closed_at` is when the ticket last became solved or closed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Connection, Update, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from postdesk.errors import PostdeskError
from postdesk.models import Message, Ticket, TicketEvent, TicketLink, UTCDateTime, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.models.lean import Lean
from postdesk.models.tickets import (
    FOLLOW_UP,
    MERGED,
    RELATED,
    SYSTEM_ACTOR,
    TICKET_STATUSES,
    TicketStatus,
)

# The labels a ticket carries, and who may set them: a person ("human") or, below them,
# a model or a rule. Only people's labels train the next model (postdesk.classify).
CATEGORY = "category"
PRIORITY = "priority"
LABEL_TARGETS = (CATEGORY, PRIORITY)
HUMAN_SOURCE = "human"
# A customer's reply brings a ticket in one of these back to open.
REOPENABLE = (TicketStatus.PENDING, TicketStatus.SOLVED, TicketStatus.CLOSED)


class TicketNotFound(PostdeskError):
    """No ticket has the number asked for."""


def check_status(status: str | None) -> None:
    """Refuse a status that is not one of the lifecycle's."""
    if status is not None and status not in TICKET_STATUSES:
        raise PostdeskError(
            f"unknown ticket status {status!r}; use one of {', '.join(TICKET_STATUSES)}"
        )


_tickets = table_of(Ticket)
_events = table_of(TicketEvent)
_links = table_of(TicketLink)
_messages = table_of(Message)
_now = bindparam("now", type_=UTCDateTime())
_ADD_EVENTS = insert(_events)
# The event of every message that opens or reopens a ticket (models/lean.py).
_ADD_EVENT = Lean(insert(_events), keys=("ticket_id", "at", "kind", "actor", "data"))
_ADD_LINK = insert(_links)


def _event(ticket_id: int, at: datetime, kind: str, actor: str, data: Any) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "at": at, "kind": kind, "actor": actor, "data": data}


def _later(column: Any) -> Any:
    """`column`, moved forward to :now if that is later (clocks never run backwards)."""
    return case((column < _now, _now), else_=column)


# --- mail arriving --------------------------------------------------------------------

_OPEN = Lean(
    insert(_tickets).returning(_tickets.c.id),
    keys=(
        *("subject", "subject_key", "status", "requester_id", "mailbox_id", "created_at"),
        "updated_at",
        *("last_message_at", "closed_at"),
    ),
)


def open_ticket(
    conn: Connection,
    *,
    subject: str,
    requester_id: int,
    mailbox_id: int | None,
    at: datetime,
    actor: str,
    subject_key: str | None = None,
    closed_why: str | None = None,
    follow_up_of: int | None = None,
    related_to: int | None = None,
) -> int:
    """Open a ticket for a message from `requester_id` that arrived `at`; its number.

    With `closed_why`, mail nobody has to answer (automatic replies, bounces, our own
    mail) is kept on a ticket that is closed from the start, so it never waits in anyone's
    queue. With `follow_up_of`, the ticket continues a long-closed one and is linked to it.
    With `related_to`, it is linked as related to that ticket (ingest/threader.py).
    `subject_key` is what threading's subject rule looks the ticket up by (None: never).
    """
    human = closed_why is None
    ticket_id: int = _OPEN.scalar(
        conn,
        {
            "subject": subject,
            "subject_key": subject_key,
            "status": TicketStatus.NEW if human else TicketStatus.CLOSED,
            "requester_id": requester_id,
            "mailbox_id": mailbox_id,
            "created_at": at,
            "updated_at": at,
            "last_message_at": at,
            "closed_at": None if human else at,
        },
    )
    data: dict[str, Any] = {} if human else {"closed": closed_why}
    if follow_up_of is not None:
        data["follow_up"] = follow_up_of
    if related_to is not None:
        data["related"] = related_to
    _ADD_EVENT.run(conn, _event(ticket_id, at, "created", actor, data))
    if follow_up_of is not None:
        conn.execute(
            _ADD_LINK,
            {"ticket_id": ticket_id, "other_id": follow_up_of, "kind": FOLLOW_UP, "created_at": at},
        )
    if related_to is not None:
        conn.execute(
            _ADD_LINK,
            {"ticket_id": ticket_id, "other_id": related_to, "kind": RELATED, "created_at": at},
        )
    return ticket_id


@dataclass(frozen=True)
class NewTicket:
    """A ticket a customer's message just opened, as the steps after the opening need it
    (triage; next the acknowledgement, SLA clocks and routing)."""

    ticket_id: int
    subject: str
    text: str  # what the customer wrote: the visible text of their message
    requester: str  # their address
    at: datetime


@dataclass(frozen=True)
class Arrival:
    """A ticket as a message found it: its status and when it was closed, if it was."""

    status: str
    closed_at: datetime | None


# A message may arrive out of order (imports): the ticket's clocks only move forward.
_ARRIVED = Lean(
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(
        updated_at=_later(_tickets.c.updated_at),
        last_message_at=_later(_tickets.c.last_message_at),
    )
    .returning(_tickets.c.status, _tickets.c.closed_at)
)


def message_arrived(conn: Connection, ticket_id: int, at: datetime) -> Arrival:
    """A message that arrived `at` joined ticket `ticket_id`: move its clocks on.

    Returns the ticket's status as the message found it, for the caller to decide whether
    the message reopens it (`reopen`) or opens a follow-up instead.
    """
    row = _ARRIVED.first(conn, {"ticket_id": ticket_id, "now": at})
    if row is None:
        raise TicketNotFound(f"there is no ticket {ticket_id}")
    status, closed_at = row
    return Arrival(status, closed_at)


_REOPEN = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(status=TicketStatus.OPEN, closed_at=None, solved_at=None)
)


def reopen(
    conn: Connection, ticket_id: int, *, was: str, actor: str, why: str, at: datetime
) -> None:
    """Bring a ticket that was `was` (pending, solved, closed) back to open."""
    conn.execute(_REOPEN, {"ticket_id": ticket_id})
    change = {"from": was, "to": TicketStatus.OPEN, "why": why}
    _ADD_EVENT.run(conn, _event(ticket_id, at, "status", actor, change))


# --- status ---------------------------------------------------------------------------

_STATUS_OF = select(_tickets.c.status).where(_tickets.c.id == bindparam("ticket_id"))
_SET_STATUS = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(
        status=bindparam("status"),
        updated_at=_later(_tickets.c.updated_at),
        closed_at=bindparam("closed_at", type_=UTCDateTime()),
        # Solved now; closing keeps the time it was solved (or is the solve, if it was
        # never solved); any other status means it is not solved any more.
        solved_at=func.coalesce(
            case((bindparam("keep_solved", type_=Boolean()), _tickets.c.solved_at), else_=None),
            bindparam("solved_at", type_=UTCDateTime()),
        ),
    )
)


def set_status(
    conn: Connection,
    ticket_id: int,
    status: str,
    *,
    actor: str,
    why: str,
    at: datetime | None = None,
) -> bool:
    """Change a ticket's status, keep `closed_at` right and record the event.

    Returns whether anything changed (setting the status it has is no change).
    """
    check_status(status)
    before = conn.execute(_STATUS_OF, {"ticket_id": ticket_id}).scalar_one_or_none()
    if before is None:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    if before == status:
        return False
    now = at or utcnow()
    conn.execute(
        _SET_STATUS,
        {
            "ticket_id": ticket_id,
            "status": status,
            "now": now,
            "closed_at": now if status in (TicketStatus.SOLVED, TicketStatus.CLOSED) else None,
            "keep_solved": status == TicketStatus.CLOSED,
            "solved_at": now if status in (TicketStatus.SOLVED, TicketStatus.CLOSED) else None,
        },
    )
    change = {"from": before, "to": status, "why": why}
    conn.execute(_ADD_EVENTS, [_event(ticket_id, now, "status", actor, change)])
    return True


# --- responses --------------------------------------------------------------------------

# The earliest answer counts, also when history is imported out of order.
_RESPONDED = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(
        first_response_at=case(
            (_tickets.c.first_response_at.is_(None), _now),
            (_tickets.c.first_response_at > _now, _now),
            else_=_tickets.c.first_response_at,
        ),
        updated_at=_later(_tickets.c.updated_at),
    )
)


def responded(conn: Connection, ticket_id: int, *, at: datetime) -> None:
    """An agent answered the customer `at` (a relayed or command-line reply, or the
    agent's own mail on the ticket): the first such time is the ticket's first response."""
    if conn.execute(_RESPONDED, {"ticket_id": ticket_id, "now": at}).rowcount == 0:
        raise TicketNotFound(f"no ticket #{ticket_id}")


# --- assignment and notes ---------------------------------------------------------------

_ASSIGNEE_OF = select(_tickets.c.assignee_id).where(_tickets.c.id == bindparam("ticket_id"))
_ASSIGN = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(assignee_id=bindparam("assignee_id"), updated_at=_later(_tickets.c.updated_at))
)
_TOUCH = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .values(updated_at=_later(_tickets.c.updated_at))
)


def assign(
    conn: Connection,
    ticket_id: int,
    assignee_id: int | None,
    *,
    actor: str,
    at: datetime | None = None,
) -> bool:
    """Give the ticket to the agent with contact id `assignee_id` (None: to nobody).

    Returns whether anything changed; the event records both contact ids.
    """
    found = conn.execute(_ASSIGNEE_OF, {"ticket_id": ticket_id}).one_or_none()
    if found is None:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    if found.assignee_id == assignee_id:
        return False
    now = at or utcnow()
    conn.execute(_ASSIGN, {"ticket_id": ticket_id, "assignee_id": assignee_id, "now": now})
    change = {"from": found.assignee_id, "to": assignee_id}
    conn.execute(_ADD_EVENTS, [_event(ticket_id, now, "assigned", actor, change)])
    return True


def add_note(
    conn: Connection, ticket_id: int, text: str, *, actor: str, at: datetime | None = None
) -> None:
    """Record an internal note on the ticket: for the team's eyes, never sent to anyone."""
    now = at or utcnow()
    if conn.execute(_TOUCH, {"ticket_id": ticket_id, "now": now}).rowcount == 0:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    conn.execute(_ADD_EVENTS, [_event(ticket_id, now, "note", actor, {"text": text})])


def record_csat(
    conn: Connection,
    ticket_id: int,
    score: int,
    comment: str,
    *,
    actor: str,
    at: datetime | None = None,
) -> None:
    """The customer answered the satisfaction survey: `score` 1-5 and their comment.

    The ticket's status is left as it is: an answer to the survey is not a new question.
    A later answer replaces an earlier one (both stay in the event log).
    """
    if not 1 <= score <= 5:
        raise PostdeskError(f"a satisfaction score is 1 to 5, not {score}")
    now = at or utcnow()
    conn.execute(
        update(_tickets)
        .where(_tickets.c.id == ticket_id)
        .values(
            csat_score=score, csat_comment=comment or None, updated_at=_later(_tickets.c.updated_at)
        ),
        {"now": now},
    )
    data = {"score": score, "comment": comment}
    conn.execute(_ADD_EVENTS, [_event(ticket_id, now, "csat", actor, data)])


def agent_mail(
    conn: Connection,
    ticket_id: int,
    data: dict[str, Any],
    *,
    actor: str,
    at: datetime | None = None,
) -> None:
    """Record what became of an agent's emailed reply (commands applied, text relayed,
    or why nothing was done)."""
    conn.execute(_ADD_EVENTS, [_event(ticket_id, at or utcnow(), "agent-mail", actor, dict(data))])


# --- labels: people and triage ----------------------------------------------------------


def _label_columns(target: str) -> tuple[str, str, str, str]:
    return target, f"{target}_source", f"{target}_probability", f"{target}_model"


def _check_target(target: str) -> None:
    if target not in LABEL_TARGETS:
        raise PostdeskError(
            f"tickets have no {target!r} label; use one of {', '.join(LABEL_TARGETS)}"
        )


_LABELS_OF = select(*(_tickets.c[c] for t in LABEL_TARGETS for c in _label_columns(t))).where(
    _tickets.c.id == bindparam("ticket_id")
)


def set_label(
    conn: Connection,
    ticket_id: int,
    target: str,
    value: str | None,
    *,
    actor: str,
    at: datetime | None = None,
) -> None:
    """A person set (or, with the current value, confirmed) a ticket's category or priority.

    This is what the next model trains on. `value` None clears the label (and withdraws
    the ticket from training for that target). The ticket still needs triage only while
    a target a model was unsure about has no label.
    """
    _check_target(target)
    row = conn.execute(_LABELS_OF, {"ticket_id": ticket_id}).one_or_none()
    if row is None:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    current = row._mapping
    before = current[target]
    label, source, probability, model = _label_columns(target)
    values: dict[str, Any] = {
        label: value,
        source: HUMAN_SOURCE if value is not None else None,
        probability: None,
        model: None,
    }
    values["needs_triage"] = any(
        current[t] is None and current[f"{t}_model"] is not None
        for t in LABEL_TARGETS
        if t != target
    )
    conn.execute(update(_tickets).where(_tickets.c.id == ticket_id).values(**values))
    data = {
        "from": before,
        "to": value,
        "source": HUMAN_SOURCE,
        "confirmed": value is not None and before == value,
    }
    conn.execute(_ADD_EVENTS, [_event(ticket_id, at or utcnow(), target, actor, data)])


@functools.cache
def _triage_update(names: tuple[str, ...]) -> Update:
    """UPDATE setting the columns `names`, except a label (and its source, probability
    and model) that a person set: that stays. Returns the label sources after it."""
    values: dict[str, Any] = {}
    for name in names:
        new = bindparam(f"v_{name}", type_=_tickets.c[name].type)
        target = name.split("_", 1)[0]
        if target in LABEL_TARGETS:
            kept = _tickets.c[f"{target}_source"] == HUMAN_SOURCE
            values[name] = case((kept, _tickets.c[name]), else_=new)
        else:
            values[name] = new
    return (
        update(_tickets)
        .where(_tickets.c.id == bindparam("ticket_id"))
        .values(**values)
        .returning(*(_tickets.c[f"{t}_source"] for t in LABEL_TARGETS))
    )


def apply_triage(
    conn: Connection,
    ticket_id: int,
    values: Mapping[str, Any],
    events: Iterable[tuple[str, Any]],
    *,
    at: datetime | None = None,
) -> None:
    """Store what triage decided for a ticket: column `values` and `events` (kind, data),
    as `postdesk.classify.labels.triage_changes` makes them.

    A label a person already set is left as it is, and its event is not recorded:
    predictions and rules never overrule people.
    """
    if not values:
        return
    names = tuple(sorted(values))
    params = {f"v_{name}": values[name] for name in names}
    row = conn.execute(_triage_update(names), {"ticket_id": ticket_id, **params}).one_or_none()
    if row is None:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    kept = {t for t, source in zip(LABEL_TARGETS, row, strict=True) if source == HUMAN_SOURCE}
    when = at or utcnow()
    rows = [
        _event(ticket_id, when, kind, SYSTEM_ACTOR, data)
        for kind, data in events
        if kind not in kept
    ]
    if rows:
        conn.execute(_ADD_EVENTS, rows)


# --- merging ----------------------------------------------------------------------------

_MERGED_INTO = select(_tickets.c.merged_into_id).where(_tickets.c.id == bindparam("ticket_id"))


def resolve_merged(conn: Connection | Session, ticket_id: int) -> int:
    """The ticket that now holds ticket `ticket_id`'s conversation (itself unless merged):
    the end of its merge chain."""
    seen = {ticket_id}
    current = ticket_id
    while True:
        target = conn.execute(_MERGED_INTO, {"ticket_id": current}).scalar_one_or_none()
        if target is None or target in seen:
            return current
        seen.add(target)
        current = target


_FOR_MERGE = (
    select(
        _tickets.c.id,
        _tickets.c.merged_into_id,
        _tickets.c.created_at,
        _tickets.c.last_message_at,
    )
    .where(_tickets.c.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)


def merge(conn: Connection, target: int, source: int, *, actor: str) -> int:
    """Merge ticket `source` into `target`: its messages move over, it is closed, and
    any later reply to it (by headers, subject tag or reply token) lands on `target`.

    Returns how many messages moved.
    """
    if target == source:
        raise PostdeskError(f"cannot merge ticket #{target} into itself")
    rows = {row.id: row for row in conn.execute(_FOR_MERGE, {"ids": [target, source]})}
    for number in (target, source):
        if number not in rows:
            raise TicketNotFound(f"no ticket #{number}")
        merged_into = rows[number].merged_into_id
        if merged_into is not None:
            raise PostdeskError(
                f"ticket #{number} was already merged into #{merged_into}; "
                f"use #{merged_into} instead"
            )
    into, gone = rows[target], rows[source]
    moved: int = conn.execute(
        select(func.count()).select_from(_messages).where(_messages.c.ticket_id == source)
    ).scalar_one()
    conn.execute(update(_messages).where(_messages.c.ticket_id == source).values(ticket_id=target))
    conn.execute(update(_tickets).where(_tickets.c.id == source).values(merged_into_id=target))
    now = utcnow()
    set_status(conn, source, TicketStatus.CLOSED, actor=actor, why=f"merged into #{target}", at=now)
    conn.execute(
        update(_tickets)
        .where(_tickets.c.id == target)
        .values(
            updated_at=_later(_tickets.c.updated_at),
            last_message_at=max(into.last_message_at, gone.last_message_at),
            created_at=min(into.created_at, gone.created_at),
        ),
        {"now": now},
    )
    conn.execute(
        _ADD_LINK, {"ticket_id": target, "other_id": source, "kind": MERGED, "created_at": now}
    )
    data = {"from": source, "messages": moved}
    conn.execute(_ADD_EVENTS, [_event(target, now, "merged", actor, data)])
    return moved


def merge_tickets(db: Database, target: int, source: int, *, actor: str = "cli") -> int:
    """`merge` in a transaction of its own (for the CLI and scripts)."""
    with db.transaction() as session:
        return merge(session.connection(), target, source, actor=actor)
