"""Benchmark: `postdesk status` and the metrics' per-pass query on a large database.

Fills a fresh SQLite database (migrated) with N raw messages, 98% processed, 1%
quarantined, 1% pending, spread over three mailboxes, and N/2 outbox rows (almost all
sent), then times, in the same run:

* "count(*) raw_messages": one full count of the raw store, the comparison point: what
  any status that scanned the raw store once would cost at least;
* "status": `postdesk.health.status.collect()`, everything `postdesk status` reads;
* "metrics pass (floor)": the latency query `Metrics.record` runs after each pass, which
  reads only ids above the lowest pending one;
* "metrics pass (no floor)": the same query without the floor, which reads every
  processed message (what the first version did).

Rows are inserted directly (a bulk INSERT), not through the fetch path: the layout of
the tables is what matters here, not how they were filled. Each figure is the best of
`--repeat` runs (noise only ever adds time).

    python bench/status.py                 # 100,000 messages
    python bench/status.py --messages 20000
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from postdesk.config import parse_settings
from postdesk.health.status import collect
from postdesk.models import Mailbox, OutboxMail, RawMessage, RawStatus, utcnow
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade


def fill(db: Database, n: int) -> None:
    now = utcnow()
    with db.transaction() as session:
        ids = []
        for name in ("support", "sales", "billing"):
            row = Mailbox(name=name, address=f"{name}@example.com")
            session.add(row)
            session.flush()
            ids.append(row.id)
    batch = 5000
    for start in range(0, n, batch):
        rows = []
        for i in range(start, min(start + batch, n)):
            status = (
                RawStatus.PENDING
                if i >= n - n // 100
                else RawStatus.QUARANTINED
                if i % 100 == 0
                else RawStatus.PROCESSED
            )
            key = hashlib.sha256(str(i).encode()).hexdigest()
            received = now - timedelta(seconds=n - i)
            rows.append(
                {
                    "dedupe_key": key,
                    "message_id": f"<{i}@bench.example>",
                    "digest": key,
                    "size": 1000,
                    "content": b"x" * 200,
                    "mailbox_id": ids[i % 3],
                    "source": "imap",
                    "origin": "bench",
                    "received_at": received,
                    "status": status,
                    "processed_at": received + timedelta(seconds=1)
                    if status != RawStatus.PENDING
                    else None,
                }
            )
        with db.transaction() as session:
            session.execute(insert(RawMessage), rows)
    for start in range(0, n // 2, batch):
        rows = [
            {
                "kind": "reply",
                "message_id": f"<out{i}@bench.example>",
                "mail_from": "support@example.com",
                "recipients": ["c@example.org"],
                "content": b"x" * 200,
                "state": "queued" if i % 1000 == 0 else "sent",
                "created_at": now - timedelta(seconds=i),
                "next_attempt_at": now,
                "retry_since": now,
            }
            for i in range(start, min(start + batch, n // 2))
        ]
        with db.transaction() as session:
            session.execute(insert(OutboxMail), rows)


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = Database(url)
        upgrade(db)
        started = time.perf_counter()
        fill(db, args.messages)
        print(f"filled {args.messages:,} raw messages in {time.perf_counter() - started:.1f} s")
        settings = parse_settings(
            {
                "database": {"url": url},
                "data_dir": tmp,
                "mailbox": [
                    {
                        "name": name,
                        "address": f"{name}@example.com",
                        "host": "imap.example.com",
                        "username": name,
                        "password": "x",
                    }
                    for name in ("support", "sales", "billing")
                ],
            },
            Path(tmp) / "postdesk.toml",
        )
        with db.read_session() as session:
            floor = session.execute(
                select(func.min(RawMessage.id)).where(RawMessage.status == RawStatus.PENDING)
            ).scalar_one()
        since = utcnow() - timedelta(days=365)

        def latency(with_floor: bool) -> None:
            query = select(
                RawMessage.mailbox_id, RawMessage.received_at, RawMessage.processed_at
            ).where(RawMessage.status == RawStatus.PROCESSED, RawMessage.processed_at > since)
            if with_floor:
                query = query.where(RawMessage.id > floor - 1)
            with db.read_session() as session:
                session.execute(query).all()

        def count() -> None:
            with db.read_session() as session:
                session.execute(select(func.count()).select_from(RawMessage)).scalar_one()

        rows = [
            ("count(*) raw_messages", best(args.repeat, count)),
            ("status", best(args.repeat, lambda: collect(settings, db))),
            ("metrics pass (floor)", best(args.repeat, lambda: latency(True))),
            ("metrics pass (no floor)", best(args.repeat, lambda: latency(False))),
        ]
        db.dispose()
    print(f"{'what':<26}{'ms':>10}")
    for name, seconds in rows:
        print(f"{name:<26}{seconds * 1000:>10.1f}")


if __name__ == "__main__":
    main()
