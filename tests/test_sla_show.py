"""`postdesk tickets show N [--json]` with [sla]: imported mail with past Date headers gets
its due times in the mailbox's calendar (issue 12, criterion 3)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail

TEHRAN = ZoneInfo("Asia/Tehran")
SUPPORT = "support@support.example"
SARA = "sara@agents.example"
MAILBOX = (
    f'[[mailbox]]\nname = "support"\naddress = "{SUPPORT}"\n'
    'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
)
AGENT = f'[[agent]]\nemail = "{SARA}"\nname = "Sara"\n'
SLA = """
[sla]
default_priority = "normal"
warn_before = "1h"

[sla.targets]
urgent = { first_response = "1h", resolution = "8h" }
high   = { first_response = "4h", resolution = "16h" }
normal = { first_response = "8h", resolution = "40h" }
low    = { first_response = "16h", resolution = "80h" }

[calendar.tehran]
timezone = "Asia/Tehran"
week = { sat = "08:00-16:00", sun = "08:00-16:00", mon = "08:00-16:00", tue = "08:00-16:00", wed = "08:00-16:00", thu = "08:00-12:00" }
holiday_country = "IR"
holidays = ["2026-12-13"]
"""  # noqa: E501


def mail(
    mid: str, when: datetime, *, sender: str = "Alice <alice@example.com>", **kw: str
) -> bytes:
    return bytes(
        Mail(
            sender=sender,
            to=SUPPORT,
            subject="Broken lid",
            body="Cracked.",
            date=when,
            message_id=mid,
            **kw,
        )
    )


def imported(cli: Cli, tmp_path: Path, *raws: bytes) -> list[int]:
    folder = tmp_path / f"mail{len(list(tmp_path.glob('mail*')))}"
    folder.mkdir()
    for i, raw in enumerate(raws):
        (folder / f"{i}.eml").write_bytes(raw)
    cli("import", str(folder), "--mailbox", "support")
    return sorted({row["number"] for row in cli.json("tickets", "list")})


def setup(tmp_path: Path, *blocks: str) -> Cli:
    cli = Cli(write_config(tmp_path, f"sqlite:///{tmp_path / 'postdesk.db'}", *blocks))
    cli("init")
    return cli


def tehran(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=TEHRAN)  # type: ignore[misc]


def test_imported_mail_gets_its_sla_in_the_mailboxs_calendar(tmp_path: Path) -> None:
    cli = setup(tmp_path, MAILBOX + 'calendar = "tehran"\n', AGENT, SLA)
    # Wednesday 4 Nov 2026 15:30 in Tehran; Sara answered on Thursday at 09:00.
    question = mail("q1@example.com", tehran(2026, 11, 4, 15, 30))
    answer = mail(
        "a1@example.com",
        tehran(2026, 11, 5, 9),
        sender=f"Sara <{SARA}>",
        in_reply_to="q1@example.com",
    )
    other = mail("q2@example.com", tehran(2026, 11, 4, 15, 30), sender="Bob <bob@example.com>")
    first, second = imported(cli, tmp_path, question, answer, other)

    sla = cli.json("tickets", "show", str(first))["sla"]
    # Normal (no priority): 8h to the first response, 40h to the resolution.
    assert sla == {
        "calendar": "tehran",
        "priority": "normal",
        # Wed 15:30-16:00, Thu 08:00-12:00, Sat 08:00-11:30 (Tehran) = 08:00 UTC.
        "first_response_due": "2026-11-07T08:00:00Z",
        # ... and Sun, Mon, Tue, then Wed 08:00-11:30.
        "resolution_due": "2026-11-11T08:00:00Z",
        "first_response_at": "2026-11-05T05:30:00Z",
        "resolved_at": None,
        "first_response_breached": False,
        "resolution_breached": True,  # still open, long past its due time
        "first_response_at_risk": False,
        "resolution_at_risk": False,
        "paused": False,
        "paused_seconds": 0,
    }

    # A person makes the other ticket urgent: its due times are computed again.
    cli("tickets", "set", str(second), "--priority", "urgent")
    sla = cli.json("tickets", "show", str(second))["sla"]
    assert sla["priority"] == "urgent"
    assert sla["first_response_due"] == "2026-11-05T05:00:00Z"  # Thursday 08:30 in Tehran
    assert sla["first_response_breached"] is True
    assert sla["first_response_at"] is None

    text = cli("tickets", "show", str(second)).stdout
    assert "SLA: urgent, calendar tehran" in text
    assert "first response due 2026-11-05 08:30 +0330   [BREACHED]" in text
    shown = cli("tickets", "show", str(first)).stdout
    assert "first response due 2026-11-07 11:30 +0330   met 2026-11-05 09:00 +0330" in shown


def test_without_sla_the_object_is_null(tmp_path: Path) -> None:
    cli = setup(tmp_path, MAILBOX, AGENT)
    [number] = imported(cli, tmp_path, mail("q1@example.com", tehran(2026, 11, 4, 15, 30)))
    assert cli.json("tickets", "show", str(number))["sla"] is None
    assert "SLA" not in cli("tickets", "show", str(number)).stdout


def test_a_mailbox_without_a_calendar_counts_around_the_clock(tmp_path: Path) -> None:
    cli = setup(tmp_path, MAILBOX, AGENT, SLA)
    [number] = imported(cli, tmp_path, mail("q1@example.com", tehran(2026, 11, 4, 15, 30)))
    sla = cli.json("tickets", "show", str(number))["sla"]
    assert sla["calendar"] == "24x7"
    assert sla["first_response_due"] == "2026-11-04T20:00:00Z"  # 12:00 UTC + 8h
