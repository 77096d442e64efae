"""Outgoing mail for outbox tests and the outbox benchmark: replies as postdesk sends them.

`reply(n)` is the n-th of a family of realistic replies (about 2 KB: From, To, Reply-To,
Subject with a ticket tag, Message-ID, In-Reply-To and References, a plain-text body with
an HTML alternative, a Date), each with a Message-ID of its own. `queue()` puts messages in the
outbox in one transaction, as the change that decides to send them would.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.message import EmailMessage

from postdesk.models.db import Database
from postdesk.notify.outbox import enqueue
from postdesk.testing.mail import Mail

DOMAIN = "support.example.com"

_PARAGRAPHS = (
    "Thank you for writing to us. We have looked at the order you mentioned and can see "
    "that it left our warehouse on Tuesday; the carrier's tracking shows it in transit.",
    "If the parcel has not arrived by Friday, please answer this mail and we will send a "
    "replacement at once, without any need to return the first one.",
    "You can see the whole conversation, and add to it, by replying to this mail: keep the "
    "ticket number in the subject so that your answer reaches the same person.",
)


def message_id(n: int, tag: str = "") -> str:
    """The bare Message-ID of `reply(n, tag=tag)`."""
    return f"reply.{tag}{n}@{DOMAIN}"


def reply(n: int, *, tag: str = "", to: str | None = None) -> EmailMessage:
    """The n-th reply (`tag` keeps several families of them apart), about 2 KB."""
    customer = to or f"customer{n % 97}@example.org"
    text = "\n\n".join(
        ["Hello,", *_PARAGRAPHS, f"Best regards,\nSam from Support\nTicket #{1000 + n}"]
    )
    html = (
        '<html><body style="font-family: sans-serif">'
        + "".join(f"<p>{p}</p>" for p in ["Hello,", *_PARAGRAPHS])
        + f"<p>Best regards,<br>Sam from Support<br><small>Ticket #{1000 + n}</small></p>"
        "</body></html>"
    )
    return Mail(
        sender=f"Example Support <help@{DOMAIN}>",
        to=customer,
        subject=f"Re: [#{1000 + n}] Where is my order?",
        body=text + "\n",
        html=html + "\n",
        message_id=message_id(n, tag),
        in_reply_to=f"question.{n}@example.org",
        references=(f"question.{n}@example.org",),
        date="Mon, 05 Jan 2026 10:00:00 +0000",
        headers=(("Reply-To", f"help+{1000 + n}@{DOMAIN}"),),
    ).message()


def queue(db: Database, messages: Iterable[EmailMessage], *, kind: str = "reply") -> list[int]:
    """Put `messages` in the outbox in one transaction; their row ids."""
    with db.transaction() as session:
        conn = session.connection()
        return [enqueue(conn, message, kind=kind) for message in messages]
