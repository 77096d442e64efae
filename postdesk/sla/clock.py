"""A ticket's SLA state, computed from its history: a pure function, no database.

Two clocks run in business time (postdesk/sla/calendar.py) from the ticket's creation
(for imported mail: its Date header): the first response, met by the first reply to
the customer (`first_response_at`), and the resolution, met by solving the ticket.

- A clock counts while the ticket is `new` or `open`. While it is `pending` (waiting for
  the customer) the clocks are paused: that business time is `paused_seconds`, and a
  customer's reply (pending -> open) resumes them. While it is `solved` or `closed` the
  clocks stand still; reopening resumes the resolution clock from where it stopped.
- A clock's due time is the instant its target is used up. Until then it is projected:
  from now for a running or paused clock (a paused clock's due time moves with the
  pause), from the moment it was met or stopped otherwise.
- Breached: the target was used up before the clock was met (or is used up by now).
  At risk: running, not breached, and at most `warn_before` of business time to go, or
  half the target where that is shorter: with the issue's own example (urgent: 1 h,
  warn_before 1 h) every urgent ticket would otherwise be "at risk" the moment it
  arrives, an alert nobody can act on that only repeats the notification.

The target is the ticket's priority's (its own, else [sla] default_priority); a priority
change therefore recomputes the due times from the creation on the next read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from postdesk.config import SlaSettings
from postdesk.sla.calendar import BusinessCalendar

RUNNING = ("new", "open")
PAUSED = ("pending",)


@dataclass(frozen=True)
class StatusChange:
    """A status event of the ticket: from `at` on, the ticket was `to` (it was `was`)."""

    at: datetime
    was: str
    to: str


@dataclass(frozen=True)
class Clock:
    """One SLA clock: when it is due, when it was met, and how it stands."""

    due: datetime
    met_at: datetime | None
    breached: bool
    at_risk: bool
    warn_before: float = 0.0  # business seconds before `due` it counts as at risk


@dataclass(frozen=True)
class SlaState:
    """Both clocks of a ticket and what they were computed with."""

    calendar: str
    priority: str
    first_response: Clock
    resolution: Clock
    paused_seconds: float
    paused: bool  # the ticket is pending now


Segment = tuple[datetime, datetime, str]  # from, to, the status in between


def timeline(
    created_at: datetime, status: str, changes: Sequence[StatusChange], now: datetime
) -> list[Segment]:
    """The ticket's statuses from its creation to `now`, as back-to-back segments.

    The first status is what the first change moved away from (else the current one);
    changes before the creation (imported history out of order) count from the creation.
    """
    ordered = sorted(changes, key=lambda c: c.at)
    current = ordered[0].was if ordered else status
    start = created_at
    segments: list[Segment] = []
    for change in ordered:
        at = min(max(change.at, created_at), max(now, created_at))
        if at > start:
            segments.append((start, at, current))
            start = at
        current = change.to
    if now > start:
        segments.append((start, now, current))
    elif not segments:
        segments.append((start, start, current))
    return segments


def run_clock(
    segments: Sequence[Segment],
    target: float,
    *,
    met_at: datetime | None,
    now: datetime,
    calendar: BusinessCalendar,
    warn_before: float,
) -> Clock:
    """Run one clock over `segments` until `met_at` (or now)."""
    warn_before = min(warn_before, target / 2)
    limit = min(met_at, now) if met_at is not None else now
    remaining = target
    for start, end, status in segments:
        end = min(end, limit)
        if end <= start or status not in RUNNING:
            continue
        used = calendar.business_seconds(start, end)
        if used >= remaining:
            due = calendar.add_business(start, remaining)
            breached = met_at is None or met_at > due
            return Clock(due, met_at, breached, at_risk=False, warn_before=warn_before)
        remaining -= used
    last_start, _, last_status = segments[-1]
    if met_at is not None:
        base = met_at
    elif last_status in RUNNING or last_status in PAUSED:
        base = now
    else:  # solved or closed without being met: it stopped when the ticket did
        base = last_start
    due = calendar.add_business(base, remaining)
    at_risk = (
        met_at is None
        and last_status in RUNNING
        and warn_before > 0
        and calendar.business_seconds(now, due) <= warn_before
    )
    return Clock(due, met_at, breached=False, at_risk=at_risk, warn_before=warn_before)


def sla_state(
    *,
    sla: SlaSettings,
    calendar: BusinessCalendar,
    created_at: datetime,
    status: str,
    changes: Sequence[StatusChange],
    priority: str | None,
    first_response_at: datetime | None,
    solved_at: datetime | None,
    now: datetime,
) -> SlaState:
    """The SLA state of a ticket as of `now` (see the module docstring)."""
    name, target = sla.target(priority)
    segments = timeline(created_at, status, changes, now)

    def run(seconds: float, met_at: datetime | None) -> Clock:
        met = max(met_at, created_at) if met_at is not None else None
        return run_clock(
            segments, seconds, met_at=met, now=now, calendar=calendar, warn_before=sla.warn_before
        )

    first = run(target.first_response, first_response_at)
    resolution = run(target.resolution, solved_at if status in ("solved", "closed") else None)
    paused = sum(calendar.business_seconds(start, end) for start, end, s in segments if s in PAUSED)
    return SlaState(calendar.name, name, first, resolution, paused, segments[-1][2] in PAUSED)


def utc_iso(value: datetime | None) -> str | None:
    """`value` as ISO 8601 in UTC with a Z, as `tickets show --json` prints SLA times."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def state_json(state: SlaState) -> dict[str, object]:
    """The `sla` object of `tickets show --json`."""
    return {
        "calendar": state.calendar,
        "priority": state.priority,
        "first_response_due": utc_iso(state.first_response.due),
        "resolution_due": utc_iso(state.resolution.due),
        "first_response_at": utc_iso(state.first_response.met_at),
        "resolved_at": utc_iso(state.resolution.met_at),
        "first_response_breached": state.first_response.breached,
        "resolution_breached": state.resolution.breached,
        "first_response_at_risk": state.first_response.at_risk,
        "resolution_at_risk": state.resolution.at_risk,
        "paused": state.paused,
        "paused_seconds": round(state.paused_seconds),
    }
