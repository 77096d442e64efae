"""The relay: an agent answers a notification from their mail client; the customer gets
only the reply, from the support address; #commands act on the ticket; anything without
the agent's own token and address executes nothing. Real SMTP (aiosmtpd on loopback),
SQLite and PostgreSQL."""

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
from postdesk.models import TicketEvent
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import fetched, ticket_of
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink
from postdesk.tickets import show_ticket

SHOP = "help@shop.example"
SARA = "sara@shop.example"
REZA = "reza@shop.example"


def blocks(sink: SmtpSink) -> list[str]:
    return [
        f'[[mailbox]]\nname = "shop"\naddress = "{SHOP}"\nhost = "127.0.0.1"\nport = 1\n'
        'security = "none"\nusername = "u"\npassword = "p"\nteam = "Shop Support"\n',
        f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n',
        f'[[agent]]\nemail = "{SARA}"\nname = "Sara"\n[[agent]]\nemail = "{REZA}"\nname = "Reza"\n',
    ]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def open_ticket(service: Service, sink: SmtpSink) -> tuple[int, dict[str, EmailMessage]]:
    """Alice writes; returns the ticket and the notification each agent got."""
    fetched(
        service,
        "shop",
        bytes(
            Mail(
                sender="Alice <alice@example.com>",
                to=SHOP,
                subject="Broken lid",
                body="My order 10023 arrived with a cracked lid.",
                date=datetime.now(UTC),
                message_id="alice1@example.com",
            )
        ),
    )
    told = {
        m.rcpt_tos[0]: parsed(m.data) for m in sink.messages if m.rcpt_tos[0] != "alice@example.com"
    }
    sink.clear()
    return ticket_of(service.db, "alice1@example.com"), told


def agent_reply(
    notification: EmailMessage, body: str, *, sender: str = f"Sara <{SARA}>", mid: str
) -> bytes:
    """The agent's answer as Thunderbird writes it: the reply on top, the notification
    quoted below an attribution line, a `-- ` signature in between."""
    quoted = "\n".join(f"> {line}" for line in "New ticket.\nThe customer wrote".splitlines())
    signature = "-- \nSara Ahmadi | Shop Support | +98 21 555 0100"
    text = f"{body}\n\n{signature}\n\nOn 5/12/2026 Shop Support wrote:\n{quoted}\n"
    return bytes(
        Mail(
            sender=sender,
            to=str(notification["Reply-To"]),
            subject=f"Re: {notification['Subject']}",
            body=text,
            date=datetime.now(UTC),
            message_id=mid,
            in_reply_to=str(notification["Message-ID"]).strip("<>"),
        )
    )


def events(db: Database, number: int, kind: str) -> list[TicketEvent]:
    with db.read_session() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == number, TicketEvent.kind == kind)
        return list(session.execute(query.order_by(TicketEvent.id)).scalars())


def test_an_agents_reply_reaches_the_customer_alone_and_signed(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    body = "#priority high\nHello Alice,\n\nA new lid is on its way.\n\nThanks,\nSara"
    fetched(service, "shop", agent_reply(told[SARA], body, mid="sara1@shop.example"))
    [mail] = sink.messages
    assert mail.rcpt_tos == ("alice@example.com",)
    assert SARA.encode() not in mail.data and b"sara1@shop.example" not in mail.data
    out = parsed(mail.data)
    assert out["From"] == f"Sara via Shop Support <{SHOP}>"
    assert out["In-Reply-To"] == "<alice1@example.com>"
    assert f"[#{number}]" in str(out["Subject"])
    text = out.get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert "A new lid is on its way." in content and "Thanks," in content
    assert "Sara Ahmadi | Shop Support" not in content and "The customer wrote" not in content
    assert "#priority" not in content
    shown = show_ticket(db, number)
    assert shown["priority"] == "high" and shown["status"] == "pending"
    [record] = events(db, number, "agent-mail")
    assert record.data["done"] == "relayed" and record.data["commands"] == ["#priority high"]


def test_commands_only_change_the_ticket_and_send_nothing(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    reply = agent_reply(told[SARA], "#pending\n#assign me", mid="s2@shop.example")
    fetched(service, "shop", reply)
    assert sink.messages == []
    shown = show_ticket(db, number)
    assert shown["status"] == "pending" and shown["assignee"]["email"] == SARA


def test_a_note_is_kept_and_never_sent(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    reply = agent_reply(told[SARA], "#note refund approved by Omid\nsee order 10023", mid="n@s")
    fetched(service, "shop", reply)
    assert sink.messages == []
    [note] = events(db, number, "note")
    assert note.data["text"] == "refund approved by Omid\nsee order 10023"


def test_a_wrong_command_applies_nothing_and_tells_the_agent(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    body = "#close\n#priority whenever\nHello Alice, done."
    fetched(service, "shop", agent_reply(told[SARA], body, mid="bad@shop.example"))
    [mail] = sink.messages
    assert mail.rcpt_tos == (SARA,)
    assert "Not applied: #priority whenever" in str(parsed(mail.data)["Subject"])
    shown = show_ticket(db, number)
    assert shown["status"] == "new" and shown["priority"] is None


def test_spoofed_or_misdirected_replies_execute_nothing(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    # Sara's token, but the mail is from Reza: another agent's token.
    fetched(
        service,
        "shop",
        agent_reply(told[SARA], "#close\nHi", sender=f"Reza <{REZA}>", mid="x1@shop.example"),
    )
    # Sara's address without any token (written to the plain support address).
    no_token = bytes(
        Mail(
            sender=f"Sara <{SARA}>",
            to=SHOP,
            subject=f"Re: [#{number}] Broken lid",
            body="#close\nHi Alice",
            date=datetime.now(UTC),
            message_id="x2@shop.example",
        )
    )
    # An edited token: Sara's, pointing at another ticket number.
    edited = agent_reply(told[SARA], "#close\nHi", mid="x3@shop.example").replace(
        f"+t{number}a".encode(), f"+t{number + 1}a".encode()
    )
    fetched(service, "shop", no_token, edited)
    assert sink.messages == []
    assert show_ticket(db, number)["status"] == "new"
    [refused] = events(db, number, "agent-mail")
    assert refused.data["done"] == "nothing" and "another agent" in refused.data["why"]


def customer_answer(number: int, body: str, mid: str, *, after: str) -> bytes:
    return bytes(
        Mail(
            sender="Alice <alice@example.com>",
            to=SHOP,
            subject=f"Re: [#{number}] How did we do?",
            body=f"{body}\n\nOn Fri, 5 Dec 2026 at 10:00, Shop Support <{SHOP}> wrote:\n"
            "> How did we do?\n",
            date=datetime.now(UTC),
            message_id=mid,
            in_reply_to=after,
        )
    )


@pytest.mark.parametrize(("answer", "comment"), [("4 thanks", "thanks"), ("۴ ممنون", "ممنون")])
def test_solve_sends_only_the_survey_and_a_digit_answers_it(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink, answer: str, comment: str
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    fetched(service, "shop", agent_reply(told[SARA], "#solve", mid="solve@shop.example"))
    [survey] = sink.messages
    assert survey.rcpt_tos == ("alice@example.com",)
    survey_id = str(parsed(survey.data)["Message-ID"]).strip("<>")
    assert show_ticket(db, number)["status"] == "solved"
    sink.clear()
    fetched(service, "shop", customer_answer(number, answer, "csat@example.com", after=survey_id))
    shown = show_ticket(db, number)
    assert shown["status"] == "solved"  # an answer to the survey is not a new question
    assert shown["csat"] == {"score": 4, "comment": comment}
    assert sink.messages == []  # and nobody is notified of it
    # Anything else from the customer reopens the ticket, as always.
    reopen = customer_answer(number, "It broke again", "again@example.com", after=survey_id)
    fetched(service, "shop", reopen)
    assert show_ticket(db, number)["status"] == "open"


def test_a_solving_reply_goes_out_before_the_survey(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    _number, told = open_ticket(service, sink)
    body = "#solve\nThe refund is done.\n\nBest,\nSara"
    fetched(service, "shop", agent_reply(told[SARA], body, mid="solve2@shop.example"))
    subjects = [str(parsed(m.data)["Subject"]) for m in sink.messages]
    assert len(subjects) == 2 and "Broken lid" in subjects[0]
    bodies = [parsed(m.data).get_body(("plain",)) for m in sink.messages]
    assert "The refund is done." in bodies[0].get_content()  # type: ignore[union-attr]
    assert "single digit" in bodies[1].get_content()  # type: ignore[union-attr]
