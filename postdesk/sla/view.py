"""Reading a ticket's SLA state from the database, for `tickets show` (computed on read).

Nothing is stored: the state is a function of the ticket's columns, its status events
and the configuration, so a changed target or calendar applies to every ticket at once
and there is no second copy of ticket state to keep right (the lifecycle stays the one
writer). The alerts (alerts.py) keep their own record of what was sent. `tickets_by_sla` is the
`tickets list --sla` filter; `OPEN_TICKETS`, `status_changes` and `state_of` read many
tickets' states at once, for it and for the alerts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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
        changes = status_changes(session, [number]).get(number, [])
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


CHUNK = 500  # ticket ids per IN (...) list


def _chunks(ids: Collection[int]) -> Iterator[list[int]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def status_changes(session: Session, ids: Collection[int]) -> dict[int, list[StatusChange]]:
    """The status events of the tickets `ids`, oldest first, per ticket."""
    found: dict[int, list[StatusChange]] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = session.execute(
            select(TicketEvent.ticket_id, TicketEvent.at, TicketEvent.data)
            .where(TicketEvent.ticket_id.in_(chunk), TicketEvent.kind == "status")
            .order_by(TicketEvent.ticket_id, TicketEvent.at, TicketEvent.id)
        )
        for ticket_id, at, data in rows:
            if isinstance(data, dict):
                found[ticket_id].append(
                    StatusChange(at, str(data.get("from", "")), str(data.get("to", "")))
                )
    return found


# The tickets whose clocks can still be acted on: not solved, not closed (a solved
# ticket's clocks stand still until it is reopened).
OPEN_STATUSES = ("new", "open", "pending")

OPEN_TICKETS = (
    select(
        Ticket.id,
        Ticket.created_at,
        Ticket.updated_at,
        Ticket.status,
        Ticket.priority,
        Ticket.first_response_at,
        Ticket.solved_at,
        Ticket.assignee_id,
        Ticket.mailbox_id,
        Mailbox.name.label("mailbox"),
    )
    .outerjoin(Mailbox, Mailbox.id == Ticket.mailbox_id)
    .where(Ticket.status.in_(OPEN_STATUSES))
    .order_by(Ticket.id)
)


class Calendars:
    """The calendar of each mailbox, built once (holiday tables and day caches are kept)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_mailbox: dict[str | None, BusinessCalendar] = {}

    def __call__(self, mailbox: str | None) -> BusinessCalendar:
        found = self._by_mailbox.get(mailbox)
        if found is None:
            found = self._by_mailbox[mailbox] = calendar_for(self.settings, mailbox)
        return found


def state_of(
    settings: Settings,
    calendars: Calendars,
    row: Any,
    changes: list[StatusChange],
    now: datetime,
) -> SlaState:
    """The SLA state of a row of OPEN_TICKETS as of `now` ([sla] must be configured)."""
    assert settings.sla is not None
    return sla_state(
        sla=settings.sla,
        calendar=calendars(row.mailbox),
        created_at=row.created_at,
        status=row.status,
        changes=changes,
        priority=row.priority,
        first_response_at=row.first_response_at,
        solved_at=row.solved_at,
        now=now,
    )


SLA_FILTERS = ("at-risk", "breached")


def tickets_by_sla(db: Database, settings: Settings, which: str, now: datetime) -> set[int]:
    """The numbers of the open tickets (new, open, pending) that are `which` as of `now`:
    "at-risk" (either clock at risk) or "breached" (either clock breached). Empty
    without [sla]."""
    if which not in SLA_FILTERS:
        raise ValueError(f"unknown SLA filter {which!r}; expected one of {', '.join(SLA_FILTERS)}")
    if settings.sla is None:
        return set()
    calendars = Calendars(settings)
    with db.read_session() as session:
        rows = session.execute(OPEN_TICKETS).all()
        changes = status_changes(session, [row.id for row in rows])
    found = set()
    for row in rows:
        state = state_of(settings, calendars, row, changes.get(row.id, []), now)
        clocks = (state.first_response, state.resolution)
        flags = [c.at_risk if which == "at-risk" else c.breached for c in clocks]
        if any(flags):
            found.add(row.id)
    return found
