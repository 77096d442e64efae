"""The Prometheus endpoint: `[metrics] listen`, counters from the passes, gauges read from
the database at each scrape, scraped over real HTTP from a real `postdesk run`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from postdesk.config import load_settings
from postdesk.daemon import Service
from postdesk.errors import ConfigError
from postdesk.health.metrics import Metrics
from postdesk.models.db import Database
from postdesk.testing.config import mailbox_toml, toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.fetching import mails, put
from postdesk.testing.smtpsink import SmtpSink

# No From, Sender or Reply-To: processing sets it aside (quarantine).
NO_SENDER = (
    b"To: support@example.com\r\nSubject: who am I\r\nMessage-ID: <nosender@example.org>\r\n"
    b"Date: Fri, 01 Mar 2024 09:00:00 +0000\r\n\r\nHello\r\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def listen(port: int) -> str:
    return f'[metrics]\nlisten = "127.0.0.1:{port}"\n'


def test_listen_is_checked_and_off_by_default(tmp_path: Path, sqlite_url: str) -> None:
    assert load_settings(write_config(tmp_path, sqlite_url)).metrics.listen == ""
    for bad, why in (("9108", "expected"), ("127.0.0.1:70000", "1 to 65535"), ("a b:1", "")):
        with pytest.raises(ConfigError, match=f"metrics.listen: got {bad!r}.*{why}"):
            load_settings(
                write_config(tmp_path, sqlite_url, f"[metrics]\nlisten = {toml_str(bad)}")
            )
    ok = load_settings(write_config(tmp_path, sqlite_url, '[metrics]\nlisten = "[::1]:9108"'))
    assert ok.metrics.listen == "[::1]:9108"


def test_counters_gauges_and_latency_after_passes(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    bad = dovecot_server.add_user()
    port = free_port()
    config = write_config(
        tmp_path,
        db.url,
        mailbox_toml(dovecot_server, mail_user, name="support"),
        mailbox_toml(dovecot_server, bad, name="sales").replace(
            f"password = {toml_str(bad.password)}", 'password = "wrong"'
        ),
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_sink.port}\nsecurity = "none"\n',
        listen(port),
    )
    settings = load_settings(config)
    service = Service(settings, db)
    metrics = Metrics(settings, db)
    assert metrics.serve() == ("127.0.0.1", port)
    try:
        before = scrape(port)
        # Every configured mailbox's counters exist from the start, at zero.
        assert before['postdesk_messages_ingested_total{mailbox="support"}'] == 0
        assert before['postdesk_fetch_failures_total{mailbox="sales"}'] == 0
        assert before["postdesk_database_up"] == 1

        put(dovecot_server, mail_user, [*mails(3), NO_SENDER])
        result = service.run_once()
        assert set(result.errors) == {"sales"} and result.processed.quarantined == 1
        metrics.record(result)
        sent = len(smtp_sink.messages)
        assert sent >= 1  # the acknowledgements of the new tickets

        after = scrape(port)
        assert after['postdesk_messages_ingested_total{mailbox="support"}'] == 4
        assert after['postdesk_messages_ingested_total{mailbox="sales"}'] == 0
        assert after['postdesk_messages_quarantined_total{mailbox="support"}'] == 1
        assert after["postdesk_messages_processed_total"] == 3
        assert after['postdesk_fetch_failures_total{mailbox="sales"}'] == 1
        assert after["postdesk_mail_sent_total"] == sent
        assert after["postdesk_mail_failed_total"] == 0
        latency = 'postdesk_processing_latency_seconds_{}{{mailbox="support"}}'
        assert after[latency.format("count")] == 3
        assert 0 <= after[latency.format("sum")] < 60
        # Gauges from the database.
        assert after['postdesk_raw_messages{mailbox="support",status="quarantined"}'] == 1
        assert after['postdesk_raw_messages{mailbox="support",status="pending"}'] == 0
        assert 0 <= after['postdesk_sync_lag_seconds{mailbox="support"}'] < 60
        assert 'postdesk_sync_lag_seconds{mailbox="sales"}' not in after  # never fetched
        assert after['postdesk_sync_failing{mailbox="sales"}'] == 1
        assert after['postdesk_sync_failing{mailbox="support"}'] == 0
        assert after['postdesk_outbox_mails{state="sent"}'] == sent
        assert after['postdesk_outbox_mails{state="queued"}'] == 0
        assert after["postdesk_outbox_oldest_queued_seconds"] == 0
        assert after["postdesk_schema_current"] == 1

        # A second pass with nothing new observes nothing twice.
        metrics.record(service.run_once())
        again = scrape(port)
        assert again[latency.format("count")] == 3
        # The failing mailbox waits out its back-off (a poll interval, 60 s): not tried again.
        assert again['postdesk_fetch_failures_total{mailbox="sales"}'] == 1

        # New mail in a later pass is observed, once.
        put(dovecot_server, mail_user, mails(1, seed=11))
        metrics.record(service.run_once())
        later = scrape(port)
        assert later[latency.format("count")] == 4
        assert later['postdesk_messages_ingested_total{mailbox="support"}'] == 5
    finally:
        metrics.close()


def test_postdesk_run_serves_the_endpoint(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path, sqlite_url: str
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, mail_user),
        listen(port),
        top="[run]\npoll_interval = 0.2\n",
    )
    command = [sys.executable, "-m", "postdesk", "-c", str(config)]
    assert subprocess.run([*command, "init"], capture_output=True, check=False).returncode == 0
    put(dovecot_server, mail_user, mails(2))
    proc = subprocess.Popen(
        [*command, "-v", "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        samples: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            if samples.get('postdesk_messages_ingested_total{mailbox="support"}') == 2:
                break
            time.sleep(0.2)
        assert samples['postdesk_messages_ingested_total{mailbox="support"}'] == 2
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert re.search(rf"metrics: serving http://127\.0\.0\.1:{port}/metrics", err), err
    # The endpoint is gone with the service.
    with pytest.raises(OSError):
        scrape(port)


def test_a_taken_port_is_one_config_error(tmp_path: Path, sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = load_settings(write_config(tmp_path, sqlite_url, listen(port)))
        db = Database(sqlite_url)
        try:
            with pytest.raises(
                ConfigError, match=rf"metrics.listen: cannot listen on 127.0.0.1:{port} \("
            ):
                Metrics(settings, db).serve()
        finally:
            db.dispose()
