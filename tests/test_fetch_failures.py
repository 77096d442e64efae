"""IMAP fetching when things go wrong: bad credentials, TLS trouble, crashes, leases.

Real Dovecot and real databases throughout. A crash is something no server does on cue,
so those tests raise `Crash` (a BaseException nothing in postdesk catches, like a
SIGKILL would leave things) from a spy at the chosen instant. One test drops a message
from a FETCH answer, which Dovecot cannot be made to do; it says so. Everything else
(expunges, lost connections, stolen leases) really happens, at the instant a spy picks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import postdesk.ingest.fetch as fetch_module
from postdesk.config import Settings
from postdesk.daemon import Service
from postdesk.ingest import lease
from postdesk.ingest.imap import ImapSource
from postdesk.models import Delivery, Mailbox, MailboxSync, Message, RawMessage, utcnow
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.config import mailbox_toml, settings_for, write_config
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
from postdesk.testing.owners import ended_owner


class Crash(BaseException):
    """Stands in for the process dying at this instant."""


def crash(*_args: Any, **_kwargs: Any) -> None:
    raise Crash


def wrong_password(dovecot: Dovecot, user: MailUser, **options: Any) -> str:
    block = mailbox_toml(dovecot, user, **options)
    return block.replace(f'password = "{user.password}"', 'password = "not-the-password"')


def sync_rows(db: Database) -> dict[str, MailboxSync]:
    with db.read_session() as session:
        rows = session.execute(
            select(Mailbox.name, MailboxSync).join(Mailbox, Mailbox.id == MailboxSync.mailbox_id)
        ).all()
    return {name: row for name, row in rows}


# -- per-mailbox isolation ----------------------------------------------------------------


def test_wrong_password_is_one_recorded_line_and_other_mailboxes_still_fetch(
    dovecot_server: Dovecot, db: Database, tmp_path: Path
) -> None:
    bad, good = dovecot_server.add_user(), dovecot_server.add_user()
    put(dovecot_server, good, mails(2))
    settings = settings_for(
        tmp_path,
        db.url,
        wrong_password(dovecot_server, bad, name="bad"),
        mailbox_toml(dovecot_server, good, name="good"),
    )

    result = Service(settings, db).run_once()

    error = result.errors["bad"]
    assert "\n" not in error
    assert "login as" in error and "refused" in error
    assert "not-the-password" not in error
    assert [(f.mailbox, f.stored) for f in result.fetches] == [("good", 2)]
    assert result.processed.processed == 2
    rows = sync_rows(db)
    # The very first pass failed, so the error needs a sync row made just for it.
    assert rows["bad"].last_error == error
    assert rows["bad"].last_error_at is not None
    assert rows["good"].last_error is None

    # Fixed: the next pass succeeds, and the error is forgotten although no mail came.
    fixed = settings_for(
        tmp_path,
        db.url,
        mailbox_toml(dovecot_server, bad, name="bad"),
        mailbox_toml(dovecot_server, good, name="good"),
    )
    assert one_pass(fixed, db).fetches[0].fetched == 0
    rows = sync_rows(db)
    assert rows["bad"].last_error is None
    assert rows["bad"].last_success_at is not None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _without_ca(block: str, dovecot: Dovecot) -> str:
    return block.replace(f'ca_file = "{dovecot.ca_file}"\n', "")


@pytest.mark.parametrize(
    ("make_block", "expected"),
    [
        (
            lambda d, u: _without_ca(mailbox_toml(d, u, security="ssl"), d),
            "connecting failed: TLS certificate not trusted",
        ),
        (
            lambda d, u: _without_ca(mailbox_toml(d, u, security="starttls"), d),
            "starting TLS failed: TLS certificate not trusted",
        ),
        (lambda d, u: mailbox_toml(d, u, extra='folder = "Nowhere"'), "selecting folder 'Nowhere'"),
        (
            lambda d, u: mailbox_toml(d, u).replace(f"port = {d.port}", f"port = {_closed_port()}"),
            "connection refused",
        ),
    ],
    ids=["ssl-untrusted", "starttls-untrusted", "missing-folder", "refused"],
)
def test_server_problems_are_one_line_errors_recorded_per_mailbox(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    tmp_path: Path,
    make_block: Callable[[Dovecot, MailUser], str],
    expected: str,
) -> None:
    other = dovecot_server.add_user()
    put(dovecot_server, mail_user, mails(1))
    put(dovecot_server, other, mails(1, seed=2))
    settings = settings_for(
        tmp_path,
        db.url,
        make_block(dovecot_server, mail_user),
        mailbox_toml(dovecot_server, other, name="other"),
    )

    result = Service(settings, db).run_once()

    error = result.errors["support"]
    assert expected in error and "\n" not in error, error
    assert [(f.mailbox, f.stored) for f in result.fetches] == [("other", 1)]
    assert sync_rows(db)["support"].last_error == error
    assert server_flags(dovecot_server, mail_user) == {1: set()}


def test_non_ascii_password_logs_in(
    dovecot_server: Dovecot, db: Database, config: Callable[..., Settings]
) -> None:
    # IMAP LOGIN cannot carry it; AUTHENTICATE PLAIN (UTF-8) can.
    user = dovecot_server.add_user(password="pässwörd mit Léërzeichen")
    put(dovecot_server, user, mails(2))
    result = one_pass(config(user), db)
    assert result.fetches[0].stored == 2


def test_cli_run_once_exit_status(dovecot_server: Dovecot, sqlite_url: str, tmp_path: Path) -> None:
    db = Database(sqlite_url)
    upgrade(db)
    db.dispose()
    bad, good = dovecot_server.add_user(), dovecot_server.add_user()
    put(dovecot_server, good, mails(1))

    def run(*blocks: str) -> subprocess.CompletedProcess[str]:
        path = write_config(tmp_path, sqlite_url, *blocks)
        return subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(path), "run", "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    some = run(
        wrong_password(dovecot_server, bad, name="bad"),
        mailbox_toml(dovecot_server, good, name="good"),
    )
    # One mailbox failing is reported, but the pass did its work: exit status 0.
    assert some.returncode == 0, some.stderr
    assert "fetched 1 new message(s); 1 new ticket(s)" in some.stdout
    # The log gives the error in one line naming the mailbox; the pass report names the
    # failed mailboxes.
    (line,) = [line for line in some.stderr.splitlines() if "mailbox 'bad'" in line]
    assert "login as" in line and "refused" in line
    assert "1 mailbox(es) failed: bad" in some.stdout
    assert "not-the-password" not in some.stderr

    every = run(wrong_password(dovecot_server, bad, name="bad"))
    assert every.returncode == 1
    assert "refused" in every.stderr
    assert "Traceback" not in every.stderr


# -- crashes ------------------------------------------------------------------------------


def test_crash_between_fetch_and_commit_leaves_mail_unseen_and_loses_nothing(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = mails(3)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user)
    # The bytes were downloaded; the process dies before the batch commits.
    monkeypatch.setattr(fetch_module, "store_imap_batch", crash)
    with pytest.raises(Crash):
        Service(settings, db).run_once()
    monkeypatch.undo()

    assert count(db, RawMessage) == 0
    assert sync_state(db).last_uid == 0
    assert server_flags(dovecot_server, mail_user) == {uid: set() for uid in uids}

    result = one_pass(settings, db)
    assert result.fetches[0].stored == 3
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())


def test_lost_lease_aborts_the_batch_before_commit(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = put(dovecot_server, mail_user, mails(3))
    settings = config(mail_user)

    def steal(source: ImapSource, *args: Any) -> None:
        # Another instance took the lease over (ours expired) while we were fetching.
        with db.transaction() as session:
            session.execute(update(MailboxSync).values(lease_owner="elsewhere:1:cafe"))

    Spy(monkeypatch, "fetch", before=steal)
    result = Service(settings, db).run_once()

    assert "lost the polling lease to elsewhere:1:cafe" in result.errors["support"]
    assert count(db, RawMessage) == 0
    assert sync_state(db).last_error == result.errors["support"]
    assert server_flags(dovecot_server, mail_user) == {uid: set() for uid in uids}


@pytest.mark.parametrize("processed_folder", ["", "Done"])
def test_crash_after_commit_is_finished_on_the_next_pass(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    processed_folder: str,
) -> None:
    uids = put(dovecot_server, mail_user, mails(3))
    settings = config(mail_user, processed_folder=processed_folder)
    action = "move" if processed_folder else "mark_seen"
    Spy(monkeypatch, action, before=crash)
    with pytest.raises(Crash):
        Service(settings, db).run_once()
    monkeypatch.undo()

    assert count(db, RawMessage) == 3
    with db.read_session() as session:
        assert set(session.execute(select(Delivery.server_done)).scalars()) == {False}
    assert server_flags(dovecot_server, mail_user) == {uid: set() for uid in uids}

    fetches = Spy(monkeypatch, "fetch")
    result = one_pass(settings, db)
    (fetched,) = result.fetches
    assert (fetched.fetched, fetched.finished) == (0, 3)
    assert fetches.calls == []
    assert count(db, RawMessage) == 3
    assert count(db, Message) == 3
    if processed_folder:
        assert dovecot_server.message_count(mail_user) == 0
        assert dovecot_server.message_count(mail_user, processed_folder) == 3
    else:
        assert all(SEEN in f for f in server_flags(dovecot_server, mail_user).values())


def test_crash_after_move_before_it_is_recorded(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(dovecot_server, mail_user, mails(2))
    settings = config(mail_user, processed_folder="Done")
    real_move = ImapSource.move

    def move_then_crash(source: ImapSource, *args: Any) -> None:
        real_move(source, *args)
        raise Crash

    monkeypatch.setattr(ImapSource, "move", move_then_crash)
    with pytest.raises(Crash):
        Service(settings, db).run_once()
    monkeypatch.undo()
    assert dovecot_server.message_count(mail_user, "Done") == 2

    # The next pass moves UIDs that are gone already: harmless, and then recorded.
    result = one_pass(settings, db)
    assert result.fetches[0].finished == 2
    assert dovecot_server.message_count(mail_user, "Done") == 2
    assert count(db, RawMessage) == 2
    with db.read_session() as session:
        assert set(session.execute(select(Delivery.server_done)).scalars()) == {True}


@pytest.mark.parametrize("interruption", ["crash", "connection-lost"])
def test_interrupted_second_batch_keeps_the_first_and_resumes(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    interruption: str,
) -> None:
    # The process dies, or the server connection drops, as the second batch is fetched.
    crashed = interruption == "crash"
    sent = mails(5 if crashed else 4)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=2)
    calls = 0

    def interrupt_second(source: ImapSource, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            if crashed:
                raise Crash
            source.client.socket().shutdown(socket.SHUT_RDWR)

    Spy(monkeypatch, "fetch", before=interrupt_second)
    if crashed:
        with pytest.raises(Crash):
            Service(settings, db).run_once()
    else:
        error = Service(settings, db).run_once().errors["support"]
        assert "fetching 2 messages failed" in error and "\n" not in error
        assert sync_state(db).last_error == error
    monkeypatch.undo()

    # The first batch is committed; nothing after it was taken. Its \Seen flags were
    # still to set (they are set for every FINISH_EVERY stored and at the end of a
    # pass), so the next pass sets them first, then fetches the rest.
    assert sync_state(db).last_uid == uids[1]
    assert count(db, RawMessage) == 2
    flags = server_flags(dovecot_server, mail_user)
    assert not any(SEEN in flags[uid] for uid in uids)

    again = one_pass(settings, db)
    rest = len(sent) - 2
    assert (again.fetches[0].fetched, again.fetches[0].stored) == (rest, rest)
    assert again.fetches[0].finished == len(sent)
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert count(db, Delivery) == len(sent)
    assert sync_state(db).last_error is None
    flags = server_flags(dovecot_server, mail_user)
    assert all(SEEN in flags[uid] for uid in uids)


def test_message_expunged_between_search_and_fetch(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = mails(3)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user)

    def expunge_middle(source: ImapSource, *args: Any) -> None:
        # Someone deletes a message with another client after the sizes were read.
        conn = dovecot_server.client(mail_user)
        try:
            conn.select_folder("INBOX")
            conn.delete_messages([uids[1]])
            conn.uid_expunge([uids[1]])
        finally:
            conn.logout()

    Spy(monkeypatch, "fetch", before=expunge_middle)
    result = one_pass(settings, db)

    assert result.fetches[0].stored == 2
    assert stored_message_ids(db) == sorted([sent[0].message_id, sent[2].message_id])
    assert sync_state(db).last_uid == uids[2]


def test_message_the_server_left_out_is_asked_for_again(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = mails(5)
    uids = put(dovecot_server, mail_user, sent)
    settings = config(mail_user, batch_size=2)
    real_fetch = ImapSource.fetch

    # Some servers answer OK to a FETCH and leave out a message they cannot read at
    # the moment; Dovecot cannot be made to, so this wrapper drops it from the answer.
    def leave_out_second(source: ImapSource, wanted: Any) -> dict[int, bytes]:
        return {uid: raw for uid, raw in real_fetch(source, wanted).items() if uid != uids[1]}

    monkeypatch.setattr(ImapSource, "fetch", leave_out_second)
    result = one_pass(settings, db)
    monkeypatch.undo()

    assert result.fetches[0].stored == 4
    assert sync_state(db).last_uid == uids[0]
    flags = server_flags(dovecot_server, mail_user)
    assert [SEEN in flags[uid] for uid in uids] == [True, False, True, True, True]

    fetches = Spy(monkeypatch, "fetch")
    again = one_pass(settings, db)
    assert [list(call[0]) for call in fetches.calls] == [[uids[1]]]
    assert (again.fetches[0].stored, again.fetches[0].duplicates) == (1, 0)
    assert sync_state(db).last_uid == uids[-1]
    assert stored_message_ids(db) == sorted(m.message_id for m in sent)
    assert count(db, Delivery) == 5


def test_crash_during_resync_then_resume(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = mails(6)
    dovecot_server.create_folder(mail_user, "Support")
    put(dovecot_server, mail_user, sent[:4], folder="Support")
    settings = config(mail_user, extra='folder = "Support"', batch_size=2)
    one_pass(settings, db)
    dovecot_server.delete_folder(mail_user, "Support")
    dovecot_server.create_folder(mail_user, "Support")
    put(dovecot_server, mail_user, sent, folder="Support")

    # Matched by Message-ID and recorded, then the process dies in the first batch.
    Spy(monkeypatch, "fetch", before=crash)
    with pytest.raises(Crash):
        Service(settings, db).run_once()
    monkeypatch.undo()
    assert sync_state(db, "Support").resync_until_uid is not None

    result = one_pass(settings, db)
    assert result.fetches[0].stored == 2
    assert count(db, RawMessage) == 6
    assert count(db, Message) == 6
    assert sync_state(db, "Support").resync_until_uid is None
    assert all(SEEN in f for f in server_flags(dovecot_server, mail_user, "Support").values())


def test_stop_request_ends_the_pass_after_the_batch_in_hand(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(dovecot_server, mail_user, mails(5))
    settings = config(mail_user, batch_size=2)
    service = Service(settings, db)
    Spy(monkeypatch, "fetch", before=lambda source, *args: service.stop())
    result = service.run_once()
    monkeypatch.undo()

    assert result.fetches[0].stored == 2
    assert sync_state(db).lease_owner is None
    assert one_pass(settings, db).fetches[0].stored == 3
    assert count(db, RawMessage) == 5


# -- leases -------------------------------------------------------------------------------


def _hold_lease(db: Database, owner: str, seconds: int) -> None:
    with db.transaction() as session:
        session.execute(
            update(MailboxSync).values(
                lease_owner=owner, lease_expires=utcnow() + timedelta(seconds=seconds)
            )
        )


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("owner", "seconds", "skipped"),
    [
        (lambda: f"{socket.gethostname()}:{os.getppid()}:live", 300, True),
        (lambda: f"other-host.example:{os.getpid()}:far", 300, True),
        (lambda: f"other-host.example:{os.getpid()}:far", -1, False),
        # A postdesk process of this machine that has ended: its instance is free.
        (lambda: ended_owner(), 300, False),
        # Another machine with the same host name (containers, cloned VMs): the pid means
        # nothing here and its instance has no lock file on this machine.
        (lambda: f"{socket.gethostname()}:{_dead_pid()}:{'ab' * 16}:elsewhere", 300, True),
        # Owner names of older versions carry no instance: only the expiry settles them.
        (lambda: f"{socket.gethostname()}:{_dead_pid()}:-:dead", 300, True),
        (lambda: lease.make_owner(), 300, True),
    ],
    ids=[
        "live-here",
        "live-elsewhere",
        "expired",
        "dead-here",
        "same-host-name-elsewhere",
        "older-owner-name",
        "same-process-other-service",
    ],
)
def test_a_held_lease_skips_the_folder(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    owner: Callable[[], str],
    seconds: int,
    skipped: bool,
) -> None:
    sent = mails(3)
    put(dovecot_server, mail_user, sent[:1])
    settings = config(mail_user)
    one_pass(settings, db)
    put(dovecot_server, mail_user, sent[1:])
    holder = owner()
    _hold_lease(db, holder, seconds)

    result = one_pass(settings, db)

    (fetched,) = result.fetches
    if skipped:
        assert fetched.skipped_reason == f"being polled by {holder}"
        assert count(db, RawMessage) == 1
        assert sync_state(db).lease_owner == holder
        assert [SEEN in f for f in server_flags(dovecot_server, mail_user).values()] == [
            True,
            False,
            False,
        ]
    else:
        assert fetched.skipped_reason is None
        assert fetched.stored == 2
        assert sync_state(db).lease_owner is None


def test_two_services_never_poll_one_folder_at_once(
    dovecot_server: Dovecot,
    mail_user: MailUser,
    db: Database,
    config: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(dovecot_server, mail_user, mails(4))
    settings = config(mail_user, batch_size=2)
    first, second = Service(settings, db), Service(settings, db)
    seen_by_second: list[Any] = []

    def second_pass_meanwhile(source: ImapSource, *args: Any) -> None:
        if not seen_by_second:
            seen_by_second.append(second.run_once())

    Spy(monkeypatch, "fetch", before=second_pass_meanwhile)
    result = first.run_once()

    (meanwhile,) = seen_by_second
    assert meanwhile.fetches[0].skipped_reason == f"being polled by {first.owner}"
    assert meanwhile.fetches[0].fetched == 0
    assert result.fetches[0].stored == 4
    assert count(db, RawMessage) == 4
    assert sync_state(db).lease_owner is None
    # Released, so the second instance may poll now.
    assert second.run_once().fetches[0].skipped_reason is None


def test_lease_acquire_renew_and_racing_sync_row_creation(db: Database) -> None:
    with db.transaction() as session:
        session.add(Mailbox(name="m", address="m@example.com"))
    with db.transaction() as session:
        mailbox_id = session.execute(select(Mailbox.id)).scalar_one()
        sync_id = fetch_module.ensure_sync_row(session, mailbox_id, "INBOX")
        # Creating it again (a racing instance) finds the same row.
        assert fetch_module.ensure_sync_row(session, mailbox_id, "INBOX") == sync_id
        assert lease.acquire(session, sync_id, "a:1:x", seconds=10) is None
    with db.read_session() as session:
        first = session.get_one(MailboxSync, sync_id).lease_expires
    with db.transaction() as session:
        assert lease.acquire(session, sync_id, "b:1:y") == "a:1:x"
        assert lease.acquire(session, sync_id, "a:1:x", seconds=100) is None
    with db.read_session() as session:
        renewed = session.get_one(MailboxSync, sync_id).lease_expires
    assert first is not None and renewed is not None
    assert renewed - first > timedelta(seconds=80)
