"""Benchmark: postdesk draining N outbox rows into a local SMTP server, next to the floor.

The floor is what any program sending the same mail to the same server pays at least:
one aiosmtplib connection, `SMTP.sendmail(from, recipients, bytes)` per message, the
messages already built and in memory.

postdesk is `OutboxSender.drain()` over N queued rows in a fresh database (schema
created with the migrations, rows queued beforehand; neither is counted): claiming rows
in batches (postdesk's default 50, one connection per batch), and for each row MAIL,
RCPT, DATA, the durable `completing` mark, the end of data and the durable `sent` mark.
Those two durable commits per mail are what the once-only guarantee costs; a second
table shows the time spent in them, from stopwatches around the sender's database calls.

The messages are `postdesk.testing.outgoing.reply()`: replies of about 2 KB with a
plain-text body and an HTML alternative. The server is `postdesk.testing.smtpsink`
(aiosmtpd) in this process; each measurement runs in a fresh Python process of its own,
so the sender and the server do not share an interpreter lock. On a machine other work
runs on, `--repeat 3` measures each side three times (alternating) and keeps the best of
each (noise only ever adds time).

    .venv/bin/python bench/outbox.py [--n 2000] [--database-url URL] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# --- workers: each runs in its own process and prints one JSON line -------------------


def floor_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Send the same messages with aiosmtplib over one connection, one sendmail each."""
    import aiosmtplib

    from postdesk.testing.outgoing import reply

    messages = [reply(i, tag=spec["tag"]) for i in range(spec["n"])]
    prepared = [
        (str(m["From"].addresses[0].addr_spec), [str(m["To"].addresses[0].addr_spec)], m.as_bytes())
        for m in messages
    ]

    async def send() -> int:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=spec["port"], timeout=60)
        await client.connect()
        for sender, recipients, data in prepared:
            await client.sendmail(sender, recipients, data)
        await client.quit()
        return len(prepared)

    start = time.perf_counter()
    count = asyncio.run(send())
    return {"count": count, "seconds": time.perf_counter() - start}


def postdesk_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Drain the queued outbox of `spec["url"]` once with `OutboxSender`."""
    from postdesk.config import SmtpSettings
    from postdesk.models.db import Database
    from postdesk.notify import smtp as smtp_module
    from postdesk.notify.smtp import OutboxSender
    from postdesk.owner import make_owner

    # Bench-only patching: a stopwatch around each database step the sender calls.
    timers: dict[str, float] = {}
    for name in ("recover", "claim", "completing", "sent"):
        setattr(smtp_module, name, _timed(getattr(smtp_module, name), name, timers))
    db = Database(spec["url"])
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=spec["port"], security="none", timeout=60)
        sender = OutboxSender(db, smtp, owner=make_owner())
        db.check_reachable()
        start = time.perf_counter()
        result = sender.drain()
        seconds = time.perf_counter() - start
    finally:
        db.dispose()
    return {"count": result.sent, "seconds": seconds, "errors": result.errors, "timers": timers}


def _timed(function: Callable[..., Any], label: str, timers: dict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timers[label] = timers.get(label, 0.0) + time.perf_counter() - start

    return timed


WORKERS = {"floor": floor_worker, "postdesk": postdesk_worker}


# --- the orchestrating process ---------------------------------------------------------


def _run_worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def _database(base_url: str | None, directory: Path) -> Iterator[str]:
    """A fresh SQLite file, or a private schema on the PostgreSQL server at base_url."""
    if base_url is None:
        yield f"sqlite:///{directory / 'postdesk.db'}"
        return
    from postdesk.testing.postgres import pg_schema_url

    with pg_schema_url(base_url) as url:
        yield url


def _queue(url: str, n: int, tag: str) -> float:
    """Create the schema and queue n replies; the average size of a stored row in bytes."""
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade
    from postdesk.testing.outgoing import queue, reply

    db = Database(url)
    try:
        upgrade(db)
        messages = [reply(i, tag=tag) for i in range(n)]
        queue(db, messages)
        return sum(len(m.as_bytes()) for m in messages) / n
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="mails to send")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server URL (a private schema is created and dropped); default SQLite",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the floor and postdesk this many times each (alternating) and keep the "
        "best of each, for machines where other work adds noise",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(sys.stdin.read()))))
        return

    from postdesk.testing.smtpsink import SmtpSink

    n = args.n
    backend = "PostgreSQL" if args.database_url else "SQLite"
    floors: list[float] = []
    ours: list[float] = []
    size = 0.0
    best: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="postdesk-bench-") as tmp, SmtpSink() as sink:
        for attempt in range(args.repeat):
            tag = f"{uuid.uuid4().hex[:6]}."
            sink.clear()
            floor = _run_worker("floor", {"n": n, "tag": tag, "port": sink.port})
            if floor["count"] != n or len(sink.messages) != n:
                raise SystemExit(f"the floor sent {floor['count']} of {n} mails")
            floors.append(floor["seconds"])

            sink.clear()
            work = Path(tmp) / f"run-{attempt}"
            work.mkdir()
            with _database(args.database_url, work) as url:
                size = _queue(url, n, tag)
                print(
                    f"{n} mails of {size / 1024:.1f} KiB on average queued; draining...",
                    file=sys.stderr,
                )
                result = _run_worker("postdesk", {"url": url, "port": sink.port})
            if result["count"] != n or result["errors"] or len(sink.messages) != n:
                raise SystemExit(f"postdesk did not send all {n} mails: {result}")
            ours.append(result["seconds"])
            if result["seconds"] == min(ours):
                best = result

    floor_rate, our_rate = n / min(floors), n / min(ours)
    print(f"\npostdesk's outbox vs the floor ({backend}, N={n}, {size / 1024:.1f} KiB per mail)")
    print(f"{'':10} {'mails/s':>9} {'ms/mail':>8}")
    print(f"{'floor':10} {floor_rate:9.0f} {1000 / floor_rate:8.2f}")
    print(f"{'postdesk':10} {our_rate:9.0f} {1000 / our_rate:8.2f}")
    print(f"ratio: postdesk is {our_rate / floor_rate:.2f}x the floor")
    print(f"\nwhere postdesk's time goes (its best run, {min(ours):.2f} s):")
    timers: dict[str, float] = best["timers"]
    parts = [
        ("claim rows (a durable commit per batch of 50)", timers.get("claim", 0.0)),
        ("mark completing (a durable commit per mail)", timers.get("completing", 0.0)),
        ("mark sent (a durable commit per mail)", timers.get("sent", 0.0)),
        ("recover dead senders' rows (once per drain)", timers.get("recover", 0.0)),
        ("SMTP and the rest", min(ours) - sum(timers.values())),
    ]
    for label, value in parts:
        print(
            f"  {label:48} {value:7.2f} s {100 * value / min(ours):5.1f}%  "
            f"{1000 * value / n:6.2f} ms/mail"
        )
    if args.repeat > 1:
        print(f"\nbest of {args.repeat} runs each; every run (mails/s):")
        print("  floor    " + ", ".join(f"{n / s:.0f}" for s in floors))
        print("  postdesk " + ", ".join(f"{n / s:.0f}" for s in ours))


if __name__ == "__main__":
    main()
