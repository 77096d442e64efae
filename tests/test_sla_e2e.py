"""End to end, against real servers (issue 12, criterion 2): Dovecot on loopback holds
everybody's mailbox and an SMTP server delivers into it (postdesk.testing.delivery). A
customer's mail fetched over IMAP opens a ticket with its due times; with a clock the
test moves (`Service(now=...)`, a fixed offset from the real time), the at-risk and the
breach alert each reach the agent's INBOX exactly once; the agent answers the alert from
their mail client, the answer is relayed to the customer and stops the first-response
clock: no alert about it comes again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.models import Ticket
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.sla.view import ticket_sla
from postdesk.testing.config import mailbox_toml, settings_for
from postdesk.testing.delivery import MailSystem
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mail import Mail

SLA = """
[sla]
default_priority = "normal"
warn_before = "1h"

[sla.targets]
urgent = { first_response = "1h", resolution = "8h" }
high   = { first_response = "4h", resolution = "16h" }
normal = { first_response = "8h", resolution = "40h" }
low    = { first_response = "16h", resolution = "80h" }
"""


@pytest.fixture
def mail_system(dovecot_server: Dovecot) -> Iterator[MailSystem]:
    with MailSystem(dovecot_server) as system:
        yield system


def unique(name: str, domain: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@{domain}"


class ShiftedNow:
    """The real time plus an offset the test sets: what the service reads the clocks at."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move_to(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)


def alerts(mail: MailSystem, user: MailUser) -> list[EmailMessage]:
    return [
        m
        for m in mail.messages(user)
        if str(m["Subject"]).split("] ", 1)[-1].startswith(("At risk", "Breached"))
    ]


def test_alerts_reach_the_agent_once_each_and_the_relayed_reply_stops_the_clock(
    mail_system: MailSystem, tmp_path: Path, sqlite_url: str
) -> None:
    mail = mail_system
    support = mail.add_user(unique("help", "shop.example"))
    sara = mail.add_user(unique("sara", "shop.example"))
    alice = mail.add_user(unique("alice", "customer.example"))
    settings = settings_for(
        tmp_path,
        sqlite_url,
        mailbox_toml(mail.dovecot, support, name="shop", extra='team = "Shop Support"'),
        mail.smtp_toml(),
        f'[[agent]]\nemail = "{sara.email}"\nname = "Sara"\n',
        SLA,
    )
    db = Database(sqlite_url)
    upgrade(db)
    now = ShiftedNow()
    service = Service(settings, db, now=now)

    mail.send(
        bytes(
            Mail(
                sender=f"Alice <{alice.email}>",
                to=support.email,
                subject="Order 5521 never arrived",
                body="I ordered two weeks ago and nothing came.",
                date=datetime.now(UTC),
                message_id=make_msgid(domain="customer.example").strip("<>"),
            )
        )
    )
    service.run_once()
    with db.read_session() as session:
        [number] = session.execute(select(Ticket.id)).scalars().all()
    sla = ticket_sla(db, settings, number, now())
    assert sla is not None and sla["first_response_at"] is None
    due = datetime.fromisoformat(sla["first_response_due"])
    created = due - timedelta(hours=8)  # around the clock: normal is 8 hours
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)
    assert alerts(mail, sara) == []  # Sara got the new-ticket notification, no alert

    now.move_to(due - timedelta(minutes=40))
    service.run_once()
    now.move_to(due - timedelta(minutes=20))
    service.run_once()
    [at_risk] = alerts(mail, sara)
    assert str(at_risk["Subject"]).startswith(f"[#{number}] At risk: first response due")

    now.move_to(due + timedelta(minutes=1))
    service.run_once()
    service.run_once()
    assert alerts(mail, sara)[0]["Message-ID"] == at_risk["Message-ID"]
    _, breach = alerts(mail, sara)
    assert str(breach["Subject"]).startswith(f"[#{number}] Breached: first response was due")

    # Sara answers the breach alert from her mail client, to its Reply-To.
    mail.send(
        bytes(
            Mail(
                sender=f"Sara <{sara.email}>",
                to=str(breach["Reply-To"]),
                subject=f"Re: {breach['Subject']}",
                body="Hello Alice,\n\nyour parcel left our warehouse today.\n\nSara",
                date=datetime.now(UTC),
                message_id=make_msgid(domain="shop.example").strip("<>"),
                in_reply_to=str(breach["Message-ID"]).strip("<>"),
            )
        ),
        to=[str(breach["Reply-To"])],
    )
    service.run_once()
    [relayed] = [m for m in mail.messages(alice) if "parcel" in str(m.get_body(("plain",)))]
    assert f"[#{number}]" in str(relayed["Subject"])
    sla = ticket_sla(db, settings, number, now())
    assert sla is not None and sla["first_response_at"] is not None  # the clock stopped
    # (The relay stamps the reply with the real time it arrived, before the moved clock.)

    # Later: nothing more. The first response is met, and the reply made the ticket
    # pending (waiting for Alice), which pauses the resolution clock (40h) as well.
    now.move_to(created + timedelta(hours=45))
    service.run_once()
    service.run_once()
    assert len(alerts(mail, sara)) == 2
    sla = ticket_sla(db, settings, number, now())
    assert sla is not None and sla["paused"] and not sla["resolution_breached"]
