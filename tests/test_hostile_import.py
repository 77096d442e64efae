"""Issue 11, criterion 1: `postdesk import` of a folder of hostile mail, into real SQLite.

Every message of postdesk/testing/hostile.py ends in a ticket or quarantined with a
reason; the two over the size limits are quarantined "too large" with their size and the
limit, never parsed; the caps that cut a message are recorded as its defects.

The mail is generated at a twentieth of its found size, with [limits] lowered to match
(3 MB messages, 1 MB of HTML, 200,000 characters of text), so that the same cases stay
cheap here; bench/hostile.py imports them at full size against the defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.config import load_settings
from postdesk.daemon import Service, import_messages
from postdesk.ingest.sources import ImportedMessage
from postdesk.models import Message, RawMessage
from postdesk.models.db import Database
from postdesk.testing.cli import Cli
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.fetching import mails, one_pass, put
from postdesk.testing.hostile import HostileMail, hostile_mail, oversized, write_folder

LIMITS = """
[limits]
max_message_bytes = 3000000
max_header_bytes = 102400
max_text_chars = 200000
max_html_chars = 1000000
max_parts = 200
import_batch_bytes = 2000000
"""


def test_import_of_hostile_mail_ends_in_tickets_or_quarantine(
    tmp_path: Path, sqlite_url: str
) -> None:
    mails = hostile_mail(0.05, max_message_bytes=3_000_000, max_header_bytes=102_400)
    assert len(mails) >= 22
    write_folder(tmp_path / "hostile", mails)
    cli = Cli(write_config(tmp_path, sqlite_url, top=LIMITS))
    cli("init")
    out = cli("import", str(tmp_path / "hostile")).output
    assert f"read {len(mails)} message(s): {len(mails)} stored" in out
    assert "(2 too large)" in out

    with cli.database().read_session() as session:
        raws = {
            Path(origin).stem: (status, reason, raw_id)
            for origin, status, reason, raw_id in session.execute(
                select(RawMessage.origin, RawMessage.status, RawMessage.reason, RawMessage.id)
            )
        }
        messages = {
            raw_id: (ticket_id, defects)
            for raw_id, ticket_id, defects in session.execute(
                select(Message.raw_message_id, Message.ticket_id, Message.defects)
            )
        }
    assert set(raws) == {mail.name for mail in mails}
    for name, (status, reason, raw_id) in raws.items():
        if status == "quarantined":
            assert reason and ": " in reason, name
        else:
            assert status == "processed", (name, status)
            assert messages[raw_id][0] is not None, f"{name} is in no ticket"

    assert raws["oversized"][:2] == (
        "quarantined",
        f"too large: message of {len(_raw(mails, 'oversized')):,} bytes, "
        "the limit is 3,000,000 ([limits] max_message_bytes)",
    )
    status, reason, _ = raws["huge-header"]
    assert status == "quarantined" and reason is not None
    assert reason.startswith("too large: header block of ")
    assert reason.endswith("the limit is 102,400 ([limits] max_header_bytes)")

    def defects(name: str) -> list[str]:
        return list(messages[raws[name][2]][1])

    assert "more than 200 parts: the rest kept as one attachment" in defects("many-parts")
    assert "text part cut to 200,000 characters ([limits] max_text_chars)" in defects("long-line")
    assert "HTML cut to 1,000,000 characters ([limits] max_html_chars)" not in defects("wide-table")
    # Everything that is not over a size limit was parsed and is in a ticket.
    assert sorted(name for name, row in raws.items() if row[0] == "quarantined") == [
        "huge-header",
        "oversized",
    ]


def _raw(mails: list[HostileMail], name: str) -> bytes:
    return next(mail.raw for mail in mails if mail.name == name)


def test_fetched_mail_over_the_limit_is_stored_quarantined(
    dovecot_server: Dovecot, mail_user: MailUser, db: Database, tmp_path: Path
) -> None:
    """The IMAP path applies the same limit: stored, quarantined, the rest processed."""
    big = oversized(4096)
    normal = mails(2)
    put(dovecot_server, mail_user, [normal[0], big, normal[1]])
    path = write_config(
        tmp_path,
        db.url,
        mailbox_toml(dovecot_server, mail_user),
        top="[limits]\nmax_message_bytes = 4096\n",
    )
    settings = load_settings(path)
    assert dataclasses.astuple(settings.limits)[:2] == (4096, 102_400)
    result = one_pass(settings, db)
    assert result.fetches[0].stored == 3
    assert result.processed.processed == 2
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.status, RawMessage.reason, RawMessage.size).order_by(RawMessage.id)
        ).all()
    assert [row[0] for row in rows] == ["processed", "quarantined", "processed"]
    assert rows[1][1] == (
        f"too large: message of {len(big):,} bytes, the limit is 4,096 ([limits] max_message_bytes)"
    )
    assert rows[1][2] == len(big)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_message_bytes = 100", "max_message_bytes: must be at least 1024"),
        ("max_parts = 0", "max_parts: must be a positive number"),
        ('max_header_bytes = "big"', "max_header_bytes"),
        ("max_size = 1", "unknown key"),
    ],
)
def test_a_bad_limit_is_a_one_line_config_error(tmp_path: Path, line: str, problem: str) -> None:
    cli = Cli(write_config(tmp_path, "sqlite:///x.db", top=f"[limits]\n{line}\n"))
    error = cli("init", code=1).stderr
    assert "[limits]" in error or "limits." in error
    assert problem in error


def test_import_batches_are_capped_in_bytes(tmp_path: Path, sqlite_url: str) -> None:
    """[limits] import_batch_bytes: a transaction stores at most that (or one message)."""
    path = write_config(tmp_path, sqlite_url, top="[limits]\nimport_batch_bytes = 4096\n")
    Cli(path)("init")
    settings = load_settings(path)
    sizes = [1500, 1500, 1500, 9000, 100]
    found = [ImportedMessage(f"m{index}", _sized(index, size)) for index, size in enumerate(sizes)]
    batches: list[int] = []
    db = Database(settings.database.url)
    try:
        result = import_messages(Service(settings, db), found, progress=batches.append)
    finally:
        db.dispose()
    # 1500 + 1500 fit in 4096, a third does not; 9000 is a batch of its own.
    assert batches == [2, 1, 1, 1]
    assert result.stored == 5 and result.processed.created == 5


def _sized(index: int, size: int) -> bytes:
    head = (
        f"From: c{index}@example.net\nTo: support@example.org\nSubject: size {index}\n"
        f"Message-ID: <sized{index}@example.net>\nDate: {'Mon, 01 Dec 2025 10:00:00 +0000'}\n\n"
    ).encode()
    return head + b"x" * (size - len(head) - 1) + b"\n"
