"""Benchmark: from a message's APPEND to its ticket being committed, with IDLE and polling.

`postdesk run`'s service (`Service.run_forever`, in this process, on a thread) watches one
mailbox on a private Dovecot started in a temporary directory, with a fresh SQLite
database. Messages (`postdesk.testing.mailgen`, fixed seed) are appended one at a time
by a separate IMAP client, at random moments; for each, the time from just before its
APPEND to the moment its raw message is seen committed as processed (the ticket opened
or joined in the same transaction) is recorded. The database is read every 5 ms for
that, so each figure is exact to about 5 ms.

Three measurements, in the same run:

* the comparison point: APPEND to the server's EXISTS reaching a plain IDLE client,
  without postdesk (Dovecot waits about half a second before it tells IDLE clients of a
  change, to batch them; that much of any IMAP client's latency is the server's);

* IDLE (postdesk): the server announces each message and the mailbox's thread fetches it at once;
  `--n` messages (default 200), each appended 50-150 ms after the previous one's
  ticket committed (the service is idle when each arrives, as with real mail);
* polling (postdesk): the same service with `idle = false` at the default `run.poll_interval`
  (60 s): each message waits for the next poll, on average half an interval. Measuring
  that over hundreds of messages would take hours, so `--poll-messages` messages
  (default 20) are appended at random moments spread over `--poll-window` seconds
  (default 240) while earlier ones may still be waiting; it reports the same figures
  over those, next to the expected median of poll_interval / 2.

    .venv/bin/python bench/idle_latency.py [--n 200] [--poll-messages 20]
        [--poll-window 240] [--poll-interval 60]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select

from postdesk.config import load_settings
from postdesk.daemon import Service
from postdesk.models import RawMessage, RawStatus
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import generate

READ_EVERY = 0.005


def _processed(db: Database, message_ids: list[str]) -> set[str]:
    with db.read_session() as session:
        return set(
            session.execute(
                select(RawMessage.message_id).where(
                    RawMessage.message_id.in_(message_ids),
                    RawMessage.status == RawStatus.PROCESSED,
                )
            ).scalars()
        )


def _message_id(raw: bytes) -> str:
    from postdesk.ingest.parse import header_summary

    found = header_summary(raw).message_id
    assert found, "generated mail has a Message-ID"
    return found


def _service(
    server: Dovecot, user: MailUser, directory: Path, *, idle: bool, poll_interval: float
) -> tuple[Service, Database]:
    directory.mkdir()
    url = f"sqlite:///{directory / 'postdesk.db'}"
    config = write_config(
        directory,
        url,
        mailbox_toml(server, user, extra=f"idle = {'true' if idle else 'false'}"),
        top=f"[run]\npoll_interval = {poll_interval}\n",
    )
    db = Database(url)
    upgrade(db)
    return Service(load_settings(config), db), db


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def measure_idle(server: Dovecot, directory: Path, n: int, seed: int) -> list[float]:
    user = server.add_user()
    service, db = _service(server, user, directory, idle=True, poll_interval=3600)
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    rng = random.Random(seed)
    latencies: list[float] = []
    try:
        time.sleep(1.0)  # connected, synced (empty) and IDLE
        with server.client(user) as client:
            for mail in generate(n, seed=seed):
                message_id = _message_id(mail.raw)
                time.sleep(rng.uniform(0.05, 0.15))
                start = time.monotonic()
                client.append("INBOX", mail.raw)
                while not _processed(db, [message_id]):
                    if time.monotonic() - start > 120:
                        raise SystemExit(f"no ticket for <{message_id}> after 120 s")
                    time.sleep(READ_EVERY)
                latencies.append(time.monotonic() - start)
    finally:
        service.stop()
        thread.join(15)
        db.dispose()
    return latencies


def measure_server_notice(server: Dovecot, n: int, seed: int) -> list[float]:
    """The comparison point: APPEND to the server's EXISTS reaching an IDLE client, with
    no postdesk involved (the part of the latency that is the server's)."""
    user = server.add_user()
    rng = random.Random(seed)
    latencies: list[float] = []
    with server.client(user) as watcher, server.client(user) as sender:
        watcher.select_folder("INBOX")
        for mail in generate(n, seed=seed):
            watcher.idle()
            time.sleep(rng.uniform(0.05, 0.15))
            start = time.monotonic()
            sender.append("INBOX", mail.raw)
            while True:
                answer = watcher.idle_check(timeout=30)
                if any(isinstance(r, tuple) and r[1:2] == (b"EXISTS",) for r in answer):
                    break
                if time.monotonic() - start > 30:
                    raise SystemExit("the server never announced an appended message")
            latencies.append(time.monotonic() - start)
            watcher.idle_done()
    return latencies


def measure_polling(
    server: Dovecot, directory: Path, count: int, window: float, interval: float, seed: int
) -> list[float]:
    user = server.add_user()
    service, db = _service(server, user, directory, idle=False, poll_interval=interval)
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    rng = random.Random(seed)
    mails = list(generate(count, seed=seed))
    at = sorted(rng.uniform(0, window) for _ in mails)
    appended: dict[str, float] = {}
    latencies: list[float] = []
    try:
        time.sleep(1.0)
        began = time.monotonic()
        with server.client(user) as client:
            for mail, offset in zip(mails, at, strict=True):
                while time.monotonic() - began < offset:
                    _collect(db, appended, latencies)
                    time.sleep(READ_EVERY)
                appended[_message_id(mail.raw)] = time.monotonic()
                client.append("INBOX", mail.raw)
        deadline = time.monotonic() + 3 * interval + 60
        while appended and time.monotonic() < deadline:
            _collect(db, appended, latencies)
            time.sleep(READ_EVERY)
        if appended:
            raise SystemExit(f"{len(appended)} message(s) never ticketed")
    finally:
        service.stop()
        thread.join(15)
        db.dispose()
    return latencies


def _collect(db: Database, waiting: dict[str, float], latencies: list[float]) -> None:
    if not waiting:
        return
    now = time.monotonic()
    for message_id in _processed(db, list(waiting)):
        latencies.append(now - waiting.pop(message_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="messages measured with IDLE")
    parser.add_argument("--poll-messages", type=int, default=20)
    parser.add_argument("--poll-window", type=float, default=240.0)
    parser.add_argument("--poll-interval", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    if args.n < 1 or args.poll_messages < 1:
        parser.error("--n and --poll-messages must be at least 1")
    with tempfile.TemporaryDirectory(prefix="postdesk-idle-bench-") as tmp:
        root = Path(tmp)
        with Dovecot(root / "dovecot") as server:
            notice = measure_server_notice(server, min(args.n, 50), args.seed + 2)
            idle = measure_idle(server, root / "idle", args.n, args.seed)
            polled = measure_polling(
                server,
                root / "poll",
                args.poll_messages,
                args.poll_window,
                args.poll_interval,
                args.seed + 1,
            )
    print("APPEND -> ticket committed (one mailbox, local Dovecot, SQLite)")
    print(f"{'mode':<36} {'messages':>8} {'median s':>9} {'p95 s':>8} {'max s':>8}")
    rows = [
        ("server alone: APPEND -> EXISTS", notice),
        ("IMAP IDLE", idle),
        (f"polling every {args.poll_interval:g} s (idle = false)", polled),
    ]
    for label, values in rows:
        median, p95 = _percentiles(values)
        print(f"{label:<36} {len(values):>8} {median:>9.3f} {p95:>8.3f} {max(values):>8.3f}")
    print(
        f"expected with polling: median ~{args.poll_interval / 2:g} s, "
        f"p95 ~{args.poll_interval * 0.95:g} s (uniform arrival within an interval)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
