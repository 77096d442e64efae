"""The long-running `postdesk run`: passes repeat, and SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import generate


def _postdesk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_polls_until_sigterm_then_exits_cleanly(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path, sqlite_url: str
) -> None:
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, mail_user),
        top="[run]\npoll_interval = 0.2\n",
    )
    assert _postdesk(config, "init").returncode == 0
    mails = list(generate(30, seed=7))
    dovecot_server.fill(mail_user, [m.raw for m in mails[:10]])

    proc = subprocess.Popen(
        [sys.executable, "-m", "postdesk", "-c", str(config), "-v", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Mail delivered while the service runs is picked up by a later pass.
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline:
            listed = _postdesk(config, "tickets", "list", "--json")
            seen = sum(len(t["message_ids"]) for t in json.loads(listed.stdout or "[]"))
            if seen == 10:
                break
            time.sleep(0.2)
        assert seen == 10
        dovecot_server.fill(mail_user, [m.raw for m in mails[10:]])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = _postdesk(config, "tickets", "list", "--json")
            seen = sum(len(t["message_ids"]) for t in json.loads(listed.stdout or "[]"))
            if seen == 30:
                break
            time.sleep(0.2)
        assert seen == 30
        assert proc.poll() is None, "the service stopped on its own"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert "Traceback" not in err


def test_failing_mailbox_backs_off_while_others_are_polled(
    dovecot_server: Dovecot, tmp_path: Path, sqlite_url: str
) -> None:
    from postdesk.config import load_settings
    from postdesk.daemon import Service
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade

    good = dovecot_server.add_user()
    bad = MailUser(dovecot_server.add_user().email, "wrong-password")
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, good, name="good"),
        mailbox_toml(dovecot_server, bad, name="bad"),
        top="[run]\npoll_interval = 10\n",
    )
    db = Database(sqlite_url)
    upgrade(db)
    now = [1000.0]
    service = Service(load_settings(config), db, clock=lambda: now[0])
    dovecot_server.fill(good, [m.raw for m in generate(3, seed=3)])

    first = service.run_once()
    assert set(first.errors) == {"bad"}
    assert first.processed.created + first.processed.appended == 3
    # Within the back-off the bad mailbox is not even tried; the good one still is.
    now[0] += 5
    second = service.run_once()
    assert second.errors == {}
    assert [f.mailbox for f in second.fetches] == ["good"]
    # After it, it is tried again and the wait doubles (10 s, then 20 s).
    now[0] += 6
    third = service.run_once()
    assert set(third.errors) == {"bad"}
    now[0] += 15
    assert service.run_once().errors == {}
    now[0] += 6
    assert set(service.run_once().errors) == {"bad"}
    db.dispose()


def test_unexpected_error_in_one_mailbox_does_not_stop_the_pass(
    dovecot_server: Dovecot, tmp_path: Path, sqlite_url: str, monkeypatch: object
) -> None:
    """A bug in one mailbox's fetch (simulated: a real server cannot be made to trigger
    one on cue) is reported and recorded; the other mailbox is fetched and processed."""
    import pytest

    from postdesk.config import load_settings
    from postdesk.daemon import Service
    from postdesk.ingest.fetch import FolderFetcher
    from postdesk.models import MailboxSync
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    first = dovecot_server.add_user()
    second = dovecot_server.add_user()
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, first, name="broken"),
        mailbox_toml(dovecot_server, second, name="fine"),
    )
    dovecot_server.fill(second, [m.raw for m in generate(2, seed=5)])
    real_run = FolderFetcher.run

    def run(self: FolderFetcher, source: object) -> object:
        if self.settings.name == "broken":
            raise ValueError("simulated bug\nwith two lines")
        return real_run(self, source)  # type: ignore[arg-type]

    monkeypatch.setattr(FolderFetcher, "run", run)
    db = Database(sqlite_url)
    upgrade(db)
    outcome = Service(load_settings(config), db).run_once()

    assert outcome.errors == {
        "broken": "mailbox 'broken': unexpected ValueError: simulated bug with two lines"
    }
    assert outcome.processed.processed == 2
    with db.read_session() as session:
        errors = {s.mailbox.name: s.last_error for s in session.query(MailboxSync).all()}
    assert errors["broken"] == outcome.errors["broken"]
    assert errors["fine"] is None
    db.dispose()


def test_pass_line_counts_each_mailbox_once(
    dovecot_server: Dovecot, tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In watcher mode a mailbox thread fetches again and again while a long pass runs
    (seen: "pass: 86 mailbox(es) synced" with 3 mailboxes); the summary counts mailboxes,
    while fetched and stored add up every fetch."""
    from postdesk.config import load_settings
    from postdesk.daemon import PassResult, Service
    from postdesk.ingest.fetch import FetchResult
    from postdesk.models.db import Database

    users = [dovecot_server.add_user() for _ in range(3)]
    config = write_config(
        tmp_path,
        sqlite_url,
        *(mailbox_toml(dovecot_server, user, name=f"box{i}") for i, user in enumerate(users)),
    )
    db = Database(sqlite_url)
    service = Service(load_settings(config), db)
    fetches = [FetchResult("box0", fetched=2, stored=2), FetchResult("box1", fetched=1, stored=1)]
    fetches += [FetchResult("box0"), FetchResult("box1"), FetchResult("box0", fetched=3, stored=3)]
    with caplog.at_level(logging.INFO, logger="postdesk.daemon"):
        service._log_pass(PassResult(fetches=fetches, errors={"box2": "refused"}), 1.0)
    [record] = [r for r in caplog.records if r.getMessage().startswith("pass:")]
    assert record.getMessage().startswith(
        "pass: 2 mailbox(es) synced, 1 failed (box2); fetched 6, stored 6,"
    )
    assert record.mailboxes_synced == ["box0", "box1"]
    db.dispose()
