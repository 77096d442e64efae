"""`postdesk run` as a systemd service: the unit verifies, and a real `postdesk run`
talks the notify protocol to a socket standing in for systemd's (READY once every
mailbox was tried, WATCHDOG from the loop, STOPPING on SIGTERM); SIGHUP reloads the
config; the logs (text and JSON) hold the startup, summary and recovered lines and no
secret."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from postdesk.sdnotify import Notifier
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import generate
from postdesk.testing.postgres import pg_schema_url

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "postdesk.service"


class NotifyListener:
    """A datagram socket in the abstract namespace, playing systemd's notify socket."""

    def __init__(self) -> None:
        self.name = f"@postdesk-test-{secrets.token_hex(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float, after: int = 0) -> int:
        """The index of the first message from `after` on that sets `key`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (_at, fields) in enumerate(self.messages[after:], start=after):
                if key in fields:
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    notify = NotifyListener()
    try:
        yield notify
    finally:
        notify.close()


def _postdesk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ticketed(config: Path) -> int:
    listed = _postdesk(config, "tickets", "list", "--json")
    return sum(len(t["message_ids"]) for t in json.loads(listed.stdout or "[]"))


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(
    config: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "postdesk", "-c", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, **(env or {})},
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> float:
    """SIGTERM; the seconds it took to exit (SIGKILL and fail past `timeout`)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"postdesk run did not exit within {timeout} s of SIGTERM") from None
    return time.monotonic() - started


def _json_lines(log: Path) -> list[dict[str, Any]]:
    """The complete lines of a log the service may be writing right now."""
    complete = log.read_text().split("\n")[:-1]  # the last one may be half written
    return [json.loads(line) for line in complete if line.strip()]


def test_notify_ready_watchdog_and_stopping(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    tmp_path: Path,
    sqlite_url: str,
    listener: NotifyListener,
) -> None:
    """The poll interval (60 s) is far longer than the watchdog (1 s): the pings keep
    coming while the loop sleeps, and SIGTERM still ends that sleep at once."""
    broken = MailUser(dovecot_server.add_user().email, "not-the-password")
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, mail_user, name="good"),
        mailbox_toml(dovecot_server, broken, name="broken"),
        top="[run]\npoll_interval = 60\n",
    )
    assert _postdesk(config, "init").returncode == 0
    dovecot_server.fill(mail_user, [m.raw for m in generate(3, seed=11)])
    log = tmp_path / "run.log"
    proc = _start(
        config,
        log,
        "run",
        env={"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "1000000"},
    )
    try:
        ready = listener.wait_for("READY", timeout=60)
        # READY comes after the first pass: the good mailbox's mail is in tickets, and
        # the failing one was tried (its status names it).
        assert _ticketed(config) == 3
        assert "failing: broken" in listener.messages[ready][1]["STATUS"]
        ready_at = listener.messages[ready][0]
        _wait(
            lambda: sum(1 for _at, f in listener.messages if "WATCHDOG" in f) >= 4,
            timeout=10,
            what="four watchdog pings",
        )
        pings = [at for at, f in listener.messages if "WATCHDOG" in f]
        assert all(at >= ready_at for at in pings)
        # About half the watchdog interval apart; never as late as the interval itself.
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert gaps and max(gaps) < 1.0, gaps
        assert proc.poll() is None
        count = len(listener.messages)
        took = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert took < 5, took
    stopping = listener.wait_for("STOPPING", timeout=2, after=count)
    assert listener.messages[stopping][1]["STOPPING"] == "1"
    text = log.read_text()
    assert "Traceback" not in text
    assert "received SIGTERM" in text
    assert "not-the-password" not in text and mail_user.password not in text


def test_sighup_reloads_the_config_and_keeps_it_when_broken(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path, sqlite_url: str
) -> None:
    """A wrong password is fixed in the file and SIGHUP applies it (the mailbox logs
    "recovered"); a broken file on the next SIGHUP is refused in one line and the
    running config goes on working. JSON log lines carry the event's fields."""
    wrong = MailUser(mail_user.email, "wrong-" + secrets.token_hex(6))

    def write(user: MailUser) -> Path:
        return write_config(
            tmp_path,
            sqlite_url,
            mailbox_toml(dovecot_server, user, name="support"),
            top="[run]\npoll_interval = 0.3\n",
        )

    config = write(wrong)
    assert _postdesk(config, "init").returncode == 0
    mails = list(generate(4, seed=12))
    dovecot_server.fill(mail_user, [m.raw for m in mails[:2]])
    log = tmp_path / "run.log"
    proc = _start(config, log, "run", "--log-format", "json")
    try:

        def events(name: str) -> list[dict[str, Any]]:
            return [e for e in _json_lines(log) if e.get("event") == name]

        def processed() -> int:
            return sum(e["processed"] for e in events("pass"))

        _wait(lambda: bool(events("mailbox_failed")), 30, "the login failure")
        assert processed() == 0
        write(mail_user)
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: bool(events("recovered")), 30, "the recovered line")
        _wait(lambda: processed() == 2, 30, "the first two messages processed")
        (recovered,) = events("recovered")
        assert recovered["mailbox"] == "support"
        assert recovered["level"] == "INFO"

        # The checks below read the database through a copy of the good config.
        query = tmp_path / "query.toml"
        query.write_text(config.read_text(), encoding="utf-8")
        config.write_text(config.read_text() + "\n[run\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: any("keeping the running config" in e["message"] for e in _json_lines(log)),
            30,
            "the refused reload",
        )
        dovecot_server.fill(mail_user, [m.raw for m in mails[2:]])
        _wait(lambda: processed() == 4, 30, "the later mail processed")
        assert proc.poll() is None
        assert _stop(proc) < 5
        assert _ticketed(query) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    entries = _json_lines(log)  # every line is one JSON object
    (startup,) = [e for e in entries if e.get("event") == "startup"]
    assert startup["mailboxes"] == ["support"] and startup["config"] == str(config)
    assert {"time", "level", "logger", "message"} <= set(startup)
    refused = [e for e in entries if "keeping the running config" in e["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "ERROR"
    passes = [e for e in entries if e.get("event") == "pass"]
    assert sum(e["stored"] for e in passes) == 4
    assert sum(e["processed"] for e in passes) == 4
    # A line per pass at INFO, none per message (those are at DEBUG).
    assert not [e for e in entries if "uid" in e or "ticket" in e]
    text = log.read_text()
    assert wrong.password not in text and mail_user.password not in text


def test_once_json_logs_name_each_message_and_hide_secrets(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path, pg_base_url: str
) -> None:
    """`-vv run --once --log-format json` on PostgreSQL through a URL holding a password
    (the test server trusts local connections, so any password is accepted): the
    per-message lines name mailbox, UID, Message-ID and ticket; neither that password
    nor the mailboxes' appear anywhere, not even in a login failure."""
    db_password = "db-" + secrets.token_hex(8)
    wrong = MailUser(dovecot_server.add_user().email, "imap-" + secrets.token_hex(8))
    with pg_schema_url(pg_base_url) as base:
        url = make_url(base).set(password=db_password).render_as_string(hide_password=False)
        config = write_config(
            tmp_path,
            url,
            mailbox_toml(dovecot_server, mail_user, name="support"),
            mailbox_toml(dovecot_server, wrong, name="locked"),
        )
        assert _postdesk(config, "init").returncode == 0
        mails = list(generate(2, seed=13))
        dovecot_server.fill(mail_user, [m.raw for m in mails])
        result = _postdesk(config, "-vv", "run", "--once", "--log-format", "json")
        assert result.returncode == 0, result.stderr
    entries = _json_lines_text(result.stderr)
    stored = [e for e in entries if e.get("uid") is not None]
    assert sorted(e["uid"] for e in stored) == [1, 2]
    assert all(e["mailbox"] == "support" and e["level"] == "DEBUG" for e in stored)
    assert {e["message_id"] for e in stored} == {m.message_id.strip("<>") for m in mails}
    ticketed = [e for e in entries if e.get("ticket") is not None]
    assert len(ticketed) == 2
    assert {e["message_id"] for e in ticketed} == {e["message_id"] for e in stored}
    (startup,) = [e for e in entries if e.get("event") == "startup"]
    assert "***" in startup["database"]
    (summary,) = [e for e in entries if e.get("event") == "pass"]
    assert summary["level"] == "INFO" and summary["stored"] == 2
    assert summary["mailboxes_failed"] == ["locked"]
    for secret in (db_password, wrong.password, mail_user.password):
        assert secret not in result.stderr and secret not in result.stdout


def _json_lines_text(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_notifier_sends_to_a_socket_path(tmp_path: Path) -> None:
    """The plain-path form of $NOTIFY_SOCKET, and a watchdog meant for another process
    is not honoured."""
    path = Path("/tmp") / f"pd-{secrets.token_hex(6)}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        sock.settimeout(2)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_interval == 1.0
        notifier.ready("all\nfine")
        assert sock.recv(4096) == b"READY=1\nSTATUS=all fine"
        other = Notifier.from_environ(
            {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
        )
        assert other.watchdog_interval is None
        assert Notifier.from_environ({}).send(ready=1) is False
        notifier.close()
    finally:
        sock.close()
        path.unlink()


def test_unit_passes_systemd_analyze_verify(systemd_analyze: Path, tmp_path: Path) -> None:
    """verify checks that the commands exist, so the copy points them at this
    environment's `postdesk`; everything else is the shipped unit. A broken copy shows
    that the check would catch a mistake."""
    postdesk = Path(sys.executable).parent / "postdesk"
    assert postdesk.exists(), f"{postdesk}: the package's console script is not installed"
    text = UNIT.read_text(encoding="utf-8")
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    assert "StateDirectory=postdesk" in text and "NoNewPrivileges=yes" in text

    def verify(unit_text: str) -> subprocess.CompletedProcess[str]:
        directory = tmp_path / secrets.token_hex(4)
        directory.mkdir()
        unit = directory / "postdesk.service"
        unit.write_text(unit_text.replace("/opt/postdesk/venv/bin/postdesk", str(postdesk)))
        return subprocess.run(
            [str(systemd_analyze), "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = verify(text)
    problems = [
        line for line in (good.stdout + good.stderr).splitlines() if "postdesk" in line.lower()
    ]
    assert good.returncode == 0 and not problems, good.stdout + good.stderr
    bad = verify(text.replace("Type=notify", "Type=notifyy"))
    assert "postdesk.service" in bad.stdout + bad.stderr


def test_keepalive_feeds_the_watchdog_for_a_bounded_time(
    tmp_path: Path, sqlite_url: str, listener: NotifyListener
) -> None:
    """Around work that cannot report progress (scheduled retraining) pings come from a
    helper thread, but only up to the limit: a retrain that hangs still gets restarted."""
    from postdesk.config import load_settings
    from postdesk.daemon import Service
    from postdesk.models.db import Database

    config = write_config(
        tmp_path,
        sqlite_url,
        '[[mailbox]]\nname = "a"\naddress = "a@example.com"\nhost = "127.0.0.1"\n'
        'username = "a"\npassword = "unused"\n',
    )
    db = Database(sqlite_url)
    service = Service(load_settings(config), db)
    service.notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "200000"}
    )
    service._ready = True  # as after the first pass
    started = time.monotonic()
    with service._keepalive(0.6):
        time.sleep(1.5)
    time.sleep(0.3)
    pings = [at - started for at, f in listener.messages if "WATCHDOG" in f]
    db.dispose()
    assert len(pings) >= 3, pings
    assert max(pings) < 0.9, pings  # none after the limit (one may be in flight at it)
