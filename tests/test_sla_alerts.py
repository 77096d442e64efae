"""SLA alerts through the outbox and a real SMTP server (aiosmtpd on loopback), on SQLite
and PostgreSQL, with a clock the test moves (`Service(now=...)`): the at-risk and the
breach alert go out once per due time across passes, to the assignee or the queue's
agents, in Persian with Solar Hijri dates for a Persian agent; they stop when the ticket
is answered or solved; a due time that moves gets its own alert (issue 12)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from postdesk.daemon import Service, import_messages, sync_config
from postdesk.ingest.sources import ImportedMessage
from postdesk.ingest.store import Incoming, store_many
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.models import Contact, SlaAlert
from postdesk.models.db import Database
from postdesk.sla.view import ticket_sla_state
from postdesk.testing.cli import Cli
from postdesk.testing.config import settings_for, write_config
from postdesk.testing.inbox import ticket_of
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink
from postdesk.tickets import assign
from postdesk.tickets.lifecycle import responded, set_label, set_status

TEHRAN = ZoneInfo("Asia/Tehran")
SHOP = "help@shop.example"
SLA = """
[sla]
default_priority = "normal"
warn_before = "1h"
calendar = "tehran"

[sla.targets]
urgent = { first_response = "1h", resolution = "8h" }
high   = { first_response = "4h", resolution = "16h" }
normal = { first_response = "8h", resolution = "40h" }
low    = { first_response = "16h", resolution = "80h" }

[calendar.tehran]
timezone = "Asia/Tehran"
week = { sat = "08:00-16:00", sun = "08:00-16:00", mon = "08:00-16:00", tue = "08:00-16:00", wed = "08:00-16:00", thu = "08:00-12:00" }
"""  # noqa: E501
# Wednesday 4 November 2026, 15:30 in Tehran: a normal ticket (8h) has 30 minutes on
# Wednesday, 4 hours on Thursday and 3.5 on Saturday: its first response is due
# Saturday 7 November 11:30 (16 Aban 1405).
ARRIVED = datetime(2026, 11, 4, 15, 30, tzinfo=TEHRAN)
FIRST_DUE = datetime(2026, 11, 7, 11, 30, tzinfo=TEHRAN)


def blocks(sink: SmtpSink) -> list[str]:
    mailbox = (
        f'[[mailbox]]\nname = "shop"\naddress = "{SHOP}"\n'
        'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
        'team = "Shop Support"\n'
    )
    agents = (
        '[[agent]]\nemail = "sara@shop.example"\nname = "Sara"\nqueues = ["shop"]\n'
        '[[agent]]\nemail = "omid@shop.example"\nname = "Omid"\nqueues = ["hr"]\n'
        '[[agent]]\nemail = "reza@shop.example"\nname = "Reza"\nlanguage = "fa"\n'
    )
    hr = mailbox.replace('"shop"', '"hr"').replace(SHOP, "hr@shop.example")
    smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
    return [mailbox, hr, smtp, agents, SLA]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


class FakeNow:
    """The wall clock the service reads; the test sets it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at.astimezone(UTC)


@pytest.fixture
def now() -> FakeNow:
    return FakeNow(ARRIVED)


@pytest.fixture
def service(tmp_path: Path, db: Database, db_url: str, sink: SmtpSink, now: FakeNow) -> Service:
    return Service(settings_for(tmp_path, db_url, *blocks(sink)), db, now=now)


def customer(mid: str) -> bytes:
    return bytes(
        Mail(
            sender=f"Alice <alice-{mid.partition('@')[0]}@example.com>",
            to=SHOP,
            subject="Broken lid",
            body="The lid is cracked.",
            date=ARRIVED,
            message_id=mid,
        )
    )


def opened(service: Service, mid: str) -> int:
    """A ticket opened by a customer's mail fetched into mailbox shop at ARRIVED (stored
    as fetched then, and processed: its clocks start then)."""
    ids = sync_config(service.db, service.settings)
    with service.db.transaction() as session:
        store_many(
            session,
            [Incoming(customer(mid), "test", received_at=ARRIVED)],
            source="imap",
            mailbox_id=ids["shop"],
        )
    service.run_once(fetch=False)
    return ticket_of(service.db, mid)


def imported(service: Service, mid: str) -> int:
    """A ticket opened by importing a customer's mail from ARRIVED (history)."""
    import_messages(service, [ImportedMessage(mid, customer(mid))], mailbox="shop")
    return ticket_of(service.db, mid)


def alerts(sink: SmtpSink) -> list[tuple[str, EmailMessage]]:
    """(recipient, message) of every SLA alert received, in arrival order."""
    found = []
    for mail in sink.messages:
        parsed = email.message_from_bytes(mail.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        subject = str(parsed["Subject"])
        if "At risk" in subject or "Breached" in subject or "مهلت" in subject:
            found.append((mail.rcpt_tos[0], parsed))
    return found


def kinds(sink: SmtpSink) -> list[tuple[str, str]]:
    out = []
    for rcpt, message in alerts(sink):
        subject = str(message["Subject"])
        kind = "breach" if ("Breached" in subject or "گذشت" in subject) else "at_risk"
        out.append((rcpt, kind))
    return sorted(out)


def text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_at_risk_and_breach_go_to_the_queue_once_each_across_passes(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    number = opened(service, "a1@example.com")
    state = ticket_sla_state(db, service.settings, number, now())
    assert state is not None and state.first_response.due == FIRST_DUE
    service.run_once(fetch=False)
    assert alerts(sink) == []
    now.at = FIRST_DUE - timedelta(minutes=30)
    for _ in range(3):
        service.run_once(fetch=False)
        now.at += timedelta(minutes=5)
    # The shop's queue: Sara (shop) and Reza (every queue), not Omid (hr).
    assert kinds(sink) == [("reza@shop.example", "at_risk"), ("sara@shop.example", "at_risk")]
    now.at = FIRST_DUE + timedelta(minutes=1)
    service.run_once(fetch=False)
    now.at = FIRST_DUE + timedelta(hours=2)
    service.run_once(fetch=False)
    # A new service (a restart) remembers nothing, but the record does.
    Service(service.settings, db, now=now).run_once(fetch=False)
    assert kinds(sink) == [
        ("reza@shop.example", "at_risk"),
        ("reza@shop.example", "breach"),
        ("sara@shop.example", "at_risk"),
        ("sara@shop.example", "breach"),
    ]
    sara = [m for rcpt, m in alerts(sink) if rcpt == "sara@shop.example"]
    english = sara[0]
    assert str(english["Subject"]) == (
        f"[#{number}] At risk: first response due Sat 07 Nov 2026 11:30 (Asia/Tehran): Broken lid"
    )
    assert "Alice <alice-a1@example.com>" in text(english) and "#close" in text(english)
    tokens = ReplyTokens(load_key(service.settings))
    with db.read_session() as session:
        sara_id = session.execute(
            select(Contact.id).where(Contact.email == "sara@shop.example")
        ).scalar_one()
        recorded = session.execute(select(func.count()).select_from(SlaAlert)).scalar_one()
    assert tokens.find_agent([str(english["Reply-To"])]) == (number, sara_id)
    assert recorded == 2  # at risk and breach of the first response


def test_a_persian_agent_gets_solar_hijri_dates_with_persian_digits(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    number = opened(service, "p1@example.com")
    now.at = FIRST_DUE - timedelta(minutes=20)
    service.run_once(fetch=False)
    [reza] = [m for rcpt, m in alerts(sink) if rcpt == "reza@shop.example"]
    assert reza["Content-Language"] == "fa"
    subject = str(reza["Subject"])
    assert subject.startswith(f"[#{number}] در خطر: مهلت نخستین پاسخ")
    # Saturday 7 November 2026 11:30 in Tehran is 16 Aban 1405.
    assert "شنبه ۱۶ آبان ۱۴۰۵، ۱۱:۳۰" in subject
    body = text(reza)
    assert "۱۶ آبان ۱۴۰۵" in body and "2026" not in body and "Nov" not in body


def test_only_the_assignee_is_alerted_once_assigned(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    number = opened(service, "s1@example.com")
    with db.transaction() as session:
        omid = session.execute(
            select(Contact.id).where(Contact.email == "omid@shop.example")
        ).scalar_one()
        assign(session.connection(), number, omid, actor="lead")
    now.at = FIRST_DUE + timedelta(minutes=5)
    service.run_once(fetch=False)
    assert kinds(sink) == [("omid@shop.example", "breach")]  # at risk was never seen


def test_alerts_stop_when_the_ticket_is_answered_or_solved(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    answered = opened(service, "r1@example.com")
    solved = opened(service, "r2@example.com")
    now.at = FIRST_DUE - timedelta(minutes=30)
    service.run_once(fetch=False)
    assert len(alerts(sink)) == 4  # two tickets, two agents
    sink.clear()
    with db.transaction() as session:
        responded(session.connection(), answered, at=now())
        set_status(session.connection(), solved, "solved", actor="sara", why="test", at=now())
    now.at = FIRST_DUE + timedelta(minutes=1)
    service.run_once(fetch=False)
    now.at = FIRST_DUE + timedelta(days=30)  # the answered ticket's resolution is breached
    service.run_once(fetch=False)
    service.run_once(fetch=False)
    state = ticket_sla_state(db, service.settings, answered, now())
    assert state is not None and state.resolution.breached
    due = state.resolution.due.astimezone(TEHRAN)
    assert kinds(sink) == [("reza@shop.example", "breach"), ("sara@shop.example", "breach")]
    assert str(alerts(sink)[0][1]["Subject"]) == (
        f"[#{answered}] Breached: resolution was due {due:%a %d %b %Y %H:%M} (Asia/Tehran): "
        "Broken lid"
    )


def test_a_due_time_that_moves_gets_its_own_alerts(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    paused = opened(service, "m1@example.com")
    raised = opened(service, "m2@example.com")
    now.at = FIRST_DUE - timedelta(minutes=30)
    service.run_once(fetch=False)
    assert len(alerts(sink)) == 4
    # One waits for the customer for an hour (11:00 to 12:00): due at 12:30 instead; the
    # other becomes high priority (4h: due Thursday 11:30, already past).
    with db.transaction() as session:
        conn = session.connection()
        set_status(conn, paused, "pending", actor="sara", why="test", at=now())
        set_label(conn, raised, "priority", "high", actor="sara", at=now())
    now.at = FIRST_DUE + timedelta(minutes=1)
    service.run_once(fetch=False)  # paused: no breach; raised: breached
    now.at = FIRST_DUE + timedelta(minutes=30)
    with db.transaction() as session:
        set_status(session.connection(), paused, "open", actor="alice", why="test", at=now())
    service.run_once(fetch=False)
    now.at += timedelta(minutes=5)
    service.run_once(fetch=False)
    sara = [m for rcpt, m in alerts(sink) if rcpt == "sara@shop.example"]
    subjects = [str(m["Subject"]) for m in sara]
    assert subjects == [
        f"[#{paused}] At risk: first response due Sat 07 Nov 2026 11:30 (Asia/Tehran): Broken lid",
        f"[#{raised}] At risk: first response due Sat 07 Nov 2026 11:30 (Asia/Tehran): Broken lid",
        f"[#{raised}] Breached: first response was due Thu 05 Nov 2026 11:30 (Asia/Tehran): "
        "Broken lid",
        f"[#{paused}] At risk: first response due Sat 07 Nov 2026 12:30 (Asia/Tehran): Broken lid",
    ]


def test_tickets_list_by_sla(tmp_path: Path) -> None:
    # Around the clock (no calendar) and the real time: one ticket arrived 7.5 hours ago
    # (normal, 8h: at risk), one three days ago (breached), one just now (neither).
    sla = SLA.replace('calendar = "tehran"\n', "")
    mailbox = (
        f'[[mailbox]]\nname = "shop"\naddress = "{SHOP}"\n'
        'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
    )
    cli = Cli(write_config(tmp_path, f"sqlite:///{tmp_path / 'postdesk.db'}", mailbox, sla))
    cli("init")
    folder = tmp_path / "mail"
    folder.mkdir()
    real = datetime.now(UTC).replace(microsecond=0)
    for name, ago in (("risk", 7.5), ("late", 72), ("fresh", 0.1)):
        raw = Mail(
            sender=f"{name} <{name}@example.com>",
            to=SHOP,
            subject=name,
            body="Help.",
            date=real - timedelta(hours=ago),
            message_id=f"{name}@example.com",
        )
        (folder / f"{name}.eml").write_bytes(bytes(raw))
    cli("import", str(folder), "--mailbox", "shop")
    subjects = {row["number"]: row["subject"] for row in cli.json("tickets", "list")}
    at_risk = cli.json("tickets", "list", "--sla", "at-risk")
    breached = cli.json("tickets", "list", "--sla", "breached")
    assert [row["subject"] for row in at_risk] == ["risk"]
    assert [row["subject"] for row in breached] == ["late"]
    assert len(subjects) == 3
    # With [sla] the table has an sla column saying which clock state each ticket is in.
    table = cli("tickets", "list").output.splitlines()
    assert table[0].split()[:3] == ["#", "status", "sla"]
    states = {line.split()[-1]: line.split()[2:4] for line in table[1:]}
    assert states["risk"] == ["at", "risk"] and states["late"][0] == "breached"
    assert "risk" in cli("tickets", "list", "--sla", "at-risk").output


def test_two_instances_cannot_both_send_an_alert(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened(service, "c1@example.com")
    now.at = FIRST_DUE - timedelta(minutes=30)
    first = service.sla_alerts().check(now())
    # A second instance that read the record just before the first one wrote it.
    other = Service(service.settings, db, now=now).sla_alerts()
    monkeypatch.setattr(other, "_recorded", lambda ids: set())
    second = other.check(now())
    assert (first.alerts, first.mails, second.alerts, second.taken) == (1, 2, 0, 1)
    service.run_once(fetch=False)
    assert kinds(sink) == [("reza@shop.example", "at_risk"), ("sara@shop.example", "at_risk")]


def test_imported_history_records_its_alerts_but_mails_none(
    service: Service, db: Database, sink: SmtpSink, now: FakeNow
) -> None:
    """Importing old open tickets must not flood the agents with breaches."""
    number = imported(service, "old@example.com")
    now.at = FIRST_DUE + timedelta(days=30)
    service.run_once(fetch=False)
    service.run_once(fetch=False)
    assert alerts(sink) == []
    state = ticket_sla_state(db, service.settings, number, now())
    assert state is not None and state.first_response.breached  # still shown as breached
    with db.read_session() as session:
        recorded = session.execute(select(func.count()).select_from(SlaAlert)).scalar_one()
    assert recorded == 2  # first response and resolution: breached, recorded, not mailed
