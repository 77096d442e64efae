"""Benchmark: one SLA pass of `postdesk run` over N open tickets, next to its floor.

Each pass of the service checks the SLA clocks of every ticket that is not solved or
closed (postdesk/sla/alerts.py): it reads their columns, computes the state only of
tickets that changed or whose next moment (at risk, due) has come, and queues the alerts
that are due. The floor is reading those columns alone (the one query every pass makes).

Setup (not timed): N customer mails stored as fetched, a few minutes apart over the last
days, and processed by the real pipeline into N open tickets in a Tehran business week
(mixed priorities: a keyword makes a quarter of them urgent). Then, with the clock set
to now:

- pass 1: a fresh checker (as after a start) computes every ticket and queues the alerts
  already due (at-risk and breach mails to the queue's agents, recorded once each);
- passes 2-4: nothing changed: what a quiet minute of `postdesk run` costs.

    .venv/bin/python bench/sla.py [--n 3000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from postdesk.daemon import Service, sync_config
from postdesk.ingest.store import Incoming, store_many
from postdesk.models import utcnow
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.sla.view import OPEN_TICKETS
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import mail

BLOCKS = (
    '[[mailbox]]\nname = "support"\naddress = "help@shop.example"\nhost = "127.0.0.1"\n'
    'port = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\ncalendar = "tehran"\n',
    '[smtp]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\n',  # alerts are only queued
    '[[agent]]\nemail = "sara@shop.example"\nname = "Sara"\n',
    '[triage.keywords]\nurgent = ["urgent"]\n',
    '[sla]\nwarn_before = "1h"\n[sla.targets]\n'
    'urgent = { first_response = "1h", resolution = "8h" }\n'
    'high = { first_response = "4h", resolution = "16h" }\n'
    'normal = { first_response = "8h", resolution = "40h" }\n'
    'low = { first_response = "16h", resolution = "80h" }\n',
    '[calendar.tehran]\ntimezone = "Asia/Tehran"\nholiday_country = "IR"\n'
    '[calendar.tehran.week]\nsat = "08:00-16:00"\nsun = "08:00-16:00"\nmon = "08:00-16:00"\n'
    'tue = "08:00-16:00"\nwed = "08:00-16:00"\nthu = "08:00-12:00"\n',
)


def seconds(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="open tickets")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        settings = settings_for(Path(directory), url, *BLOCKS)
        db = Database(url)
        upgrade(db)
        now = utcnow()
        service = Service(settings, db, now=lambda: now)
        ids = sync_config(db, settings)
        step = timedelta(days=3) / args.n
        raws = [
            Incoming(
                mail(f"m{i}@bench.example", subject="urgent" if i % 4 == 0 else f"order {i}"),
                "bench",
                received_at=now - step * (args.n - i),
            )
            for i in range(args.n)
        ]
        with db.transaction() as session:
            store_many(session, raws, source="imap", mailbox_id=ids["support"])
        service.processor().run()
        checker = service.sla_alerts()

        def read_columns() -> None:
            with db.read_session() as session:
                session.execute(OPEN_TICKETS).all()

        floor = min(seconds(read_columns) for _ in range(5))
        result = None

        def first() -> None:
            nonlocal result
            result = checker.check(now)

        first_pass = seconds(first)
        quiet = [seconds(lambda: checker.check(now)) for _ in range(3)]
        assert result is not None
        print(f"SLA pass over {args.n:,} open tickets ({db.url.split(':')[0]})")
        print(f"  floor: reading their columns        {floor * 1e3:8.1f} ms")
        print(
            f"  pass 1 (fresh, computes all)         {first_pass * 1e3:8.1f} ms"
            f"  ({result.computed:,} computed, {result.alerts:,} alerts, {result.mails:,} mails)"
        )
        print(
            f"  passes 2-4 (quiet), best             {min(quiet) * 1e3:8.1f} ms"
            f"  ({min(quiet) / floor:.1f}x the floor)"
        )
        db.dispose()


if __name__ == "__main__":
    main()
