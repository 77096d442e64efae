"""SLA alerts: the at-risk and the breach alert, once each per clock and due time.

Each pass of `postdesk run` calls `SlaAlerts.check(now)`. For every ticket that is not
solved or closed it reads the SLA state (clock.py, computed on read) and, for each of
the two clocks not met yet:

- **at risk** (running, at most `[sla] warn_before` of business time left, or half the
  target if shorter: clock.py): the at-risk
  alert; **breached** (the due time has passed): the breach alert. A pass that comes
  after the due time without having seen the ticket at risk sends only the breach.
- The alert goes to the ticket's assignee when they are an agent, else to the agents
  of its queue (`[[agent]] queues`, everybody when empty), in each agent's language,
  through the outbox, with the Reply-To of an agent notification (a token signed for
  the ticket and that agent), so answering the alert answers the customer.
- **Once per due time.** Each alert is a row of `sla_alerts` (ticket, clock, kind, due
  time, unique), inserted in the same transaction (a savepoint of it) as its outbox
  rows: the mails exist exactly when the record does, and a second instance checking
  the same ticket at the same moment fails on the constraint and sends nothing. A due
  time that moves (a priority change, a pause while pending) is a new due time: its
  alerts may go out again. Due times are compared to the second.
- A met clock (first response given, ticket solved) alerts no more.
- A ticket whose mail is all imported history gets its alerts recorded but not mailed:
  importing old open tickets must not flood the agents with breaches.

**Cheap passes.** Every pass reads the open tickets' few columns (one indexed query),
but computes the state only of a ticket that changed since this process last looked
(status, priority, assignee, first response, solved, updated_at) or whose next moment
of interest has come: when its running clock will become at risk, or will be due. So a
pass over a few thousand quiet open tickets does no calendar arithmetic at all; the
first pass after a start computes them all once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, exists, insert, select
from sqlalchemy.exc import IntegrityError

from postdesk.config import Settings
from postdesk.ingest.store import IMPORT
from postdesk.ingest.tokens import ReplyTokens, new_message_id
from postdesk.models import Contact, Mailbox, Message, RawMessage, SlaAlert, Ticket
from postdesk.models.base import table_of
from postdesk.models.db import Database, is_outage
from postdesk.models.tickets import AGENT
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.notification import Agent
from postdesk.notify.templates import Templates
from postdesk.sla.calendar import BusinessCalendar
from postdesk.sla.clock import RUNNING, Clock, SlaState
from postdesk.sla.view import OPEN_TICKETS, Calendars, state_of, status_changes

log = logging.getLogger(__name__)

AT_RISK = "at_risk"
BREACH = "breach"
CLOCKS = ("first_response", "resolution")

_alerts = table_of(SlaAlert)
_contacts = table_of(Contact)
_tickets = table_of(Ticket)
_mailboxes = table_of(Mailbox)
_messages = table_of(Message)


@dataclass(frozen=True)
class Due:
    """One alert to send: ticket, clock, kind, and the due time it is about."""

    ticket_id: int
    clock: str
    kind: str
    due: datetime


@dataclass
class AlertResult:
    """What one check did."""

    computed: int = 0  # tickets whose SLA state was computed
    alerts: int = 0  # alerts recorded (each one or more mails)
    mails: int = 0  # mails queued
    taken: int = 0  # alerts another instance recorded first
    errors: list[str] = field(default_factory=list)


def to_second(instant: datetime) -> datetime:
    """`instant` rounded to the nearest second: the due time an alert is recorded for."""
    return (instant + timedelta(microseconds=500_000)).replace(microsecond=0)


def wanted(ticket_id: int, state: SlaState) -> list[Due]:
    """The alerts ticket `ticket_id`'s state calls for now (recorded or not)."""
    found = []
    for name, clock in zip(CLOCKS, (state.first_response, state.resolution), strict=True):
        if clock.met_at is not None:
            continue
        if clock.breached:
            found.append(Due(ticket_id, name, BREACH, to_second(clock.due)))
        elif clock.at_risk:
            found.append(Due(ticket_id, name, AT_RISK, to_second(clock.due)))
    return found


def next_look(
    state: SlaState, status: str, calendar: BusinessCalendar, now: datetime
) -> datetime | None:
    """When this ticket's state can next call for an alert without a change to the ticket:
    the moment a running clock becomes at risk, or is due. None: not before it changes
    (paused, or every clock met or breached)."""
    if status not in RUNNING:
        return None
    moments = []
    for clock in (state.first_response, state.resolution):
        moments.extend(_clock_moments(clock, calendar, now))
    return min(moments, default=None)


def _clock_moments(clock: Clock, calendar: BusinessCalendar, now: datetime) -> list[datetime]:
    if clock.met_at is not None or clock.breached:
        return []
    if clock.at_risk or clock.warn_before <= 0:
        return [clock.due]
    left = calendar.business_seconds(now, clock.due)
    return [calendar.add_business(now, max(left - clock.warn_before, 0.0)), clock.due]


Key = tuple[Any, ...]


ALERT_BATCH = 100  # alerts per commit


class SlaAlerts:
    """Checks the open tickets' clocks and queues the alerts they call for (see above).

    Kept by the service from pass to pass: it remembers when each ticket needs looking
    at again. Forgetting is safe (the next check computes again); the record in
    `sla_alerts` is what keeps alerts to once.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        templates: Templates,
        tokens: ReplyTokens,
    ) -> None:
        if settings.sla is None:
            raise ValueError("SLA alerts need [sla]")
        self.settings = settings
        self.sla = settings.sla
        self.db = db
        self.templates = templates
        self.tokens = tokens
        self.agents = {
            a.email.lower(): Agent(a.email, a.name, a.queues, a.language) for a in settings.agents
        }
        self.teams = {box.name: box.team for box in settings.mailboxes}
        self.calendars = Calendars(settings)
        self._looked: dict[int, tuple[Key, datetime | None]] = {}

    def check(self, now: datetime) -> AlertResult:
        """Queue every alert the open tickets call for as of `now` that is not recorded."""
        result = AlertResult()
        with self.db.read_session() as session:
            rows = session.execute(OPEN_TICKETS).all()
            keys = {row.id: _key(row) for row in rows}
            stale = [row for row in rows if self._needs_look(row.id, keys[row.id], now)]
            changes = status_changes(session, [row.id for row in stale])
        open_ids = set(keys)
        for gone in [t for t in self._looked if t not in open_ids]:
            del self._looked[gone]
        due: list[Due] = []
        looks: dict[int, datetime | None] = {}
        for row in stale:
            state = state_of(self.settings, self.calendars, row, changes.get(row.id, []), now)
            result.computed += 1
            due.extend(wanted(row.id, state))
            looks[row.id] = next_look(state, row.status, self.calendars(row.mailbox), now)
        recorded = self._recorded({d.ticket_id for d in due})
        pending = [a for a in due if (a.ticket_id, a.clock, a.kind, a.due) not in recorded]
        failed: set[int] = set()
        # A commit per batch, a savepoint per alert: one alert's failure (or another
        # instance's record of it) still undoes only that alert. (A commit per alert
        # made the first pass over a backlog about 15% slower, bench/sla.py; the rest
        # is composing the mails.)
        for start in range(0, len(pending), ALERT_BATCH):
            with self.db.transaction() as session:
                for alert in pending[start : start + ALERT_BATCH]:
                    try:
                        with session.begin_nested():
                            mails = self._send(session.connection(), alert, now)
                    except IntegrityError:
                        result.taken += 1  # another instance recorded it first and sent it
                        continue
                    except Exception as exc:  # one ticket's failure must not stop the others
                        if is_outage(exc):
                            raise
                        failed.add(alert.ticket_id)
                        message = f"ticket #{alert.ticket_id}: {alert.kind} alert: {exc}"
                        result.errors.append(message)
                        log.error("sla: %s", " ".join(message.split()))
                        continue
                    result.alerts += 1
                    result.mails += mails
        for ticket_id, look in looks.items():
            if ticket_id not in failed:
                self._looked[ticket_id] = (keys[ticket_id], look)
        return result

    def _needs_look(self, ticket_id: int, key: Key, now: datetime) -> bool:
        seen = self._looked.get(ticket_id)
        if seen is None or seen[0] != key:
            return True
        look = seen[1]
        return look is not None and look <= now

    def _recorded(self, ids: set[int]) -> set[tuple[int, str, str, datetime]]:
        if not ids:
            return set()
        with self.db.read_session() as session:
            rows = session.execute(
                select(
                    _alerts.c.ticket_id, _alerts.c.clock, _alerts.c.kind, _alerts.c.due_at
                ).where(_alerts.c.ticket_id.in_(sorted(ids)))
            ).all()
        return {(r.ticket_id, r.clock, r.kind, r.due_at) for r in rows}

    def _send(self, conn: Connection, alert: Due, now: datetime) -> int:
        """Record `alert` and queue its mails in the caller's transaction; the number of
        mails. Raises IntegrityError when it is recorded already (another instance)."""
        ticket = _ticket(conn, alert.ticket_id)
        chosen = self._recipients(conn, ticket)
        conn.execute(
            insert(_alerts),
            {
                "ticket_id": alert.ticket_id,
                "clock": alert.clock,
                "kind": alert.kind,
                "due_at": alert.due,
                "created_at": now,
                "recipients": [agent.email.lower() for agent, _ in chosen],
            },
        )
        if ticket is None or ticket.address is None:
            log.warning("sla: ticket #%d has no mailbox to send from", alert.ticket_id)
            return 0
        if not conn.execute(_LIVE, {"ticket_id": alert.ticket_id}).scalar():
            # Imported history tells nobody (like acknowledgements and notifications):
            # importing a year of old open tickets must not flood the agents. The alert
            # is recorded all the same; live mail on the ticket starts anew.
            log.info("sla: ticket #%d is imported history: no alert mail", alert.ticket_id)
            return 0
        for agent, agent_id in chosen:
            self._queue(conn, ticket, alert, agent, agent_id, now)
        log.info(
            "sla: ticket #%d: %s alert for the %s due %s to %s",
            alert.ticket_id,
            alert.kind,
            alert.clock.replace("_", " "),
            alert.due.isoformat(),
            ", ".join(agent.email for agent, _ in chosen) or "nobody (no agent serves it)",
        )
        return len(chosen)

    def _recipients(self, conn: Connection, ticket: Any) -> list[tuple[Agent, int]]:
        """The assignee when an agent, else the agents of the ticket's queue, with their
        contact ids (what reply tokens are signed for)."""
        if ticket is None or not self.agents:
            return []
        if ticket.assignee and ticket.assignee.lower() in self.agents:
            chosen: Sequence[Agent] = [self.agents[ticket.assignee.lower()]]
        else:
            chosen = [a for a in self.agents.values() if a.serves(ticket.mailbox or "")]
        ids = dict(
            (email.lower(), contact_id)
            for contact_id, email in conn.execute(
                select(_contacts.c.id, _contacts.c.email).where(
                    _contacts.c.email.in_([a.email.lower() for a in chosen]),
                    _contacts.c.role == AGENT,
                )
            )
        )
        return [(a, ids[a.email.lower()]) for a in chosen if a.email.lower() in ids]

    def _queue(
        self,
        conn: Connection,
        ticket: Any,
        alert: Due,
        agent: Agent,
        agent_id: int,
        now: datetime,
    ) -> None:
        calendar = self.calendars(ticket.mailbox)
        priority, _ = self.sla.target(ticket.priority)
        requester = (
            f"{ticket.requester_name} <{ticket.requester_email}>"
            if ticket.requester_name
            else ticket.requester_email or ""
        )
        rendered = self.templates.render(
            f"sla_{alert.kind}",
            agent.language,
            ticket_number=alert.ticket_id,
            subject=ticket.subject,
            team=self.teams.get(ticket.mailbox or "", "Support"),
            agent_name=agent.name,
            requester=requester,
            priority=priority,
            clock=alert.clock,
            due=alert.due,
            timezone=str(calendar.zone),
        )
        domain = ticket.address.rpartition("@")[2] or "localhost"
        root = conn.execute(
            select(_messages.c.message_id)
            .where(_messages.c.ticket_id == alert.ticket_id, _messages.c.message_id.is_not(None))
            .order_by(_messages.c.id)
            .limit(1)
        ).scalar_one_or_none()
        envelope = Envelope(
            from_name=self.teams.get(ticket.mailbox or "", "Support"),
            from_address=ticket.address,
            to=agent.email,
            to_name=agent.name,
            reply_to=self.tokens.agent_address(ticket.address, alert.ticket_id, agent_id),
            message_id=new_message_id(domain),
            in_reply_to=root or None,
        )
        # Like notifications: automatic (no person wrote it) but never limited.
        queue_mail(
            conn,
            rendered,
            envelope,
            kind=f"sla_{alert.kind}",
            ticket_id=alert.ticket_id,
            language=agent.language,
            at=now,
            automatic=True,
            limited=False,
        )


_raw = table_of(RawMessage)
# The ticket has mail that came in live (fetched), not only imported history.
_LIVE = select(
    exists().where(
        _messages.c.ticket_id == bindparam("ticket_id"),
        _messages.c.raw_message_id == _raw.c.id,
        _raw.c.source != IMPORT,
    )
)


def _key(row: Any) -> Key:
    """What changes when anything the ticket's SLA state depends on changes."""
    return (
        row.status,
        row.priority,
        row.assignee_id,
        row.mailbox_id,
        row.first_response_at,
        row.solved_at,
        row.updated_at,
    )


_requesters = _contacts.alias("requester")
_assignees = _contacts.alias("assignee")


def _ticket(conn: Connection, ticket_id: int) -> Any:
    return conn.execute(
        select(
            _tickets.c.subject,
            _tickets.c.priority,
            _mailboxes.c.name.label("mailbox"),
            _mailboxes.c.address,
            _requesters.c.email.label("requester_email"),
            _requesters.c.name.label("requester_name"),
            _assignees.c.email.label("assignee"),
        )
        .outerjoin(_mailboxes, _mailboxes.c.id == _tickets.c.mailbox_id)
        .outerjoin(_requesters, _requesters.c.id == _tickets.c.requester_id)
        .outerjoin(_assignees, _assignees.c.id == _tickets.c.assignee_id)
        .where(_tickets.c.id == ticket_id)
    ).first()
