"""Synthetic support mail with the situations threading gets wrong, and the truth.

`generate_threads(n, seed)` yields `n` messages, oldest first, each with the conversation
it belongs to. Besides customers opening requests and answering with In-Reply-To and
References, it writes what a real support inbox also gets:

- replies from clients that drop the threading headers (a reply prefix, no headers);
- a customer's fresh request with the same subject as their open one ("Refund" twice:
  two requests, no prefix, no headers);
- replies from a colleague the customer put on Cc (one conversation), and from one of
  the same company they did not (the thread forwarded to them: one conversation too);
- two customers answering the same newsletter (not stored) to support: two requests;
- a stranger answering another customer's message whose Message-ID they learned (a
  reply-all that dropped everybody, or a forwarded thread): a request of their own.

The same seed gives the same bytes. A test or benchmark compares the tickets postdesk
builds with `GeneratedThreadMail.thread` (pairwise precision and recall).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

SUPPORT = "support@example.com"
_SUBJECTS = [
    "Refund",
    "Cannot log in",
    "Invoice is wrong",
    "Delivery is late",
    "Cancel my subscription",
    "App crashes on upload",
    "مشکل ورود",
    "بازپرداخت",
]
_FIRST = "Hello,\n\n{subject}: it happened again this morning (case {n}).\n\nThanks,\n{name}\n"
_REPLY = "Thanks. One more detail for case {n}: it still fails.\n\n{name}\n"
_NAMES = ["Alice", "Bob", "Carol", "Dan", "Eve", "Frank", "Maryam", "Reza", "Sara", "Ali"]


@dataclass(frozen=True)
class GeneratedThreadMail:
    """One generated message, the conversation it belongs to and its Message-ID (bare)."""

    raw: bytes
    thread: int
    message_id: str
    situation: str


@dataclass
class _Conversation:
    number: int
    customer: str
    subject: str
    colleague: str
    colleague_on_cc: bool = False
    ids: list[str] = field(default_factory=list)


def _render(
    *,
    sender: str,
    subject: str,
    body: str,
    when: datetime,
    message_id: str,
    parents: list[str],
    cc: str = "",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    if parents:
        msg["In-Reply-To"] = f"<{parents[-1]}>"
        msg["References"] = " ".join(f"<{i}>" for i in parents[-10:])
    msg.set_content(body)
    return bytes(msg)


def generate_threads(n: int, *, seed: int = 1) -> Iterator[GeneratedThreadMail]:
    """Yield `n` messages of the situations above, oldest first."""
    rng = random.Random(seed)
    when = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    conversations: list[_Conversation] = []
    newsletter = f"news.{seed}@vendor.example"
    for i in range(n):
        when += timedelta(seconds=rng.randint(20, 600))
        message_id = f"tg{seed}.{i}.{rng.getrandbits(32):08x}@mail.example"
        roll = rng.random()
        open_ones = [c for c in conversations[-40:] if c.ids]
        if not open_ones or roll < 0.35:
            situation = "new"
        elif roll < 0.60:
            situation = "reply"
        elif roll < 0.68:
            situation = "reply-without-headers"
        elif roll < 0.78:
            situation = "same-subject-new-request"
        elif roll < 0.88:
            situation = "cc-colleague-reply"
        elif roll < 0.94:
            situation = "newsletter-answer"
        else:
            situation = "stranger-reply"
        n_case = rng.randint(1000, 9999)
        if situation in ("new", "same-subject-new-request", "newsletter-answer"):
            if situation == "same-subject-new-request":
                old = rng.choice(open_ones)
                customer, subject = old.customer, old.subject
            else:
                number = rng.randint(1, 300)
                customer = f"{rng.choice(_NAMES)} <customer{number}@c{number % 40}.example>"
                subject = rng.choice(_SUBJECTS)
            domain = customer.rsplit("@", 1)[1].rstrip(">")
            conversation = _Conversation(
                len(conversations), customer, subject, f"colleague{n_case}@{domain}"
            )
            conversations.append(conversation)
            # The customer asks a colleague along on half of the requests.
            conversation.colleague_on_cc = rng.random() < 0.5
            name = customer.split(" <", 1)[0]
            parents = [newsletter] if situation == "newsletter-answer" else []
            prefix = "Re: " if situation == "newsletter-answer" else ""
            raw = _render(
                sender=customer,
                subject=prefix + subject,
                body=_FIRST.format(subject=subject, n=n_case, name=name),
                when=when,
                message_id=message_id,
                parents=parents,
                cc=conversation.colleague if conversation.colleague_on_cc else "",
            )
        else:
            conversation = rng.choice(open_ones)
            sender = conversation.customer
            parents = list(conversation.ids)
            cc = ""
            if situation == "reply-without-headers":
                parents = []
            elif situation == "cc-colleague-reply":
                # A colleague of the same company answers; one the customer did not put
                # on Cc (they got the thread forwarded) is a situation of its own.
                sender = conversation.colleague
                if not conversation.colleague_on_cc:
                    situation = "uncopied-colleague-reply"
                cc = conversation.customer
            elif situation == "stranger-reply":
                number = rng.randint(301, 400)
                sender = f"Stranger <customer{number}@c{number % 40}.example>"
                conversation = _Conversation(len(conversations), sender, conversation.subject, "")
                conversations.append(conversation)
            name = sender.split(" <", 1)[0]
            raw = _render(
                sender=sender,
                subject="Re: " + conversation.subject,
                body=_REPLY.format(n=n_case, name=name),
                when=when,
                message_id=message_id,
                parents=parents,
                cc=cc,
            )
        conversation.ids.append(message_id)
        yield GeneratedThreadMail(raw, conversation.number, message_id, situation)
