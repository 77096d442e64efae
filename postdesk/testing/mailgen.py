"""Deterministic synthetic support mail for tests and benchmarks.

`generate(n, seed)` yields `n` messages shaped like a support inbox: customers open
threads and reply to them (with In-Reply-To and References), in English and Persian,
some with an HTML alternative, a few with a small attachment. The same seed gives the
same bytes, and `GeneratedMail.thread` tells which thread each message belongs to, so a
test can check the tickets postdesk builds against the truth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

SUPPORT = "support@example.com"

_EN_SUBJECTS = [
    "Cannot log in to my account",
    "Refund for order {n}",
    "Invoice {n} shows the wrong address",
    "The app crashes when I upload a photo",
    "Where is my parcel? Order {n}",
    "Please cancel my subscription",
    "Password reset email never arrives",
    "Charged twice for order {n}",
]
_FA_SUBJECTS = [
    "مشکل ورود به حساب کاربری",
    "بازپرداخت سفارش {n}",
    "سفارش {n} هنوز نرسیده است",
    "درخواست لغو اشتراک",
    "فاکتور {n} اشتباه است",
]
_EN_BODY = (
    "Hello,\n\n{topic}. I tried again this morning and it still does not work.\n"
    "My customer number is {n}. Could you please look into it?\n\nThanks,\n{name}\n"
)
_FA_BODY = (
    "سلام،\n\n{topic}. امروز صبح دوباره امتحان کردم ولی درست نشد.\n"
    "شماره مشتری من {n} است.\n\nبا تشکر،\n{name}\n"
)
_EN_REPLY = "Any update on this? It is still not solved.\n\n{name}\n"
_FA_REPLY = "سلام، خبری نشد؟ مشکل هنوز حل نشده است.\n{name}\n"
_EN_NAMES = ["Alice Martin", "Bob Chen", "Carol Diaz", "Dan Okafor", "Eve Novak", "Frank Li"]
_FA_NAMES = ["مریم احمدی", "رضا کریمی", "سارا محمدی", "علی رضایی", "نگار حسینی"]


@dataclass(frozen=True)
class GeneratedMail:
    """One generated message, the thread it belongs to and its Message-ID (bare)."""

    raw: bytes
    thread: int
    message_id: str


@dataclass
class _Thread:
    number: int
    sender: str
    subject: str
    persian: bool
    ids: list[str]


def _render(
    *,
    thread: _Thread,
    body: str,
    when: datetime,
    message_id: str,
    rng: random.Random,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = thread.sender
    msg["To"] = SUPPORT
    prefix = ("پاسخ: " if thread.persian else "Re: ") if thread.ids else ""
    msg["Subject"] = prefix + thread.subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    if thread.ids:
        msg["In-Reply-To"] = f"<{thread.ids[-1]}>"
        msg["References"] = " ".join(f"<{i}>" for i in thread.ids[-10:])
    msg.set_content(body)
    if rng.random() < 0.3:
        paragraphs = "".join(f"<p>{line}</p>" for line in body.splitlines() if line)
        msg.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    if rng.random() < 0.05:
        data = rng.randbytes(rng.randint(2_000, 20_000))
        msg.add_attachment(data, maintype="application", subtype="pdf", filename="scan.pdf")
    return bytes(msg)


def generate(
    n: int, *, seed: int = 1, reply_ratio: float = 0.4, start: datetime | None = None
) -> Iterator[GeneratedMail]:
    """Yield `n` messages: new threads and replies to earlier ones, oldest first."""
    rng = random.Random(seed)
    when = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    threads: list[_Thread] = []
    for i in range(n):
        when += timedelta(seconds=rng.randint(20, 900))
        message_id = f"gen{seed}.{i}.{rng.getrandbits(32):08x}@customer.example"
        if threads and rng.random() < reply_ratio:
            thread = rng.choice(threads[-50:])
            name = thread.sender.split(" <", 1)[0]
            body = (_FA_REPLY if thread.persian else _EN_REPLY).format(name=name)
        else:
            persian = rng.random() < 0.3
            names = _FA_NAMES if persian else _EN_NAMES
            name = rng.choice(names)
            local = f"customer{rng.randint(1, 400)}"
            topic = rng.choice(_FA_SUBJECTS if persian else _EN_SUBJECTS)
            order = rng.randint(10000, 99999)
            subject = topic.format(n=order)
            if "{n}" not in topic:
                # Every thread's subject is its own: the same customer writing the same
                # words twice in a week is one conversation to postdesk's subject rule.
                subject += f" ({order})"
            thread = _Thread(
                len(threads), f"{name} <{local}@customer.example>", subject, persian, []
            )
            threads.append(thread)
            body = (_FA_BODY if persian else _EN_BODY).format(topic=subject, n=order, name=name)
        raw = _render(thread=thread, body=body, when=when, message_id=message_id, rng=rng)
        thread.ids.append(message_id)
        yield GeneratedMail(raw, thread.number, message_id)
