"""Two `postdesk run` instances on one PostgreSQL database, one of them SIGKILLed.

Three mailboxes on a real Dovecot receive mail while two `postdesk run` processes (the
real command line, polling every 0.5 s) share one PostgreSQL schema and send their
acknowledgements through the outbox to an SMTP sink. Part way through, one instance is
killed with SIGKILL and started again. Afterwards every message is filed in exactly one
ticket, each ticket got exactly one acknowledgement row, and the sink received each
outgoing Message-ID exactly once, addressed to the customer who wrote.

A SIGKILL can land in the outbox's one unknown window (after the `completing` mark,
before the server's answer); such a row becomes `unconfirmed` and is never sent again
(README, "The outbox"). The test tells how many there were: a kill there is rare (a
round trip on loopback), and when it happens that mail arrived at most once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postdesk.models import OutboxMail, RawMessage, RawStatus
from postdesk.models.db import Database
from postdesk.testing.config import mailbox_toml, toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mail import Mail
from postdesk.testing.postgres import pg_schema_url
from postdesk.testing.smtpsink import SmtpSink

pytestmark = pytest.mark.slow

MAILBOXES = 3
PER_MAILBOX = 32  # messages each mailbox receives, in waves while the instances run
WAVES = 4
KILL_AFTER_FILED = 8  # instance A is killed once it has opened this many tickets
SETTLE_TIMEOUT = 45.0  # seconds for the instances to catch up after the last wave


def customer_mail(box: int, n: int, to: str) -> bytes:
    """A new customer's first mail: one ticket, one acknowledgement to its sender."""
    return bytes(
        Mail(
            sender=f"Customer {box}.{n} <c{box}x{n}@customers.example>",
            to=to,
            subject=f"Order {box}-{n} has not arrived",
            body=f"Hello, my order number {box}-{n} is late. Where is it?\n",
            message_id=f"m{box}x{n}@customers.example",
        )
    )


class Instance:
    """One `postdesk run` subprocess, its output collected by a thread."""

    def __init__(self, config: Path, cwd: Path, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.filed = 0
        self._filed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postdesk", "-c", str(config), "-vv", "run"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.decode("utf-8", "replace").rstrip())
            if b" opened ticket " in line:
                with self._filed:
                    self.filed += 1
                    self._filed.notify_all()

    def wait_filed(self, count: int, timeout: float) -> bool:
        """Wait until this instance has logged `count` tickets opened (-vv lines)."""
        with self._filed:
            return self._filed.wait_for(lambda: self.filed >= count, timeout)

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return code

    def tail(self) -> str:
        return f"--- {self.name}:\n" + "\n".join(self.lines[-20:])


def db_state(url: str) -> tuple[int, int, Counter[str]]:
    """(raw messages, processed ones, outbox rows by state)."""
    db = Database(url)
    try:
        with db.read_session() as session:
            raws = session.execute(select(func.count()).select_from(RawMessage)).scalar_one()
            done = session.execute(
                select(func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == RawStatus.PROCESSED)
            ).scalar_one()
            states = Counter(
                str(state) for state in session.execute(select(OutboxMail.state)).scalars()
            )
    finally:
        db.dispose()
    return raws, done, states


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    with pg_schema_url(pg_base_url) as url:
        yield url


# Passes alone and in its own module; in a full run under load, one run in three here left
# the last wave unfetched until SETTLE_TIMEOUT since mailboxes are served by IDLE threads
# (merged after this test was written). Under investigation for issue 14, which stays
# open: the test runs in every `make test` and reports as XPASS when it passes.
@pytest.mark.xfail(
    strict=False,
    reason="flaky under load since IDLE threads serve the mailboxes (issue 14, open)",
)
def test_two_instances_one_killed_and_restarted(
    dovecot_server: Dovecot, pg_url: str, tmp_path: Path
) -> None:
    users: list[MailUser] = [dovecot_server.add_user() for _ in range(MAILBOXES)]
    with SmtpSink() as sink:
        blocks = [
            mailbox_toml(dovecot_server, user, name=f"box{i}", batch_size=10)
            for i, user in enumerate(users)
        ]
        smtp = (
            f"[smtp]\nhost = {toml_str(sink.host)}\nport = {sink.port}\n"
            'security = "none"\ntimeout = 10\n\n[run]\npoll_interval = 0.5\n'
        )
        config = write_config(tmp_path, pg_url, *blocks, smtp)
        subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(config), "init"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        sent_in: dict[str, str] = {}  # Message-ID -> the customer it came from
        per_wave = PER_MAILBOX // WAVES

        def deliver_wave(wave: int) -> None:
            for i, user in enumerate(users):
                batch = []
                for n in range(wave * per_wave, (wave + 1) * per_wave):
                    batch.append(customer_mail(i, n, user.email))
                    sent_in[f"m{i}x{n}@customers.example"] = f"c{i}x{n}@customers.example"
                assert dovecot_server.fill(user, batch) == len(batch)

        first = Instance(config, tmp_path, "A")
        second = Instance(config, tmp_path, "B")
        instances = [first, second]
        killed_code: int | None = None
        killed_after = 0
        try:
            deliver_wave(0)
            time.sleep(1.0)
            deliver_wave(1)
            # Kill A in the middle of its work: after it has filed some messages (and
            # so queued acknowledgements), with more to fetch, file and send.
            assert first.wait_filed(KILL_AFTER_FILED, 60), first.tail()
            killed_code = first.kill()
            killed_after = first.filed
            deliver_wave(2)
            time.sleep(1.0)
            instances.append(Instance(config, tmp_path, "A again"))
            deliver_wave(3)
            deadline = time.monotonic() + SETTLE_TIMEOUT
            total = MAILBOXES * PER_MAILBOX
            while time.monotonic() < deadline:
                raws, done, states = db_state(pg_url)
                busy = states["queued"] + states["sending"] + states["completing"]
                if done == total and states.total() == total and not busy:
                    break
                time.sleep(0.5)
        finally:
            codes = [inst.stop() for inst in instances[1:]]
        logs = "\n".join(inst.tail() for inst in instances)
        assert killed_code == -signal.SIGKILL
        assert codes == [0, 0], (codes, logs[-4000:])
        time.sleep(0.3)  # the sink's thread finishes reading the last mail
        raws, done, states = db_state(pg_url)
        total = MAILBOXES * PER_MAILBOX
        assert raws == done == total, f"{raws} stored, {done} processed of {total}\n{logs}"

        # Every message in exactly one ticket, read through the command line.
        listed = subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(config), "tickets", "list", "--json"],
            cwd=tmp_path,
            capture_output=True,
            check=True,
            timeout=120,
        )
        tickets = json.loads(listed.stdout)
        # (A ticket lists the acknowledgement it sent too: count the customers' mail.)
        in_tickets = Counter(
            mid for ticket in tickets for mid in ticket["message_ids"] if mid in sent_in
        )
        assert set(in_tickets) == set(sent_in)
        assert max(in_tickets.values()) == 1
        assert len(tickets) == total

        # One acknowledgement per ticket, each received once by the customer who wrote.
        assert states.total() == total, f"outbox rows: {dict(states)}"
        parser = BytesHeaderParser()
        received = Counter(
            (str(parser.parsebytes(mail.data)["Message-ID"]), rcpt)
            for mail in sink.messages
            for rcpt in mail.rcpt_tos
        )
        twice = [key for key, n in received.items() if n > 1]
        assert not twice, f"sent more than once: {twice[:5]}"
        answered = Counter(rcpt for _, rcpt in received)
        assert set(answered) <= set(sent_in.values())
        assert max(answered.values()) == 1, "a customer got two acknowledgements"
        print(
            f"A killed after {killed_after} tickets; outbox {dict(states)}; "
            f"{len(received)} mails received"
        )
        unconfirmed = states["unconfirmed"]
        assert states["sent"] + unconfirmed == total, dict(states)
        assert len(received) >= states["sent"]
        # An unconfirmed row (a kill between the completing mark and the answer) is the
        # one mail that may be missing; at most one per kill.
        assert unconfirmed <= 1
        assert len(received) >= total - unconfirmed
