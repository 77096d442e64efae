"""[sla], [calendar.NAME] and a mailbox's calendar: typed settings and one-line errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from postdesk.config import Settings, SlaTarget, load_settings
from postdesk.errors import ConfigError

BASE = """
[database]
url = "sqlite:///postdesk.db"

[[mailbox]]
name = "support"
address = "support@example.com"
host = "imap.example.com"
username = "support@example.com"
password = "x"
calendar = "tehran"
"""

SLA = """
[sla]
default_priority = "normal"
warn_before = "1h"

[sla.targets]
urgent = { first_response = "1h", resolution = "8h" }
high   = { first_response = "4h", resolution = "16h" }
normal = { first_response = "8h", resolution = "40h" }
low    = { first_response = "16h", resolution = "1h30m" }
"""

CALENDARS = """
[calendar.tehran]
timezone = "Asia/Tehran"
week = { sat = "08:00-16:00", sun = "08:00-16:00", mon = "08:00-16:00", tue = "08:00-16:00", wed = "08:00-16:00", thu = "08:00-12:00" }
holiday_country = "IR"
holidays = ["2026-12-13"]

[calendar.berlin]
timezone = "Europe/Berlin"
week = { mon = "09:00-17:00", tue = "09:00-12:00,13:00-17:00", fri = "09:00-24:00" }
"""  # noqa: E501


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "postdesk.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "postdesk.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return excinfo.value


def test_the_issues_example_is_read(tmp_path: Path) -> None:
    settings = load(tmp_path, BASE + SLA + CALENDARS)
    sla = settings.sla
    assert sla is not None
    assert sla.default_priority == "normal"
    assert sla.warn_before == 3600
    assert dict(sla.targets)["urgent"] == SlaTarget(3600, 8 * 3600)
    assert dict(sla.targets)["low"] == SlaTarget(16 * 3600, 5400)
    assert sla.target("urgent") == ("urgent", SlaTarget(3600, 8 * 3600))
    assert sla.target(None)[0] == "normal"
    assert sla.target("gone-from-the-levels")[0] == "normal"
    tehran, berlin = settings.calendars
    assert (tehran.name, tehran.timezone, tehran.holiday_country) == ("tehran", "Asia/Tehran", "IR")
    assert tehran.week[4] == ()  # Friday off
    assert tehran.week[3] == ((480, 720),)  # Thursday morning
    assert tehran.week[5] == ((480, 960),)  # Saturday
    assert tehran.holidays == (date(2026, 12, 13),)
    assert berlin.week[1] == ((540, 720), (780, 1020))
    assert berlin.week[4] == ((540, 1440),)
    assert settings.mailboxes[0].calendar == "tehran"


def test_without_sla_nothing_is_configured(tmp_path: Path) -> None:
    settings = load(tmp_path, BASE.replace('calendar = "tehran"\n', ""))
    assert settings.sla is None
    assert settings.calendars == ()
    assert settings.mailboxes[0].calendar == ""


def test_defaults_of_sla(tmp_path: Path) -> None:
    text = BASE + CALENDARS + SLA.replace('default_priority = "normal"\nwarn_before = "1h"\n', "")
    sla = load(tmp_path, text).sla
    assert sla is not None
    assert (sla.default_priority, sla.warn_before, sla.calendar) == ("normal", 3600, "")


def test_targets_follow_custom_priority_levels(tmp_path: Path) -> None:
    text = (
        BASE
        + CALENDARS
        + '[triage]\npriority_levels = ["p3", "p2", "p1"]\n'
        + '[sla]\ndefault_priority = "p3"\ncalendar = "berlin"\nwarn_before = "30m"\n'
        + '[sla.targets]\np1 = { first_response = "30m", resolution = "4h" }\n'
        + 'p2 = { first_response = "2h", resolution = "1h30m" }\n'
        + 'p3 = { first_response = "8h", resolution = "40h" }\n'
    )
    sla = load(tmp_path, text).sla
    assert sla is not None
    assert [name for name, _ in sla.targets] == ["p1", "p2", "p3"]
    assert (sla.calendar, sla.warn_before) == ("berlin", 1800)


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        # [sla]
        ('warn_before = "1h"', 'warn_before = "1 hour"', "sla.warn_before", '"30m", "4h"'),
        ('warn_before = "1h"', "warn_before = 60", "sla.warn_before", "expected a string"),
        ('warn_before = "1h"', 'warn_before = "1d"', "sla.warn_before", "got '1d'"),
        (
            'default_priority = "normal"',
            'default_priority = "meh"',
            "sla.default_priority",
            "expected one of [triage] priority_levels (low, normal, high, urgent)",
        ),
        ('warn_before = "1h"', 'calendar = "tehrn"', "sla.calendar", "did you mean 'tehran'?"),
        ('warn_before = "1h"', "warn_befor = 1", "sla.warn_befor", "did you mean 'warn_before'?"),
        (
            'urgent = { first_response = "1h", resolution = "8h" }',
            'asap = { first_response = "1h", resolution = "8h" }',
            "sla.targets.asap",
            "is not a priority; expected one of [triage] priority_levels",
        ),
        (
            'low    = { first_response = "16h", resolution = "1h30m" }',
            "",
            "sla.targets",
            'has no target for low; add e.g. low = { first_response = "8h"',
        ),
        (
            'urgent = { first_response = "1h", resolution = "8h" }',
            'urgent = { first_response = "1h" }',
            "sla.targets.urgent.resolution",
            "is missing",
        ),
        (
            'urgent = { first_response = "1h", resolution = "8h" }',
            'urgent = { first_response = "0m", resolution = "8h" }',
            "sla.targets.urgent.first_response",
            "must be longer than zero",
        ),
        (
            'urgent = { first_response = "1h", resolution = "8h" }',
            'urgent = { first_respons = "1h", resolution = "8h" }',
            "sla.targets.urgent.first_respons",
            "did you mean 'first_response'?",
        ),
        (
            'urgent = { first_response = "1h", resolution = "8h" }',
            'urgent = "1h"',
            "sla.targets.urgent",
            "must be a table",
        ),
        # [calendar.NAME]
        (
            'timezone = "Asia/Tehran"',
            'timezone = "Asia/Teheran"',
            "calendar.tehran.timezone",
            "unknown time zone 'Asia/Teheran'; did you mean 'Asia/Tehran'?",
        ),
        ('timezone = "Asia/Tehran"', "", "calendar.tehran.timezone", "is missing"),
        (
            'thu = "08:00-12:00"',
            'thu = "8-12"',
            "calendar.tehran.week.thu",
            "got '8-12'; expected ranges like \"08:00-16:00\"",
        ),
        (
            'thu = "08:00-12:00"',
            'thu = "12:00-08:00"',
            "calendar.tehran.week.thu",
            "ends before it starts",
        ),
        (
            'thu = "08:00-12:00"',
            'thu = "08:00-12:00,11:00-13:00"',
            "calendar.tehran.week.thu",
            "overlaps",
        ),
        ('thu = "08:00-12:00"', 'thu = "08:00-25:00"', "calendar.tehran.week.thu", "time of day"),
        ('thu = "08:00-12:00"', 'thu = "08:61-12:00"', "calendar.tehran.week.thu", "time of day"),
        ('thu = "08:00-12:00"', 'thr = "08:00-12:00"', "calendar.tehran.week.thr", "'thu'"),
        ('thu = "08:00-12:00"', "thu = 8", "calendar.tehran.week.thu", "expected a string"),
        (
            'holiday_country = "IR"',
            'holiday_country = "XX"',
            "calendar.tehran.holiday_country",
            "not a country the holidays package knows",
        ),
        (
            'holidays = ["2026-12-13"]',
            'holidays = ["13.12.2026"]',
            "calendar.tehran.holidays[0]",
            'expected an ISO date like "2026-12-13"',
        ),
        (
            'holidays = ["2026-12-13"]',
            "holidays = 2026-12-13",
            "calendar.tehran.holidays",
            "expected an array",
        ),
        # a mailbox's calendar
        (
            'calendar = "tehran"',
            'calendar = "teheran"',
            "mailbox 'support'.calendar",
            "no calendar named 'teheran'; did you mean 'tehran'? (calendars: berlin, tehran)",
        ),
    ],
)
def test_wrong_values_are_one_line_errors(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    text = BASE + SLA + CALENDARS
    assert old in text
    error = config_error(tmp_path, text.replace(old, new, 1))
    assert error.key == key, str(error)
    assert expected in str(error), str(error)


def test_a_week_without_working_hours_is_an_error(tmp_path: Path) -> None:
    text = BASE + '[calendar.tehran]\ntimezone = "Asia/Tehran"\nweek = { fri = "" }\n'
    error = config_error(tmp_path, text)
    assert error.key == "calendar.tehran.week"
    assert "has no working hours" in str(error)


def test_calendars_must_be_tables(tmp_path: Path) -> None:
    text = 'calendar = "tehran"\n' + BASE.replace('calendar = "tehran"\n', "")
    error = config_error(tmp_path, text)
    assert error.key == "calendar"
    assert "expected a table, got a string" in str(error)


def test_a_calendar_named_without_any_calendars(tmp_path: Path) -> None:
    error = config_error(tmp_path, BASE)
    assert error.key == "mailbox 'support'.calendar"
    assert "calendars: none; add a [calendar.NAME] table" in str(error)
