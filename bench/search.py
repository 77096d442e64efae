"""Benchmark: `postdesk tickets search` over N tickets, next to a LIKE scan of the same text.

Setup (timed apart, not part of the search figures): N tickets with 1-3 messages each
(about 1.4 N messages), bulk-inserted with executemany without the index, then indexed
as migration 0009 does for an existing database, then 2% more inserted with the index's
triggers running as they do when mail is filed (the cost per message, next to the
insert without the index). Texts are synthetic: about
40 words each from a Zipf-like draw over an English and a Persian vocabulary (one ticket
in three Persian, a third of those typed with Arabic ي/ك, with an order number in Persian
digits; the English ones name one of 20,000 product models, the rare words).

Searched: a set of queries (a common word, rare words, two words, a phrase, Persian in
both spellings, digits, a word no message has), each `--repeat` times through
`postdesk.tickets.search.search` (ranking, the best message per ticket and its snippet,
20 results). The comparison point, measured in the same run on the same data: the
naive alternative an index replaces, `subject LIKE '%word%' OR visible_text LIKE
'%word%'` over the messages for each one-word query (no ranking, no Persian folding;
LIKE is case-insensitive only for ASCII on SQLite and case-sensitive on PostgreSQL).

    .venv/bin/python bench/search.py [--n 50000] [--repeat 5] [--postgresql URL]

With --postgresql, the run uses a private schema on that server (dropped afterwards).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from postdesk.models import Contact, Message, Ticket
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.postgres import pg_schema_url
from postdesk.tickets.search import create_index, drop_index, search

ENGLISH = [
    "order",
    "refund",
    "invoice",
    "printer",
    "delivery",
    "account",
    "password",
    "login",
    "payment",
    "card",
    "shipping",
    "address",
    "broken",
    "missing",
    "late",
    "cancel",
    "subscription",
    "warranty",
    "screen",
    "battery",
    "charger",
    "update",
    "error",
    "crash",
    "email",
    "phone",
    "support",
    "team",
    "manager",
    "price",
    "discount",
    "coupon",
    "receipt",
    "return",
    "exchange",
    "size",
    "colour",
    "package",
    "tracking",
    "courier",
    "store",
    "online",
    "app",
    "website",
]
FILLER = [
    "the",
    "a",
    "to",
    "and",
    "of",
    "my",
    "is",
    "it",
    "for",
    "you",
    "this",
    "that",
    "not",
    "with",
    "please",
    "have",
    "was",
    "on",
    "can",
]
PERSIAN = [
    "سفارش",
    "بازپرداخت",
    "فاکتور",
    "چاپگر",
    "ارسال",
    "حساب",
    "رمز",
    "ورود",
    "پرداخت",
    "کارت",
    "آدرس",
    "خراب",
    "گم",
    "تاخیر",
    "لغو",
    "اشتراک",
    "گارانتی",
    "صفحه",
    "باتری",
    "شارژر",
    "خطا",
    "ایمیل",
    "تلفن",
    "پشتیبانی",
    "قیمت",
    "تخفیف",
    "کد",
    "رسید",
    "مرجوعی",
    "تعویض",
    "اندازه",
    "رنگ",
    "بسته",
    "پیگیری",
    "پیک",
    "فروشگاه",
    "برنامه",
    "سایت",
    "کیف",
    "کفش",
    "لباس",
    "کتاب",
]
PERSIAN_FILLER = [
    "من",
    "را",
    "به",
    "از",
    "که",
    "این",
    "با",
    "برای",
    "است",
    "و",
    "در",
    "یک",
    "آن",
    "می\u200cخواهم",
    "لطفا",
]
ARABIC_LETTERS = str.maketrans({"ی": "ي", "ک": "ك"})
PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")

# (label, query, whether the LIKE scan can answer it: one plain word)
QUERIES = (
    ("common word", "order", True),
    ("middling word", "warranty", True),
    ("rare word", "model4242", True),
    ("two words", "refund invoice", False),
    ("phrase", '"tracking courier"', False),
    ("Persian", "اشتراک", True),
    ("Persian, Arabic ك", "اشتراك", False),
    ("Persian two words", "فاکتور پرداخت", False),
    ("digits", "۴۲۴۲", False),
    ("no hit", "zebra", True),
)


def _zipf_words(rng: random.Random, vocabulary: list[str], filler: list[str], n: int) -> str:
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    content = rng.choices(vocabulary, weights=weights, k=n // 2)
    words = content + rng.choices(filler, k=n - len(content))
    rng.shuffle(words)
    return " ".join(words)


def texts(rng: random.Random, index: int) -> tuple[str, str]:
    """A subject and a text: Persian for one ticket in three, English otherwise."""
    if index % 3 == 0:
        subject = _zipf_words(rng, PERSIAN, PERSIAN_FILLER, 5)
        body = _zipf_words(rng, PERSIAN, PERSIAN_FILLER, 40)
        body += " شماره سفارش " + str(index).translate(PERSIAN_DIGITS)
        if index % 9 == 0:
            subject, body = subject.translate(ARABIC_LETTERS), body.translate(ARABIC_LETTERS)
        return subject, body
    body = _zipf_words(rng, ENGLISH, FILLER, 40) + f" model{rng.randrange(20_000)}"
    return _zipf_words(rng, ENGLISH, FILLER, 5), body


def rows(n: int, first: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tickets `first`..`first + n - 1` and their messages, as rows to insert."""
    rng = random.Random(16 + first)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tickets = []
    messages = []
    for number in range(first, first + n):
        subject, body = texts(rng, number)
        at = start + timedelta(minutes=number)
        tickets.append(
            {"id": number, "subject": subject, "requester_id": 1, "created_at": at}
            | {"updated_at": at, "last_message_at": at, "status": "open"}
        )
        for reply in range(1 + (number % 4 == 0) + (number % 8 == 0)):
            messages.append(
                {
                    "ticket_id": number,
                    "contact_id": 1,
                    "message_id": f"m{number}.{reply}@bench.example",
                    "subject": subject if reply == 0 else f"Re: {subject}",
                    "from_email": "customer@example.com",
                    "text": body,
                    "visible_text": body if reply == 0 else texts(rng, number)[1],
                    "received_at": at + timedelta(hours=reply),
                }
            )
    return tickets, messages


def insert_rows(
    db: Database, tickets: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> float:
    """Seconds to bulk-insert the rows (5,000 a statement, one transaction)."""
    start = time.perf_counter()
    with db.transaction() as session:
        conn = session.connection()
        for first in range(0, len(tickets), 5000):
            conn.execute(insert(table_of(Ticket)), tickets[first : first + 5000])
        for first in range(0, len(messages), 5000):
            conn.execute(insert(table_of(Message)), messages[first : first + 5000])
    return time.perf_counter() - start


def fill(db: Database, n: int) -> None:
    """N tickets inserted without the index, then indexed as migration 0009 does, then
    2% more filed with the index in place (its triggers running): each timed."""
    with db.transaction() as session:
        session.execute(insert(table_of(Contact)), [{"id": 1, "email": "customer@example.com"}])
        drop_index(session.connection())
    tickets, messages = rows(n)
    took = insert_rows(db, tickets, messages)
    print(
        f"{db.dialect}: {n} tickets, {len(messages)} messages bulk-inserted without the index "
        f"in {took:.1f} s ({took / len(messages) * 1000:.2f} ms a message)"
    )
    start = time.perf_counter()
    with db.transaction() as session:
        create_index(session.connection())
    print(f"indexing them (migration 0009's backfill): {time.perf_counter() - start:.1f} s")
    extra = max(1, n // 50)
    tickets, messages = rows(extra, first=n + 1)
    took = insert_rows(db, tickets, messages)
    print(
        f"{extra} more tickets, {len(messages)} messages inserted with the index triggers in "
        f"{took:.1f} s ({took / len(messages) * 1000:.2f} ms a message)"
    )


def timings(action: Callable[[], object], repeat: int) -> list[float]:
    action()  # warm the cache: the figures are for a database in use
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        out.append(time.perf_counter() - start)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:8.1f} ms"


def run(db: Database, n: int, repeat: int) -> None:
    upgrade(db)
    fill(db, n)
    like = text(
        "SELECT DISTINCT ticket_id FROM messages "
        "WHERE subject LIKE :pattern OR visible_text LIKE :pattern"
    )
    all_search: list[float] = []
    all_like: list[float] = []
    print(f"{'query':<20} {'hits':>6} {'search median':>14} {'LIKE median':>14}")
    for label, query, plain in QUERIES:
        with db.read_session() as session:
            found = len(search(session, query, limit=1000))  # 1000: at least that many
            taken = timings(lambda q=query: search(session, q, limit=20), repeat)  # type: ignore[misc]
            all_search += taken
            scan = ""
            if plain:
                pattern = {"pattern": f"%{query}%"}
                scanned = timings(lambda p=pattern: session.execute(like, p).all(), repeat)  # type: ignore[misc]
                all_like += scanned
                scan = ms(statistics.median(scanned))
        hits = f"{found}+" if found == 1000 else str(found)
        print(f"{label:<20} {hits:>6} {ms(statistics.median(taken)):>14} {scan:>14}")
    print(
        f"search, all queries: median {ms(statistics.median(all_search)).strip()}, "
        f"p95 {ms(p95(all_search)).strip()} ({len(all_search)} runs, 20 results each)"
    )
    print(
        f"LIKE scan, one-word queries: median {ms(statistics.median(all_like)).strip()}, "
        f"p95 {ms(p95(all_like)).strip()} ({len(all_like)} runs)"
    )


@contextmanager
def database(postgresql: str | None) -> Iterator[Database]:
    if postgresql:
        with pg_schema_url(postgresql) as url:
            db = Database(url)
            try:
                yield db
            finally:
                db.dispose()
        return
    with tempfile.TemporaryDirectory() as directory:
        db = Database(f"sqlite:///{Path(directory) / 'bench.db'}")
        try:
            yield db
        finally:
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="tickets")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each query")
    parser.add_argument("--postgresql", metavar="URL", help="a PostgreSQL server to use")
    args = parser.parse_args()
    with database(args.postgresql) as db:
        run(db, args.n, args.repeat)


if __name__ == "__main__":
    main()
