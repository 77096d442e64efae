"""The sampling frame: the tickets a QA sample may draw, with what risk weighting reads.

Read-only queries on the ticket tables (QA never writes ticket state). A ticket is
eligible when it is solved or closed and was resolved in the period (`solved_at`, when it
was last solved, else `closed_at` for a ticket closed without being solved), a customer
wrote it (at least one human inbound message: mail nobody had to answer is closed at once
and has nothing to review), it was not merged into another, and it has not been sampled or
reviewed with the same scorecard (any version of that name) before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, exists, func, select
from sqlalchemy.orm import aliased

from postdesk.config import Settings
from postdesk.models import (
    Contact,
    Mailbox,
    Message,
    QaReview,
    QaSample,
    QaSampledTicket,
    QaScorecard,
    Ticket,
    TicketEvent,
    TicketStatus,
    utcnow,
)
from postdesk.qa.kpi import counted_tickets, sla_breaches
from postdesk.qa.risk import TicketFacts


@dataclass(frozen=True)
class Period:
    """Tickets resolved at or after `since` and before `until` (UTC)."""

    since: datetime
    until: datetime


def eligible_tickets(
    conn: Connection,
    period: Period,
    *,
    scorecard: str,
    queue: str | None = None,
    agent: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> list[TicketFacts]:
    """The frame, ordered by ticket number (so a seed always means the same draw).

    With `settings` that configure [sla], each ticket's `sla_breached` says whether either
    SLA clock was breached (postdesk/sla/clock.py, as of `now`); otherwise it is None.
    """
    assignee = aliased(Contact)
    resolved_at = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    messages = (
        select(func.count(Message.id)).where(Message.ticket_id == Ticket.id).scalar_subquery()
    )
    # Reopened as the KPI report counts it (qa/kpi.py, reopen_rate): from solved or
    # closed back to any status that is not done (open, pending or new), whoever did it.
    done = [TicketStatus.SOLVED.value, TicketStatus.CLOSED.value]
    reopened = (
        select(func.count(TicketEvent.id))
        .where(
            TicketEvent.ticket_id == Ticket.id,
            TicketEvent.kind == "status",
            TicketEvent.data["from"].as_string().in_(done),
            TicketEvent.data["to"].as_string().not_in(done),
        )
        .scalar_subquery()
    )
    reviewed = exists().where(
        QaReview.ticket_id == Ticket.id,
        QaReview.scorecard_id == QaScorecard.id,
        QaScorecard.name == scorecard,
    )
    sampled = exists().where(
        QaSampledTicket.ticket_id == Ticket.id,
        QaSampledTicket.sample_id == QaSample.id,
        QaSample.scorecard_id == QaScorecard.id,
        QaScorecard.name == scorecard,
    )
    query = counted_tickets(
        select(
            Ticket.id,
            Mailbox.name,
            assignee.email,
            Ticket.created_at,
            resolved_at,
            messages,
            reopened,
            Ticket.csat_score,
            Ticket.category_probability,
            Ticket.category_source,
            Ticket.needs_triage,
        ),
        assignee,
        queue=queue,
        agent=agent,
    ).where(
        Ticket.status.in_([TicketStatus.SOLVED.value, TicketStatus.CLOSED.value]),
        and_(resolved_at >= period.since, resolved_at < period.until),
        ~reviewed,
        ~sampled,
    )
    rows = conn.execute(query).all()
    breached: dict[int, bool] = {}
    if settings is not None:
        breached = sla_breaches(conn, settings, [row[0] for row in rows], now or utcnow())
    return [
        TicketFacts(
            ticket=row[0],
            queue=row[1],
            agent=row[2],
            created_at=row[3],
            resolved_at=row[4],
            messages=row[5],
            reopened=row[6],
            csat=row[7],
            category_probability=row[8],
            category_source=row[9],
            needs_triage=bool(row[10]),
            sla_breached=breached.get(row[0]),
        )
        for row in rows
    ]
