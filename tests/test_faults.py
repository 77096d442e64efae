"""Faults `postdesk run` survives, against real servers: Dovecot restarted in the middle
of a fetch, PostgreSQL restarted while mail is coming in and going out, and the disk
holding attachments full. After each: nothing lost, nothing duplicated, and the service
carries on by itself.

The other faults of the list are tested elsewhere (README, "Faults it survives"): SIGKILL
during ingestion in test_crash.py, during sending in test_outbox_crash.py, the SMTP
server down and back in test_outbox_crash.py, two instances with one SIGKILLed in
test_instances.py.

The restarts happen at a named pause point ($POSTDESK_PAUSE_AT, postdesk/pausepoints.py):
the service stops right after a fetch batch is committed, the test restarts the server,
then lets the service go on ($POSTDESK_PAUSE_RESUME), so the fault lands mid-fetch on
every run instead of by timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postdesk.models import Delivery, OutboxMail, RawMessage
from postdesk.models.db import Database
from postdesk.pausepoints import ENV as PAUSE_ENV
from postdesk.pausepoints import RESUME_ENV
from postdesk.testing.config import mailbox_toml, toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mail import Attachment, Mail
from postdesk.testing.pgcluster import ClusterUnavailable, PrivateCluster
from postdesk.testing.smtpsink import SmtpSink

pytestmark = pytest.mark.slow

SETTLE_TIMEOUT = 45.0  # seconds for the service to catch up after a fault
PAUSED = "postdesk: paused at "


def customer_mail(n: int, to: str, **extra: object) -> bytes:
    """A new customer's first mail (one ticket, one acknowledgement when [smtp] is set)."""
    return bytes(
        Mail(
            sender=f"Customer {n} <c{n}@customers.example>",
            to=to,
            subject=f"Order {n} has not arrived",
            body=f"Hello, my order number {n} is late.\n",
            message_id=f"m{n}@customers.example",
            **extra,  # type: ignore[arg-type]
        )
    )


def init(config: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), "init"],
        cwd=config.parent,
        check=True,
        capture_output=True,
        timeout=120,
    )


class Service:
    """`postdesk -v run` as a subprocess, its log lines collected by a thread."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postdesk", "-c", str(config), "-v", "run"],
            cwd=config.parent,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.decode("utf-8", "replace").rstrip())
                self._changed.notify_all()

    def wait_line(self, marker: str, timeout: float = 60.0) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if marker in line), None)

        with self._changed:
            self._changed.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout
            )
            line = found()
        assert line is not None, f"no line with {marker!r}:\n{self.log()}"
        return line

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()

    def log(self) -> str:
        return "\n".join(self.lines[-40:])


def until(condition: Callable[[], bool], service: Service, what: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        assert service.proc.poll() is None, f"the service exited:\n{service.log()}"
        time.sleep(0.3)
    pytest.fail(f"{what} within {SETTLE_TIMEOUT:.0f} s:\n{service.log()}")


def raw_counts(url: str) -> tuple[Counter[str], Counter[str], int]:
    """(raw messages per Message-ID, raw messages per status, deliveries not \\Seen yet)."""
    db = Database(url)
    try:
        with db.read_session() as session:
            rows = session.execute(select(RawMessage.message_id, RawMessage.status)).all()
            unflagged = session.execute(
                select(func.count()).select_from(Delivery).where(Delivery.server_done.is_(False))
            ).scalar_one()
    finally:
        db.dispose()
    return (
        Counter(str(row.message_id) for row in rows),
        Counter(str(row.status) for row in rows),
        unflagged,
    )


def outbox_states(url: str) -> Counter[str]:
    db = Database(url)
    try:
        with db.read_session() as session:
            return Counter(str(s) for s in session.execute(select(OutboxMail.state)).scalars())
    finally:
        db.dispose()


def tickets_by_message(config: Path, incoming: set[str]) -> Counter[str]:
    """How many tickets list each incoming Message-ID (read through the command line)."""
    listed = subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), "tickets", "list", "--json"],
        cwd=config.parent,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return Counter(
        mid
        for ticket in json.loads(listed.stdout)
        for mid in ticket["message_ids"]
        if mid in incoming
    )


def unseen(dovecot: Dovecot, user: MailUser) -> list[int]:
    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        return list(client.search(["UNSEEN"]))
    finally:
        client.logout()


def all_filed(url: str, n: int) -> Callable[[], bool]:
    def check() -> bool:
        per_id, statuses, unflagged = raw_counts(url)
        return statuses["processed"] == sum(per_id.values()) == n and not unflagged

    return check


# -- Dovecot restarted in the middle of a fetch ------------------------------------------


def test_dovecot_restarted_in_the_middle_of_a_fetch(tmp_path: Path) -> None:
    n = 120
    try:
        dovecot = Dovecot(tmp_path / "dovecot")
        dovecot.start()
    except Exception as exc:  # the shared fixture's rules: see conftest's dovecot_server
        pytest.skip(f"cannot start a Dovecot of this test's own: {exc}")
    try:
        user = dovecot.add_user()
        ids = {f"m{i}@customers.example" for i in range(n)}
        assert dovecot.fill(user, [customer_mail(i, user.email) for i in range(n)]) == n
        url = f"sqlite:///{tmp_path / 'postdesk.db'}"
        config = write_config(
            tmp_path,
            url,
            mailbox_toml(dovecot, user, batch_size=40),
            "[run]\npoll_interval = 0.5\n",
        )
        init(config)
        resume = tmp_path / "resume"
        service = Service(config, {PAUSE_ENV: "fetch-committed@1", RESUME_ENV: str(resume)})
        try:
            # The first batch of 40 is committed, not yet \Seen, the rest not fetched.
            service.wait_line(PAUSED)
            port = dovecot.port
            dovecot.restart()
            assert dovecot.port == port, "Dovecot came back on another port"
            resume.touch()
            # The connection the service held is gone: it logs the failure, retries after
            # its back-off and recovers, then fetches the rest.
            service.wait_line("support: recovered")
            until(all_filed(url, n), service, "not everything was filed")
        finally:
            code = service.stop()
        assert code == 0, service.log()
        failures = [line for line in service.lines if "WARNING" in line or "ERROR" in line]
        assert any("support" in line for line in failures), service.log()
        per_id, statuses, _ = raw_counts(url)
        assert set(per_id) == ids and max(per_id.values()) == 1, "a message stored twice"
        assert statuses == Counter({"processed": n})
        filed = tickets_by_message(config, ids)
        assert set(filed) == ids and max(filed.values()) == 1
        assert not unseen(dovecot, user)
    finally:
        dovecot.stop()


# -- PostgreSQL restarted ----------------------------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    try:
        cluster = PrivateCluster()
    except ClusterUnavailable as exc:
        reason = f"cannot make a private PostgreSQL cluster to restart: {exc}"
        if os.environ.get("POSTDESK_REQUIRE_PG", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason}, and POSTDESK_REQUIRE_PG=1 requires it", pytrace=False)
        pytest.skip(reason)
    with cluster:
        yield cluster


def test_postgresql_restarted_while_mail_comes_and_goes(
    private_pg: PrivateCluster, dovecot_server: Dovecot, tmp_path: Path
) -> None:
    first, later = 40, 60
    n = first + later
    user = dovecot_server.add_user()
    ids = {f"m{i}@customers.example" for i in range(n)}
    with SmtpSink() as sink:
        config = write_config(
            tmp_path,
            private_pg.url,
            mailbox_toml(dovecot_server, user, batch_size=20),
            f"[smtp]\nhost = {toml_str(sink.host)}\nport = {sink.port}\n"
            'security = "none"\ntimeout = 10\n\n[run]\npoll_interval = 0.5\n',
        )
        init(config)
        url = private_pg.url
        assert dovecot_server.fill(user, [customer_mail(i, user.email) for i in range(first)])
        resume = tmp_path / "resume"
        # The pause comes inside a processing transaction: the first 40 messages are
        # filed, then the next ones arrive and the 10th of them is filed, not committed.
        # (A restart between transactions goes unnoticed: the connection pool checks
        # a connection before handing it out.)
        pause = f"process-filed@{first + 10}"
        service = Service(config, {PAUSE_ENV: pause, RESUME_ENV: str(resume)})
        try:
            until(all_filed(url, first), service, "the first mail was not filed")
            more = [customer_mail(i, user.email) for i in range(first, n)]
            assert dovecot_server.fill(user, more) == later
            service.wait_line(PAUSED)
            private_pg.restart()
            resume.touch()
            # The open transaction is lost: the pass stops, the service says the database
            # is unavailable, waits, and goes on once it is back.
            service.wait_line("database unavailable")
            service.wait_line("database reachable again")
            until(all_filed(url, n), service, "not everything was filed")

            def all_sent() -> bool:
                return outbox_states(url) == Counter({"sent": n})

            until(all_sent, service, "not every acknowledgement was sent")
        finally:
            code = service.stop()
        assert code == 0, service.log()
        time.sleep(0.2)  # the sink's thread finishes reading the last mail
        per_id, statuses, _ = raw_counts(url)
        assert set(per_id) == ids and max(per_id.values()) == 1, "a message stored twice"
        assert statuses == Counter({"processed": n})
        filed = tickets_by_message(config, ids)
        assert set(filed) == ids and max(filed.values()) == 1
        parser = BytesHeaderParser()
        received = Counter(str(parser.parsebytes(m.data)["Message-ID"]) for m in sink.messages)
        assert len(received) == n and max(received.values()) == 1, received.most_common(3)
        customers = Counter(rcpt for m in sink.messages for rcpt in m.rcpt_tos)
        assert customers == Counter({f"c{i}@customers.example": 1 for i in range(n)})
        assert not unseen(dovecot_server, user)


# -- the disk holding attachments full ---------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> None:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "a full disk is made with a small tmpfs, and mounting one needs root "
            f"(CAP_SYS_ADMIN): {result.stderr.strip()}"
        )


def test_full_attachment_disk_quarantines_then_files_once_there_is_room(
    dovecot_server: Dovecot, tmp_path: Path
) -> None:
    user = dovecot_server.add_user()
    url = f"sqlite:///{tmp_path / 'postdesk.db'}"
    config = write_config(tmp_path, url, mailbox_toml(dovecot_server, user))
    init(config)
    store = tmp_path / "data" / "attachments"
    store.mkdir(parents=True, exist_ok=True)
    # A real full disk: a 64 KB filesystem where the attachments go (the database is not
    # on it), and a 200 KB attachment.
    _mount_tmpfs(store, "64k")
    try:
        blob = os.urandom(200_000)
        big = customer_mail(1, user.email, attachments=[Attachment("invoice.pdf", blob)])
        assert dovecot_server.fill(user, [big, customer_mail(2, user.email)]) == 2

        def run_once() -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "postdesk", "-c", str(config), "run", "--once"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "Traceback" not in done.stderr
            return done

        # Full: the message with the attachment is quarantined with a reason that says
        # why; the other one is filed (the service carries on).
        full = run_once()
        assert "1 new ticket(s), 0 added to tickets, 1 quarantined" in full.stdout
        listed = subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(config), "inbound", "list", "--json"],
            cwd=tmp_path,
            capture_output=True,
            check=True,
            text=True,
        )
        (held,) = [row for row in json.loads(listed.stdout) if row["status"] == "quarantined"]
        assert "no space left for attachments" in held["reason"], held
        assert not list(store.rglob("*.part")), "a partial file was left behind"

        # Still full: it stays quarantined, and is not tried again at every pass.
        still = run_once()
        assert "quarantined for lack of space" not in still.stderr
        _, statuses, _ = raw_counts(url)
        assert statuses == Counter({"processed": 1, "quarantined": 1})

        # Room again (the operator grows the filesystem): the next pass files it, once.
        subprocess.run(["mount", "-o", "remount,size=4m", str(store)], check=True)
        room = run_once()
        assert "put back to pending" in room.stderr
        assert "1 new ticket(s)" in room.stdout
        per_id, statuses, _ = raw_counts(url)
        assert statuses == Counter({"processed": 2})
        assert max(per_id.values()) == 1
        ids = {"m1@customers.example", "m2@customers.example"}
        assert tickets_by_message(config, ids) == Counter(dict.fromkeys(ids, 1))
        digest = hashlib.sha256(blob).hexdigest()
        saved = store / "sha256" / digest[:2] / digest
        assert saved.read_bytes() == blob
    finally:
        subprocess.run(["umount", str(store)], check=False)
