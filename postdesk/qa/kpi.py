"""Support KPIs over a period: `postdesk kpi`. Read-only SQL on the ticket tables.

Which tickets count: not merged into another, and written by a person (at least one
human inbound message; automatic mail closed at once is no work). `--queue` and `--agent`
(the ticket's current assignee) narrow them first. The period is [since, until); "as of"
is its end, or now if that is earlier. Each ticket's status at any instant is rebuilt
from its status events, so a past period reads the same later.

- volume: tickets created in the period.
- first_response: of tickets created in the period and answered by "as of", the time from
  creation to `first_response_at` (the first agent response, see below).
- resolution: of tickets solved or closed as of the period's end whose last solve falls in
  the period, the time from creation to that solve (full resolution time: time spent
  reopened counts, pending counts too).
  Both: median and 90th percentile, in calendar seconds and in business seconds of the
  ticket's mailbox calendar ([calendar.NAME], else [sla] calendar, else 24x7). Percentiles
  are numpy's default "linear" method (Hyndman & Fan type 7, as Excel's PERCENTILE.INC);
  None when no ticket qualifies; `n` is the number of tickets.
- one_touch_rate: of the tickets in `resolution`, the share with exactly one agent
  response. An agent response is an outgoing message sent as outbox kind "reply" (a
  relayed emailed reply or `tickets reply`), or an agent's own inbound mail that was
  not relayed: imported history, or Bcc'd mail proven by Authentication-Results. An
  agent's token reply counts once, as the reply it was relayed as; mail from an agent's
  address taken as customer mail does not count.
- reopen_rate: of the tickets first solved (or closed) in the period, the share moved from
  solved/closed back to new, open or pending by "as of".
- sla_breach_rate: of tickets created in the period, the share with either SLA clock
  (postdesk/sla/clock.py) breached as of "as of"; None without [sla].
- backlog: tickets created before "as of" and neither solved nor closed then, by age.
- csat: the satisfaction answers given in the period (a ticket's last answer counts):
  responses, mean score, and share of 4 and 5.
- by_queue, by_agent: the same figures per mailbox and per assignee ("-" for none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Select, exists, func, or_, select
from sqlalchemy.orm import aliased

from postdesk.config import Settings
from postdesk.models import Contact, Mailbox, MailKind, Message, OutboxMail, Ticket, TicketEvent
from postdesk.models.mail import AGENT_OWN_MAIL
from postdesk.models.tickets import AGENT
from postdesk.sla.calendar import BusinessCalendar
from postdesk.sla.clock import StatusChange, sla_state
from postdesk.sla.view import calendar_for

DONE = ("solved", "closed")
BACKLOG_BUCKETS = (
    ("lt_1d", timedelta(days=1)),
    ("1d_7d", timedelta(days=7)),
    ("7d_30d", timedelta(days=30)),
    ("gt_30d", None),
)
UNASSIGNED = "-"


@dataclass(frozen=True)
class KpiPeriod:
    """Tickets from `since` (inclusive) to `until` (exclusive), UTC; `now` caps "as of"."""

    since: datetime
    until: datetime
    now: datetime

    @property
    def as_of(self) -> datetime:
        return min(self.until, self.now)

    def __contains__(self, at: object) -> bool:
        return isinstance(at, datetime) and self.since <= at < self.until


@dataclass
class TicketHistory:
    """What the KPIs read of one ticket."""

    id: int
    queue: str | None
    agent: str | None
    created_at: datetime
    status: str
    priority: str | None
    first_response_at: datetime | None
    csat: int | None
    responses: int = 0
    changes: list[StatusChange] = field(default_factory=list)
    csat_at: datetime | None = None

    def status_at(self, at: datetime) -> str:
        """The ticket's status at `at`, rebuilt from its status events."""
        status = self.changes[0].was if self.changes else self.status
        for change in self.changes:
            if change.at > at:
                break
            status = change.to
        return status

    def last_solve(self, at: datetime) -> datetime | None:
        """When the ticket was last solved (or closed unsolved) if it is done at `at`."""
        if self.status_at(at) not in DONE:
            return None
        solve: datetime | None = None
        for change in self.changes:
            if change.at > at:
                break
            if change.to in DONE and (change.was not in DONE or solve is None):
                solve = change.at
        return solve

    def first_solve(self) -> datetime | None:
        return next((c.at for c in self.changes if c.to in DONE), None)

    def reopened_after(self, start: datetime, end: datetime) -> bool:
        return any(c.was in DONE and c.to not in DONE and start < c.at <= end for c in self.changes)


def _responses(conn: Connection) -> dict[int, int]:
    """Agent responses per ticket (see the module docstring)."""
    out = (
        select(Message.ticket_id, func.count(Message.id))
        .where(
            Message.direction == "out",
            exists().where(OutboxMail.message_id == Message.message_id, OutboxMail.kind == "reply"),
        )
        .group_by(Message.ticket_id)
    )
    own = (
        select(Message.ticket_id, func.count(Message.id))
        .join(Contact, Contact.id == Message.contact_id)
        .where(
            Message.direction == "in",
            Message.kind == MailKind.HUMAN.value,
            Contact.role == AGENT,
            # Imported history (no check) or proven own mail; not a relayed token reply,
            # not mail from an agent's address taken as customer mail.
            or_(
                Message.agent_check.is_(None),
                Message.agent_check.startswith(AGENT_OWN_MAIL, autoescape=True),
            ),
        )
        .group_by(Message.ticket_id)
    )
    counts: dict[int, int] = defaultdict(int)
    for query in (out, own):
        for ticket_id, n in conn.execute(query):
            counts[ticket_id] += n
    return counts


SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")


def counted_tickets(
    query: SelectT, assignee: Any, *, queue: str | None, agent: str | None
) -> SelectT:
    """`query` over the tickets QA and the KPIs count: not merged into another, with a
    human message from the customer, in `queue` (a mailbox name) and assigned to `agent`
    when given; joined to their mailbox and to `assignee` (an alias of Contact), ordered
    by number."""
    customer_wrote = exists().where(
        Message.ticket_id == Ticket.id,
        Message.direction == "in",
        Message.kind == MailKind.HUMAN.value,
    )
    query = (
        query.outerjoin(Mailbox, Mailbox.id == Ticket.mailbox_id)
        .outerjoin(assignee, assignee.id == Ticket.assignee_id)
        .where(Ticket.merged_into_id.is_(None), customer_wrote)
        .order_by(Ticket.id)
    )
    if queue is not None:
        query = query.where(Mailbox.name == queue)
    if agent is not None:
        query = query.where(func.lower(assignee.email) == agent.strip().lower())
    return query


def load_histories(
    conn: Connection,
    before: datetime,
    *,
    queue: str | None = None,
    agent: str | None = None,
    ids: Collection[int] | None = None,
) -> list[TicketHistory]:
    """The tickets the KPIs count (see the module docstring) created before `before`
    (only tickets `ids`, if given)."""
    assignee = aliased(Contact)
    query = counted_tickets(
        select(
            Ticket.id,
            Mailbox.name,
            assignee.email,
            Ticket.created_at,
            Ticket.status,
            Ticket.priority,
            Ticket.first_response_at,
            Ticket.csat_score,
        ),
        assignee,
        queue=queue,
        agent=agent,
    ).where(Ticket.created_at < before)
    if ids is not None:
        query = query.where(Ticket.id.in_(list(ids)))
    tickets = {
        row[0]: TicketHistory(
            id=row[0],
            queue=row[1],
            agent=row[2].lower() if row[2] else None,
            created_at=row[3],
            status=row[4],
            priority=row[5],
            first_response_at=row[6],
            csat=row[7],
        )
        for row in conn.execute(query)
    }
    events = select(
        TicketEvent.ticket_id, TicketEvent.at, TicketEvent.kind, TicketEvent.data
    ).where(
        TicketEvent.kind.in_(["status", "csat"]),
        TicketEvent.ticket_id.in_(query.with_only_columns(Ticket.id).order_by(None)),
    )
    for ticket_id, at, kind, data in conn.execute(events.order_by(TicketEvent.at, TicketEvent.id)):
        ticket = tickets.get(ticket_id)
        if ticket is None or not isinstance(data, dict):
            continue
        if kind == "status":
            was, to = str(data.get("from", "")), str(data.get("to", ""))
            ticket.changes.append(StatusChange(max(at, ticket.created_at), was, to))
        else:
            ticket.csat_at = at
    for ticket_id, n in _responses(conn).items():
        if ticket_id in tickets:
            tickets[ticket_id].responses = n
    return list(tickets.values())


def percentiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Median and 90th percentile (numpy's linear method), None for no values."""
    if not values:
        return None, None
    median, p90 = np.percentile(np.asarray(values, dtype=float), [50, 90])
    return round(float(median), 3), round(float(p90), 3)


def durations(pairs: Iterable[tuple[datetime, datetime, BusinessCalendar]]) -> dict[str, Any]:
    calendar_s: list[float] = []
    business_s: list[float] = []
    for start, end, calendar in pairs:
        calendar_s.append((end - start).total_seconds())
        business_s.append(calendar.business_seconds(start, end))
    median, p90 = percentiles(calendar_s)
    median_b, p90_b = percentiles(business_s)
    return {
        "n": len(calendar_s),
        "median_s": median,
        "p90_s": p90,
        "median_business_s": median_b,
        "p90_business_s": p90_b,
    }


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


class KpiReport:
    """Computes the figures of `postdesk kpi` for lists of ticket histories."""

    def __init__(self, settings: Settings, period: KpiPeriod) -> None:
        self.settings = settings
        self.period = period
        self._calendars: dict[str | None, BusinessCalendar] = {}

    def calendar(self, queue: str | None) -> BusinessCalendar:
        if queue not in self._calendars:
            self._calendars[queue] = calendar_for(self.settings, queue)
        return self._calendars[queue]

    def breached(self, ticket: TicketHistory) -> bool | None:
        """Whether either SLA clock is breached as of the period's end; None without [sla]."""
        return sla_breached(self.settings, ticket, self.calendar(ticket.queue), self.period.as_of)

    def figures(self, tickets: Sequence[TicketHistory]) -> dict[str, Any]:
        period, as_of = self.period, self.period.as_of
        created = [t for t in tickets if t.created_at in period]
        answered = [
            t for t in created if t.first_response_at is not None and t.first_response_at <= as_of
        ]
        solved = [(t, s) for t in tickets if (s := t.last_solve(as_of)) is not None and s in period]
        first_solved = [t for t in tickets if t.first_solve() in period]
        reopened = [t for t in first_solved if t.reopened_after(t.first_solve() or as_of, as_of)]
        breaches = [self.breached(t) for t in created]
        backlog = dict.fromkeys([name for name, _ in BACKLOG_BUCKETS], 0)
        for t in tickets:
            if t.status_at(as_of) in DONE:
                continue
            age = as_of - t.created_at
            name = next(n for n, limit in BACKLOG_BUCKETS if limit is None or age < limit)
            backlog[name] += 1
        backlog["total"] = sum(backlog.values())
        scores = [t.csat for t in tickets if t.csat is not None and t.csat_at in period]
        return {
            "volume": len(created),
            "first_response": durations(
                (t.created_at, t.first_response_at, self.calendar(t.queue))
                for t in answered
                if t.first_response_at is not None
            ),
            "resolution": durations((t.created_at, s, self.calendar(t.queue)) for t, s in solved),
            "one_touch_rate": _rate(sum(1 for t, _ in solved if t.responses == 1), len(solved)),
            "reopen_rate": _rate(len(reopened), len(first_solved)),
            "sla_breach_rate": (
                None
                if self.settings.sla is None
                else _rate(sum(1 for b in breaches if b), len(created))
            ),
            "backlog": backlog,
            "csat": {
                "responses": len(scores),
                "mean": round(sum(scores) / len(scores), 3) if scores else None,
                "share_4_5": _rate(sum(1 for s in scores if s >= 4), len(scores)),
            },
        }

    def report(self, tickets: Sequence[TicketHistory]) -> dict[str, Any]:
        result = self.figures(tickets)
        by_queue: dict[str, list[TicketHistory]] = defaultdict(list)
        by_agent: dict[str, list[TicketHistory]] = defaultdict(list)
        for t in tickets:
            by_queue[t.queue or UNASSIGNED].append(t)
            by_agent[t.agent or UNASSIGNED].append(t)
        result["by_queue"] = {k: self.figures(v) for k, v in sorted(by_queue.items())}
        result["by_agent"] = {k: self.figures(v) for k, v in sorted(by_agent.items())}
        return result


def sla_breached(
    settings: Settings, ticket: TicketHistory, calendar: BusinessCalendar, as_of: datetime
) -> bool | None:
    """Whether either of the ticket's SLA clocks is breached as of `as_of` (None: no [sla])."""
    if settings.sla is None:
        return None
    changes = [c for c in ticket.changes if c.at <= as_of]
    first = ticket.first_response_at
    state = sla_state(
        sla=settings.sla,
        calendar=calendar,
        created_at=ticket.created_at,
        status=ticket.status_at(as_of),
        changes=changes,
        priority=ticket.priority,
        first_response_at=first if first is not None and first <= as_of else None,
        solved_at=ticket.last_solve(as_of),
        now=as_of,
    )
    return state.first_response.breached or state.resolution.breached


def sla_breaches(
    conn: Connection, settings: Settings, ids: Collection[int], now: datetime
) -> dict[int, bool]:
    """Whether each of tickets `ids` has an SLA clock breached as of `now` (QA's risk
    factor); empty without [sla] (no SLA data: the risk factor stays unknown)."""
    if settings.sla is None or not ids:
        return {}
    report = KpiReport(settings, KpiPeriod(now, now, now))
    found = load_histories(conn, now, ids=ids)
    return {t.id: bool(report.breached(t)) for t in found}


def kpi_report(
    conn: Connection,
    settings: Settings,
    period: KpiPeriod,
    *,
    queue: str | None = None,
    agent: str | None = None,
) -> dict[str, Any]:
    """The `postdesk kpi --json` object (see the module docstring)."""
    tickets = load_histories(conn, period.as_of, queue=queue, agent=agent)
    return KpiReport(settings, period).report(tickets)
