"""Every bad input found trying the CLI as a new user, with its exit status and its one line.

Exit statuses: 1 a user's (or the environment's) error, one line; 2 click's usage errors;
70 a bug (tests/test_cli.py checks the crash report). No traceback reaches the user.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from postdesk.cli import main
from postdesk.testing.cli import CLEAN_ENV, Cli, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail

HUGE = "99999999999999999999"  # beyond any integer column: once an OverflowError


def usage_error(cli: Cli, *args: str) -> str:
    """The `Error: ...` line of a click usage error (exit status 2), no traceback."""
    result = cli(*args, code=2)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "), result.stderr
    return lines[-1]


@pytest.fixture
def ready(tmp_path: Path, sqlite_url: str) -> Cli:
    cli = Cli(write_config(tmp_path, sqlite_url))
    cli("init")
    return cli


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("tickets", "show", HUGE), "NUMBER"),
        (("tickets", "note", HUGE, "text"), "NUMBER"),
        (("tickets", "set", HUGE, "--status", "open"), "NUMBER"),
        (("tickets", "reply", HUGE, "text"), "NUMBER"),
        (("tickets", "merge", "1", HUGE), "SOURCE"),
        (("tickets", "show", "0"), "NUMBER"),
        (("tickets", "show", "--", "-5"), "NUMBER"),
        (("inbound", "show", HUGE), "ID"),
        (("inbound", "retry", HUGE), "[ID]..."),
        (("inbound", "discard", "0"), "ID..."),
        (("outbox", "retry", HUGE), "IDS..."),
        (("inbound", "list", "--limit", "0"), "--limit"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
def test_numbers_out_of_range_are_usage_errors(
    ready: Cli, args: tuple[str, ...], name: str
) -> None:
    line = usage_error(ready, *args)
    assert line.startswith(f"Error: Invalid value for '{name}': "), line
    assert "is not in the range" in line


def test_a_ticket_number_may_be_written_with_its_hash(ready: Cli) -> None:
    line = assert_one_line_error(ready("tickets", "show", "#12", code=1).stderr)
    assert line == "postdesk: error: no ticket #12"


def test_usage_errors_are_exit_status_2(ready: Cli) -> None:
    assert "No such option '--bogus'" in usage_error(ready, "tickets", "list", "--bogus")
    assert "Missing argument 'PATH'" in usage_error(ready, "import")
    assert "'abc' is not a valid ticket number" in usage_error(ready, "tickets", "show", "abc")


def test_user_errors_are_exit_status_1_and_one_line(ready: Cli, tmp_path: Path) -> None:
    cases = {
        ("inbound", "retry", "99999"): (
            "no inbound message 99999 (see `postdesk inbound list`); nothing was retried"
        ),
        ("inbound", "retry"): ("name the messages to retry (ids from `inbound list`) or use --all"),
        ("inbound", "retry", "1", "--all"): "give message ids or --all, not both",
        ("inbound", "show", "5"): "no inbound message 5 (see `postdesk inbound list`)",
        ("inbound", "discard", "5"): (
            "no inbound message 5 (see `postdesk inbound list`); nothing was discarded"
        ),
        ("tickets", "show", "2147483647"): "no ticket #2147483647",
    }
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    blank = tmp_path / "blank.eml"
    blank.write_bytes(b"")
    cases[("import", str(empty))] = f"nothing to import in {empty}: no files in it"
    cases[("import", str(blank))] = f"{blank}: the file is empty; there is nothing to import"
    for args, expected in cases.items():
        line = assert_one_line_error(ready(*args, code=1).stderr)
        assert line == f"postdesk: error: {expected}", args


def read_only_url(url: str) -> str:
    """The same database, opened read-only: SQLite's mode=ro, or PostgreSQL sessions
    whose transactions are read-only (as on a standby)."""
    if url.startswith("sqlite:///"):
        return f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    return url + "%20-cdefault_transaction_read_only%3Don"


def test_a_read_only_database_is_named_as_such(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "rw").mkdir()
    Cli(write_config(tmp_path / "rw", db_url))("init")
    (tmp_path / "ro").mkdir()
    cli = Cli(write_config(tmp_path / "ro", read_only_url(db_url)))
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1.eml").write_bytes(
        bytes(Mail(sender="a@example.org", to="s@example.com", subject="Hi", body="Hello\n"))
    )
    for args in (
        ("init",),
        ("import", str(folder)),
        ("tickets", "note", "1", "x", "--as", "a@b.c"),
    ):
        line = assert_one_line_error(cli(*args, code=1).stderr)
        assert " is read-only for postdesk (" in line, (args, line)
        assert "postdesk must be able to write to it" in line
        assert "[SQL:" not in line and "INSERT INTO" not in line  # no statement shown
    # Reading still works: a read-only copy is fine for looking.
    assert cli("inbound", "list").stdout == "nothing to show\n"


def test_an_unusable_data_dir_is_named_by_every_command_that_writes_there(
    tmp_path: Path, sqlite_url: str
) -> None:
    path = write_config(tmp_path, sqlite_url)
    cli = Cli(path)
    cli("init")
    (tmp_path / "blocker").write_text("a file, not a directory")
    path.write_text(path.read_text().replace('data_dir = "data"', 'data_dir = "blocker/data"'))
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1.eml").write_bytes(
        bytes(Mail(sender="a@example.org", to="s@example.com", subject="Hi", body="Hello\n"))
    )
    for args in (("init",), ("import", str(folder)), ("inbound", "retry", "--all")):
        line = assert_one_line_error(cli(*args, code=1).stderr)
        assert line == (
            f"postdesk: error: {path}: data_dir: cannot write to "
            f"'{tmp_path / 'blocker' / 'data'}' (Not a directory); expected a directory "
            "postdesk may create files in"
        ), args
        assert "key" not in line


def test_the_top_level_help_names_the_exit_statuses() -> None:
    result = CliRunner().invoke(main, ["--help"], env=CLEAN_ENV)
    assert result.exit_code == 0
    assert "Exit status: 0 done, 1 an error of yours" in " ".join(result.output.split())


def test_a_crash_report_goes_to_tmpdir_when_data_dir_is_unusable(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, sqlite_url)
    cli = Cli(path)
    cli("init")
    (tmp_path / "blocker").write_text("a file, not a directory")
    path.write_text(path.read_text().replace('data_dir = "data"', 'data_dir = "blocker/data"'))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # read $TMPDIR again

    def boom(*_args: object, **_kwargs: object) -> None:
        raise ValueError("bad state")

    monkeypatch.setattr("postdesk.ticket_commands.find_tickets", boom)
    line = assert_one_line_error(cli("tickets", "list", code=70).stderr)
    (report,) = scratch.glob("postdesk-crash-*.txt")
    assert f"the traceback is in {report};" in line
    assert "ValueError: bad state" in report.read_text()
