"""A ticket's SLA state from its history (fixed clocks, both calendars, pauses)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from postdesk.config import SlaSettings, SlaTarget
from postdesk.sla.calendar import BusinessCalendar
from postdesk.sla.clock import SlaState, StatusChange, sla_state, state_json, timeline

TEHRAN = ZoneInfo("Asia/Tehran")
BERLIN = ZoneInfo("Europe/Berlin")
H = 3600
IRAN_WEEK = [((480, 960),)] * 3 + [((480, 720),), ()] + [((480, 960),)] * 2
BERLIN_WEEK = [((540, 1020),)] * 5 + [(), ()]

SLA = SlaSettings(
    targets=(
        ("low", SlaTarget(16 * H, 80 * H)),
        ("normal", SlaTarget(8 * H, 40 * H)),
        ("high", SlaTarget(4 * H, 16 * H)),
        ("urgent", SlaTarget(1 * H, 8 * H)),
    ),
    default_priority="normal",
    warn_before=1 * H,
)


def tehran() -> BusinessCalendar:
    return BusinessCalendar(
        "tehran", "Asia/Tehran", IRAN_WEEK, holiday_country="IR", holidays=[date(2026, 12, 13)]
    )


def berlin() -> BusinessCalendar:
    return BusinessCalendar("berlin", "Europe/Berlin", BERLIN_WEEK, holiday_country="DE")


def t(*parts: int, zone: ZoneInfo = TEHRAN) -> datetime:
    return datetime(*parts, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


def state(
    created: datetime,
    now: datetime,
    *,
    priority: str | None = "urgent",
    status: str = "new",
    changes: tuple[tuple[datetime, str, str], ...] = (),
    first_response_at: datetime | None = None,
    solved_at: datetime | None = None,
    calendar: BusinessCalendar | None = None,
) -> SlaState:
    return sla_state(
        sla=SLA,
        calendar=calendar or tehran(),
        created_at=created,
        status=status,
        changes=[StatusChange(*c) for c in changes],
        priority=priority,
        first_response_at=first_response_at,
        solved_at=solved_at,
        now=now,
    )


def test_urgent_on_wednesday_afternoon() -> None:
    created = t(2026, 12, 9, 15, 30)
    s = state(created, t(2026, 12, 9, 15, 45))
    assert s.first_response.due == t(2026, 12, 10, 8, 30)
    # 8h: half an hour on Wednesday, Thursday's four, three and a half on Saturday.
    assert s.resolution.due == t(2026, 12, 12, 11, 30)
    # 45 minutes of the hour are left: with warn_before = 1h the warning comes at half
    # the target instead (else every urgent ticket would be at risk on arrival).
    assert s.first_response.warn_before == 1800
    assert not s.first_response.at_risk and not s.first_response.breached
    assert not s.resolution.at_risk
    later = state(created, t(2026, 12, 9, 16, 0))  # closing time: 30 minutes left
    assert later.first_response.at_risk and not later.first_response.breached
    overnight = state(created, t(2026, 12, 9, 22, 0))  # still 30 minutes, tomorrow
    assert overnight.first_response.at_risk and not overnight.first_response.breached
    assert state_json(s) == {
        "calendar": "tehran",
        "priority": "urgent",
        "first_response_due": "2026-12-10T05:00:00Z",
        "resolution_due": "2026-12-12T08:00:00Z",
        "first_response_at": None,
        "resolved_at": None,
        "first_response_breached": False,
        "resolution_breached": False,
        "first_response_at_risk": False,
        "resolution_at_risk": False,
        "paused": False,
        "paused_seconds": 0,
    }


def test_unanswered_past_the_due_time_is_breached_and_answered_in_time_is_not() -> None:
    created = t(2026, 12, 9, 15, 30)
    late = state(created, t(2026, 12, 10, 9, 0))
    assert late.first_response.breached and not late.first_response.at_risk
    assert late.first_response.due == t(2026, 12, 10, 8, 30)
    answered = state(created, t(2026, 12, 10, 9, 0), first_response_at=t(2026, 12, 9, 15, 50))
    assert not answered.first_response.breached
    assert answered.first_response.due == t(2026, 12, 10, 8, 30)
    answered_late = state(created, t(2026, 12, 12, 9), first_response_at=t(2026, 12, 10, 8, 31))
    assert answered_late.first_response.breached
    # Still at risk Thursday 07:59? Nothing counts before 08:00: 31 minutes to go.
    early = state(created, t(2026, 12, 10, 7, 59))
    assert early.first_response.at_risk and not early.first_response.breached


def test_normal_on_thursday_is_due_saturday() -> None:
    s = state(t(2026, 12, 10, 11), t(2026, 12, 10, 11), priority="normal")
    assert s.first_response.due == t(2026, 12, 12, 15)
    assert not s.first_response.at_risk


def test_no_priority_is_held_to_the_default() -> None:
    s = state(t(2026, 12, 10, 11), t(2026, 12, 10, 11), priority=None)
    assert (s.priority, s.first_response.due) == ("normal", t(2026, 12, 12, 15))


def test_a_night_arrival_starts_at_opening() -> None:
    s = state(t(2026, 12, 7, 2, 0), t(2026, 12, 7, 2, 0))
    assert s.first_response.due == t(2026, 12, 7, 9)


def test_own_and_public_holidays_and_the_weekend() -> None:
    # Saturday 15:00 + 1h (urgent): Sunday 13 Dec is the team's own holiday.
    assert state(t(2026, 12, 12, 15, 30), t(2026, 12, 12, 15, 30)).first_response.due == t(
        2026, 12, 14, 8, 30
    )
    # Tuesday 22 Dec 15:30: Wednesday 23 Dec is a public holiday (Birthday of Imam Ali).
    assert state(t(2026, 12, 22, 15, 30), t(2026, 12, 22, 15, 30)).first_response.due == t(
        2026, 12, 24, 8, 30
    )
    # Berlin: Friday 16:30 + 1h is Monday 09:30.
    created = t(2026, 12, 4, 16, 30, zone=BERLIN)
    s = state(created, created, calendar=berlin())
    assert s.first_response.due == t(2026, 12, 7, 9, 30, zone=BERLIN)


def test_a_dst_change_in_berlin() -> None:
    # High (4h) from Friday 23 Oct 2026 15:00 CEST: 2h on Friday, 2h on Monday in CET.
    created = t(2026, 10, 23, 15, zone=BERLIN)
    s = state(created, created, priority="high", calendar=berlin())
    assert s.first_response.due == t(2026, 10, 26, 11, zone=BERLIN)
    assert s.first_response.due == datetime(2026, 10, 26, 10, tzinfo=UTC)


def test_pending_time_does_not_count_and_a_customer_reply_resumes() -> None:
    created = t(2026, 12, 14, 8)  # Monday
    changes = (
        (t(2026, 12, 14, 10), "new", "pending"),  # the agent answered and waits
        (t(2026, 12, 15, 10), "pending", "open"),  # the customer replied on Tuesday
    )
    s = state(
        created,
        t(2026, 12, 15, 12),
        priority="normal",
        changes=changes,
        first_response_at=t(2026, 12, 14, 10),
    )
    assert s.paused_seconds == 8 * H  # Monday 10-16 and Tuesday 08-10
    assert not s.paused
    # 40h counted, 8h of them paused: Mon 8, Tue 8, Wed 8, Thu 4, Sat 8, Sun 8, Mon 4.
    assert s.resolution.due == t(2026, 12, 21, 12)
    assert s.resolution.due == tehran().add_business(created, 48 * H)
    assert not s.first_response.breached
    assert state_json(s)["paused_seconds"] == 8 * H


def test_while_pending_the_due_time_waits_for_the_customer() -> None:
    created = t(2026, 12, 14, 8)
    changes = ((t(2026, 12, 14, 9), "new", "pending"),)
    now = t(2026, 12, 16, 10)
    s = state(created, now, changes=changes, first_response_at=t(2026, 12, 14, 9))
    assert s.paused
    assert not s.resolution.breached and not s.resolution.at_risk
    # 7 of the 8 hours are left, counted from now: Wednesday 10-16, then Thursday 08-09.
    assert s.resolution.due == t(2026, 12, 17, 9)
    assert s.paused_seconds == 7 * H + 8 * H + 2 * H


def test_solving_stops_the_clock_and_reopening_resumes_it() -> None:
    created = t(2026, 12, 14, 8)  # urgent: 8h to resolve
    solved = ((t(2026, 12, 14, 12), "new", "solved"),)
    s = state(
        created,
        t(2026, 12, 16, 12),
        status="solved",
        changes=solved,
        first_response_at=t(2026, 12, 14, 9),
        solved_at=t(2026, 12, 14, 12),
    )
    assert s.resolution.met_at == t(2026, 12, 14, 12)
    assert not s.resolution.breached
    assert s.resolution.due == t(2026, 12, 14, 16)  # had it kept running
    reopened = (*solved, (t(2026, 12, 14, 14), "solved", "open"))
    r = state(
        created,
        t(2026, 12, 15, 9),
        status="open",
        changes=reopened,
        first_response_at=t(2026, 12, 14, 9),
    )
    # 4h used before the solve; Monday 14-16 and Tuesday 08-10 are the other four.
    assert r.resolution.due == t(2026, 12, 15, 10)
    assert r.resolution.met_at is None
    assert r.resolution.at_risk and not r.resolution.breached
    broken = state(created, t(2026, 12, 15, 11), status="open", changes=reopened)
    assert broken.resolution.breached


def test_a_priority_change_recomputes_from_the_creation() -> None:
    created = t(2026, 12, 14, 8)
    now = t(2026, 12, 14, 8, 30)
    assert state(created, now, priority="low").first_response.due == t(2026, 12, 15, 16)
    assert state(created, now, priority="urgent").first_response.due == t(2026, 12, 14, 9)


def test_a_ticket_closed_from_the_start_never_runs() -> None:
    created = t(2026, 12, 14, 8)
    s = state(created, t(2026, 12, 30, 8), status="closed")
    assert not s.first_response.breached and not s.resolution.breached
    assert s.first_response.due == t(2026, 12, 14, 9)


def test_the_timeline_orders_and_clamps_changes() -> None:
    created = t(2026, 12, 14, 8)
    now = t(2026, 12, 14, 12)
    changes = [
        StatusChange(t(2026, 12, 14, 10), "pending", "open"),
        StatusChange(t(2026, 12, 14, 7), "new", "pending"),  # before the creation
    ]
    assert timeline(created, "open", changes, now) == [
        (created, t(2026, 12, 14, 10), "pending"),
        (t(2026, 12, 14, 10), now, "open"),
    ]
    assert timeline(created, "new", [], created) == [(created, created, "new")]


@pytest.mark.parametrize("warn", [0.0, 2 * H])
def test_warn_before_sets_the_at_risk_window(warn: float) -> None:
    sla = SlaSettings(targets=SLA.targets, warn_before=warn)
    created = t(2026, 12, 14, 8)
    s = sla_state(
        sla=sla,
        calendar=tehran(),
        created_at=created,
        status="new",
        changes=[],
        priority="high",  # 4h
        first_response_at=None,
        solved_at=None,
        now=t(2026, 12, 14, 10, 30),
    )
    assert s.first_response.at_risk is (warn > 0)
