"""Business time: adding and counting working time in a team's calendar.

A calendar is a time zone, a week of working ranges in local wall-clock time (several a
day, e.g. "08:00-12:00,13:00-17:00"; a Thursday half day), a country's public holidays
(the maintained `holidays` package, e.g. "IR" for Iran's solar and lunar holidays) and
the team's own days off. All instants in and out are timezone-aware; results are UTC.

- `add_business(start, seconds)`: the instant at which `seconds` of working time have
  passed since `start`. A start outside working hours starts at the next opening; an
  amount that ends exactly at a closing time gives that closing time.
- `business_seconds(a, b)`: the working time between `a` and `b` (0 if b <= a).

For b in working time the two are inverse: add_business(a, business_seconds(a, b)) == b.

Why not a library: `businesstimedelta` (the one maintained-looking candidate) is built on
pytz (not zoneinfo), has had no release since 2020, and has no bound on its searches;
`business-duration` only counts durations (pandas), it cannot add. Neither does several
ranges a day per weekday plus own holidays plus DST with zoneinfo as one tested unit, so
the interval arithmetic is here (about a hundred lines), and `holidays` supplies the
public holidays.

Each local day's working ranges are turned into UTC instants through the zone, so a day
with a DST change counts its real length (a range that spans the jump is an hour
shorter or longer), and a range starting in a skipped hour starts when the clocks say
so. Searches walk day by day and stop after MAX_DAYS days, or MAX_IDLE_DAYS days in a
row without working time (a calendar whose every working day is a holiday), with a
CalendarError instead of looping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from postdesk.config import CalendarSettings
from postdesk.errors import PostdeskError

MAX_DAYS = 366 * 20  # the longest any search walks: twenty years
MAX_IDLE_DAYS = 400  # days in a row with no working time before giving up

Ranges = Sequence[tuple[int, int]]  # minutes of the day: (start, end), in order


class CalendarError(PostdeskError):
    """A search in a calendar found no working time within its bound."""


class BusinessCalendar:
    """Working time in one time zone: a week of ranges, minus holidays."""

    def __init__(
        self,
        name: str,
        timezone: str,
        week: Sequence[Ranges],
        *,
        holiday_country: str = "",
        holidays: Sequence[date] = (),
    ) -> None:
        if len(week) != 7:
            raise ValueError("week must have 7 days, Monday first")
        if not any(week):
            raise ValueError(f"calendar {name!r} has no working hours")
        self.name = name
        self.zone = ZoneInfo(timezone)
        self.week = tuple(tuple(day) for day in week)
        self.own_holidays = frozenset(holidays)
        self._public: Callable[[date], bool] = _public_holidays(holiday_country)
        self._days: dict[date, tuple[tuple[datetime, datetime], ...]] = {}

    def is_holiday(self, day: date) -> bool:
        """Whether `day` (a local date) is a day off: a public or an own holiday."""
        return day in self.own_holidays or self._public(day)

    def intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The working intervals of local date `day`, as UTC instants, in order."""
        found = self._days.get(day)
        if found is None:
            found = () if self.is_holiday(day) else tuple(self._utc_ranges(day))
            if len(self._days) > 4096:
                self._days.clear()
            self._days[day] = found
        return found

    def _utc_ranges(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        for start, end in self.week[day.weekday()]:
            begin, finish = self._instant(day, start), self._instant(day, end)
            if finish > begin:
                yield begin, finish

    def _instant(self, day: date, minutes: int) -> datetime:
        """Local `day` at `minutes` after midnight (24:00 is the next midnight), in UTC."""
        if minutes >= 24 * 60:
            day, minutes = day + timedelta(days=1), minutes - 24 * 60
        local = datetime.combine(day, time(minutes // 60, minutes % 60), self.zone)
        return local.astimezone(UTC)

    def _days_from(
        self, instant: datetime
    ) -> Iterator[tuple[date, tuple[tuple[datetime, datetime], ...]]]:
        """Local dates from the one holding `instant` on, with their intervals (bounded)."""
        day = _aware(instant).astimezone(self.zone).date()
        idle = 0
        for _ in range(MAX_DAYS):
            spans = self.intervals(day)
            idle = 0 if spans else idle + 1
            if idle > MAX_IDLE_DAYS:
                raise CalendarError(
                    f"calendar {self.name!r} has no working time in {MAX_IDLE_DAYS} days "
                    f"from {day.isoformat()}; check its week and holidays"
                )
            yield day, spans
            day += timedelta(days=1)
        raise CalendarError(f"calendar {self.name!r}: searched {MAX_DAYS} days without an end")

    def add_business(self, start: datetime, seconds: float) -> datetime:
        """The UTC instant when `seconds` of working time have passed after `start`."""
        start = _aware(start).astimezone(UTC)
        if seconds <= 0:
            return start
        remaining = timedelta(seconds=seconds)
        for _, spans in self._days_from(start):
            for begin, finish in spans:
                if finish <= start:
                    continue
                begin = max(begin, start)
                if remaining <= finish - begin:
                    return begin + remaining
                remaining -= finish - begin
        raise AssertionError("unreachable: _days_from raises at its bound")  # pragma: no cover

    def business_seconds(self, a: datetime, b: datetime) -> float:
        """Working time between `a` and `b`, in seconds (0 when b is not after a)."""
        a, b = _aware(a).astimezone(UTC), _aware(b).astimezone(UTC)
        if b <= a:
            return 0.0
        total = timedelta()
        last = b.astimezone(self.zone).date()
        for day, spans in self._days_from(a):
            if day > last:
                break
            for begin, finish in spans:
                overlap = min(finish, b) - max(begin, a)
                if overlap > timedelta():
                    total += overlap
        return total.total_seconds()


class AroundTheClock(BusinessCalendar):
    """Every second counts: the calendar of an [sla] that names none (UTC, 24x7)."""

    def __init__(self) -> None:
        super().__init__("24x7", "UTC", [((0, 24 * 60),)] * 7)

    def add_business(self, start: datetime, seconds: float) -> datetime:
        start = _aware(start).astimezone(UTC)
        return start + timedelta(seconds=max(seconds, 0))

    def business_seconds(self, a: datetime, b: datetime) -> float:
        return max((_aware(b) - _aware(a)).total_seconds(), 0.0)


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r} has no time zone; postdesk's times are UTC-aware")
    return instant


def _public_holidays(country: str) -> Callable[[date], bool]:
    """Whether a date is a public holiday of `country` ("" : never), from `holidays`."""
    if not country:
        return lambda day: False
    import holidays

    table = holidays.country_holidays(country)  # expands to each year asked about
    return lambda day: day in table


def from_settings(settings: CalendarSettings) -> BusinessCalendar:
    """The calendar a `[calendar.NAME]` table describes."""
    return BusinessCalendar(
        settings.name,
        settings.timezone,
        settings.week,
        holiday_country=settings.holiday_country,
        holidays=settings.holidays,
    )
