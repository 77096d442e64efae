"""A sender process for crash tests: drains the outbox once, so a test can SIGKILL it.

    python -m postdesk.testing.sender DATABASE_URL SMTP_PORT [BATCH_SIZE]

It sends through a plain SMTP server on 127.0.0.1 as `OutboxSender` does in `postdesk run`,
under an owner name of its own (`make_owner()`), so that the next drain recognises the
rows it held as a dead sender's. It prints `ready <owner>` once everything is imported and
the database is open, just before the drain (kill delays count from that line), and
`done <json>` with the drain's counts if it lives to the end.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from postdesk.config import SmtpSettings
from postdesk.models.db import Database
from postdesk.notify.smtp import OutboxSender
from postdesk.owner import make_owner


def main(argv: list[str]) -> int:
    """Drain the outbox of `argv[0]` through 127.0.0.1:`argv[1]` once."""
    url, port = argv[0], int(argv[1])
    batch_size = int(argv[2]) if len(argv) > 2 else 50
    db = Database(url)
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=10.0)
        sender = OutboxSender(db, smtp, owner=make_owner(), batch_size=batch_size)
        db.check_reachable()  # connect now, so the kill delays measure the drain itself
        print("ready", sender.owner, flush=True)
        result = sender.drain()
        print("done", json.dumps(dataclasses.asdict(result)), flush=True)
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
