"""Quarantine tools: `postdesk inbound list|show|retry|discard`."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from postdesk.testing.cli import Cli, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail

REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

# A message with no From, Sender or Reply-To, whose subject and body try to drive the
# terminal (clear screen, a title change, colour) and to reorder text (RLO).
HOSTILE = (
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?b?"
    + __import__("base64").b64encode("Hello \x1b[2J\x1b]0;pwned\x07there \u202eevil".encode())
    + b"?=\r\n"
    b"Message-ID: <hostile@example.org>\r\n"
    b"Date: Fri, 01 Mar 2024 09:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Line one\x1b[31m red\x1b[0m\r\nLine two\x07\x08\r\n"
)


def good(n: int) -> bytes:
    return bytes(
        Mail(
            sender=f"Customer {n} <c{n}@example.org>",
            to="support@example.com",
            subject=f"Question {n}",
            message_id=f"m{n}@example.org",
            date=START,
            body=f"Body {n}.\n",
        )
    )


@pytest.fixture
def ready(tmp_path: Path, db_url: str) -> Cli:
    """Initialised, on SQLite and on PostgreSQL (headers are read from bytea there)."""
    cli = Cli(write_config(tmp_path, db_url))
    cli("init")
    return cli


def import_files(cli: Cli, folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    cli("import", str(folder))


def quarantined_id(cli: Cli) -> int:
    (row,) = cli.json("inbound", "list", "--quarantined")
    return int(row["id"])


def test_list_shows_sender_subject_and_reason_with_a_limit(ready: Cli, tmp_path: Path) -> None:
    files = {f"{n:02}.eml": good(n) for n in range(60)}
    files["zz-hostile.eml"] = HOSTILE
    import_files(ready, tmp_path / "mail", files)
    out = ready("inbound", "list").stdout.splitlines()
    assert out[0].split() == ["id", "status", "from", "subject"]
    # The newest first: the hostile one (read last), then its reason on its own line.
    assert out[1].split()[:4] == ["61", "quarantined", "(no", "From)"]
    assert "Hello there evil" in out[1]
    assert out[2].strip().startswith("reason: sender: no sender address")
    rows = [line for line in out if not line.startswith(" " * 8)]
    assert rows[2].split()[:3] == ["60", "processed", "c59@example.org"]
    assert "c59@example.org" in rows[2] and rows[2].endswith("Question 59")
    notes = [line for line in out if line.startswith(" " * 8)]  # the reason, wrapped
    assert len(out) == 1 + 50 + len(notes) + 1  # header, 50 rows, the reason, "more"
    assert "unreadable" in notes[-1]
    assert out[-1] == "... 11 more; see them with --offset 50 or a larger --limit"
    rest = ready("inbound", "list", "--offset", "50").stdout.splitlines()
    assert len(rest) == 1 + 11 and rest[-1].split()[0] == "1"
    assert (
        len(ready("inbound", "list", "--limit", "5").stdout.splitlines()) == 1 + 5 + len(notes) + 1
    )
    assert all("\x1b" not in line and "\u202e" not in line for line in out)
    assert len(ready.json("inbound", "list", "--processed")) == 60  # JSON: all
    assert len(ready.json("inbound", "list", "--limit", "7")) == 7


def test_show_strips_control_characters_and_raw_keeps_the_bytes(ready: Cli, tmp_path: Path) -> None:
    import_files(ready, tmp_path / "mail", {"hostile.eml": HOSTILE})
    raw_id = quarantined_id(ready)
    out = ready("inbound", "show", str(raw_id)).stdout
    assert out.startswith(f"Inbound message {raw_id} (quarantined, 1 attempt(s))\n")
    assert "Reason:       sender: no sender address" in out
    assert "From:         (none)" in out
    assert "Subject:      Hello there evil" in out
    assert "Line one red\nLine two\n" in out
    assert not any(ch in out for ch in "\x1b\x07\x08\u202e")
    assert f"`postdesk inbound retry {raw_id}`" in out
    raw = ready("inbound", "show", str(raw_id), "--raw").stdout_bytes
    assert raw == HOSTILE  # not a terminal: exactly what was stored
    data = ready.json("inbound", "show", str(raw_id))
    assert data["reason"].startswith("sender: ") and data["message_id"] == "hostile@example.org"
    line = assert_one_line_error(ready("inbound", "show", "99999", code=1).stderr)
    assert line == "postdesk: error: no inbound message 99999 (see `postdesk inbound list`)"


def test_discard_keeps_the_bytes_and_retry_brings_it_back(ready: Cli, tmp_path: Path) -> None:
    import_files(ready, tmp_path / "mail", {"1.eml": good(1), "hostile.eml": HOSTILE})
    raw_id = quarantined_id(ready)
    assert ready("inbound", "discard", str(raw_id)).stdout == f"discarded 1: {raw_id}\n"
    assert ready.json("inbound", "list", "--quarantined") == []
    (row,) = ready.json("inbound", "list", "--discarded")
    assert row["id"] == raw_id and row["reason"].startswith("sender: ")
    assert ready("inbound", "show", str(raw_id), "--raw").stdout_bytes == HOSTILE
    # Imported again: the same mail is known and stays discarded, not processed.
    ready("import", str(tmp_path / "mail" / "hostile.eml"))
    assert [r["id"] for r in ready.json("inbound", "list", "--discarded")] == [raw_id]

    line = assert_one_line_error(ready("inbound", "discard", str(raw_id), code=1).stderr)
    assert line == (
        f"postdesk: error: inbound message {raw_id} is discarded, not quarantined; "
        "nothing was discarded"
    )
    processed = next(r["id"] for r in ready.json("inbound", "list", "--processed"))
    line = assert_one_line_error(ready("inbound", "discard", "99999", str(raw_id), code=1).stderr)
    assert "no inbound message 99999" in line
    line = assert_one_line_error(ready("inbound", "retry", str(processed), code=1).stderr)
    assert line == (
        f"postdesk: error: inbound message {processed} is processed, not quarantined or "
        "discarded; nothing was retried"
    )
    out = ready("inbound", "retry", str(raw_id)).stdout
    assert "retried 1: 0 processed, 1 quarantined again" in out
    assert quarantined_id(ready) == raw_id


def test_retry_with_a_sender_files_mail_that_had_none(ready: Cli, tmp_path: Path) -> None:
    import_files(ready, tmp_path / "mail", {"1.eml": good(1), "hostile.eml": HOSTILE})
    raw_id = quarantined_id(ready)
    for bad in ("nobody", "a@b", "two@@example.com", "x y@example.com", "<a@example.com>"):
        line = assert_one_line_error(
            ready("inbound", "retry", str(raw_id), "--sender", bad, code=1).stderr
        )
        assert "is not an email address (expected name@example.com)" in line
    processed = next(r["id"] for r in ready.json("inbound", "list", "--processed"))
    line = assert_one_line_error(
        ready("inbound", "retry", str(raw_id), "2", "--sender", "a@example.com", code=1).stderr
    )
    assert "--sender is for one message" in line
    line = assert_one_line_error(
        ready("inbound", "retry", str(processed), "--sender", "a@example.com", code=1).stderr
    )
    assert "is processed, not quarantined or discarded" in line

    out = ready("inbound", "retry", str(raw_id), "--sender", "Walk.In@Example.COM").stdout
    assert out.splitlines() == [
        f"inbound message {raw_id}: sender set to walk.in@example.com",
        "retried 1: 1 processed, 0 quarantined again",
    ]
    tickets = ready.json("tickets", "list")
    opened = next(t for t in tickets if t["requester"]["email"] == "walk.in@example.com")
    assert "Hello" in opened["subject"]
    (row,) = [r for r in ready.json("inbound", "list") if r["id"] == raw_id]
    assert row["status"] == "processed" and row["given_sender"] == "walk.in@example.com"


def test_retry_with_a_sender_refuses_mail_that_has_one(ready: Cli, tmp_path: Path) -> None:
    # Quarantined for another reason (attachments cannot be saved): it has a From.
    import_files(ready, tmp_path / "mail", {"hostile.eml": HOSTILE})
    db = ready.database()
    try:
        with db.transaction() as session:
            from sqlalchemy import update

            from postdesk.models import RawMessage

            session.execute(
                update(RawMessage).values(
                    content=good(7), status="quarantined", reason="file: disk full"
                )
            )
    finally:
        db.dispose()
    raw_id = quarantined_id(ready)
    line = assert_one_line_error(
        ready("inbound", "retry", str(raw_id), "--sender", "a@example.com", code=1).stderr
    )
    assert line == (
        f"postdesk: error: inbound message {raw_id} has a sender of its own (c7@example.org); "
        "--sender is only for mail without a usable From, Sender or Reply-To"
    )


def test_raw_on_a_terminal_shows_control_bytes_instead_of_obeying_them(
    ready: Cli, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect", reason="pexpect (a dev dependency) drives a pty")
    import_files(ready, tmp_path / "mail", {"hostile.eml": HOSTILE})
    raw_id = quarantined_id(ready)
    env = {k: v for k, v in os.environ.items() if k != "POSTDESK_CONFIG"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "postdesk", "-c", str(ready.config), "inbound", "show", str(raw_id), "--raw"],
        env=env,
        timeout=60,
    )
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    assert b"\x1b" not in output and b"\x07" not in output
    assert b"Line one\\x1b[31m red\\x1b[0m" in output and b"Line two\\x07\\x08" in output
