"""Acknowledgements: a customer who opens a ticket gets its number by mail, through the
outbox and a real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL; and
nobody else does."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from postdesk.daemon import Service
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.models.db import Database
from postdesk.testing import inbox
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, ticket_of
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink
from postdesk.tickets import show_ticket

SUPPORT = "help@shop.example"


def config_blocks(sink: SmtpSink, *, mailbox_extra: str = "", notify: str = "") -> list[str]:
    mailbox = (
        "[[mailbox]]\n"
        'name = "shop"\n'
        f'address = "{SUPPORT}"\n'
        'host = "127.0.0.1"\nport = 1\nsecurity = "none"\n'  # never fetched here
        'username = "u"\npassword = "p"\n'
        'team = "Shop Support"\n' + mailbox_extra
    )
    smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
    return [mailbox, smtp, notify]


def customer_mail(
    mid: str,
    *,
    sender: str = "Alice <alice@example.com>",
    subject: str = "Broken lid",
    body: str = "My order arrived with a cracked lid.",
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    return bytes(
        Mail(
            sender=sender,
            to=SUPPORT,
            subject=subject,
            body=body,
            date=datetime.now(UTC),
            message_id=mid,
            in_reply_to=in_reply_to,
            headers=list((headers or {}).items()),
        )
    )


def fetched(service: Service, *raws: bytes) -> None:
    inbox.fetched(service, "shop", *raws)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def received(sink: SmtpSink) -> list[EmailMessage]:
    return [
        email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
        for m in sink.messages
    ]


def test_a_new_ticket_is_acknowledged_with_its_number(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *config_blocks(sink)), db)
    fetched(service, customer_mail("c1@example.com"))
    number = ticket_of(db, "c1@example.com")
    [ack] = received(sink)
    assert sink.messages[0].rcpt_tos == ("alice@example.com",)
    assert ack["From"] == f"Shop Support <{SUPPORT}>"
    assert ack["Subject"] == f"[#{number}] Broken lid"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["In-Reply-To"] == "<c1@example.com>"
    tokens = ReplyTokens(load_key(service.settings))
    assert tokens.find([str(ack["Reply-To"])]) == number
    text = ack.get_body(("plain",))
    assert text is not None and str(number) in text.get_content()
    # The customer's answer to the acknowledgement lands on the same ticket.
    ack_id = str(ack["Message-ID"]).strip("<>")
    fetched(service, customer_mail("c2@example.com", subject="Re: x", in_reply_to=ack_id))
    assert ticket_of(db, "c2@example.com") == number
    shown = show_ticket(db, number)
    kept = {m["message_id"]: m["direction"] for m in shown["messages"]}
    assert kept == {"c1@example.com": "in", ack_id: "out", "c2@example.com": "in"}
    assert len(sink.messages) == 1  # a follow-up is not acknowledged again


def test_persian_mail_is_acknowledged_in_persian_right_to_left(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *config_blocks(sink)), db)
    persian = customer_mail(
        "fa1@example.com",
        sender="سارا <sara@example.ir>",
        subject="سفارش ناقص",
        body="سلام، سفارش من ناقص رسید. لطفا بررسی کنید.",
    )
    fetched(service, persian)
    [ack] = received(sink)
    assert ack["Content-Language"] == "fa"
    html = ack.get_body(("html",))
    assert html is not None and 'dir="rtl"' in html.get_content()


def test_no_acknowledgement_for_automatic_mail_imports_agents_or_when_switched_off(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    agent = '[[agent]]\nemail = "sara@shop.example"\nname = "Sara"\n'
    settings = settings_for(tmp_path, db_url, *config_blocks(sink), agent)
    service = Service(settings, db)
    fetched(service, customer_mail("first@example.com"))  # acknowledged, the team told
    sink.clear()
    fetched(
        service,
        customer_mail("auto@example.com", headers={"Auto-Submitted": "auto-replied"}),
        customer_mail(
            "agent@example.com", sender="Sara <sara@shop.example>", in_reply_to="first@example.com"
        ),
    )
    ingest(service, customer_mail("imported@example.com"))  # history: nobody is told
    # Sara's reply from her address without proof is customer mail (ingest/author.py;
    # without a ticket it would be quarantined, see test_process.py): the team is told,
    # with a warning, but no acknowledgement goes to a team address.
    [told] = sink.messages
    assert told.rcpt_tos == ("sara@shop.example",) and b"Careful: nothing proves" in told.data
    sink.clear()
    off = tmp_path / "off"
    off.mkdir()
    quiet = settings_for(off, db_url, *config_blocks(sink, mailbox_extra="acknowledge = false"))
    fetched(Service(quiet, db), customer_mail("quiet@example.com", sender="bob@example.com"))
    assert sink.messages == []


def test_automatic_mail_to_one_address_stops_at_the_limit(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    """An out-of-office address that writes new mail each time it is answered gets at
    most `auto_reply_limit` acknowledgements within the window."""
    notify = "[notify]\nauto_reply_limit = 2\n"
    service = Service(settings_for(tmp_path, db_url, *config_blocks(sink, notify=notify)), db)
    for n in range(5):
        fetched(service, customer_mail(f"loop{n}@example.com", subject=f"Question {n}"))
    assert len(sink.messages) == 2
    assert len({ticket_of(db, f"loop{n}@example.com") for n in range(5)}) == 5
