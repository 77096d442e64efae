"""Reading tickets for people and scripts: the rows behind `tickets list` and `tickets show`.

Dates are ISO 8601 in UTC. Message-IDs are printed bare (without angle brackets), the
form the rest of postdesk stores them in. Messages are ordered oldest first by their
Date header, falling back to when postdesk received them, then by arrival.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from postdesk.config import AgentSettings
from postdesk.models import (
    Attachment,
    Contact,
    Message,
    OutboxMail,
    Ticket,
    TicketEvent,
    TicketLink,
)
from postdesk.models.db import Database
from postdesk.models.tickets import AGENT, MAX_TICKET_ID
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


def list_tickets(
    db: Database, *, status: str | None = None, needs_triage: bool = False
) -> list[dict[str, Any]]:
    """Every ticket (with `status`, or needing triage, if asked), newest number first; no
    page limit."""
    check_status(status)
    with db.read_session() as session:
        query = (
            select(Ticket)
            .options(
                joinedload(Ticket.requester),
                joinedload(Ticket.assignee),
                joinedload(Ticket.mailbox),
            )
            .order_by(Ticket.id.desc())
        )
        if status is not None:
            query = query.where(Ticket.status == status)
        if needs_triage:
            query = query.where(Ticket.needs_triage.is_(True))
        tickets = list(session.execute(query).scalars())
        ids = _message_ids(session, status)
        return [_ticket_dict(t, ids.get(t.id, [])) for t in tickets]


def _message_ids(session: Session, status: str | None) -> dict[int, list[str]]:
    query = select(Message.ticket_id, Message.message_id).order_by(*_message_order())
    if status is not None:
        query = query.join(Ticket, Ticket.id == Message.ticket_id).where(Ticket.status == status)
    found: dict[int, list[str]] = defaultdict(list)
    for ticket_id, message_id in session.execute(query):
        if message_id:
            found[ticket_id].append(message_id)
    return found


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
        data["events"] = [
            {"at": iso(e.at), "kind": e.kind, "actor": e.actor, "data": e.data} for e in events
        ]
        entries.extend((e.at, _note_dict(e)) for e in events if e.kind == "note")
        data["messages"] = [entry for _, entry in sorted(entries, key=lambda pair: pair[0])]
        return data


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
