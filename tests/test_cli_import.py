"""`postdesk import`: Ctrl-C in a real process, --dry-run, progress lines, skipped files,
empty sources."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postdesk.models import RawMessage, RawStatus, Ticket
from postdesk.testing.cli import Cli, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail

REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def message(n: int) -> bytes:
    return bytes(
        Mail(
            sender=f"Customer {n} <c{n}@example.org>",
            to="support@example.com",
            subject=f"Question {n}",
            message_id=f"m{n}@example.org",
            date=START + timedelta(minutes=n),
            body=f"Body of message {n}.\n",
        )
    )


def folder_of(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (directory / f"{n:05}.eml").write_bytes(message(n))
    return directory


@pytest.fixture
def ready(tmp_path: Path, sqlite_url: str) -> Cli:
    cli = Cli(write_config(tmp_path, sqlite_url))
    cli("init")
    return cli


def counts(cli: Cli) -> tuple[dict[str, int], int]:
    db = cli.database()
    try:
        with db.read_session() as session:
            rows = session.execute(
                select(RawMessage.status, func.count()).group_by(RawMessage.status)
            ).all()
            tickets = session.execute(select(func.count()).select_from(Ticket)).scalar_one()
    finally:
        db.dispose()
    return {status: n for status, n in rows}, tickets


# --- Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_says_what_is_left_exits_130_and_a_rerun_finishes(
    ready: Cli, tmp_path: Path
) -> None:
    total = 150
    folder = folder_of(tmp_path / "mail", total)
    env = {k: v for k, v in os.environ.items() if k != "POSTDESK_CONFIG"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "postdesk", "-c", str(ready.config), "import", str(folder)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    # Not a terminal: one line per stage. Interrupt as soon as processing begins.
    stage = proc.stderr.readline()
    assert stage.startswith(f"import: read and stored {total} message(s)"), stage
    time.sleep(0.1)  # some processed, most not: the machine's speed decides how many
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    assert f"read {total} message(s): {total} stored, 0 already stored" in stdout
    (interrupted,) = [line for line in stderr.splitlines() if "interrupted" in line]
    found = re.search(r"(\d+) stored message\(s\) not yet processed", interrupted)
    assert found is not None, interrupted
    assert interrupted.startswith("postdesk: interrupted: ")
    assert "Run the same command again to finish" in interrupted
    assert "not read" not in interrupted  # stopped while processing: all was read
    left = int(found.group(1))
    statuses, tickets = counts(ready)
    assert 0 < left <= total
    assert statuses.get(RawStatus.PENDING, 0) == left
    assert tickets == total - left == statuses.get(RawStatus.PROCESSED, 0)

    # The same command again stores nothing twice and processes the rest.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"read {total} message(s): 0 stored, {total} already stored" in again.stdout
    assert f"{left} new ticket(s)" in again.stdout
    statuses, tickets = counts(ready)
    assert statuses == {RawStatus.PROCESSED: total}
    assert tickets == total


# --- dry run, stages, skipped and empty sources ----------------------------------------------


def test_dry_run_counts_and_writes_nothing(ready: Cli, tmp_path: Path) -> None:
    folder = folder_of(tmp_path / "mail", 5)
    (folder / "copy.eml").write_bytes(message(0))  # the same mail twice
    out = ready("import", str(folder), "--dry-run").stdout
    assert "dry run: read 6 message(s): 5 would be stored, 1 already stored" in out
    assert counts(ready) == ({}, 0)
    ready("import", str(folder_of(tmp_path / "some", 2)))
    out = ready("import", str(folder), "--dry-run").stdout
    assert "read 6 message(s): 3 would be stored, 3 already stored" in out
    assert counts(ready)[1] == 2


def test_stages_are_lines_on_stderr_when_not_a_terminal(ready: Cli, tmp_path: Path) -> None:
    result = ready("import", str(folder_of(tmp_path / "mail", 3)))
    stages = result.stderr.splitlines()
    assert stages[0].startswith("import: read and stored 3 message(s) from ")
    assert stages[0].endswith("; processing 3 new")
    assert re.fullmatch(r"import: processed 3 message\(s\) in \d+\.\d s", stages[1])
    assert result.stdout.startswith("read 3 message(s): 3 stored")


def test_skipped_files_first_three_then_all_with_v(ready: Cli, tmp_path: Path) -> None:
    folder = folder_of(tmp_path / "mail", 1)
    names = ["README.txt", "a.txt", "b.txt", "c.txt", "empty.eml"]
    for name in names[:-1]:
        (folder / name).write_text("Dear diary,\ntoday nothing.\n")
    (folder / "empty.eml").write_bytes(b"")
    out = ready("import", str(folder)).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("skipped")]
    assert line == (
        f"skipped 5 file(s) that are not mail: {folder / 'README.txt'}, {folder / 'a.txt'}, "
        f"{folder / 'b.txt'} and 2 more (-v lists them all)"
    )
    out = ready("-v", "import", str(folder)).stdout
    listed = out.split("skipped 5 file(s) that are not mail:\n", 1)[1].splitlines()
    assert listed == [
        f"  {folder / 'README.txt'}",
        f"  {folder / 'a.txt'}",
        f"  {folder / 'b.txt'}",
        f"  {folder / 'c.txt'}",
        f"  {folder / 'empty.eml'} (empty)",
    ]


def test_empty_folder_file_and_folder_without_mail_are_errors(ready: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_one_line_error(ready("import", str(empty), code=1).stderr)
    assert line == f"postdesk: error: nothing to import in {empty}: no files in it"
    blank = tmp_path / "blank.eml"
    blank.write_bytes(b"")
    line = assert_one_line_error(ready("import", str(blank), code=1).stderr)
    assert line == f"postdesk: error: {blank}: the file is empty; there is nothing to import"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("hello\n")
    line = assert_one_line_error(ready("import", str(notes), code=1).stderr)
    assert line == (
        f"postdesk: error: nothing to import in {notes}: 1 file(s), none of them mail (README.txt)"
    )
    line = assert_one_line_error(ready("import", str(empty), "--dry-run", code=1).stderr)
    assert "nothing to import in" in line


def test_a_terminal_gets_a_progress_display(ready: Cli, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect", reason="pexpect (a dev dependency) drives a pty")
    folder = folder_of(tmp_path / "mail", 30)
    env = {k: v for k, v in os.environ.items() if k != "POSTDESK_CONFIG"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["TERM"] = "xterm"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "postdesk", "-c", str(ready.config), "import", str(folder)],
        env=env,
        dimensions=(24, 100),
        timeout=120,
        encoding="utf-8",
    )
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    assert "reading and storing" in output and "processing" in output
    assert "30/30" in output  # the bars' counts
    assert "import: read and stored" not in output  # the stage lines are for logs
    assert "read 30 message(s): 30 stored" in output
