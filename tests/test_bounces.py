"""Bounces that cannot be spoofed cheaply (ingest/automatic.py, BounceStep in ingest/steps.py).

A message is a bounce only with a delivery-status report or a null/MAILER-DAEMON
envelope sender, and it marks a contact as bouncing only when it names a message we
sent to that contact (an outbox row or an outgoing message with that Message-ID).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.models import Contact, Message
from postdesk.models.db import Database
from postdesk.notify.outbox import enqueue
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import SUPPORT_ADDRESS, ingest, mail, ticket_of

AGENT = "sara@support.example"
DAN = "dan@gone.example"
SENT = "postdesk.1.reply-5@support.example"  # the Message-ID of our reply to Dan


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    agent = f'[[agent]]\nemail = "{AGENT}"\nname = "Sara"\n'
    service = Service(settings_for(tmp_path, db_url, agent), db)
    ingest(service, mail("d1@x", sender=f"Dan <{DAN}>", subject="Order 5"))
    # Sara exists as a contact (an agent writing once).
    ingest(service, mail("s1@x", sender=f"Sara <{AGENT}>", subject="Internal"))
    reply = EmailMessage()
    reply["From"] = SUPPORT_ADDRESS
    reply["To"] = DAN
    reply["Subject"] = "Re: Order 5"
    reply["Message-ID"] = f"<{SENT}>"
    reply.set_content("Your parcel left today.")
    with db.transaction() as session:
        enqueue(
            session.connection(),
            reply,
            kind="reply",
            ticket_id=ticket_of(db, "d1@x"),
            text="Your parcel left today.",
            at=datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        )
    return service


def dsn(mid: str, failed: str, original: str, *, return_path: str = "<>") -> bytes:
    return (
        f"Return-Path: {return_path}\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.support.example>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{mid}>\r\n"
        "Date: Sun, 01 Mar 2026 11:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.support.example\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {SUPPORT_ADDRESS}\r\nTo: {failed}\r\n"
        f"Message-ID: <{original}>\r\nSubject: Re: Order 5\r\n"
        "--B--\r\n"
    ).encode()


def bouncing(db: Database) -> set[str]:
    with db.read_session() as session:
        return set(
            session.execute(
                select(Contact.email).where(Contact.bouncing_since.is_not(None))
            ).scalars()
        )


def test_a_report_on_mail_we_sent_marks_its_recipient(service: Service, db: Database) -> None:
    ingest(service, dsn("b1@mx", DAN, SENT))
    assert bouncing(db) == {DAN}
    # It went with the mail it reports on.
    assert ticket_of(db, "b1@mx") == ticket_of(db, "d1@x")


def test_a_report_naming_someone_we_did_not_send_that_mail_to_marks_nobody(
    service: Service, db: Database
) -> None:
    ingest(service, dsn("b1@mx", AGENT, SENT))
    assert bouncing(db) == set()


def test_a_report_on_mail_we_never_sent_marks_nobody(service: Service, db: Database) -> None:
    ingest(service, dsn("b1@mx", DAN, "made-up@elsewhere.example"))
    ingest(service, dsn("b2@mx", AGENT, "postdesk.2.never@support.example"))
    assert bouncing(db) == set()


def test_x_failed_recipients_in_anyones_mail_marks_nobody(service: Service, db: Database) -> None:
    forged = (
        "Return-Path: <mallory@evil.example>\r\n"
        "From: Mail Delivery System <mailer-daemon@evil.example>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        f"X-Failed-Recipients: {AGENT}, {DAN}\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n"
        "Message-ID: <f1@evil>\r\n"
        "Date: Sun, 01 Mar 2026 11:00:00 +0000\r\n\r\n"
        f"A message that you sent could not be delivered.\r\n\r\n  {AGENT}\r\n\r\n"
        f"------ This is a copy of the message\r\n\r\nMessage-ID: <{SENT}>\r\n"
    ).encode()
    ingest(service, forged)
    assert bouncing(db) == set()
    [kind] = _kinds(service, "f1@evil")
    assert kind == "automatic"


def test_a_plain_text_bounce_with_a_null_envelope_quoting_our_mail_marks_its_recipient(
    service: Service, db: Database
) -> None:
    text_bounce = (
        "Return-Path: <>\r\n"
        "From: Mail Delivery System <Mailer-Daemon@mx.gone.example>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        f"X-Failed-Recipients: {DAN}\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n"
        "Message-ID: <e1@mx>\r\n"
        "Date: Sun, 01 Mar 2026 11:00:00 +0000\r\n\r\n"
        f"This message was created automatically by mail delivery software.\r\n\r\n"
        f"  {DAN}\r\n    mailbox unavailable\r\n\r\n"
        "------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        f"Message-ID: <{SENT}>\r\nTo: {DAN}\r\n"
    ).encode()
    ingest(service, text_bounce)
    assert bouncing(db) == {DAN}


def _kinds(service: Service, mid: str) -> list[str]:
    with service.db.read_session() as session:
        return list(
            session.execute(select(Message.kind).where(Message.message_id == mid)).scalars()
        )
