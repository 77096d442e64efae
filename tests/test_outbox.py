"""The outbox against a real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL:
queued in the caller's transaction, sent once, retried with backoff, failed on 5xx, and
what a sender that died leaves behind."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import update

from postdesk.config import Secret, SmtpSettings
from postdesk.models import OutboxMail, OutboxState
from postdesk.models.db import Database
from postdesk.notify.outbox import (
    OutboxError,
    backoff,
    claim,
    completing,
    enqueue,
    list_outbox,
    retry,
)
from postdesk.notify.smtp import OutboxSender, data_lines
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.owners import ended_owner
from postdesk.testing.smtpsink import SmtpSink

DEAD_OWNER = ended_owner()  # a sender of this machine that has ended


def message(n: int, *, to: str = "alice@example.com", body: str = "Hello\n") -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Support <support@example.com>"
    msg["To"] = to
    msg["Subject"] = f"[#{n}] Your request"
    msg["Message-ID"] = f"<postdesk.test{n}@example.com>"
    msg.set_content(body)
    return msg


def queue(db: Database, *messages: EmailMessage) -> list[int]:
    with db.transaction() as session:
        conn = session.connection()
        return [enqueue(conn, m, kind="acknowledgement") for m in messages]


def settings_for(sink: SmtpSink, port: int | None = None) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port or sink.port, security="none", timeout=10.0)


def sender(db: Database, smtp: SmtpSettings, **kwargs: object) -> OutboxSender:
    return OutboxSender(db, smtp, owner="tester:1:1:x", **kwargs)  # type: ignore[arg-type]


def row(db: Database, row_id: int) -> dict[str, object]:
    [found] = [r for r in list_outbox(db) if r["id"] == row_id]
    return found


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def test_queued_mail_is_sent_once_with_its_bytes(db: Database, sink: SmtpSink) -> None:
    body = "Hello\n.a line that starts with a dot\n..two dots\nبا سپاس\n"
    bcc = message(1, body=body)
    bcc["Bcc"] = "hidden@example.com"
    [first, second] = queue(db, bcc, message(2, to="bob@example.com"))
    result = sender(db, settings_for(sink)).drain()
    assert (result.sent, result.failed, result.retrying) == (2, 0, 0)
    mails = sink.wait_for(2)
    assert [m.rcpt_tos for m in mails] == [
        ("alice@example.com", "hidden@example.com"),
        ("bob@example.com",),
    ]
    received = email.message_from_bytes(mails[0].data, policy=email.policy.default)
    assert received["Message-ID"] == "<postdesk.test1@example.com>"
    assert received["Bcc"] is None  # delivered to, but not shown to the others
    # Dots and Persian text arrive as written (in CRLF lines, as SMTP carries them).
    assert received.get_content().replace("\r\n", "\n") == body
    assert row(db, first)["state"] == "sent" and row(db, second)["state"] == "sent"
    # A second drain has nothing to send: nothing goes out twice.
    assert sender(db, settings_for(sink)).drain().sent == 0
    assert len(sink.messages) == 2


def test_mail_is_queued_only_if_its_transaction_commits(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        enqueue(session.connection(), message(3), kind="acknowledgement")
        raise RuntimeError("the change that decided to send it failed")
    assert list_outbox(db) == []


def test_a_mail_needs_a_message_id_and_recipients(db: Database) -> None:
    missing = message(4)
    del missing["Message-ID"]
    nobody = message(5)
    del nobody["To"]
    with db.transaction() as session:
        with pytest.raises(OutboxError, match="Message-ID"):
            enqueue(session.connection(), missing, kind="reply")
        with pytest.raises(OutboxError, match="no recipients"):
            enqueue(session.connection(), nobody, kind="reply")


def test_a_transient_refusal_is_retried_after_a_backoff(db: Database, sink: SmtpSink) -> None:
    [row_id] = queue(db, message(6))
    sink.fail_next(1, 451)
    start = datetime.now(UTC)
    result = sender(db, settings_for(sink), clock=lambda: start).drain()
    assert (result.sent, result.retrying) == (0, 1)
    waiting = row(db, row_id)
    assert waiting["state"] == "queued" and waiting["attempts"] == 1
    assert "451" in str(waiting["last_error"])
    # Not due yet: the next drain leaves it alone.
    assert sender(db, settings_for(sink), clock=lambda: start).drain().sent == 0
    later = start + backoff(1) + timedelta(seconds=1)
    assert sender(db, settings_for(sink), clock=lambda: later).drain().sent == 1
    assert len(sink.messages) == 1 and len(sink.refused) == 1
    assert row(db, row_id)["state"] == "sent"


def test_a_permanent_refusal_fails_the_row_with_the_answer(db: Database, sink: SmtpSink) -> None:
    [row_id] = queue(db, message(7))
    sink.fail_next(1, 550)
    result = sender(db, settings_for(sink)).drain()
    assert (result.sent, result.failed) == (0, 1)
    failed = row(db, row_id)
    assert failed["state"] == "failed" and str(failed["last_error"]).startswith("550")
    assert sender(db, settings_for(sink)).drain().sent == 0  # never tried again alone
    assert retry(db, [row_id]) == [row_id]
    assert sender(db, settings_for(sink)).drain().sent == 1
    assert len(sink.messages) == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_keeps_mail_queued_until_it_is_back(db: Database) -> None:
    port = _closed_port()
    ids = queue(db, message(8), message(9), message(10))
    start = datetime.now(UTC)
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5.0)
    down = sender(db, smtp, clock=lambda: start).drain()
    assert (down.sent, down.retrying) == (0, 3) and "cannot connect" in down.errors[0]
    assert {row(db, i)["state"] for i in ids} == {"queued"}
    later = start + timedelta(minutes=5)
    with SmtpSink(port=port) as back:
        assert sender(db, smtp, clock=lambda: later).drain().sent == 3
        assert sorted(m.rcpt_tos for m in back.wait_for(3)) == [("alice@example.com",)] * 3


def test_an_unreadable_smtp_password_keeps_mail_queued_and_the_service_going(
    db: Database, sink: SmtpSink, tmp_path: Path
) -> None:
    """A password file removed while the service runs is a reason like a server that is
    down: reported by the drain, the mail stays queued; it does not escape the drain and
    stop the service (which would stop fetching too)."""
    ids = queue(db, message(11))
    missing = tmp_path / "smtp-password"
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=sink.port,
        security="none",
        timeout=5.0,
        username="postdesk",
        password=Secret("file", str(missing), "postdesk.toml", "smtp.password"),
    )
    result = sender(db, smtp).drain()
    assert (result.sent, result.retrying) == (0, 1)
    assert "cannot read" in result.errors[0] and "smtp.password_file" in result.errors[0]
    assert row(db, ids[0])["state"] == "queued"
    assert sink.messages == []


def test_mail_not_delivered_within_retry_for_fails(db: Database) -> None:
    [row_id] = queue(db, message(11))
    smtp = SmtpSettings(host="127.0.0.1", port=_closed_port(), security="none", timeout=5.0)
    three_days = datetime.now(UTC) + timedelta(days=3)
    result = sender(db, smtp, clock=lambda: three_days).drain()
    assert result.failed == 1
    failed = row(db, row_id)
    assert failed["state"] == "failed" and "not delivered within 2 days" in str(
        failed["last_error"]
    )


def test_a_dead_senders_rows_are_sent_again_or_left_unconfirmed(
    db: Database, sink: SmtpSink
) -> None:
    """A sender killed before the end of data: the server discarded the transaction, so
    the row is sent again (once). Killed after the `completing` mark: the server may have
    it, so the row is never resent on its own, only by `outbox retry`."""
    ids = queue(db, message(12), message(13))
    [mid_data, after_mark] = claim(db, DEAD_OWNER, 2)
    assert completing(db, after_mark.id, DEAD_OWNER)
    result = sender(db, settings_for(sink)).drain()
    assert (result.requeued_after_crash, result.unconfirmed, result.sent) == (1, 1, 1)
    assert row(db, ids[0])["state"] == "sent"
    assert row(db, ids[1])["state"] == "unconfirmed"
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [("alice@example.com",)]
    retry(db, [after_mark.id])
    assert sender(db, settings_for(sink)).drain().sent == 1
    assert len(sink.messages) == 2
    assert mid_data.message_id == "postdesk.test12@example.com"


def test_a_live_senders_rows_are_left_alone(db: Database, sink: SmtpSink) -> None:
    [row_id] = queue(db, message(14))
    claim(db, "elsewhere:1:1:alive", 1)  # another machine, claimed just now
    assert sender(db, settings_for(sink)).drain().sent == 0
    assert row(db, row_id)["state"] == "sending"
    # Silent far longer than any attempt takes: that sender is gone.
    with db.transaction() as session:
        session.execute(
            update(OutboxMail).values(claimed_at=datetime.now(UTC) - timedelta(hours=2))
        )
    assert sender(db, settings_for(sink)).drain().sent == 1


def test_retry_refuses_mail_that_is_not_failed(db: Database) -> None:
    [row_id] = queue(db, message(15))
    with pytest.raises(OutboxError, match=f"#{row_id} is queued"):
        retry(db, [row_id])
    with pytest.raises(OutboxError, match="no outbox mail #999"):
        retry(db, [999])


def test_data_lines_stuff_dots_and_end_lines_in_crlf() -> None:
    assert data_lines(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n"
    assert OutboxState.UNCONFIRMED.value == "unconfirmed"


def test_outbox_cli_lists_and_retries(tmp_path: Path, sqlite_url: str, sink: SmtpSink) -> None:
    smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
    cli = Cli(write_config(tmp_path, sqlite_url, smtp))
    cli("init")
    assert "the outbox is empty" in cli("outbox", "list").stdout
    db = cli.database()
    try:
        [row_id] = queue(db, message(16))
        sink.fail_next(1, 550)
        sender(db, settings_for(sink)).drain()
    finally:
        db.dispose()
    [listed] = cli.json("outbox", "list", "--state", "failed")
    assert listed["id"] == row_id and listed["to"] == ["alice@example.com"]
    assert listed["last_error"].startswith("550") and listed["next_attempt_at"] is None
    assert "failed" in cli("outbox", "list").stdout
    cli("outbox", "retry", str(row_id))
    assert "is queued" in cli("outbox", "retry", str(row_id), code=1).stderr
    assert cli.json("outbox", "list", "--state", "queued")[0]["id"] == row_id


def test_retry_by_a_person_starts_a_fresh_retry_window(db: Database) -> None:
    """A mail that failed after days of deferrals and is queued again by `outbox retry`
    is retried for `retry_for` again, not failed at its first deferral."""
    with db.transaction() as session:
        row_id = enqueue(
            session.connection(),
            message(17),
            kind="reply",
            at=datetime.now(UTC) - timedelta(days=3),
        )
    smtp = SmtpSettings(host="127.0.0.1", port=_closed_port(), security="none", timeout=5.0)
    assert sender(db, smtp).drain().failed == 1
    retry(db, [row_id])
    again = sender(db, smtp).drain()
    assert (again.failed, again.retrying) == (0, 1)
    assert row(db, row_id)["state"] == "queued"


def test_a_large_mail_is_sent_whole(db: Database, sink: SmtpSink) -> None:
    """The data is flushed before the `completing` mark; a mail of several megabytes
    still arrives once and whole."""
    body = ("0123456789 abcdefghij " * 40 + "\n") * 4000  # about 3.5 MB
    [row_id] = queue(db, message(18, body=body))
    assert sender(db, settings_for(sink)).drain().sent == 1
    [mail] = sink.wait_for(1)
    received = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert received.get_content().replace("\r\n", "\n") == body  # type: ignore[attr-defined]
    assert row(db, row_id)["state"] == "sent"
