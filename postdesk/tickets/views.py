"""Reading tickets for people and scripts: the rows behind `tickets list` and `tickets show`.

Dates are ISO 8601 in UTC (`postdesk.tickets.render` shows them to people in
`display_timezone`). Message-IDs are printed bare (without angle brackets), the
form the rest of postdesk stores them in. Messages are ordered oldest first by their
Date header, falling back to when postdesk received them, then by arrival.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, case, exists, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from postdesk.config import AgentSettings
from postdesk.errors import PostdeskError
from postdesk.models import (
    Attachment,
    Contact,
    Mailbox,
    Message,
    OutboxMail,
    Ticket,
    TicketEvent,
    TicketLink,
)
from postdesk.models.db import Database
from postdesk.models.tickets import AGENT, MAX_TICKET_ID, TICKET_STATUSES
from postdesk.tickets.lifecycle import TicketNotFound, check_status


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _message_order() -> tuple[Any, ...]:
    return (func.coalesce(Message.sent_at, Message.received_at), Message.id)


def _contact(contact: Contact | None) -> dict[str, Any] | None:
    if contact is None:
        return None
    return {"email": contact.email, "name": contact.name}


def _ticket_dict(ticket: Ticket, message_ids: list[str]) -> dict[str, Any]:
    return {
        "number": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "requester": _contact(ticket.requester),
        "assignee": _contact(ticket.assignee),
        "mailbox": ticket.mailbox.name if ticket.mailbox is not None else None,
        # Agents serve queues; a queue is a mailbox (see the README's "Agents").
        "queue": ticket.mailbox.name if ticket.mailbox is not None else None,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "last_message_at": iso(ticket.last_message_at),
        "closed_at": iso(ticket.closed_at),
        "first_response_at": iso(ticket.first_response_at),
        "solved_at": iso(ticket.solved_at),
        "merged_into": ticket.merged_into_id,
        "category": ticket.category,
        "priority": ticket.priority,
        "needs_triage": ticket.needs_triage,
        "csat": (
            {"score": ticket.csat_score, "comment": ticket.csat_comment or ""}
            if ticket.csat_score is not None
            else None
        ),
        "triage": {
            "category": _triage_dict(
                ticket.category_source, ticket.category_probability, ticket.category_model
            ),
            "priority": _triage_dict(
                ticket.priority_source, ticket.priority_probability, ticket.priority_model
            ),
        },
        "message_ids": message_ids,
    }


def _triage_dict(source: str | None, probability: float | None, model: str | None) -> Any:
    """Who set a ticket's category or priority: "model", "human", "rule:…" or "matrix:…"
    (None while unset), and the model's probability and version when one was asked —
    also when it was unsure and the value stayed empty (the ticket then needs triage)."""
    return {
        "source": source,
        "probability": round(probability, 4) if probability is not None else None,
        "model": model,
    }


SORT_KEYS = ("number", "created", "updated", "status", "priority", "category", "requester")
"""What `tickets list --sort` orders by; a leading "-" reverses (default "-number")."""


@dataclass(frozen=True)
class TicketFilter:
    """Which tickets `tickets list` shows, in which order, which page.

    Text matches ignore case: `requester` and `assignee` are a part of the address (a
    domain such as "@example.org" works); `assignee` "none" means unassigned. `since` and
    `until` bound the creation time (`until` excluded). `only` limits to these numbers
    (the SLA filters compute them). `priority_order` ranks priorities for sorting, most
    urgent first (`[triage] priority_levels` lists them least urgent first). `limit` None
    means all.
    """

    statuses: tuple[str, ...] = ()
    mailbox: str | None = None
    category: str | None = None
    priority: str | None = None
    requester: str | None = None
    assignee: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    needs_triage: bool = False
    only: frozenset[int] | None = None
    sort: str = "-number"
    priority_order: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0


def check_sort(sort: str) -> str:
    """`sort` if it names a sort key (with an optional leading "-"), else a one-line error."""
    if sort.removeprefix("-") not in SORT_KEYS:
        raise PostdeskError(
            f"cannot sort by {sort!r}; use one of {', '.join(SORT_KEYS)} ('-' first reverses)"
        )
    return sort


def _like(text: str) -> str:
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(query: Select[Any], wanted: TicketFilter) -> Select[Any]:
    for status in wanted.statuses:
        check_status(status)
    if wanted.statuses:
        query = query.where(Ticket.status.in_(wanted.statuses))
    if wanted.mailbox is not None:
        query = query.where(
            Ticket.mailbox_id.in_(select(Mailbox.id).where(Mailbox.name == wanted.mailbox))
        )
    if wanted.category is not None:
        query = query.where(func.lower(Ticket.category) == wanted.category.strip().lower())
    if wanted.priority is not None:
        query = query.where(func.lower(Ticket.priority) == wanted.priority.strip().lower())
    if wanted.requester is not None:
        people = select(Contact.id).where(
            func.lower(Contact.email).like(_like(wanted.requester), escape="\\")
        )
        query = query.where(Ticket.requester_id.in_(people))
    if wanted.assignee is not None:
        if wanted.assignee.strip().lower() == "none":
            query = query.where(Ticket.assignee_id.is_(None))
        else:
            agents = select(Contact.id).where(
                func.lower(Contact.email).like(_like(wanted.assignee), escape="\\")
            )
            query = query.where(Ticket.assignee_id.in_(agents))
    if wanted.since is not None:
        query = query.where(Ticket.created_at >= wanted.since)
    if wanted.until is not None:
        query = query.where(Ticket.created_at < wanted.until)
    if wanted.needs_triage:
        query = query.where(Ticket.needs_triage.is_(True))
    if wanted.only is not None:
        query = query.where(Ticket.id.in_(sorted(wanted.only)))
    return query


def _ordered(query: Select[Any], wanted: TicketFilter) -> Select[Any]:
    key = check_sort(wanted.sort)
    descending = key.startswith("-")
    name = key.removeprefix("-")
    column: Any
    if name == "number":
        column = Ticket.id
    elif name == "created":
        column = Ticket.created_at
    elif name == "updated":
        column = Ticket.updated_at
    elif name == "status":
        # The lifecycle's order: new, open, pending, solved, closed.
        column = case({s: i for i, s in enumerate(TICKET_STATUSES)}, value=Ticket.status, else_=99)
    elif name == "priority":
        # Most urgent first; unset last.
        ranks = {p: i for i, p in enumerate(reversed(wanted.priority_order))}
        column = case(ranks, value=Ticket.priority, else_=len(ranks)) if ranks else Ticket.priority
    elif name == "category":
        column = func.coalesce(Ticket.category, "")
    else:
        column = select(Contact.email).where(Contact.id == Ticket.requester_id).scalar_subquery()
    first = column.desc() if descending else column.asc()
    tie = Ticket.id.asc() if name != "number" and not descending else Ticket.id.desc()
    return query.order_by(first, tie)


def find_tickets(db: Database, wanted: TicketFilter) -> tuple[list[dict[str, Any]], int]:
    """The tickets `wanted` asks for (one page of them) and how many match in all."""
    with db.read_session() as session:
        base = _filtered(select(Ticket.id), wanted)
        total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        query = _ordered(
            _filtered(
                select(Ticket).options(
                    joinedload(Ticket.requester),
                    joinedload(Ticket.assignee),
                    joinedload(Ticket.mailbox),
                ),
                wanted,
            ),
            wanted,
        )
        if wanted.offset:
            query = query.offset(wanted.offset)
        if wanted.limit is not None:
            query = query.limit(wanted.limit)
        tickets = list(session.execute(query).scalars())
        numbers = [t.id for t in tickets]
        ids, counts = _message_ids(session, numbers)
        rows = []
        for ticket in tickets:
            row = _ticket_dict(ticket, ids.get(ticket.id, []))
            row["message_count"] = counts.get(ticket.id, 0)
            rows.append(row)
        return rows, total


def list_tickets(
    db: Database, *, status: str | None = None, needs_triage: bool = False
) -> list[dict[str, Any]]:
    """Every ticket (with `status`, or needing triage, if asked), newest number first; no
    page limit."""
    check_status(status)
    statuses = (status,) if status is not None else ()
    rows, _ = find_tickets(db, TicketFilter(statuses=statuses, needs_triage=needs_triage))
    return rows


_CHUNK = 500


def _message_ids(
    session: Session, numbers: list[int]
) -> tuple[dict[int, list[str]], dict[int, int]]:
    """Per ticket: its messages' Message-IDs (oldest first; messages without one are
    left out) and how many messages it has (those without a Message-ID counted too)."""
    found: dict[int, list[str]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for start in range(0, len(numbers), _CHUNK):
        chunk = numbers[start : start + _CHUNK]
        query = (
            select(Message.ticket_id, Message.message_id)
            .where(Message.ticket_id.in_(chunk))
            .order_by(*_message_order())
        )
        for ticket_id, message_id in session.execute(query):
            counts[ticket_id] += 1
            if message_id:
                found[ticket_id].append(message_id)
    return found, counts


def _attachment_dict(attachment: Attachment) -> dict[str, Any]:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "path": attachment.relpath,
        "inline": attachment.inline,
    }


def _message_dict(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "message_id": message.message_id,
        "direction": message.direction,
        "from": {"email": message.from_email, "name": message.from_name},
        "to": message.to,
        "cc": message.cc,
        "subject": message.subject,
        "date": iso(message.sent_at),
        "received_at": iso(message.received_at),
        "in_reply_to": message.in_reply_to,
        "kind": message.kind,
        "kind_reason": message.kind_reason or "",
        "thread_rule": message.thread_rule,
        "thread_reason": message.thread_reason,
        "text": message.text,
        # Messages stored before the visible part was computed show their whole text.
        "visible_text": message.visible_text if message.visible_text is not None else message.text,
        "attachments": [_attachment_dict(a) for a in message.attachments],
        "defects": message.defects,
        "agent_check": message.agent_check,
        "authentication_results": message.auth_results,
    }


def show_ticket(db: Database, number: int) -> dict[str, Any]:
    """One ticket with its messages, oldest first."""
    if not 0 < number <= MAX_TICKET_ID:
        raise TicketNotFound(f"no ticket #{number}")
    with db.read_session() as session:
        ticket = session.execute(
            select(Ticket)
            .where(Ticket.id == number)
            .options(
                joinedload(Ticket.requester),
                joinedload(Ticket.assignee),
                joinedload(Ticket.mailbox),
            )
        ).scalar_one_or_none()
        if ticket is None:
            raise TicketNotFound(f"no ticket #{number}")
        messages = list(
            session.execute(
                select(Message)
                .where(Message.ticket_id == number)
                .options(selectinload(Message.attachments))
                .order_by(*_message_order())
            ).scalars()
        )
        data = _ticket_dict(ticket, [m.message_id for m in messages if m.message_id])
        data["message_count"] = len(messages)
        outgoing = [m.message_id for m in messages if m.direction == "out" and m.message_id]
        sent = {
            row.message_id: {
                "id": row.id,
                "kind": row.kind,
                "state": row.state,
                "attempts": row.attempts,
                "last_error": row.last_error,
            }
            for row in session.execute(
                select(
                    OutboxMail.id,
                    OutboxMail.message_id,
                    OutboxMail.kind,
                    OutboxMail.state,
                    OutboxMail.attempts,
                    OutboxMail.last_error,
                ).where(OutboxMail.message_id.in_(outgoing))
            )
        }
        # The conversation in time order; internal notes read with it (direction "note").
        entries: list[tuple[datetime, dict[str, Any]]] = []
        for message in messages:
            entry = _message_dict(message)
            if message.direction == "out":
                entry["outbox"] = sent.get(message.message_id or "")
            entries.append((message.sent_at or message.received_at, entry))
        links = session.execute(
            select(TicketLink).where(
                (TicketLink.ticket_id == number) | (TicketLink.other_id == number)
            )
        ).scalars()
        data["links"] = [
            {"ticket": link.ticket_id, "kind": link.kind, "other": link.other_id} for link in links
        ]
        events = list(
            session.execute(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == number)
                .order_by(TicketEvent.at, TicketEvent.id)
            ).scalars()
        )
        data["events"] = _events(session, events)
        entries.extend((e.at, _note_dict(e)) for e in events if e.kind == "note")
        data["messages"] = [entry for _, entry in sorted(entries, key=lambda pair: pair[0])]
        return data


def _events(session: Session, events: list[TicketEvent]) -> list[dict[str, Any]]:
    """The ticket's history, each event with a `summary` in words (the model's guesses,
    unsure ones included, rule hits, people's labels, status changes, assignments)."""
    from postdesk.tickets.render import describe_event

    people = {
        value
        for e in events
        if e.kind == "assigned" and isinstance(e.data, dict)
        for value in (e.data.get("from"), e.data.get("to"))
        if isinstance(value, int)
    }
    emails: dict[int, str] = {}
    if people:
        query = select(Contact.id, Contact.email).where(Contact.id.in_(sorted(people)))
        emails = {row.id: row.email for row in session.execute(query)}
    return [
        {
            "at": iso(e.at),
            "kind": e.kind,
            "actor": e.actor,
            "data": e.data,
            "summary": describe_event(e.kind, e.actor, e.data, emails),
        }
        for e in events
    ]


def _note_dict(event: TicketEvent) -> dict[str, Any]:
    """An internal note as an entry among the messages (never sent to anyone)."""
    text = str((event.data or {}).get("text", ""))
    return {
        "id": None,
        "message_id": None,
        "direction": "note",
        "from": {"email": event.actor, "name": ""},
        "to": [],
        "cc": [],
        "subject": "",
        "date": iso(event.at),
        "received_at": iso(event.at),
        "in_reply_to": None,
        "kind": "note",
        "kind_reason": "",
        "thread_rule": "",
        "thread_reason": "",
        "text": text,
        "visible_text": text,
        "attachments": [],
        "defects": [],
        "agent_check": None,
    }


_EXISTS = select(exists().where(Ticket.id == bindparam("id")))


def ticket_exists(conn: Connection, number: int) -> bool:
    """Whether ticket `number` exists (a number beyond the column's range names none)."""
    return 0 < number <= MAX_TICKET_ID and bool(conn.execute(_EXISTS, {"id": number}).scalar())


def current_labels(conn: Connection, number: int) -> dict[str, str | None]:
    """Ticket `number`'s category and priority as they are now."""
    row = conn.execute(
        select(Ticket.category, Ticket.priority).where(Ticket.id == number)
    ).one_or_none()
    if row is None:
        raise TicketNotFound(f"no ticket #{number}")
    return {"category": row.category, "priority": row.priority}


@dataclass(frozen=True)
class Agent:
    """A person who answers tickets, as a command acting for them needs them."""

    contact_id: int | None  # None: configured, but no contact row yet (`postdesk init`)
    email: str
    name: str  # "" when neither the config nor the contact has one
    language: str = "en"  # of the mail postdesk writes to them ([[agent]] language)


def find_agent(conn: Connection, configured: Sequence[AgentSettings], email: str) -> Agent | None:
    """The agent with address `email`: a configured [[agent]], else a contact whose role
    is agent; None for anyone else (a customer, a typo)."""
    address = email.strip().lower()
    contact = conn.execute(
        select(Contact.id, Contact.name, Contact.role).where(Contact.email == address)
    ).one_or_none()
    for agent in configured:
        if agent.email == address:
            name = agent.name or (contact.name if contact is not None else "")
            contact_id = contact.id if contact is not None else None
            return Agent(contact_id, address, name, agent.language)
    if contact is not None and contact.role == AGENT:
        return Agent(contact.id, address, contact.name)
    return None
