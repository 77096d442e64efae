"""Reading a ticket's SLA state from the database, for `tickets show` (computed on read).

Nothing is stored: the state is a function of the ticket's columns, its status events
and the configuration, so a changed target or calendar applies to every ticket at once
and there is no second copy of ticket state to keep right (the lifecycle stays the one
writer). The alerts that come next keep their own record of what was sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from postdesk.config import Settings
from postdesk.models import Mailbox, Ticket, TicketEvent
from postdesk.models.db import Database
from postdesk.sla.calendar import AroundTheClock, BusinessCalendar, from_settings
from postdesk.sla.clock import SlaState, StatusChange, sla_state, state_json
from postdesk.tickets.lifecycle import TicketNotFound


def calendar_for(settings: Settings, mailbox: str | None) -> BusinessCalendar:
    """The calendar a mailbox's tickets count in: its own, else [sla] calendar, else 24x7."""
    name = ""
    for box in settings.mailboxes:
        if box.name == mailbox:
            name = box.calendar
    if not name and settings.sla is not None:
        name = settings.sla.calendar
    for calendar in settings.calendars:
        if calendar.name == name:
            return from_settings(calendar)
    return AroundTheClock()


def ticket_sla_state(
    db: Database, settings: Settings, number: int, now: datetime
) -> SlaState | None:
    """Ticket `number`'s SLA state as of `now`; None when no [sla] is configured."""
    if settings.sla is None:
        return None
    with db.read_session() as session:
        row = session.execute(
            select(
                Ticket.created_at,
                Ticket.status,
                Ticket.priority,
                Ticket.first_response_at,
                Ticket.solved_at,
                Mailbox.name,
            )
            .outerjoin(Mailbox, Mailbox.id == Ticket.mailbox_id)
            .where(Ticket.id == number)
        ).one_or_none()
        if row is None:
            raise TicketNotFound(f"no ticket #{number}")
        events = session.execute(
            select(TicketEvent.at, TicketEvent.data)
            .where(TicketEvent.ticket_id == number, TicketEvent.kind == "status")
            .order_by(TicketEvent.at, TicketEvent.id)
        ).all()
    changes = [
        StatusChange(at, str(data.get("from", "")), str(data.get("to", "")))
        for at, data in events
        if isinstance(data, dict)
    ]
    return sla_state(
        sla=settings.sla,
        calendar=calendar_for(settings, row.name),
        created_at=row.created_at,
        status=row.status,
        changes=changes,
        priority=row.priority,
        first_response_at=row.first_response_at,
        solved_at=row.solved_at,
        now=now,
    )


def ticket_sla(
    db: Database, settings: Settings, number: int, now: datetime
) -> dict[str, Any] | None:
    """The `sla` object of `tickets show --json` (None without [sla])."""
    state = ticket_sla_state(db, settings, number, now)
    return state_json(state) if state is not None else None
