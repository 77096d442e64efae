"""Understanding mail end to end: every threading rule, automatic mail, reopen and
follow-up tickets, merges, and the visible reply, with messages written here in the
style of real clients, in English and Persian."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.ingest.tokens import ReplyTokens, load_key, new_message_id
from postdesk.models import Contact, Message, Ticket
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, rule_of, ticket_of
from postdesk.tickets import merge_tickets, set_status, show_ticket

SUPPORT = "support@support.example"
MAILBOX = f"""[[mailbox]]
name = "support"
address = "{SUPPORT}"
host = "127.0.0.1"
username = "support"
password = "unused"
"""
AGENT = '[[agent]]\nemail = "sara@support.example"\nname = "Sara"\n'
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    return Service(settings_for(tmp_path, db_url, MAILBOX, AGENT), db)


def status_of(db: Database, number: int) -> str:
    return str(show_ticket(db, number)["status"])


def message_of(db: Database, mid: str) -> dict[str, object]:
    number = ticket_of(db, mid)
    for message in show_ticket(db, number)["messages"]:
        if message["message_id"] == mid:
            return dict(message)
    raise AssertionError(mid)


def set_ticket_status(db: Database, number: int, status: str, *, ago: timedelta) -> None:
    with db.transaction() as session:
        set_status(session.connection(), number, status, actor="sara@support.example", why="test")
        ticket = session.get_one(Ticket, number)
        ticket.closed_at = datetime.now(UTC) - ago


def add_outbound(db: Database, number: int, mid: str, to: str | None = None) -> None:
    """Record a message postdesk sent on ticket `number` (what notify will do), to `to`."""
    with db.transaction() as session:
        session.add(
            Message(
                ticket_id=number,
                direction="out",
                message_id=mid,
                subject="Re: your request",
                from_email=SUPPORT,
                to=[{"email": to, "name": ""}] if to else [],
                text="We are on it.",
                thread_rule="outbound",
            )
        )


# --- threading rules ---------------------------------------------------------------------


def test_reply_token_wins_even_without_any_header(service: Service, db: Database) -> None:
    ingest(service, mail("t1@x", subject="Printer on fire", date=T0))
    number = ticket_of(db, "t1@x")
    tokens = ReplyTokens(load_key(service.settings))
    reply = EmailMessage()
    reply["From"] = "Alice <alice@example.com>"
    reply["To"] = tokens.address(SUPPORT, number)
    reply["Subject"] = "completely different words"
    reply["Message-ID"] = "<t2@x>"
    reply["Date"] = format_datetime(T0 + timedelta(hours=1))
    reply.set_content("It is still burning.")
    forged = EmailMessage()
    for name in ("From", "Subject", "Date"):
        forged[name] = reply[name]
    forged["To"] = tokens.address(SUPPORT, number).replace(f"t{number}-", f"t{number + 1}-")
    forged["Message-ID"] = "<t3@x>"
    forged.set_content("guessing")
    ingest(service, bytes(reply), bytes(forged))

    assert ticket_of(db, "t2@x") == number
    assert rule_of(db, "t2@x") == "reply-token"
    assert ticket_of(db, "t3@x") != number


def test_reply_to_our_own_outbound_message(service: Service, db: Database) -> None:
    ingest(service, mail("o1@x", subject="Refund", date=T0))
    number = ticket_of(db, "o1@x")
    add_outbound(db, number, "ack-1@support.example")
    ingest(service, mail("o2@x", reply_to="ack-1@support.example", subject="Re: Refund"))
    assert ticket_of(db, "o2@x") == number
    assert rule_of(db, "o2@x") == "in-reply-to"


def test_subject_tag_accepts_cc_participant_and_rejects_strangers(
    service: Service, db: Database
) -> None:
    first = EmailMessage()
    first["From"] = "Alice <alice@example.com>"
    first["To"] = SUPPORT
    first["Cc"] = "Bob <bob@example.com>"
    first["Subject"] = "Office printer"
    first["Message-ID"] = "<cc1@x>"
    first["Date"] = format_datetime(T0)
    first.set_content("Printer broken.")
    ingest(service, bytes(first))
    number = ticket_of(db, "cc1@x")
    ingest(
        service,
        mail("cc2@x", sender="bob@example.com", subject=f"Re: [#{number}] Office printer"),
        # Another customer quoting someone else's number (wrong ticket number case).
        mail("cc3@x", sender="eve@example.net", subject=f"[#{number}] my own problem"),
    )
    assert ticket_of(db, "cc2@x") == number
    assert rule_of(db, "cc2@x") == "subject-tag"
    assert ticket_of(db, "cc3@x") != number


def test_subject_fallback_is_narrow(service: Service, db: Database) -> None:
    ingest(service, mail("s1@x", subject="Printer on floor 3 jams", date=T0))
    number = ticket_of(db, "s1@x")
    ingest(
        service,
        # Headers stripped by the client, same sender, same subject after the prefix.
        mail("s2@x", subject="AW: Printer on floor 3 jams", date=T0 + timedelta(days=2)),
        # Same subject from someone else: not the same conversation.
        mail(
            "s3@x",
            sender="carol@example.org",
            subject="Re: Printer on floor 3 jams",
            date=T0 + timedelta(days=2),
        ),
    )
    assert ticket_of(db, "s2@x") == number
    assert rule_of(db, "s2@x") == "subject"
    assert ticket_of(db, "s3@x") != number
    # Outside the window (7 days by default) it is a new ticket.
    ingest(
        service, mail("s4@x", subject="Re: Printer on floor 3 jams", date=T0 + timedelta(days=20))
    )
    assert ticket_of(db, "s4@x") != number


def test_generic_subjects_never_join(service: Service, db: Database) -> None:
    ingest(service, mail("g1@x", subject="Help", date=T0))
    ingest(service, mail("g2@x", subject="Re: help", date=T0 + timedelta(hours=1)))
    ingest(service, mail("g3@x", subject="سوال", date=T0 + timedelta(hours=2)))
    ingest(service, mail("g4@x", subject="پاسخ: سوال", date=T0 + timedelta(hours=3)))
    assert len({ticket_of(db, m) for m in ("g1@x", "g2@x", "g3@x", "g4@x")}) == 4


def test_persian_subject_fallback_with_arabic_letters(service: Service, db: Database) -> None:
    ingest(service, mail("p1@x", subject="مشکل در پرداخت سفارش ۱۲۳", date=T0))
    # Same subject typed with Arabic yeh/kaf and ASCII digits, with a Persian prefix.
    ingest(
        service,
        mail("p2@x", subject="پاسخ: مشكل در پرداخت سفارش 123", date=T0 + timedelta(hours=5)),
    )
    assert ticket_of(db, "p2@x") == ticket_of(db, "p1@x")
    assert rule_of(db, "p2@x") == "subject"


def test_subject_rule_finds_the_ticket_behind_many_newer_ones(
    service: Service, db: Database
) -> None:
    """A shared address with many open tickets: the rule seeks the requester's most
    recent open ticket with the subject's key (stored with each ticket) however many
    newer tickets the requester has; a long subject matches through its digest."""
    long_subject = "Contract renewal " + "and pricing questions " * 20
    ingest(service, mail("m0@x", subject="Badge printer offline", date=T0))
    ingest(service, mail("m1@x", subject=long_subject, date=T0 + timedelta(minutes=1)))
    ingest(
        service,
        *(
            mail(f"n{i}@x", subject=f"Request number {i}", date=T0 + timedelta(minutes=2 + i))
            for i in range(25)
        ),
    )
    later = T0 + timedelta(hours=2)
    ingest(
        service,
        mail("m2@x", subject="RE: badge printer  offline", date=later),
        mail("m3@x", subject="Re: " + long_subject.upper(), date=later),
    )
    assert ticket_of(db, "m2@x") == ticket_of(db, "m0@x")
    assert rule_of(db, "m2@x") == "subject"
    assert ticket_of(db, "m3@x") == ticket_of(db, "m1@x")
    # A ticket without a stored key (opened by a program other than the pipeline) is
    # never found by subject.
    number = ticket_of(db, "m0@x")
    with db.transaction() as session:
        session.get_one(Ticket, number).subject_key = None
    ingest(service, mail("m4@x", subject="Re: Badge printer offline", date=later))
    assert ticket_of(db, "m4@x") != number


def test_forward_from_customer_opens_a_new_ticket(service: Service, db: Database) -> None:
    ingest(service, mail("f1@x", subject="Invoice 77", date=T0))
    original = EmailMessage()
    original["From"] = "billing@vendor.example"
    original["Subject"] = "Invoice 77"
    original["Message-ID"] = "<vendor-1@x>"
    original.set_content("Your invoice.")
    forward = EmailMessage()
    forward["From"] = "Alice <alice@example.com>"
    forward["To"] = SUPPORT
    forward["Subject"] = "Fwd: Invoice 77"
    forward["Message-ID"] = "<f2@x>"
    forward["References"] = "<f1@x>"
    forward["Date"] = format_datetime(T0 + timedelta(hours=1))
    forward.set_content("See the invoice below, is this right?")
    forward.add_attachment(original)
    ingest(service, bytes(forward))
    assert ticket_of(db, "f2@x") != ticket_of(db, "f1@x")
    assert rule_of(db, "f2@x") == "forward"


@pytest.mark.parametrize(
    ("subject", "marker"),
    [
        # Gmail in Italian and Polish: markers the threader learnt from the quotes lexicon.
        ("I: Fattura 77", "---------- Messaggio inoltrato ---------"),
        ("PD: Faktura 77", "---------- Wiadomość przekazana dalej ---------"),
    ],
)
def test_inline_forward_in_other_languages_opens_a_new_ticket(
    service: Service, db: Database, subject: str, marker: str
) -> None:
    ingest(service, mail("i1@x", subject="Invoice 77", date=T0))
    body = f"Is this right?\n\n{marker}\nFrom: billing@vendor.example\nYour invoice.\n"
    forward = mail(
        "i2@x", subject=subject, body=body, reply_to="i1@x", date=T0 + timedelta(hours=1)
    )
    ingest(service, forward)
    assert ticket_of(db, "i2@x") != ticket_of(db, "i1@x")
    assert rule_of(db, "i2@x") == "forward"


# --- reopen and follow-up ----------------------------------------------------------------


def test_reply_to_solved_ticket_reopens_it(service: Service, db: Database) -> None:
    ingest(service, mail("r1@x", subject="Cannot log in", date=T0))
    number = ticket_of(db, "r1@x")
    set_ticket_status(db, number, "solved", ago=timedelta(days=90))
    ingest(service, mail("r2@x", reply_to="r1@x", subject="Re: Cannot log in"))
    assert ticket_of(db, "r2@x") == number
    assert status_of(db, number) == "open"


def test_reply_to_recently_closed_ticket_reopens_it(service: Service, db: Database) -> None:
    ingest(service, mail("c1@x", subject="Cannot log in", date=T0))
    number = ticket_of(db, "c1@x")
    set_ticket_status(db, number, "closed", ago=timedelta(days=2))
    today = datetime.now(UTC) - timedelta(minutes=1)
    ingest(service, mail("c2@x", reply_to="c1@x", subject="Re: Cannot log in", date=today))
    assert ticket_of(db, "c2@x") == number
    assert status_of(db, number) == "open"


def test_reply_to_long_closed_ticket_opens_linked_follow_up(service: Service, db: Database) -> None:
    ingest(service, mail("l1@x", subject="Cannot log in", date=T0))
    old = ticket_of(db, "l1@x")
    set_ticket_status(db, old, "closed", ago=timedelta(days=45))
    today = datetime.now(UTC) - timedelta(minutes=1)
    ingest(service, mail("l2@x", reply_to="l1@x", subject="Re: Cannot log in", date=today))
    new = ticket_of(db, "l2@x")
    assert new != old
    assert status_of(db, old) == "closed"
    assert show_ticket(db, new)["links"] == [{"ticket": new, "kind": "follow-up", "other": old}]


# --- automatic mail ---------------------------------------------------------------------


def test_out_of_office_attaches_but_never_reopens(service: Service, db: Database) -> None:
    ingest(service, mail("a1@x", subject="Cannot log in", date=T0))
    number = ticket_of(db, "a1@x")
    add_outbound(db, number, "answer-1@support.example")
    set_ticket_status(db, number, "solved", ago=timedelta(hours=1))
    ooo = EmailMessage()
    ooo["From"] = "Alice <alice@example.com>"
    ooo["To"] = SUPPORT
    ooo["Subject"] = "Automatic reply: Re: Cannot log in"
    ooo["Auto-Submitted"] = "auto-replied"
    ooo["In-Reply-To"] = "<answer-1@support.example>"
    ooo["Message-ID"] = "<a2@x>"
    ooo.set_content("I am out of the office until Monday.")
    ingest(service, bytes(ooo))
    assert ticket_of(db, "a2@x") == number
    assert message_of(db, "a2@x")["kind"] == "automatic"
    assert status_of(db, number) == "solved"


def test_automatic_mail_without_ticket_is_kept_but_not_for_humans(
    service: Service, db: Database
) -> None:
    ooo = EmailMessage()
    ooo["From"] = "مریم <maryam@example.ir>"
    ooo["To"] = SUPPORT
    ooo["Subject"] = "پاسخ خودکار: در مرخصی هستم"
    ooo["Message-ID"] = "<a3@x>"
    ooo.set_content("تا شنبه در دفتر نیستم.")
    ingest(service, bytes(ooo))
    number = ticket_of(db, "a3@x")
    assert message_of(db, "a3@x")["kind"] == "automatic"
    assert status_of(db, number) == "closed"


def test_bounce_attaches_to_ticket_and_marks_contact(service: Service, db: Database) -> None:
    ingest(service, mail("b1@x", sender="Dan <dan@gone.example>", subject="Order 5", date=T0))
    number = ticket_of(db, "b1@x")
    add_outbound(db, number, "reply-5@support.example", to="dan@gone.example")
    dsn = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.support.example>\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.support.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.support.example\r\n\r\n"
        "Final-Recipient: rfc822; dan@gone.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {SUPPORT}\r\nTo: dan@gone.example\r\n"
        "Message-ID: <reply-5@support.example>\r\nSubject: Re: Order 5\r\n"
        "--B--\r\n"
    ).encode()
    ingest(service, dsn)
    assert ticket_of(db, "bounce-1@mx.support.example") == number
    assert message_of(db, "bounce-1@mx.support.example")["kind"] == "bounce"
    with db.read_session() as session:
        dan = session.execute(
            select(Contact).where(Contact.email == "dan@gone.example")
        ).scalar_one()
        assert dan.bouncing_since is not None
    # Writing again proves the address works.
    ingest(service, mail("b2@x", sender="dan@gone.example", reply_to="b1@x", subject="Re: Order 5"))
    with db.read_session() as session:
        dan = session.execute(
            select(Contact).where(Contact.email == "dan@gone.example")
        ).scalar_one()
        assert dan.bouncing_since is None


def test_own_mail_looping_back_is_recognised(service: Service, db: Database) -> None:
    ingest(service, mail("w1@x", subject="Where is my parcel", date=T0))
    number = ticket_of(db, "w1@x")
    set_ticket_status(db, number, "solved", ago=timedelta(hours=1))
    echo = EmailMessage()
    echo["From"] = f"Support <{SUPPORT}>"
    echo["To"] = "alice@example.com"
    echo["Subject"] = "Re: Where is my parcel"
    echo["X-Postdesk-Loop"] = "support"
    echo["In-Reply-To"] = "<w1@x>"
    echo["Message-ID"] = "<w2@support.example>"
    echo.set_content("Your parcel left today.")
    ingest(service, bytes(echo))
    assert ticket_of(db, "w2@support.example") == number
    assert message_of(db, "w2@support.example")["kind"] == "own"
    assert status_of(db, number) == "solved"


def test_our_message_id_coming_back_without_loop_header_is_own(
    service: Service, db: Database
) -> None:
    """A copy of a mail we sent, re-sent by someone's server with none of our headers
    (not even our From), is still ours by its Message-ID; an id of the same shape that we
    never sent is someone's human mail."""
    ingest(service, mail("k1@x", subject="Invoice copy", date=T0))
    number = ticket_of(db, "k1@x")
    sent = new_message_id("support.example")
    add_outbound(db, number, sent)
    never_sent = new_message_id("support.example")
    assert sent != never_sent and sent.startswith("postdesk.")
    ingest(
        service,
        mail(sent, sender="relay@lists.example.org", subject="Re: Invoice copy"),
        mail(never_sent, sender="carol@example.com", subject="Forged id"),
    )
    echoes = [m for m in show_ticket(db, number)["messages"] if m["message_id"] == sent]
    assert sorted((m["direction"], m["kind"]) for m in echoes) == [("in", "own"), ("out", "human")]
    assert message_of(db, never_sent)["kind"] == "human"


# --- merges ------------------------------------------------------------------------------


def test_replies_to_a_merged_ticket_land_on_the_target(service: Service, db: Database) -> None:
    ingest(service, mail("m1@x", subject="Laptop screen", date=T0))
    ingest(service, mail("m2@x", subject="Laptop screen flickers", date=T0 + timedelta(hours=1)))
    target, source = ticket_of(db, "m1@x"), ticket_of(db, "m2@x")
    merge_tickets(db, target, source)
    tokens = ReplyTokens(load_key(service.settings))
    by_token = EmailMessage()
    by_token["From"] = "alice@example.com"
    by_token["To"] = tokens.address(SUPPORT, source)
    by_token["Subject"] = "more"
    by_token["Message-ID"] = "<m3@x>"
    by_token.set_content("and more")
    ingest(
        service,
        mail("m4@x", subject=f"Re: [#{source}] Laptop screen flickers"),
        bytes(by_token),
    )
    assert ticket_of(db, "m4@x") == target
    assert ticket_of(db, "m3@x") == target
    assert status_of(db, source) == "closed"


# --- the visible reply --------------------------------------------------------------------


def test_visible_text_is_stored_for_gmail_and_persian_replies(
    service: Service, db: Database
) -> None:
    ingest(service, mail("v1@x", subject="Order late", date=T0))
    gmail = mail(
        "v2@x",
        reply_to="v1@x",
        subject="Re: Order late",
        body=(
            "Thanks, it arrived today.\n\n"
            "On Mon, Mar 2, 2026 at 9:00 AM Support <support@support.example> wrote:\n"
            "> Your order is on its way.\n"
        ),
    )
    persian = mail(
        "v3@x",
        reply_to="v2@x",
        subject="پاسخ: Order late",
        body=(
            "ممنون، رسید.\n\n"
            "در تاریخ دوشنبه ۱۱ اسفند ۱۴۰۴، پشتیبانی <support@support.example> نوشت:\n"
            "> سفارش شما ارسال شد.\n"
        ),
    )
    ingest(service, gmail, persian)
    assert message_of(db, "v2@x")["visible_text"] == "Thanks, it arrived today."
    assert "On Mon" in str(message_of(db, "v2@x")["text"])
    assert message_of(db, "v3@x")["visible_text"] == "ممنون، رسید."
