"""The relay: an agent answers a notification from their mail client; the customer gets
only the reply, from the support address; #commands act on the ticket; anything without
the agent's own token and address executes nothing. Real SMTP (aiosmtpd on loopback),
SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.models import OutboxMail, TicketEvent
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


def _shown_message(db: Database, number: int, mid: str) -> dict[str, object]:
    """Message `mid` as `tickets show --json` has it, wherever it was filed."""
    shown = show_ticket(db, ticket_of(db, mid))
    return next(m for m in shown["messages"] if m["message_id"] == mid)


def _no_token(number: int, mid: str, *, to: str = SHOP) -> bytes:
    """Sara's address writing to `to` (no agent token), as if answering the ticket."""
    return bytes(
        Mail(
            sender=f"Sara <{SARA}>",
            to=to,
            subject=f"Re: [#{number}] Broken lid",
            body="#close\nHi Alice, all done.",
            date=datetime.now(UTC),
            message_id=mid,
        )
    )


def _customer_token(db: Database, number: int) -> str:
    """The customer-facing reply token of ticket `number` (the acknowledgement's Reply-To)."""
    shown = show_ticket(db, number)
    [ack] = [
        m for m in shown["messages"] if (m.get("outbox") or {}).get("kind") == "acknowledgement"
    ]
    with db.read_session() as session:
        content = session.execute(
            select(OutboxMail.content).where(OutboxMail.message_id == ack["message_id"])
        ).scalar_one()
    return str(parsed(content)["Reply-To"])


Spoof = Callable[[Database, int, dict[str, EmailMessage]], bytes]
SPOOFS: dict[str, tuple[Spoof, str]] = {
    # Sara's notification token, but the mail is from Reza.
    "another agent's token": (
        lambda db, n, told: agent_reply(
            told[SARA], "#close\nHi", sender=f"Reza <{REZA}>", mid="spoof@shop.example"
        ),
        "another agent's",
    ),
    # Sara's address, written to the plain support address: anyone can write that From.
    "agent address without a token": (
        lambda db, n, told: _no_token(n, "spoof@shop.example"),
        "without a reply token",
    ),
    # Sara's own token with the ticket number edited: the signature no longer matches.
    "edited token": (
        lambda db, n, told: agent_reply(told[SARA], "#close\nHi", mid="spoof@shop.example").replace(
            f"+t{n}a".encode(), f"+t{n + 1}a".encode()
        ),
        "without a reply token",
    ),
    # Sara's address answering the customer-facing token (a token for the customer,
    # not for her): a customer's token proves nothing about an agent.
    "the customer's token": (
        lambda db, n, told: _no_token(n, "spoof@shop.example", to=_customer_token(db, n)),
        "without a reply token",
    ),
    # A stranger who got hold of Sara's notification (forwarded to them).
    "a customer writing to an agent's token": (
        lambda db, n, told: agent_reply(
            told[SARA],
            "#close\nHi",
            sender="Mallory <mallory@example.net>",
            mid="spoof@shop.example",
        ),
        "not an agent's",
    ),
}


@pytest.mark.parametrize("case", list(SPOOFS))
def test_each_spoofing_case_executes_and_relays_nothing_and_says_why(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink, case: str
) -> None:
    service = Service(settings_for(tmp_path, db_url, *blocks(sink)), db)
    number, told = open_ticket(service, sink)
    make, reason = SPOOFS[case]
    fetched(service, "shop", make(db, number, told))
    assert [m for m in sink.messages if m.rcpt_tos != (SARA,) and m.rcpt_tos != (REZA,)] == []
    shown = show_ticket(db, number)
    assert shown["status"] == "new" and shown["first_response_at"] is None
    assert events(db, number, "status") == [] and events(db, number, "note") == []
    check = _shown_message(db, number, "spoof@shop.example")["agent_check"]
    assert isinstance(check, str) and reason in check
    # The team hears of it as customer mail, with the warning: Sara learns her address
    # was used, and nobody is told to trust it.
    for mail in sink.messages:
        body = parsed(mail.data).get_body(("plain",))
        assert body is not None and "Careful: nothing proves" in body.get_content()


def _with_results(raw: bytes, value: str) -> bytes:
    return f"Authentication-Results: {value}\r\n".encode() + raw


OURS = "mx.shop.example; "
PASSING = "spf=pass smtp.mailfrom=shop.example; dkim=pass header.d=shop.example; "


@pytest.mark.parametrize(
    ("results", "relayed"),
    [
        (OURS + PASSING + "dmarc=pass header.from=shop.example", True),
        (OURS + PASSING + "dmarc=fail header.from=shop.example", False),
        (OURS + "spf=fail smtp.mailfrom=shop.example; dkim=pass header.d=evil.example", False),
        (OURS + "spf=softfail; dkim=pass (good signature) header.d=mail.shop.example", True),
        # Only a header under another id (the sender's own claim): nothing proves anything.
        (None, False),
    ],
)
def test_authentication_results_from_our_server_gate_the_relay(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink, results: str | None, relayed: bool
) -> None:
    settings = settings_for(
        tmp_path, db_url, *blocks(sink), '[authentication]\nauthserv_id = "mx.shop.example"\n'
    )
    service = Service(settings, db)
    number, told = open_ticket(service, sink)
    raw = agent_reply(told[SARA], "#priority high\nHello Alice, done.\n\nSara", mid="auth@s.e")
    # The sender's own claims sit below our server's header, as they would on the way in.
    raw = _with_results(raw, "mx.shop.example; dmarc=pass header.from=shop.example")
    raw = _with_results(raw, "mx.evil.example; dmarc=pass header.from=shop.example")
    if results is not None:
        raw = _with_results(raw, results)
    else:
        raw = raw.replace(b"Authentication-Results: mx.shop", b"Authentication-Results: mx.evil")
    fetched(service, "shop", raw)
    to_alice = [m for m in sink.messages if m.rcpt_tos == ("alice@example.com",)]
    assert len(to_alice) == (1 if relayed else 0)
    assert (show_ticket(db, number)["priority"] == "high") is relayed
    check = _shown_message(db, number, "auth@s.e")["agent_check"]
    assert isinstance(check, str)
    assert check.startswith("the agent's reply") is relayed


def test_an_agents_own_mail_counts_as_a_response_only_when_our_server_vouches(
    tmp_path: Path, db: Database, db_url: str, sink: SmtpSink
) -> None:
    """Sara answers Alice directly and Bcc's support: without a token it runs no command,
    but proven by the receiving server it is her answer (first response, no reopening)."""
    settings = settings_for(
        tmp_path, db_url, *blocks(sink), '[authentication]\nauthserv_id = ["mx.shop.example"]\n'
    )
    service = Service(settings, db)
    number, _told = open_ticket(service, sink)
    passing = "mx.shop.example; dkim=pass header.d=shop.example"
    raw = bytes(
        Mail(
            sender=f"Sara <{SARA}>",
            to="alice@example.com",
            subject="Re: Broken lid",
            body="#close\nHi Alice, a new lid is on its way.",
            date=datetime.now(UTC),
            message_id="bcc@shop.example",
            in_reply_to="alice1@example.com",
        )
    )
    fetched(service, "shop", _with_results(raw, passing))
    shown = show_ticket(db, number)
    assert shown["first_response_at"] is not None
    assert shown["status"] == "new"  # "#close" without a token is only text
    check = _shown_message(db, number, "bcc@shop.example")["agent_check"]
    assert isinstance(check, str) and check.startswith("the agent's own mail")
    assert sink.messages == []  # nobody is notified of the team's own answer


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
