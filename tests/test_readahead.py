"""A large backlog is fetched with a helper process reading ahead (ingest/readahead.py).

Real Dovecot, real helper processes. The threshold is lowered so that a few dozen
messages count as a large backlog.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

import postdesk.ingest.readahead as readahead
from postdesk.config import Settings
from postdesk.ingest.imap import ImapSource
from postdesk.models import Delivery, RawMessage
from postdesk.models.db import Database
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.fetching import (
    SEEN,
    Spy,
    count,
    mails,
    one_pass,
    put,
    server_flags,
    stored_message_ids,
    sync_state,
)

N = 40
BATCH = 5


@pytest.fixture(autouse=True)
def _small_backlogs_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "READ_AHEAD_MIN", 20)


def _server_contents(dovecot: Dovecot, user: MailUser) -> dict[int, bytes]:
    conn = dovecot.client(user)
    try:
        conn.select_folder("INBOX", readonly=True)
        found = conn.fetch(conn.search(["ALL"]), ["BODY.PEEK[]"])  # keyed by UID
        return {int(uid): bytes(item[b"BODY[]"]) for uid, item in found.items()}
    finally:
        conn.logout()


def _session_ends(dovecot: Dovecot, user: MailUser, offset: int, sessions: int) -> list[str]:
    """How the user's IMAP sessions logged after `offset` ended ("Logged out" is a
    LOGOUT; "Disconnected" a dropped connection), once at least `sessions` have ended
    and no more for half a second (Dovecot writes its log a moment later, so a session
    of the test's own, before `offset`, may be among them)."""
    deadline = time.monotonic() + 10
    ends: list[str] = []
    stable_since = time.monotonic()
    while True:
        with open(dovecot.log_path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
        found = [
            "Logged out" if "Logged out" in line else "Disconnected"
            for line in lines
            if f"imap({user.email})" in line and ("Logged out" in line or "Disconnected" in line)
        ]
        if found != ends:
            ends, stable_since = found, time.monotonic()
        quiet = time.monotonic() - stable_since >= 0.5
        if (len(ends) >= sessions and quiet) or time.monotonic() > deadline:
            return ends
        time.sleep(0.05)


def _stored(db: Database) -> dict[int, bytes]:
    """UID -> the raw content stored for it."""
    with db.read_session() as session:
        rows = session.execute(
            select(Delivery.uid, RawMessage.content).join(
                RawMessage, RawMessage.id == Delivery.raw_message_id
            )
        ).all()
    return {int(uid): bytes(content) for uid, content in rows}


def test_a_large_backlog_is_read_ahead_and_stored_once_with_the_pass_order(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass fetches the first READ_AHEAD_SKIP batches itself, the helper the rest;
    everything is stored once, byte for byte, and nothing is flagged before the pass
    has committed it (the helper's session is read-only). The helper logs out."""
    sent = mails(N, seed=41)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=BATCH)
    own_fetches = Spy(monkeypatch, "fetch")  # the pass's own session; not the helper's
    flags_then: list[dict[int, set[bytes]]] = []

    def look(source: ImapSource, *args: Any) -> None:
        flags_then.append(server_flags(dovecot_server, mail_user))

    Spy(monkeypatch, "mark_seen", before=look)
    offset = dovecot_server.log_path.stat().st_size
    result = one_pass(settings, db).fetches[0]

    # The pass's session, the helper's and this test's look at the flags, each ended
    # with a LOGOUT (the helper is not killed once it has sent everything).
    ends = _session_ends(dovecot_server, mail_user, offset, 3)
    assert "Disconnected" not in ends and ends.count("Logged out") >= 3, ends
    skip = readahead.READ_AHEAD_SKIP
    assert [list(call[0]) for call in own_fetches.calls] == [
        uids[i * BATCH : (i + 1) * BATCH] for i in range(skip)
    ]
    assert result.read_ahead == N - skip * BATCH
    assert result.stored == N
    assert count(db, RawMessage) == N
    assert _stored(db) == _server_contents(dovecot_server, mail_user)
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert sync_state(db).last_uid == uids[-1]
    assert flags_then == [{uid: set() for uid in uids}]
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())


def test_a_helper_killed_mid_way_leaves_the_rest_to_the_pass(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = mails(N, seed=42)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=BATCH)
    real_take = readahead.ReadAhead.take

    def take_then_kill(self: readahead.ReadAhead, batch: Any) -> Any:
        got = real_take(self, batch)
        if got is not None and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        return got

    monkeypatch.setattr(readahead.ReadAhead, "take", take_then_kill)
    with caplog.at_level(logging.WARNING, logger="postdesk.ingest.fetch"):
        result = one_pass(settings, db).fetches[0]

    assert result.read_ahead == BATCH  # one batch came from the helper, then it died
    assert result.stored == N
    assert count(db, RawMessage) == N
    assert count(db, Delivery) == N
    assert _stored(db) == _server_contents(dovecot_server, mail_user)
    assert sync_state(db).last_uid == uids[-1]
    warned = [r.getMessage() for r in caplog.records if "reading ahead stopped" in r.getMessage()]
    assert len(warned) == 1 and "SIGKILL" in warned[0], warned


def test_a_helper_refused_at_login_changes_nothing_but_the_speed(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = mails(N, seed=43)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=BATCH)
    real_start = readahead.start

    def start_refused(settings: Any, credential: Any, *args: Any) -> Any:
        return real_start(settings, "not-the-password", *args)

    monkeypatch.setattr(readahead, "start", start_refused)
    with caplog.at_level(logging.WARNING, logger="postdesk.ingest.fetch"):
        result = one_pass(settings, db).fetches[0]

    assert result.read_ahead == 0
    assert result.stored == N
    assert _stored(db) == _server_contents(dovecot_server, mail_user)
    assert sync_state(db).last_uid == uids[-1]
    warned = [r.getMessage() for r in caplog.records if "reading ahead stopped" in r.getMessage()]
    assert len(warned) == 1 and "refused" in warned[0], warned
    assert "not-the-password" not in warned[0]


def test_small_backlogs_are_fetched_on_the_pass_session_only(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(dovecot_server, mail_user, mails(19, seed=44))
    settings = config(mail_user, batch_size=BATCH)
    started: list[object] = []
    monkeypatch.setattr(readahead, "start", lambda *a: started.append(a))
    result = one_pass(settings, db).fetches[0]
    assert started == []
    assert result.stored == 19 and result.read_ahead == 0


def test_the_helper_does_not_import_the_database_layer() -> None:
    """The helper starts while the pass fetches its first batches; importing SQLAlchemy
    and the models would cost it ~0.55 s and 30 MB before its first FETCH."""
    import subprocess
    import sys

    code = (
        "import sys, postdesk.ingest.readahead; "
        "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'postdesk.models'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
