"""Business time: adding and counting working time in the team's calendar (fixed clocks)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from postdesk.sla.calendar import (
    MAX_IDLE_DAYS,
    AroundTheClock,
    BusinessCalendar,
    CalendarError,
)

TEHRAN = ZoneInfo("Asia/Tehran")
BERLIN = ZoneInfo("Europe/Berlin")
H = 3600

# The weeks: Saturday to Wednesday 08-16, Thursday 08-12, Friday off (Monday first).
IRAN_WEEK = [((480, 960),)] * 3 + [((480, 720),), ()] + [((480, 960),)] * 2
# Monday to Friday 09-17, Tuesday with a lunch break.
BERLIN_WEEK = [((540, 1020),), ((540, 720), (780, 1020))] + [((540, 1020),)] * 3 + [(), ()]


def tehran() -> BusinessCalendar:
    return BusinessCalendar(
        "tehran", "Asia/Tehran", IRAN_WEEK, holiday_country="IR", holidays=[date(2026, 12, 13)]
    )


def berlin() -> BusinessCalendar:
    return BusinessCalendar("berlin", "Europe/Berlin", BERLIN_WEEK, holiday_country="DE")


def at(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)  # type: ignore[misc]


def due(calendar: BusinessCalendar, start: datetime, hours: float) -> datetime:
    found = calendar.add_business(start, hours * H)
    assert found.tzinfo is UTC
    return found.astimezone(start.tzinfo)


# --- the examples and the cases criterion 1 names ---------------------------------


def test_urgent_on_wednesday_afternoon_is_due_thursday_morning() -> None:
    # Wed 15:30 + 1h: half an hour on Wednesday, half an hour on Thursday.
    assert due(tehran(), at(TEHRAN, 2026, 12, 9, 15, 30), 1) == at(TEHRAN, 2026, 12, 10, 8, 30)
    assert tehran().add_business(at(TEHRAN, 2026, 12, 9, 15, 30), H) == datetime(
        2026, 12, 10, 5, 0, tzinfo=UTC
    )


def test_normal_on_thursday_is_due_saturday_past_the_half_day_and_friday() -> None:
    # Thu 11:00 + 8h: one hour on Thursday (it ends at 12), Friday off, seven on Saturday.
    assert due(tehran(), at(TEHRAN, 2026, 12, 10, 11), 8) == at(TEHRAN, 2026, 12, 12, 15)
    assert tehran().business_seconds(
        at(TEHRAN, 2026, 12, 10, 11), at(TEHRAN, 2026, 12, 12, 15)
    ) == pytest.approx(8 * H)


def test_thursday_afternoon_and_friday_count_nothing() -> None:
    assert due(tehran(), at(TEHRAN, 2026, 12, 10, 13), 1) == at(TEHRAN, 2026, 12, 12, 9)
    assert due(tehran(), at(TEHRAN, 2026, 12, 11, 10), 1) == at(TEHRAN, 2026, 12, 12, 9)
    thursday_noon, saturday_8 = at(TEHRAN, 2026, 12, 10, 12), at(TEHRAN, 2026, 12, 12, 8)
    assert tehran().business_seconds(thursday_noon, saturday_8) == 0


def test_a_night_arrival_starts_at_the_next_opening() -> None:
    assert due(tehran(), at(TEHRAN, 2026, 12, 7, 2, 0), 1) == at(TEHRAN, 2026, 12, 7, 9)
    # Monday 23:59 + 8h: Tuesday has seven working hours (lunch break), then Wednesday 9-10.
    assert due(berlin(), at(BERLIN, 2026, 12, 7, 23, 59), 8) == at(BERLIN, 2026, 12, 9, 10)


def test_an_amount_ending_at_closing_time_is_due_at_closing_time() -> None:
    assert due(tehran(), at(TEHRAN, 2026, 12, 9, 15), 1) == at(TEHRAN, 2026, 12, 9, 16)
    assert due(tehran(), at(TEHRAN, 2026, 12, 10, 8), 4) == at(TEHRAN, 2026, 12, 10, 12)


def test_an_own_holiday_is_skipped() -> None:
    # Sunday 2026-12-13 is the team's own day off: Saturday 15:00 + 2h is Monday 09:00.
    assert due(tehran(), at(TEHRAN, 2026, 12, 12, 15), 2) == at(TEHRAN, 2026, 12, 14, 9)
    without = BusinessCalendar("t", "Asia/Tehran", IRAN_WEEK)
    assert due(without, at(TEHRAN, 2026, 12, 12, 15), 2) == at(TEHRAN, 2026, 12, 13, 9)


def test_an_iranian_public_holiday_is_skipped() -> None:
    # Wednesday 2026-12-23 (Birthday of Imam Ali) is a public holiday in Iran.
    assert tehran().is_holiday(date(2026, 12, 23))
    assert due(tehran(), at(TEHRAN, 2026, 12, 22, 15, 30), 1) == at(TEHRAN, 2026, 12, 24, 8, 30)
    # Nowruz: 2027-03-21 (Sunday) to 03-24; from Saturday 20 March 15:00 + 2h.
    start = at(TEHRAN, 2027, 3, 20, 15)
    assert tehran().is_holiday(date(2027, 3, 20))  # oil nationalization day
    found = due(tehran(), start, 2)
    assert found.date() > date(2027, 3, 24)
    assert all(tehran().is_holiday(date(2027, 3, d)) for d in (21, 22, 23, 24))


def test_a_weekend_is_skipped_in_berlin() -> None:
    assert due(berlin(), at(BERLIN, 2026, 12, 4, 16), 2) == at(BERLIN, 2026, 12, 7, 10)
    friday_17, monday_9 = at(BERLIN, 2026, 12, 4, 17), at(BERLIN, 2026, 12, 7, 9)
    assert berlin().business_seconds(friday_17, monday_9) == 0


def test_german_public_holidays_are_skipped() -> None:
    # 24 Dec (Thursday) is a working day, 25 and 26 Dec are holidays, then the weekend.
    assert due(berlin(), at(BERLIN, 2026, 12, 24, 16), 2) == at(BERLIN, 2026, 12, 28, 10)


def test_several_ranges_a_day() -> None:
    # Tuesday: 09-12 and 13-17; the lunch hour does not count.
    assert due(berlin(), at(BERLIN, 2026, 12, 8, 11, 30), 1) == at(BERLIN, 2026, 12, 8, 13, 30)
    assert due(berlin(), at(BERLIN, 2026, 12, 8, 12, 15), 1) == at(BERLIN, 2026, 12, 8, 14)
    tuesday = berlin().business_seconds(at(BERLIN, 2026, 12, 8, 0), at(BERLIN, 2026, 12, 9, 0))
    assert tuesday == 7 * H


def test_working_hours_follow_the_clock_across_a_dst_change() -> None:
    # Berlin leaves summer time on Sunday 2026-10-25: Friday 16:00 is 14:00 UTC, Monday
    # 10:00 is 09:00 UTC. Two business hours, though 67 hours pass in UTC.
    start = at(BERLIN, 2026, 10, 23, 16)
    found = berlin().add_business(start, 2 * H)
    assert found == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)
    assert found.astimezone(BERLIN).hour == 10
    # And back into summer time on 2027-03-28 (Easter Sunday: without public holidays here,
    # as Good Friday and Easter Monday would hide the change).
    plain = BusinessCalendar("plain", "Europe/Berlin", BERLIN_WEEK)
    assert due(plain, at(BERLIN, 2027, 3, 26, 16), 2) == at(BERLIN, 2027, 3, 29, 10)
    assert plain.add_business(at(BERLIN, 2027, 3, 26, 16), 2 * H) == datetime(
        2027, 3, 29, 8, 0, tzinfo=UTC
    )
    # With them: Friday and Monday are off, Tuesday has the two hours.
    assert due(berlin(), at(BERLIN, 2027, 3, 26, 16), 2) == at(BERLIN, 2027, 3, 30, 11)


def test_a_day_with_a_dst_change_counts_its_real_length() -> None:
    always = BusinessCalendar("berlin-24x7", "Europe/Berlin", [((0, 1440),)] * 7)
    fall = always.business_seconds(at(BERLIN, 2026, 10, 25, 0), at(BERLIN, 2026, 10, 26, 0))
    spring = always.business_seconds(at(BERLIN, 2027, 3, 28, 0), at(BERLIN, 2027, 3, 29, 0))
    assert (fall, spring) == (25 * H, 23 * H)
    # A range over the jump: Sunday 01:00-04:00 is two real hours on 2027-03-28.
    night = BusinessCalendar("night", "Europe/Berlin", [()] * 6 + [((60, 240),)])
    day = night.intervals(date(2027, 3, 28))
    assert [(b.hour, f.hour) for b, f in day] == [(0, 2)]  # 01:00 CET .. 04:00 CEST, in UTC
    assert night.add_business(at(BERLIN, 2027, 3, 28, 1), 2 * H) == datetime(
        2027, 3, 28, 2, 0, tzinfo=UTC
    )


def test_zero_and_negative_spans() -> None:
    start = at(TEHRAN, 2026, 12, 11, 10)  # a Friday: no working time
    assert tehran().add_business(start, 0) == start.astimezone(UTC)
    assert tehran().business_seconds(start, start - timedelta(hours=5)) == 0


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        tehran().add_business(datetime(2026, 12, 9, 10), H)


def test_a_week_without_working_time_is_refused() -> None:
    with pytest.raises(ValueError, match="no working hours"):
        BusinessCalendar("none", "UTC", [()] * 7)


def test_a_search_stops_when_no_working_day_comes() -> None:
    # Only Mondays work, and every Monday for years is an own holiday.
    mondays = [date(2026, 12, 7) + timedelta(weeks=n) for n in range(200)]
    only_mondays = [((540, 1020),)] + [()] * 6
    calendar = BusinessCalendar("never", "UTC", only_mondays, holidays=mondays)
    with pytest.raises(CalendarError, match=f"no working time in {MAX_IDLE_DAYS} days"):
        calendar.add_business(datetime(2026, 12, 1, tzinfo=UTC), H)


def test_around_the_clock_counts_every_second() -> None:
    clock = AroundTheClock()
    start = datetime(2026, 12, 11, 23, 0, tzinfo=UTC)
    assert clock.add_business(start, 2 * H) == datetime(2026, 12, 12, 1, 0, tzinfo=UTC)
    assert clock.business_seconds(start, start + timedelta(days=3)) == 72 * H


# --- property: adding and counting are inverse ----------------------------------------------


@pytest.mark.parametrize("make", [tehran, berlin], ids=["tehran", "berlin"])
def test_add_and_count_are_inverse_on_random_inputs(make: type[BusinessCalendar]) -> None:
    calendar = make()
    rng = random.Random(20261205)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(400):
        a = base + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        seconds = rng.choice([rng.randrange(1, 120 * H), rng.randrange(1, 90) * 60])
        b = calendar.add_business(a, seconds)
        assert b >= a
        assert calendar.business_seconds(a, b) == pytest.approx(seconds, abs=1e-6)
        # Splitting an amount changes nothing.
        part = rng.randrange(0, seconds + 1)
        assert calendar.add_business(calendar.add_business(a, part), seconds - part) == b
        # Counting, then adding, lands on b when b is working time, else no later than b.
        c = a + timedelta(seconds=rng.randrange(0, 30 * 86400))
        counted = calendar.business_seconds(a, c)
        back = calendar.add_business(a, counted)
        if counted > 0:
            assert back <= c
            assert calendar.business_seconds(back, c) == 0
            working = any(begin <= c < finish for begin, finish in _spans_near(calendar, c))
            if working:
                assert back == c


def _spans_near(calendar: BusinessCalendar, instant: datetime) -> list[tuple[datetime, datetime]]:
    local = instant.astimezone(calendar.zone).date()
    return [s for d in (-1, 0, 1) for s in calendar.intervals(local + timedelta(days=d))]
