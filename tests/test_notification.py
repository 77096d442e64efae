"""Agent notifications through the outbox and a real SMTP server (aiosmtpd on loopback),
on SQLite and PostgreSQL: who is told about a customer's mail, with what, and a reply
token that names the ticket and the agent."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.models import Contact
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import fetched, ingest, ticket_of
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink
from postdesk.tickets import assign

SHOP = "help@shop.example"
OTHER = "hr@shop.example"


def blocks(sink: SmtpSink) -> list[str]:
    def mailbox(name: str, address: str) -> str:
        return (
            f'[[mailbox]]\nname = "{name}"\naddress = "{address}"\n'
            'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
            'team = "Shop Support"\n'
        )

    agents = (
        '[[agent]]\nemail = "sara@shop.example"\nname = "Sara"\nqueues = ["shop"]\n'
        '[[agent]]\nemail = "omid@shop.example"\nname = "Omid"\nqueues = ["hr"]\n'
        '[[agent]]\nemail = "reza@shop.example"\nname = "Reza"\nlanguage = "fa"\n'
    )
    smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
    return [mailbox("shop", SHOP), mailbox("hr", OTHER), smtp, agents]


def customer(mid: str, *, body: str = "The lid is cracked.", **kwargs: object) -> bytes:
    fields: dict[str, object] = {
        "sender": "Alice <alice@example.com>",
        "to": SHOP,
        "subject": "Broken lid",
        "body": body,
        "date": datetime.now(UTC),
        "message_id": mid,
    }
    fields.update(kwargs)
    return bytes(Mail(**fields))  # type: ignore[arg-type]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def to_agents(sink: SmtpSink) -> dict[str, EmailMessage]:
    found: dict[str, EmailMessage] = {}
    for mail in sink.messages:
        [rcpt] = mail.rcpt_tos
        if rcpt.endswith("@shop.example"):
            parsed = email.message_from_bytes(mail.data, policy=email.policy.default)
            found[rcpt] = parsed  # type: ignore[assignment]
    return found


def agent_id(db: Database, address: str) -> int:
    with db.read_session() as session:
        return session.execute(select(Contact.id).where(Contact.email == address)).scalar_one()


def test_the_queues_agents_hear_of_a_new_ticket_with_a_token_for_them(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    quoted = "The lid is cracked.\n\nOn Mon, Bob wrote:\n> an older message\n"
    fetched(service, "shop", customer("n1@example.com", body=quoted))
    number = ticket_of(db, "n1@example.com")
    told = to_agents(sink)
    assert sorted(told) == ["reza@shop.example", "sara@shop.example"]  # not omid (hr)
    sara = told["sara@shop.example"]
    assert sara["Subject"] == f"[#{number}] New ticket: Broken lid"
    body = sara.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "The lid is cracked." in text and "an older message" not in text
    assert "Alice <alice@example.com>" in text and "#close" in text
    tokens = ReplyTokens(load_key(service.settings))
    reply_to = [str(sara["Reply-To"])]
    assert tokens.find_agent(reply_to) == (number, agent_id(db, "sara@shop.example"))
    assert tokens.find(reply_to) is None  # not a customer's token
    assert told["reza@shop.example"]["Content-Language"] == "fa"
    # The customer got the acknowledgement as well, and nobody got anything twice.
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
        "alice@example.com",
        "reza@shop.example",
        "sara@shop.example",
    ]


def test_a_follow_up_goes_to_the_assignee_only_once_assigned(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    fetched(service, "shop", customer("f1@example.com"))
    number = ticket_of(db, "f1@example.com")
    sink.clear()
    fetched(service, "shop", customer("f2@example.com", in_reply_to="f1@example.com"))
    told = to_agents(sink)
    assert sorted(told) == ["reza@shop.example", "sara@shop.example"]
    assert told["sara@shop.example"]["Subject"] == f"[#{number}] Follow-up: Broken lid"
    with db.transaction() as session:
        assign(session.connection(), number, agent_id(db, "reza@shop.example"), actor="lead")
    sink.clear()
    fetched(service, "shop", customer("f3@example.com", in_reply_to="f2@example.com"))
    assert sorted(to_agents(sink)) == ["reza@shop.example"]


def test_nobody_is_told_of_automatic_mail_agents_mail_or_history(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    trust = '[authentication]\nauthserv_id = "mx.shop.example"\n'
    service = Service(settings_for(tmp_path, db_url, *blocks(sink), trust), db)
    proven = [("Authentication-Results", "mx.shop.example; dmarc=pass header.from=shop.example")]
    fetched(
        service,
        "shop",
        customer("a1@example.com", headers=[("Auto-Submitted", "auto-replied")]),
        # Sara's own mail, proven by our server: the team's, nobody to tell.
        customer("a2@example.com", sender="Sara <sara@shop.example>", headers=proven),
    )
    ingest(service, customer("a3@example.com"))
    assert sink.messages == []


def test_an_edited_agent_token_names_nothing(tmp_path: Path, sqlite_url: str) -> None:
    settings = settings_for(tmp_path, sqlite_url)
    tokens = ReplyTokens(load_key(settings))
    address = tokens.agent_address("help@shop.example", 12, 3)
    assert tokens.find_agent([address]) == (12, 3)
    assert tokens.find_agent([address.replace("t12a3", "t12a4")]) is None
    assert tokens.find_agent([address.replace("t12a3", "t13a3")]) is None
    assert tokens.find_agent([tokens.address("help@shop.example", 12)]) is None
