"""The `postdesk` command line: one-line errors, init, import, tickets and inbound."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update

from postdesk.cli import main
from postdesk.models import Mailbox, RawMessage, RawStatus, Ticket
from postdesk.testing.cli import CLEAN_ENV, Cli, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Attachment, Mail

REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

MAILBOX_BLOCK = """
[[mailbox]]
name = "support"
address = "support@example.com"
host = "127.0.0.1"
port = 1
security = "none"
username = "support@example.com"
password_env = "POSTDESK_TEST_NEVER_SET"
"""


# --- helpers -------------------------------------------------------------------------------


def mail(
    n: int,
    *,
    sender: str | None = None,
    subject: str | None = None,
    hours: float | None = None,
    reply_to: int | None = None,
    with_from: bool = True,
    attachment: bytes | None = None,
) -> bytes:
    """Customer n's message <m{n}@example.org>, sent n hours after START unless told."""
    return bytes(
        Mail(
            sender=f"Customer {n} <{sender or f'c{n}@example.org'}>" if with_from else None,
            to="support@example.com",
            subject=subject or f"Question {n}",
            message_id=f"m{n}@example.org",
            date=START + timedelta(hours=n if hours is None else hours),
            in_reply_to=None if reply_to is None else f"m{reply_to}@example.org",
            references=() if reply_to is None else [f"m{reply_to}@example.org"],
            body=f"Body of message {n}.\n",
            attachments=() if attachment is None else [Attachment("a.pdf", attachment)],
        )
    )


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    """A configured but not yet initialised SQLite setup (one mailbox, never contacted)."""
    return Cli(write_config(tmp_path, sqlite_url, MAILBOX_BLOCK))


@pytest.fixture
def ready(cli: Cli) -> Cli:
    cli("init")
    return cli


def eml_folder(directory: Path, messages: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, raw in messages.items():
        (directory / name).write_bytes(raw)
    return directory


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTDESK_CONFIG"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "postdesk", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- configuration and database errors -----------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(main, ["-c", str(missing), "tickets", "list"], env=CLEAN_ENV)
    assert result.exit_code == 1
    line = assert_one_line_error(result.stderr)
    assert f"{missing}: no such file" in line
    assert result.stdout == ""


def test_config_comes_from_the_environment(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path, sqlite_url)
    result = CliRunner().invoke(main, ["init"], env={"POSTDESK_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert "created database" in result.stdout


def test_default_config_is_postdesk_toml_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["tickets", "list"], env=CLEAN_ENV)
    assert result.exit_code == 1
    assert "postdesk.toml: no such file" in assert_one_line_error(result.stderr)


def test_bad_key_names_file_and_key(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path, sqlite_url, "[run]\npoll_intervl = 5\n")
    result = Cli(path)("tickets", "list", code=1)
    line = assert_one_line_error(result.stderr)
    assert f"{path}: run.poll_intervl: unknown key; did you mean 'poll_interval'?" in line


def test_unreachable_database(tmp_path: Path) -> None:
    path = write_config(tmp_path, "postgresql://postgres@127.0.0.1:1/test?connect_timeout=3")
    for command in (["init"], ["tickets", "list"], ["inbound", "list"]):
        result = Cli(path)(*command, code=1)
        line = assert_one_line_error(result.stderr)
        assert "cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/test" in line


def test_database_password_is_not_shown(tmp_path: Path) -> None:
    path = write_config(tmp_path, "postgres://postdesk:s3cret@127.0.0.1:1/test?connect_timeout=3")
    line = assert_one_line_error(Cli(path)("init", code=1).stderr)
    assert "postgresql+psycopg://postdesk:***@127.0.0.1:1/test" in line
    assert "s3cret" not in line


def test_uninitialised_database_says_run_init(cli: Cli) -> None:
    for command in (
        ["tickets", "list"],
        ["tickets", "show", "1"],
        ["inbound", "list"],
        ["import", str(cli.config.parent)],
    ):
        line = assert_one_line_error(cli(*command, code=1).stderr)
        assert "does not exist; run `postdesk init`" in line
    # Asking did not create an empty database file behind the user's back.
    assert not (cli.config.parent / "postdesk.db").exists()


def test_empty_database_says_run_init(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "postdesk.db").touch()
    line = assert_one_line_error(cli("tickets", "list", code=1).stderr)
    assert "has no postdesk schema yet; run `postdesk init`" in line


def test_init_creates_then_reports_up_to_date(cli: Cli) -> None:
    first = cli("init").stdout
    assert first.startswith("created database sqlite:///")
    assert (cli.config.parent / "data").is_dir()
    second = cli("init").stdout
    assert "is up to date" in second
    with cli.database().read_session() as session:
        names = session.execute(select(Mailbox.name, Mailbox.address)).all()
    assert [tuple(row) for row in names] == [("support", "support@example.com")]


def test_init_with_an_unusable_data_dir(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    path = write_config(tmp_path, sqlite_url)
    path.write_text(path.read_text().replace('data_dir = "data"', 'data_dir = "blocker/data"'))
    line = assert_one_line_error(Cli(path)("init", code=1).stderr)
    assert f"{path}: data_dir: cannot write to" in line and "Not a directory" in line


def test_init_on_a_database_from_a_newer_postdesk(ready: Cli) -> None:
    with ready.database().engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
    line = assert_one_line_error(ready("init", code=1).stderr)
    assert "newer than this postdesk" in line
    line = assert_one_line_error(ready("tickets", "list", code=1).stderr)
    assert "upgrade postdesk" in line


def test_unexpected_errors_are_one_line_with_exit_code_70_and_a_crash_report(
    ready: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr("postdesk.ticket_commands.find_tickets", boom)
    result = ready("tickets", "list", code=70)
    line = assert_one_line_error(result.stderr)
    assert "internal error, a bug in postdesk: RuntimeError: something broke" in line
    # The traceback is in the file the line names, under the data directory.
    report = Path(line.split("the traceback is in ", 1)[1].split(";", 1)[0])
    assert report.parent == ready.config.parent / "data" / "crash-reports"
    text = report.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    assert report.stat().st_mode & 0o077 == 0  # private: tracebacks may show data
    # -vv adds the traceback on stderr, before the same last line.
    loud = ready("-vv", "tickets", "list", code=70).stderr
    assert "Traceback (most recent call last)" in loud
    assert loud.rstrip().splitlines()[-1].startswith("postdesk: error: internal error")


def test_errors_reach_a_real_process_as_one_line(tmp_path: Path, sqlite_url: str) -> None:
    missing = run_module("-c", str(tmp_path / "absent.toml"), "tickets", "list", cwd=tmp_path)
    (tmp_path / "pg").mkdir()
    unreachable = write_config(
        tmp_path / "pg", "postgresql://postgres@127.0.0.1:1/test?connect_timeout=3"
    )
    refused = run_module("-c", str(unreachable), "tickets", "list", cwd=tmp_path)
    fresh = write_config(tmp_path, sqlite_url)
    not_init = run_module("-c", str(fresh), "inbound", "list", cwd=tmp_path)
    for proc, expected in (
        (missing, "absent.toml: no such file"),
        (refused, "cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/test"),
        (not_init, "run `postdesk init`"),
    ):
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("postdesk: error: ")
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr


def test_init_and_import_in_a_real_process(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path, sqlite_url)
    folder = eml_folder(tmp_path / "mail", {"1.eml": mail(1), "2.eml": mail(2)})
    init = run_module("-c", str(path), "init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    imported = run_module("-c", str(path), "import", str(folder), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "read 2 message(s): 2 stored" in imported.stdout
    notmail = tmp_path / "notes.txt"
    notmail.write_text("just some notes\n")
    bad = run_module("-c", str(path), "import", str(notmail), cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert f"{notmail}: neither a message" in bad.stderr


def test_version(cli: Cli) -> None:
    assert cli("--version").stdout.startswith("postdesk, version ")


# --- import ------------------------------------------------------------------------------


def test_import_folder_then_list_and_show(tmp_path: Path, db_url: str) -> None:
    cli = Cli(write_config(tmp_path, db_url, MAILBOX_BLOCK))
    cli("init")
    # On disk the reply sorts before the message it answers; import uses the Date order.
    folder = eml_folder(
        tmp_path / "mail",
        {
            "a-reply.eml": mail(3, sender="c1@example.org", reply_to=1, subject="Re: Question 1"),
            "b-first.eml": mail(1),
            "c-second.eml": mail(2),
        },
    )
    out = cli("import", str(folder)).stdout
    assert "read 3 message(s): 3 stored, 0 already stored; 2 new ticket(s), 1 added" in out

    rows = cli.json("tickets", "list")
    assert [r["number"] for r in rows] == [2, 1]  # newest first
    second, first = rows
    assert first["subject"] == "Question 1"
    assert first["status"] == "new"
    assert first["requester"] == {"email": "c1@example.org", "name": "Customer 1"}
    assert first["message_ids"] == ["m1@example.org", "m3@example.org"]  # oldest first, bare
    assert second["message_ids"] == ["m2@example.org"]
    assert first["category"] is None and first["priority"] is None
    assert first["assignee"] is None and first["mailbox"] is None
    for key in ("created_at", "updated_at", "last_message_at"):
        assert datetime.fromisoformat(first[key]).utcoffset() == timedelta(0)
    # Imported mail keeps its Date header as its arrival time.
    assert datetime.fromisoformat(first["created_at"]) == START + timedelta(hours=1)
    assert datetime.fromisoformat(first["last_message_at"]) == START + timedelta(hours=3)

    text_out = cli("tickets", "list").stdout.splitlines()
    assert len(text_out) == 3  # a header row, then a line per ticket
    assert text_out[0].split()[:3] == ["#", "status", "priority"]
    assert text_out[1].startswith("2  new ") and "Question 2" in text_out[1]
    assert "c1@example.org" in text_out[2] and "Question 1" in text_out[2]

    shown = cli.json("tickets", "show", "1")
    assert {k: shown[k] for k in ("number", "subject", "message_ids")} == {
        "number": 1,
        "subject": "Question 1",
        "message_ids": ["m1@example.org", "m3@example.org"],
    }
    messages = shown["messages"]
    assert [m["message_id"] for m in messages] == ["m1@example.org", "m3@example.org"]
    assert messages[0]["thread_rule"] == "new"
    assert messages[1]["thread_rule"] == "in-reply-to"
    assert messages[1]["thread_reason"]
    assert messages[1]["in_reply_to"] == "m1@example.org"
    assert messages[0]["from"] == {"email": "c1@example.org", "name": "Customer 1"}
    assert messages[0]["text"].strip() == "Body of message 1."
    assert messages[0]["to"] == [{"email": "support@example.com", "name": ""}]
    assert messages[0]["attachments"] == []

    shown_text = cli("tickets", "show", "1").stdout
    assert shown_text.startswith("Ticket #1: Question 1\n")
    assert "Body of message 1." in shown_text and "[threaded by in-reply-to: " in shown_text


def test_import_twice_stores_nothing_new(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(tmp_path / "mail", {f"{n}.eml": mail(n) for n in range(4)})
    assert "4 stored, 0 already stored; 4 new ticket(s)" in ready("import", str(folder)).stdout
    again = ready("import", str(folder)).stdout
    assert "read 4 message(s): 0 stored, 4 already stored; 0 new ticket(s)" in again
    assert len(ready.json("tickets", "list")) == 4


def test_import_mbox(ready: Cli, tmp_path: Path) -> None:
    path = tmp_path / "archive.mbox"
    box = mailbox.mbox(path)
    for raw in (mail(1), mail(2), mail(3, reply_to=2, sender="c2@example.org")):
        box.add(mailbox.mboxMessage(raw))
    box.close()
    out = ready("import", str(path)).stdout
    assert "read 3 message(s): 3 stored" in out and "2 new ticket(s), 1 added" in out
    rows = ready.json("inbound", "list")
    assert sorted(r["origin"] for r in rows) == [f"{path}#{i}" for i in (1, 2, 3)]


def test_import_maildir_with_mailbox(ready: Cli, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in (1, 2):
        box.add(mailbox.MaildirMessage(mail(n)))
    (tmp_path / "Maildir" / "tmp" / "partial").write_bytes(mail(9))
    out = ready("import", str(tmp_path / "Maildir"), "--mailbox", "support").stdout
    assert "read 2 message(s): 2 stored" in out
    rows = ready.json("tickets", "list")
    assert [r["mailbox"] for r in rows] == ["support", "support"]
    assert sorted(r["message_ids"][0] for r in rows) == ["m1@example.org", "m2@example.org"]


def test_import_unknown_mailbox(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(tmp_path / "mail", {"1.eml": mail(1)})
    line = assert_one_line_error(ready("import", str(folder), "--mailbox", "sales", code=1).stderr)
    assert "no mailbox named 'sales'" in line and "known: support" in line
    assert str(ready.config) in line
    assert ready.json("inbound", "list") == []


def test_import_non_mail_file(ready: Cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Dear diary,\ntoday nothing.\n")
    line = assert_one_line_error(ready("import", str(notes), code=1).stderr)
    assert f"{notes}: neither a message" in line
    line = assert_one_line_error(ready("import", str(tmp_path / "absent"), code=1).stderr)
    assert "absent: no such file or directory" in line


def test_import_says_which_files_were_not_mail(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(tmp_path / "mail", {"1.eml": mail(1)})
    (folder / "notes.txt").write_text("Dear diary,\ntoday nothing.\n")
    out = ready("import", str(folder)).stdout
    assert "read 1 message(s)" in out
    assert f"skipped 1 file(s) that are not mail: {folder / 'notes.txt'}" in out


def test_tickets_list_pages_only_the_table(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(tmp_path / "mail", {f"{n:03}.eml": mail(n) for n in range(150)})
    assert "150 new ticket(s)" in ready("import", str(folder)).stdout
    # JSON (and CSV/TSV) for scripts: every ticket unless --limit says otherwise.
    rows = ready.json("tickets", "list")
    assert [r["number"] for r in rows] == list(range(150, 0, -1))
    assert {r["message_ids"][0] for r in rows} == {f"m{n}@example.org" for n in range(150)}
    # The table for people: 50, and a line saying how to see the rest.
    lines = ready("tickets", "list").stdout.splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[-1].startswith("50 of 150 tickets shown; 100 more")
    assert len(ready("tickets", "list", "--limit", "0").stdout.splitlines()) == 1 + 150


# --- tickets ---------------------------------------------------------------------------


def test_tickets_status_filter(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(
        tmp_path / "mail",
        {
            "1.eml": mail(1),
            "2.eml": mail(2),
            "3.eml": mail(3),
            # Customer 2 answering (anyone else's reply would open a related ticket).
            "4.eml": mail(4, reply_to=2, sender="c2@example.org"),
        },
    )
    ready("import", str(folder))
    db = ready.database()
    with db.transaction() as session:
        session.execute(update(Ticket).where(Ticket.id == 2).values(status="solved"))
    db.dispose()
    solved = ready.json("tickets", "list", "--status", "solved")
    assert [r["number"] for r in solved] == [2]
    assert solved[0]["message_ids"] == ["m2@example.org", "m4@example.org"]
    assert [r["number"] for r in ready.json("tickets", "list", "--status", "new")] == [3, 1]
    assert ready.json("tickets", "list", "--status", "closed") == []
    assert ready("tickets", "list", "--status", "closed").stdout == "no tickets\n"
    line = assert_one_line_error(ready("tickets", "list", "--status", "done", code=1).stderr)
    assert "unknown ticket status 'done'" in line and "new, open, pending, solved, closed" in line


def test_empty_ticket_list(ready: Cli) -> None:
    assert ready("tickets", "list").stdout == "no tickets\n"
    assert ready.json("tickets", "list") == []


def test_unknown_ticket_number(ready: Cli) -> None:
    line = assert_one_line_error(ready("tickets", "show", "42", code=1).stderr)
    assert "no ticket #42" in line
    assert_one_line_error(ready("tickets", "show", "42", "--json", code=1).stderr)


def test_tickets_show_needs_a_number(ready: Cli) -> None:
    result = ready("tickets", "show", "abc", code=2)
    assert "'abc' is not a valid ticket number" in result.stderr


# --- inbound and quarantine ----------------------------------------------------------------


def test_quarantine_list_and_retry_again(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(
        tmp_path / "mail", {"good.eml": mail(1), "nofrom.eml": mail(2, with_from=False)}
    )
    out = ready("import", str(folder)).stdout
    assert "1 new ticket(s), 0 added to tickets, 1 quarantined" in out

    header, listed, *note = ready("inbound", "list", "--quarantined").stdout.splitlines()
    reason = " ".join(line.strip() for line in note)  # wrapped to the width, never cut
    assert header.split() == ["id", "status", "from", "subject"]
    assert "quarantined" in listed and "(no From)" in listed and "Question 2" in listed
    assert reason.strip() == (
        "reason: sender: no sender address: From, Sender and Reply-To are all missing or unreadable"
    )
    rows = ready.json("inbound", "list", "--quarantined")
    assert len(rows) == 1
    raw_id = rows[0]["id"]
    assert rows[0]["reason"].startswith("sender: ")
    assert rows[0]["attempts"] == 1
    assert len(ready.json("inbound", "list")) == 2
    assert ready.json("inbound", "list", "--pending") == []

    line = assert_one_line_error(ready("inbound", "retry", code=1).stderr)
    assert "--all" in line

    retried = ready("inbound", "retry", "--all").stdout
    assert "retried 1: 0 processed, 1 quarantined again" in retried
    assert f"still quarantined: {raw_id}" in retried
    (row,) = ready.json("inbound", "list", "--quarantined")
    assert row["attempts"] == 2 and row["reason"].startswith("sender: ")

    line = assert_one_line_error(ready("inbound", "retry", "99999", code=1).stderr)
    assert line == (
        "postdesk: error: no inbound message 99999 (see `postdesk inbound list`); "
        "nothing was retried"
    )


def test_retry_processes_a_message_once_the_cause_is_fixed(ready: Cli, tmp_path: Path) -> None:
    # Attachments go under data_dir/attachments; a plain file there makes saving fail.
    blocker = ready.config.parent / "data" / "attachments"
    blocker.write_text("in the way")
    folder = eml_folder(tmp_path / "mail", {"1.eml": mail(1, attachment=b"%PDF-1.4 test")})
    assert "0 new ticket(s), 0 added to tickets, 1 quarantined" in (
        ready("import", str(folder)).stdout
    )
    (row,) = ready.json("inbound", "list", "--quarantined")
    assert row["reason"].startswith("file: ")
    assert ready.json("tickets", "list") == []

    blocker.unlink()
    out = ready("inbound", "retry", str(row["id"])).stdout
    assert "retried 1: 1 processed, 0 quarantined again" in out
    assert ready.json("inbound", "list", "--quarantined") == []
    (ticket,) = ready.json("tickets", "list")
    assert ticket["message_ids"] == ["m1@example.org"]
    (message,) = ready.json("tickets", "show", str(ticket["number"]))["messages"]
    (attachment,) = message["attachments"]
    assert attachment["filename"] == "a.pdf" and attachment["size"] == len(b"%PDF-1.4 test")
    stored = ready.config.parent / "data" / "attachments" / attachment["path"]
    assert stored.read_bytes() == b"%PDF-1.4 test"


def test_retry_of_a_message_quarantined_by_an_old_bug(ready: Cli, tmp_path: Path) -> None:
    # Stored but never processed (pending), then set aside as a since-fixed bug would have.
    ready("import", str(eml_folder(tmp_path / "mail", {"1.eml": mail(1)})))
    db = ready.database()
    with db.transaction() as session:
        session.execute(text("DELETE FROM ticket_events"))
        session.execute(text("DELETE FROM messages"))
        session.execute(text("DELETE FROM tickets"))
        session.execute(
            update(RawMessage).values(status=RawStatus.QUARANTINED, reason="parse: old bug")
        )
    db.dispose()
    assert ready.json("tickets", "list") == []
    assert "old bug" in ready("inbound", "list", "--quarantined").stdout
    out = ready("inbound", "retry", "--all").stdout
    assert "retried 1: 1 processed, 0 quarantined again" in out
    rows = ready.json("inbound", "list")
    assert [(r["status"], r["reason"]) for r in rows] == [("processed", None)]
    assert [t["message_ids"] for t in ready.json("tickets", "list")] == [["m1@example.org"]]


def test_inbound_list_when_empty(ready: Cli) -> None:
    assert ready("inbound", "list").stdout == "nothing to show\n"


# --- run -----------------------------------------------------------------------------------


def test_run_without_mailboxes_is_an_error(tmp_path: Path, sqlite_url: str) -> None:
    cli = Cli(write_config(tmp_path, sqlite_url))
    cli("init")
    line = assert_one_line_error(cli("run", "--once", code=1).stderr)
    assert f"{cli.config}: no [[mailbox]] configured" in line


def test_run_once_reports_a_mailbox_it_cannot_log_in_to(ready: Cli) -> None:
    # The password variable is unset: the secret is read only now, and the pass says so.
    result = ready.runner.invoke(main, ["-c", str(ready.config), "run", "--once"])
    assert result.exit_code == 1  # every mailbox failed
    assert "fetched 0 new message(s)" in result.stdout
    assert "POSTDESK_TEST_NEVER_SET is not set" in result.stderr
    assert "password_env" in result.stderr
    assert "Traceback" not in result.stderr


def test_tickets_merge(ready: Cli, tmp_path: Path) -> None:
    folder = eml_folder(tmp_path / "mail", {"1.eml": mail(1), "2.eml": mail(2)})
    ready("import", str(folder))
    out = ready("tickets", "merge", "1", "2").stdout
    assert "merged #2 into #1 (1 message(s) moved); #2 is closed" in out
    assert [t["status"] for t in ready.json("tickets", "list")] == ["closed", "new"]
    line = assert_one_line_error(ready("tickets", "merge", "1", "1", code=1).stderr)
    assert "cannot merge ticket #1 into itself" in line
