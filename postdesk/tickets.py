"""Reading tickets for people and scripts: the rows behind `tickets list` and `tickets show`.

Dates are ISO 8601 in UTC. Message-IDs are printed bare (without angle brackets), the
form the rest of postdesk stores them in. Messages are ordered oldest first by their
Date header, falling back to when postdesk received them, then by arrival.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from postdesk.errors import PostdeskError
from postdesk.models import Attachment, Contact, Message, Ticket, TicketEvent, TicketLink, utcnow
from postdesk.models.db import Database
from postdesk.models.tickets import CLOSED, MERGED, SOLVED, TICKET_STATUSES


class TicketNotFound(PostdeskError):
    """No ticket has the number asked for."""


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
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "last_message_at": iso(ticket.last_message_at),
        "closed_at": iso(ticket.closed_at),
        "merged_into": ticket.merged_into_id,
        "category": ticket.category,
        "priority": ticket.priority,
        "needs_triage": ticket.needs_triage,
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


def check_status(status: str | None) -> None:
    if status is not None and status not in TICKET_STATUSES:
        raise PostdeskError(
            f"unknown ticket status {status!r}; use one of {', '.join(TICKET_STATUSES)}"
        )


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
        data["messages"] = [_message_dict(m) for m in messages]
        links = session.execute(
            select(TicketLink).where(
                (TicketLink.ticket_id == number) | (TicketLink.other_id == number)
            )
        ).scalars()
        data["links"] = [
            {"ticket": link.ticket_id, "kind": link.kind, "other": link.other_id} for link in links
        ]
        return data


# --- changing tickets ------------------------------------------------------------------


def resolve_merged(session: Session, number: int) -> int:
    """The ticket that now holds ticket `number`'s conversation (itself unless merged)."""
    seen = {number}
    current = number
    while True:
        target = session.execute(
            select(Ticket.merged_into_id).where(Ticket.id == current)
        ).scalar_one_or_none()
        if target is None or target in seen:
            return current
        seen.add(target)
        current = target


def set_status(session: Session, ticket: Ticket, status: str, *, actor: str, why: str) -> None:
    """Change a ticket's status, keep `closed_at` right and record the event."""
    check_status(status)
    if ticket.status == status:
        return
    now = utcnow()
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            at=now,
            kind="status",
            actor=actor,
            data={"from": ticket.status, "to": status, "why": why},
        )
    )
    ticket.status = status
    ticket.updated_at = max(ticket.updated_at, now)
    ticket.closed_at = now if status in (SOLVED, CLOSED) else None


def merge_tickets(db: Database, target: int, source: int, *, actor: str = "cli") -> int:
    """Merge ticket `source` into `target`: its messages move over, it is closed, and
    any later reply to it (by headers, subject tag or reply token) lands on `target`.

    Returns how many messages moved.
    """
    if target == source:
        raise PostdeskError(f"cannot merge ticket #{target} into itself")
    with db.transaction() as session:
        rows = {
            t.id: t
            for t in session.execute(
                select(Ticket).where(Ticket.id.in_([target, source])).with_for_update()
            ).scalars()
        }
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
        moved = session.execute(
            select(func.count()).select_from(Message).where(Message.ticket_id == source)
        ).scalar_one()
        session.execute(update(Message).where(Message.ticket_id == source).values(ticket_id=target))
        gone.merged_into_id = target
        set_status(session, gone, CLOSED, actor=actor, why=f"merged into #{target}")
        now = utcnow()
        into.updated_at = max(into.updated_at, now)
        into.last_message_at = max(into.last_message_at, gone.last_message_at)
        into.created_at = min(into.created_at, gone.created_at)
        session.add(TicketLink(ticket_id=target, other_id=source, kind=MERGED, created_at=now))
        session.add(
            TicketEvent(
                ticket_id=target,
                at=now,
                kind="merged",
                actor=actor,
                data={"from": source, "messages": moved},
            )
        )
        return moved
