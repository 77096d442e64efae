"""Config sections are read from their dataclasses: a new section needs no reading code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from postdesk import config
from postdesk.config import Secret, Settings, option, parse_settings
from postdesk.errors import ConfigError

DB: dict[str, object] = {"database": {"url": "sqlite:///postdesk.db"}}


def _positive(value: float, key: config.Key) -> float:
    """A check as a section would write one: keep the value, or fail naming the key."""
    if value <= 0:
        raise key.fail("must be a positive number")
    return value


@dataclass(frozen=True)
class CalendarSettings:
    """A test section written as [[calendar]]."""

    name: str = field(metadata=option(names_entry=True))
    holidays: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlaSettings:
    """A section as a new feature would add it: only the dataclass, no reading code."""

    first_response_hours: float = field(default=8.0, metadata=option(_positive))
    clock: Literal["24x7", "office-hours"] = "office-hours"
    report_dir: Path | None = None
    webhook_token: Secret = field(default_factory=lambda: Secret("none"))
    pause_on_hold: bool = True


@dataclass(frozen=True)
class SettingsWithSla(Settings):
    """Settings with the test sections registered, as they would be on Settings itself."""

    sla: SlaSettings = field(default_factory=SlaSettings)
    calendars: tuple[CalendarSettings, ...] = field(default=(), metadata=option(key="calendar"))


@pytest.fixture
def with_sla(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load with the test sections registered, as if they were fields of Settings."""
    monkeypatch.setattr(config, "Settings", SettingsWithSla)


def parse(data: dict[str, object], tmp_path: Path) -> SettingsWithSla:
    settings = parse_settings(data, tmp_path / "postdesk.toml")
    assert isinstance(settings, SettingsWithSla)
    return settings


def error(data: dict[str, object], tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(data, tmp_path / "postdesk.toml")
    assert str(excinfo.value).startswith(f"{tmp_path / 'postdesk.toml'}: ")
    return excinfo.value


@pytest.mark.usefixtures("with_sla")
def test_a_new_section_is_read_from_its_dataclass(tmp_path: Path) -> None:
    assert parse(DB, tmp_path).sla == SlaSettings()
    sla = parse(
        {
            **DB,
            "sla": {
                "first_response_hours": 4,
                "clock": "24x7",
                "report_dir": "reports",
                "webhook_token_env": "SLA_TOKEN",
                "pause_on_hold": False,
            },
            "calendar": [{"name": "ir", "holidays": [" 2025-03-21 "]}],
        },
        tmp_path,
    )
    assert sla.sla == SlaSettings(
        first_response_hours=4.0,
        clock="24x7",
        report_dir=tmp_path.resolve() / "reports",
        webhook_token=Secret(
            "env", "SLA_TOKEN", str(tmp_path / "postdesk.toml"), "sla.webhook_token"
        ),
        pause_on_hold=False,
    )
    assert sla.calendars == (CalendarSettings("ir", ("2025-03-21",)),)


@pytest.mark.usefixtures("with_sla")
@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        (
            {"sla": {"first_response_hour": 4}},
            "sla.first_response_hour",
            "unknown key; did you mean 'first_response_hours'? (allowed: clock, "
            "first_response_hours, pause_on_hold, report_dir, webhook_token, "
            "webhook_token_env, webhook_token_file)",
        ),
        ({"sl": {}}, "sl", "unknown key; did you mean 'sla'?"),
        ({"sla": 4}, "sla", "must be a table"),
        (
            {"sla": {"first_response_hours": "4"}},
            "sla.first_response_hours",
            "expected a number, got a string",
        ),
        (
            {"sla": {"first_response_hours": 0}},
            "sla.first_response_hours",
            "must be a positive number",
        ),
        (
            {"sla": {"pause_on_hold": "no"}},
            "sla.pause_on_hold",
            "expected true or false, got a string",
        ),
        ({"sla": {"clock": "9to5"}}, "sla.clock", "got '9to5'; expected one of 24x7, office-hours"),
        ({"sla": {"report_dir": 1}}, "sla.report_dir", "expected a string, got an integer"),
        (
            {"sla": {"webhook_token": "t", "webhook_token_env": "T"}},
            "sla.webhook_token_env",
            "give only one of webhook_token, webhook_token_file or webhook_token_env",
        ),
        (
            {"calendar": {"name": "x"}},
            "calendar",
            "must be an array of tables, written [[calendar]]",
        ),
        ({"calendar": [{}]}, "calendar[0].name", "is missing; expected a string"),
        (
            {"calendar": [{"name": "ir", "holiday": []}]},
            "calendar[0].holiday",  # unknown keys are found before the name is read
            "did you mean 'holidays'?",
        ),
        (
            {"calendar": [{"name": "ir", "holidays": [""]}]},
            "calendar 'ir'.holidays[0]",
            "expected a non-empty string",
        ),
    ],
)
def test_a_new_section_gets_its_errors_for_free(
    tmp_path: Path, data: dict[str, object], key: str, problem: str
) -> None:
    err = error({**DB, **data}, tmp_path)
    assert err.key == key
    assert problem in err.problem


@dataclass(frozen=True)
class Unreadable:
    """A section with a field type the reader has no reading for."""

    limits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SettingsWithUnreadable(Settings):
    """Settings with a section the reader cannot read."""

    odd: Unreadable = field(default_factory=Unreadable)


def test_a_field_type_without_a_reading_fails_the_first_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "Settings", SettingsWithUnreadable)
    # Even though the file does not mention [odd]: the mistake is in the code, not the file.
    with pytest.raises(
        TypeError, match=r"Unreadable\.limits: no TOML reading for dict\[str, int\]"
    ):
        parse_settings(DB, tmp_path / "postdesk.toml")


def test_every_section_lists_its_keys_from_the_dataclass(tmp_path: Path) -> None:
    err = error({**DB, "mailbox": [{"nmae": "x"}]}, tmp_path)
    assert err.problem == (
        "unknown key; did you mean 'name'? (allowed: acknowledge, address, auth, batch_bytes, "
        "batch_size, ca_file, calendar, folder, host, idle, name, oauth, password, password_env, "
        "password_file, port, processed_folder, security, team, timeout, tls_verify, username)"
    )
    top = error({**DB, "x": 1}, tmp_path)
    assert top.problem == (
        "unknown key (allowed: agent, authentication, calendar, data_dir, database, "
        "display_timezone, limits, mailbox, metrics, notify, outbox, processing, run, sla, "
        "smtp, threading, triage)"
    )
