"""IMAP fetching against the real test Dovecot, on SQLite and PostgreSQL.

Every test drives `Service.run_once()` (or the fetcher below it) against a fresh Dovecot
account and checks both sides: what the database holds and what the server shows (flags,
folders, UIDVALIDITY). Nothing here mocks the server: where a test wraps an `ImapSource`
method it watches the calls and then calls through to Dovecot. The one exception hides
MOVE/UIDPLUS from postdesk, which Dovecot always offers (said so in that test).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import postdesk.ingest.fetch as fetch_module
from postdesk.config import Settings
from postdesk.daemon import sync_config
from postdesk.ingest.fetch import FolderFetcher
from postdesk.ingest.imap import ImapSource, sequence_sets
from postdesk.models import Delivery, Message, RawMessage, Ticket
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
from postdesk.testing.mailgen import GeneratedMail

# -- helpers ------------------------------------------------------------------------------


def ticket_message_ids(db: Database) -> list[str]:
    with db.read_session() as session:
        return sorted(mid for mid in session.execute(select(Message.message_id)).scalars() if mid)


def set_unseen(dovecot: Dovecot, user: MailUser, folder: str = "INBOX") -> None:
    conn = dovecot.client(user)
    try:
        conn.select_folder(folder)
        conn.remove_flags(conn.search(["ALL"]), [SEEN], silent=True)
    finally:
        conn.logout()


def log_size(dovecot: Dovecot) -> int:
    return dovecot.log_path.stat().st_size


def logins_since(dovecot: Dovecot, user: MailUser, offset: int) -> list[str]:
    """Dovecot's login lines for `user` logged after `offset`, once the sessions ended."""
    deadline = time.monotonic() + 5
    while True:
        with open(dovecot.log_path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
        started = [line for line in lines if f"Login: user=<{user.email}>" in line]
        ended = [line for line in lines if f"imap({user.email})" in line and "Disconnected" in line]
        if (started and len(ended) >= len(started)) or time.monotonic() > deadline:
            return started
        time.sleep(0.05)


# -- connection security ------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_each_security_mode_fetches_and_processes(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    security: str,
) -> None:
    sent = mails(4)
    put(dovecot_server, mail_user, sent)
    settings = config(mail_user, security=security)
    assert settings.mailboxes[0].ca_file == (dovecot_server.ca_file if security != "none" else None)

    offset = log_size(dovecot_server)
    result = one_pass(settings, db)

    (fetched,) = result.fetches
    assert (fetched.fetched, fetched.stored, fetched.duplicates) == (4, 4, 0)
    assert result.processed.processed == 4
    assert ticket_message_ids(db) == sorted(m.message_id for m in sent)
    assert count(db, Ticket) == len({m.thread for m in sent})
    # One connection per pass, and TLS exactly when asked for (Dovecot logs "TLS").
    (login,) = logins_since(dovecot_server, mail_user, offset)
    assert ("TLS" in login.split(", ")) == (security != "none"), login


# -- checkpoint and batches ---------------------------------------------------------------


def test_second_pass_fetches_only_new_mail(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = mails(8)
    first_uids = put(dovecot_server, mail_user, batch[:5])
    settings = config(mail_user)
    one_pass(settings, db)
    assert sync_state(db).last_uid == first_uids[-1]
    assert sync_state(db).uidvalidity == dovecot_server.uidvalidity(mail_user)

    # Clearing \Seen on the server must not make anything look new: the checkpoint is
    # the UID, not the flag.
    set_unseen(dovecot_server, mail_user)
    new_uids = put(dovecot_server, mail_user, batch[5:])
    fetches = Spy(monkeypatch, "fetch")
    result = one_pass(settings, db)

    (fetched,) = result.fetches
    assert (fetched.fetched, fetched.stored) == (3, 3)
    assert [uid for call in fetches.calls for uid in call[0]] == new_uids
    assert sync_state(db).last_uid == new_uids[-1]
    assert count(db, RawMessage) == 8
    assert count(db, Message) == 8

    fetches.calls.clear()
    third = one_pass(settings, db)
    assert third.fetches[0].fetched == 0
    assert fetches.calls == []
    assert count(db, Delivery) == 8


@pytest.mark.parametrize(
    ("options", "per_batch"),
    [({"batch_size": 3}, 3), ({"extra": "batch_bytes = 1"}, 1)],
    ids=["batch_size", "batch_bytes"],
)
def test_batches_smaller_than_the_mail_count(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    per_batch: int,
) -> None:
    sent = mails(7, seed=11)
    uids = put(dovecot_server, mail_user, sent)
    # batch_bytes = 1: every message is a batch of its own, however small.
    settings = config(mail_user, **options)
    fetches = Spy(monkeypatch, "fetch")
    checkpoints: list[int] = []
    real_store = fetch_module.store_imap_batch

    def store_spy(session: Any, **kwargs: Any) -> Any:
        checkpoints.append(kwargs["checkpoint"])
        return real_store(session, **kwargs)

    monkeypatch.setattr(fetch_module, "store_imap_batch", store_spy)
    result = one_pass(settings, db)

    expected = [uids[i : i + per_batch] for i in range(0, len(uids), per_batch)]
    assert [list(call[0]) for call in fetches.calls] == expected
    # One commit per batch, each advancing the checkpoint to the batch's last UID.
    assert checkpoints == [batch[-1] for batch in expected]
    assert result.fetches[0].stored == 7
    assert sync_state(db).last_uid == uids[-1]
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)


def test_batches_keep_to_batch_bytes_knowing_only_the_large_sizes(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only messages over batch_bytes / batch_size (here 8,000 / 4 = 2,000 bytes) are
    asked for their size (found with SEARCH LARGER); a smaller one counts as 2,000, so
    no batch goes over batch_bytes however the sizes mix."""
    sent = mails(8, seed=12)
    raws = [m.raw for m in sent]
    for big in (2, 6):
        raws[big] = raws[big].rstrip() + b"\r\n" + b"padding " * 600 + b"\r\n"
    uids = put(dovecot_server, mail_user, raws)
    size_of = dict(zip(uids, map(len, raws), strict=True))
    assert all((size_of[u] > 2000) == (i in (2, 6)) for i, u in enumerate(uids))
    settings = config(mail_user, batch_size=4, extra="batch_bytes = 8000")
    fetches = Spy(monkeypatch, "fetch")
    asked = Spy(monkeypatch, "sizes")
    result = one_pass(settings, db)

    assert [list(call[0]) for call in asked.calls] == [[uids[2], uids[6]]]
    batches = [list(call[0]) for call in fetches.calls]
    assert [uid for batch in batches for uid in batch] == uids
    assert all(len(batch) <= 4 for batch in batches)
    # Counting each small message as 2,000 bytes: [s, s] [B, s] [s, s] [B, s].
    assert batches == [uids[0:2], uids[2:4], uids[4:6], uids[6:8]]
    assert all(sum(size_of[u] for u in batch) <= 8000 for batch in batches)
    assert result.fetches[0].stored == 8


@pytest.mark.parametrize("announce_after", [0.0, 3600.0])
def test_stored_batches_are_announced_after_their_commits(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    announce_after: float,
) -> None:
    """`on_stored` (how a watcher wakes the service, so processing overlaps a large
    backlog's fetch) announces stored mail only after the commits that stored it: what
    it announces is already in the database for the processor. Once a pass has run
    ANNOUNCE_AFTER seconds, each batch is announced on its own; before, a quick pass
    announces everything once, after its last batch."""
    monkeypatch.setattr(fetch_module, "ANNOUNCE_AFTER", announce_after)
    sent = mails(7, seed=12)
    put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=3)
    box = settings.mailboxes[0]
    ids = sync_config(db, settings)
    seen: list[tuple[int, int]] = []  # (announced, stored rows at that moment)

    def on_stored(new: int) -> None:
        seen.append((new, count(db, RawMessage)))

    fetcher = FolderFetcher(db, box, ids[box.name], owner="test", on_stored=on_stored)
    with ImapSource(box) as source:
        result = fetcher.run(source)
    assert result.stored == 7
    assert seen == ([(3, 3), (3, 6), (1, 7)] if announce_after == 0 else [(7, 7)])
    # A second pass stores nothing new and announces nothing.
    seen.clear()
    with ImapSource(box) as source:
        fetcher.run(source)
    assert seen == []


def test_a_pass_that_stops_half_way_announces_what_it_stored(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    """Held announcements are not lost when the pass ends early: the batches stored
    before a stop request are announced (and so filed) all the same."""
    put(dovecot_server, mail_user, mails(7, seed=13))
    settings = config(mail_user, batch_size=3)
    box = settings.mailboxes[0]
    ids = sync_config(db, settings)
    seen: list[tuple[int, int]] = []
    asked = {"n": 0}

    def should_stop() -> bool:  # asked before each batch: stop before the third
        asked["n"] += 1
        return asked["n"] > 2

    fetcher = FolderFetcher(
        db,
        box,
        ids[box.name],
        owner="test",
        should_stop=should_stop,
        on_stored=lambda new: seen.append((new, count(db, RawMessage))),
    )
    with ImapSource(box) as source:
        result = fetcher.run(source)
    assert result.stored == 6
    assert seen == [(6, 6)]


# -- \Seen, PEEK and the processed folder -------------------------------------------------


def test_messages_are_seen_only_after_the_pass_and_fetched_with_peek(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = put(dovecot_server, mail_user, mails(3))
    settings = config(mail_user)
    flags_after_fetch: list[dict[int, set[bytes]]] = []
    stored_at_flagging: list[int] = []

    def look(source: ImapSource, *args: Any) -> None:
        # Right before \Seen is set: the fetch (BODY.PEEK[]) left the messages unseen,
        # and the batch is already committed.
        flags_after_fetch.append(server_flags(dovecot_server, mail_user))
        stored_at_flagging.append(count(db, RawMessage))

    Spy(monkeypatch, "mark_seen", before=look)
    one_pass(settings, db)

    assert flags_after_fetch == [{uid: set() for uid in uids}]
    assert stored_at_flagging == [3]
    assert all(SEEN in flags for flags in server_flags(dovecot_server, mail_user).values())
    with db.read_session() as session:
        assert list(session.execute(select(Delivery.server_done)).scalars()) == [True] * 3


def test_flags_are_set_for_every_finish_every_stored_and_at_the_end(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """\\Seen is set in few commands, not one per batch (a server pays per command), yet
    never later than FINISH_EVERY stored messages, so a long first sync shows progress
    on the server too."""
    uids = put(dovecot_server, mail_user, mails(10, seed=31))
    settings = config(mail_user, batch_size=3)
    monkeypatch.setattr(fetch_module, "FINISH_EVERY", 4)
    flagged_then: list[set[int]] = []

    def look(source: ImapSource, *args: Any) -> None:
        flags = server_flags(dovecot_server, mail_user)
        flagged_then.append({uid for uid, f in flags.items() if SEEN in f})

    spy = Spy(monkeypatch, "mark_seen", before=look)
    result = one_pass(settings, db)

    # Batches of 3, 3, 3, 1: flags after the second batch (6 >= 4), then after the
    # fourth (4), and the end of the pass has nothing left.
    assert [sorted(call[0]) for call in spy.calls] == [uids[:6], uids[6:]]
    assert flagged_then == [set(), set(uids[:6])]
    assert result.fetches[0].finished == 10
    assert all(SEEN in flags for flags in server_flags(dovecot_server, mail_user).values())


def test_sequence_sets_name_exactly_the_uids_in_runs() -> None:
    assert list(sequence_sets([9, 5, 6, 7, 12, 13, 14, 40, 6])) == ["5:7,9,12:14,40"]
    assert list(sequence_sets([])) == []
    assert list(sequence_sets([1, 3, 5, 7, 9], max_chars=4)) == ["1,3", "5,7", "9"]
    # 50,000 UIDs with a gap every 100 still make short commands, each UID once.
    wanted = [uid for uid in range(1, 50_001) if uid % 100]
    sets = list(sequence_sets(wanted))
    assert all(len(s) <= 8_000 for s in sets)
    named = [
        uid
        for s in sets
        for part in s.split(",")
        for uid in range(int(part.split(":")[0]), int(part.split(":")[-1]) + 1)
    ]
    assert named == wanted


def test_processed_folder_is_created_and_receives_the_messages(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    sent = mails(4, seed=5)
    put(dovecot_server, mail_user, sent[:3])
    settings = config(mail_user, processed_folder="Done")
    conn = dovecot_server.client(mail_user)
    try:
        assert not conn.folder_exists("Done")
    finally:
        conn.logout()

    first = one_pass(settings, db)
    assert first.fetches[0].stored == 3
    assert dovecot_server.message_count(mail_user) == 0
    assert dovecot_server.message_count(mail_user, "Done") == 3

    put(dovecot_server, mail_user, sent[3:])
    second = one_pass(settings, db)
    assert (second.fetches[0].fetched, second.fetches[0].stored) == (1, 1)
    assert dovecot_server.message_count(mail_user) == 0
    assert dovecot_server.message_count(mail_user, "Done") == 4
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert count(db, Message) == 4


@pytest.mark.parametrize("missing", [{"MOVE"}, {"MOVE", "UIDPLUS"}])
def test_processed_folder_on_a_server_without_move(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    missing: set[str],
) -> None:
    # Dovecot always offers MOVE and UIDPLUS; hiding them from postdesk (every command
    # still goes to Dovecot) is the only way to exercise the COPY + EXPUNGE fallback.
    real = ImapSource.has_capability
    monkeypatch.setattr(
        ImapSource, "has_capability", lambda self, name: name not in missing and real(self, name)
    )
    sent = mails(3, seed=8)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, processed_folder="Done")

    result = one_pass(settings, db)

    assert result.fetches[0].stored == 3
    assert dovecot_server.message_count(mail_user, "Done") == 3
    left = server_flags(dovecot_server, mail_user)
    if "UIDPLUS" in missing:
        # Without UIDPLUS postdesk must not EXPUNGE (it could remove other people's
        # deleted mail): the originals stay, flagged, for the server's own policy.
        assert left == {uid: {SEEN, b"\\Deleted"} for uid in uids}
    else:
        assert left == {}
    assert one_pass(settings, db).fetches[0].fetched == 0
    assert dovecot_server.message_count(mail_user, "Done") == 3
    assert count(db, RawMessage) == 3


# -- duplicates ---------------------------------------------------------------------------


def delivered_copy(mail: GeneratedMail, to: str, hop: str) -> bytes:
    """The message as an MTA delivers it to `to`: its own trace fields on top."""
    trace = (
        f"Delivered-To: {to}\n"
        f"Received: from {hop}.example.net by mx.example.com; Mon, 5 Jan 2026 08:00:00 +0000\n"
    )
    return trace.encode() + mail.raw


def test_same_message_twice_in_one_folder_is_one_message(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    (mail, other) = mails(2, seed=21)
    uids = put(dovecot_server, mail_user, [mail, other])
    uids.append(dovecot_server.append(mail_user, delivered_copy(mail, mail_user.email, "relay2")))
    settings = config(mail_user, batch_size=2)

    result = one_pass(settings, db)

    (fetched,) = result.fetches
    assert (fetched.fetched, fetched.stored, fetched.duplicates) == (3, 2, 1)
    assert count(db, RawMessage) == 2
    with db.read_session() as session:
        rows = session.execute(
            select(Delivery.uid, RawMessage.message_id).join(
                RawMessage, RawMessage.id == Delivery.raw_message_id
            )
        ).all()
    assert sorted(rows) == sorted(
        [(uids[0], mail.message_id), (uids[1], other.message_id), (uids[2], mail.message_id)]
    )
    assert ticket_message_ids(db) == sorted([mail.message_id, other.message_id])
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())


def test_same_message_delivered_to_two_mailboxes_is_one_message(
    dovecot_server: Dovecot, db: Database, config: Callable[..., Settings]
) -> None:
    sales, support = dovecot_server.add_user(), dovecot_server.add_user()
    (mail,) = mails(1, seed=3)
    dovecot_server.append(sales, delivered_copy(mail, sales.email, "mx-a"))
    dovecot_server.append(support, delivered_copy(mail, support.email, "mx-b"))
    settings = config((sales, {"name": "sales"}), (support, {"name": "support"}))

    result = one_pass(settings, db)

    assert [(f.mailbox, f.stored, f.duplicates) for f in result.fetches] == [
        ("sales", 1, 0),
        ("support", 0, 1),
    ]
    assert count(db, RawMessage) == 1
    with db.read_session() as session:
        (raw_id,) = session.execute(select(RawMessage.id)).scalars()
        deliveries = session.execute(select(Delivery.mailbox_id, Delivery.raw_message_id)).all()
    assert len({mailbox for mailbox, _ in deliveries}) == 2
    assert {raw for _, raw in deliveries} == {raw_id}
    assert ticket_message_ids(db) == [mail.message_id]
    assert count(db, Ticket) == 1
    for user in (sales, support):
        assert [SEEN in f for f in server_flags(dovecot_server, user).values()] == [True]


# -- UIDVALIDITY --------------------------------------------------------------------------


def _drop_index(maildir: Path) -> None:
    for path in glob.glob(str(maildir / "dovecot.index*")):
        os.remove(path)


def bump_uidvalidity_keeping_uids(dovecot: Dovecot, user: MailUser) -> int:
    """Give INBOX a new UIDVALIDITY while every message keeps its UID.

    This is what a server move that copies Maildirs with a regenerated dovecot-uidlist
    looks like: the V field of dovecot-uidlist changes, the UIDs stay. Dovecot rereads
    the uidlist once its index is gone. The dangerous case: old UIDs now name the same
    numbers under a validity that says they must not be trusted.
    """
    maildir = dovecot._maildir(user)
    uidlist = maildir / "dovecot-uidlist"
    header, rest = uidlist.read_text().split("\n", 1)
    fields = [f"V{int(f[1:]) + 1000}" if f.startswith("V") else f for f in header.split()]
    uidlist.write_text(" ".join(fields) + "\n" + rest)
    _drop_index(maildir)
    return dovecot.uidvalidity(user)


def forget_uids(dovecot: Dovecot, user: MailUser) -> int:
    """Lose dovecot-uidlist (and the index): Dovecot renumbers every message under a new
    UIDVALIDITY, as after a Maildir restored from a backup without its uidlist."""
    maildir = dovecot._maildir(user)
    os.remove(maildir / "dovecot-uidlist")
    _drop_index(maildir)
    return dovecot.uidvalidity(user)


@pytest.mark.parametrize("change", [bump_uidvalidity_keeping_uids, forget_uids])
def test_uidvalidity_change_resyncs_inbox_without_duplicates(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[Dovecot, MailUser], int],
) -> None:
    sent = mails(8, seed=31)
    put(dovecot_server, mail_user, sent[:5])
    settings = config(mail_user, batch_size=2)
    one_pass(settings, db)
    before = dovecot_server.uidvalidity(mail_user)

    after = change(dovecot_server, mail_user)
    assert after != before
    new_uids = put(dovecot_server, mail_user, sent[5:])
    set_unseen(dovecot_server, mail_user)
    fetches = Spy(monkeypatch, "fetch")
    result = one_pass(settings, db)

    (fetched,) = result.fetches
    assert fetched.resynced == 5
    assert (fetched.fetched, fetched.stored, fetched.duplicates) == (3, 3, 0)
    # Only the genuinely new messages were downloaded.
    assert sorted(uid for call in fetches.calls for uid in call[0]) == new_uids
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert ticket_message_ids(db) == sorted(m.message_id for m in sent)
    state = sync_state(db)
    assert (state.uidvalidity, state.last_uid, state.resync_until_uid) == (
        after,
        new_uids[-1],
        None,
    )
    # Every message of the new validity has its delivery and its \Seen.
    with db.read_session() as session:
        current = session.execute(
            select(func.count()).where(Delivery.uidvalidity == after, Delivery.server_done)
        ).scalar_one()
    assert current == 8
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())

    # And the pass after that is an ordinary one.
    assert one_pass(settings, db).fetches[0].fetched == 0
    assert count(db, RawMessage) == 8


def test_recreated_folder_resyncs_by_message_id(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    sent = mails(9, seed=41)
    dovecot_server.create_folder(mail_user, "Support")
    put(dovecot_server, mail_user, sent[:6], folder="Support")
    settings = config(mail_user, extra='folder = "Support"')
    one_pass(settings, db)
    before = dovecot_server.uidvalidity(mail_user, "Support")

    # The folder is deleted and made again: five of the old messages come back in a
    # different order, one does not, three are new, and one new message reuses an old
    # Message-ID with different content (it must be stored, not taken for the old one).
    dovecot_server.delete_folder(mail_user, "Support")
    dovecot_server.create_folder(mail_user, "Support")
    reused = sent[0].raw + b"\nP.S. It works again, please close this.\n"
    again = [m.raw for m in reversed(sent[:5])]
    put(
        dovecot_server,
        mail_user,
        [*again[:2], *(m.raw for m in sent[6:]), reused, *again[2:]],
        folder="Support",
    )
    assert dovecot_server.uidvalidity(mail_user, "Support") != before

    result = one_pass(settings, db)

    (fetched,) = result.fetches
    assert fetched.resynced == 5
    assert (fetched.stored, fetched.duplicates) == (4, 0)
    assert count(db, RawMessage) == 10
    assert stored_message_ids(db) == sorted([*(m.message_id for m in sent), sent[0].message_id])
    assert count(db, Message) == 10
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user, "Support").values())
    assert one_pass(settings, db).fetches[0].fetched == 0


# -- hostile mail -------------------------------------------------------------------------

HOSTILE = {
    "huge-message-id": b"From: a@example.org\r\nSubject: long id\r\nMessage-ID: <"
    + b"x" * 1500
    + b"@example.org>\r\n\r\nbody\r\n",
    "8bit-message-id": b"From: b@example.org\r\nMessage-ID: <\xff\xfe\xe2\x82\xac@example.org>\r\n"
    b"Subject: \xd8\xb3\xd9\x84\xd8\xa7\xd9\x85\r\n\r\nbody\r\n",
    "no-message-id": b"From: c@example.org\r\nSubject: none\r\n\r\nbody\r\n",
    "nul-bytes": b"From: d@example.org\r\nMessage-ID: <nul\x00@example.org>\r\n\r\nbo\x00dy\r\n",
    "headers-only": b"From: e@example.org\r\nMessage-ID: <headers-only@example.org>\r\n",
    "no-header-block": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR binary junk",
}


def test_hostile_messages_are_stored_and_never_block_the_mailbox(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    (normal,) = mails(1, seed=99)
    uids = put(dovecot_server, mail_user, [*HOSTILE.values(), normal.raw])
    settings = config(mail_user)

    result = one_pass(settings, db)

    assert result.fetches[0].stored == len(uids)
    assert sync_state(db).last_uid == uids[-1]
    assert count(db, RawMessage) == len(uids)
    with db.read_session() as session:
        outcome = {
            origin: reason if status == "quarantined" else status
            for origin, status, reason in session.execute(
                select(RawMessage.origin, RawMessage.status, RawMessage.reason)
            )
        }
    reasons = {
        name: outcome[f"support/INBOX uid {uid} (uidvalidity {sync_state(db).uidvalidity})"]
        for name, uid in zip([*HOSTILE, "normal"], uids, strict=True)
    }
    assert (reasons["no-header-block"] or "").startswith("parse: no header block")
    filed = ["8bit-message-id", "no-message-id", "nul-bytes", "headers-only", "normal"]
    assert [reasons[name] for name in filed] == ["processed"] * len(filed)
    assert normal.message_id in ticket_message_ids(db)
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())
    # Nothing is fetched or stored twice afterwards.
    assert one_pass(settings, db).fetches[0].fetched == 0
    assert count(db, RawMessage) == len(uids)


def test_huge_message_id_reaches_a_ticket(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
) -> None:
    put(dovecot_server, mail_user, [HOSTILE["huge-message-id"]])
    result = one_pass(config(mail_user), db)
    assert result.fetches[0].stored == 1
    assert result.processed.quarantined == 0
    assert count(db, Message) == 1


def test_a_pass_uses_no_orm(
    dovecot_server: Dovecot, mail_user: MailUser, db: Database, config: Callable[..., Settings]
) -> None:
    """A `--once` pass, fetch and processing, runs Core statements only: in a fresh
    process, the ORM's mappers are still unconfigured after it. Configuring them (on
    the first ORM statement) and compiling ORM statements cost a new process ~40 ms,
    most of a small pass; the pass's statements are written on the tables instead
    (ingest/fetch.py, ingest/lease.py, ingest/store.py, the processor's, sync_config)."""
    put(dovecot_server, mail_user, mails(5, seed=21))
    settings = config(mail_user)
    script = (
        "import sys\n"
        "from postdesk.config import load_settings\n"
        "from postdesk.daemon import Service\n"
        "from postdesk.models.base import Base\n"
        "from postdesk.models.db import Database\n"
        "settings = load_settings(sys.argv[1])\n"
        "db = Database(settings.database.url)\n"
        "result = Service(settings, db).run_once()\n"
        "print(result.processed.processed, Base.registry._new_mappers)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(settings.path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # 5 filed, and the mappers were never configured (True: still to do).
    assert done.stdout.split() == ["5", "True"]
