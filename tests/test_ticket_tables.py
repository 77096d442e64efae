"""`tickets list` and `tickets show` as people read them: English and Persian tickets at
80 and 120 columns — headers, alignment measured in terminal cells, shortening, right-to-
left isolation, and no control character from mail reaching the terminal; the filters,
formats and columns of `tickets list`.

Alignment is measured with rich's `cell_len` (what a terminal gives each character: two
cells for a CJK letter, none for a combining mark, ZWNJ or an isolation mark).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from postdesk.cli import main
from postdesk.clikit import terminal_safe
from postdesk.models.db import Database
from postdesk.testing.cli import CLEAN_ENV, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Attachment, Mail
from postdesk.tickets.lifecycle import apply_triage
from postdesk.tickets.render import FSI, PDI, Screen, describe_event, render_table, screen

NOW = datetime.now(UTC).replace(microsecond=0)
LONG_SUBJECT = (
    "Invoice 2026-0042 was charged twice on my corporate card and the refund that support "
    "promised last week never arrived, please escalate"
)
PERSIAN_SUBJECT = "درخواست لغو اشتراک (89788)"
PERSIAN_BODY = "سلام، لطفاً اشتراک شمارهٔ ۸۹۷۸۸ را لغو کنید (از تاریخ ۱۴۰۵/۰۹/۱۴). ممنون"
LONG_ADDRESS = "accounts-payable.department.of.finance@very-long-subsidiary.example.org"
HOSTILE = (
    "Look \x1b]52;c;cm0gLXJmIH4K\x07here\x1b[2J\x1b[H and "
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\ \u202eevil\u202c end\r\nnext\x00"
)


def _mail(number: int, **fields: Any) -> bytes:
    values: dict[str, Any] = {
        "sender": f"Customer {number} <c{number}@example.org>",
        "to": "support@example.com",
        "subject": f"Question {number}",
        "message_id": f"m{number}@example.org",
        "date": NOW - timedelta(hours=30 - number),
        "body": f"Body of message {number}.\n",
    }
    values.update(fields)
    return bytes(Mail(**values))


@pytest.fixture
def desk(tmp_path: Path, sqlite_url: str) -> Iterator[Desk]:
    yield make_desk(tmp_path, sqlite_url)


@pytest.fixture
def any_desk(tmp_path: Path, db_url: str) -> Iterator[Desk]:
    """The same tickets on SQLite and on PostgreSQL (the filters are SQL)."""
    yield make_desk(tmp_path, db_url)


def make_desk(tmp_path: Path, url: str) -> Desk:
    """English, Persian, hostile, wide-letter tickets; #5 merged into #1; #2 unsure."""
    config = write_config(tmp_path, url, top='display_timezone = "Asia/Tehran"')
    d = Desk(config)
    d("init")
    folder = tmp_path / "mail"
    folder.mkdir()
    messages = {
        # 1: English, long subject and address, a reply quoting it, an attachment.
        "1.eml": _mail(
            1,
            sender=f"Pat Example <{LONG_ADDRESS}>",
            subject=LONG_SUBJECT,
            body="We were charged twice.\nPlease refund one of them.\n",
            attachments=[Attachment("statement.pdf", b"%PDF-1.4 statement")],
        ),
        "2.eml": _mail(
            2,
            sender=f"Pat Example <{LONG_ADDRESS}>",
            subject=f"Re: {LONG_SUBJECT}",
            in_reply_to="m1@example.org",
            references=["m1@example.org"],
            body=(
                "Any news on this?\n\nOn Monday, Pat Example wrote:\n"
                "> We were charged twice.\n> Please refund one of them.\n"
            ),
        ),
        # 3: Persian.
        "3.eml": _mail(3, subject=PERSIAN_SUBJECT, body=PERSIAN_BODY + "\n"),
        # 4: escape sequences in the subject, the body and the sender's name.
        "4.eml": _mail(
            4,
            sender="Mallory \x1b[31mRed <mallory@example.net>",
            subject="Help \x1b]0;owned\x07 \x1b[2Jnow",
            body=HOSTILE,
        ),
        # 5: no Message-ID; wide (CJK) letters.
        "5.eml": _mail(
            5, message_id=None, subject="請求書の再発行をお願いします 請求書番号 123456"
        ),
        # 6: will be merged into 1.
        "6.eml": _mail(6, subject="Charged twice (second ticket)"),
    }
    for name, raw in messages.items():
        (folder / name).write_bytes(raw)
    d("import", str(folder))
    db = d.database()
    with db.transaction() as session:
        apply_triage(
            session.connection(),
            2,
            {"needs_triage": True, "category_probability": 0.41, "category_model": "v3"},
            [
                (
                    "category",
                    {
                        "to": None,
                        "source": "model",
                        "model": "v3",
                        "probability": 0.41,
                        "suggestion": "billing",
                        "confident": False,
                    },
                )
            ],
        )
    db.dispose()
    d("tickets", "set", "1", "--priority", "high", "--category", "billing", "--as", "lead@x.org")
    d("tickets", "merge", "1", "5")
    return d


class Desk:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, width: int = 100) -> Result:
        env = {**CLEAN_ENV, "COLUMNS": str(width), "NO_COLOR": None}
        result = self.runner.invoke(main, ["-c", str(self.config), *args], env=env)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    def database(self) -> Database:
        from postdesk.config import load_settings

        return Database(load_settings(self.config).database.url)


def cells(line: str) -> list[str]:
    """The line as terminal cells: a wide letter fills two, zero-width ones join the cell
    before them (the isolation marks, which take no cell, are left out)."""
    out: list[str] = []
    for ch in line.replace(FSI, "").replace(PDI, ""):
        size = cell_len(ch)
        if size == 0 and out:
            out[-1] += ch
        elif size == 0:
            out.append(ch)
        else:
            out.extend([ch] + [""] * (size - 1))
    return out


def assert_no_controls(text: str) -> None:
    bad = {
        ch
        for ch in text
        if ch not in "\n\t"
        and (unicodedata.category(ch) == "Cc" or ch in "\u202a\u202b\u202c\u202d\u202e")
    }
    assert not bad, sorted(map(hex, map(ord, bad)))
    assert "\x1b" not in text


def column_edges(header: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """Where each header word starts and ends, in cells."""
    found, at = {}, 0
    for name in names:
        start = header.index(name, at)
        found[name] = (cell_len(header[:start]), cell_len(header[:start]) + cell_len(name))
        at = start + len(name)
    return found


@pytest.mark.parametrize("width", [80, 120, 150])
def test_list_fits_aligns_and_isolates(desk: Desk, width: int) -> None:
    out = desk("tickets", "list", width=width).stdout
    lines = out.splitlines()
    header = lines[0]
    names = ["#", "status", "priority", "category", "requester"]
    names += ["assignee", "age"] if width >= 100 else ["age"]
    if width >= 140:
        names += ["updated (+0330)", "msgs"]
    names.append("subject")
    edges = column_edges(header, names)
    rows = lines[1:6]
    right = {"#", "age", "msgs"}
    for line in [header, *rows]:
        assert cell_len(line) <= width, (width, line)
        assert line.count(FSI) == line.count(PDI)
        grid = cells(line)
        for name, (start, end) in edges.items():
            if name in right:
                # Right-aligned: the cell under the header's last letter has text.
                assert grid[end - 1].strip(), (name, line)
            else:
                assert grid[start].strip(), (name, line)
                if start >= 2:
                    assert grid[start - 1] == " " and grid[start - 2] == " ", (name, line)
    # Newest first: the merged-away #5 is listed too (closed).
    assert [int(line.split()[0]) for line in rows] == [5, 4, 3, 2, 1]
    by_number = {int(line.split()[0]): line for line in rows}
    assert "closed" in by_number[5]
    # Shortened subject and address, never wrapped onto a second line.
    english = by_number[1]
    assert english.endswith("…") and LONG_SUBJECT[:20] in english
    assert LONG_ADDRESS not in english and LONG_ADDRESS[:10] in english
    assert "high" in english and "billing" in english
    # The Persian subject is isolated whole, brackets and number inside the marks.
    persian = by_number[2]
    inside = persian.split(FSI, 1)[1].split(PDI, 1)[0]
    assert inside.startswith("درخواست") and (width < 100 or inside == PERSIAN_SUBJECT)
    assert re.search(r"\s\?\s", persian)  # needs triage: a person must set the category
    assert "? = not set yet" in out
    # Wide letters take two cells each and are cut to fit.
    assert "請求書" in by_number[4]
    if width >= 140:
        # Messages counted, also one without a Message-ID; times in the display zone.
        assert re.search(r"\s1\s", by_number[4].split("-", 2)[-1])
        assert re.search(r"\s3\s", by_number[1].split("-", 2)[-1])
        (first,) = [
            r for r in json.loads(desk("tickets", "list", "--json").stdout) if r["number"] == 1
        ]
        tehran = datetime.fromisoformat(first["updated_at"]).astimezone(_tehran())
        assert tehran.strftime("%Y-%m-%d %H:%M") in by_number[1]
    assert_no_controls(out)


def _tehran() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Tehran")


@pytest.mark.parametrize("width", [80, 120])
def test_show_english_and_persian(desk: Desk, width: int, tmp_path: Path) -> None:
    shown = desk("tickets", "show", "1", width=width).stdout
    assert shown.startswith("Ticket #1: ")
    # Message text is wrapped to the width (header lines keep whole addresses; the
    # terminal folds them).
    for line in shown.splitlines():
        assert cell_len(line) <= width or not line.startswith("  ") or "stored at" in line
    # The visible reply only; --full adds the quoted history.
    assert "Any news on this?" in shown and "> We were charged twice." not in shown
    assert "[quoted text or signature hidden; --full shows it]" in shown
    full = desk("tickets", "show", "1", "--full", width=width).stdout
    assert "> We were charged twice." in full
    # Who, when (local, with offset) and how it was threaded.
    assert f"from Pat Example <{LONG_ADDRESS}>" in shown
    assert "[opened the ticket]" in shown and "[threaded by in-reply-to" in shown
    assert "+0330" in shown
    # The attachment with where it is stored.
    match = re.search(
        r"\[attachment: statement\.pdf, application/pdf, 18 bytes\]\n +stored at (.+)\n", shown
    )
    assert match, shown
    assert Path(match.group(1)).read_bytes() == b"%PDF-1.4 statement"
    # The merge: both sides say so; history in words.
    assert "Merged into this one: #5" in shown
    history = " ".join(shown.split("\nHistory\n", 1)[1].split())
    assert "priority set to high by a person" in history and "category set to billing" in history
    gone = desk("tickets", "show", "5", width=width).stdout
    assert "Status: closed, merged into #1" in gone
    assert "This ticket was merged into #1" in gone
    # Persian: each shown line of right-to-left text isolated; wrapped to the width.
    persian = desk("tickets", "show", "2", width=width).stdout
    assert f"Ticket #2: {FSI}{PERSIAN_SUBJECT}{PDI}" in persian
    body = [line for line in persian.splitlines() if "اشتراک" in line and "Ticket" not in line]
    assert body and all(line.strip().startswith(FSI) and line.endswith(PDI) for line in body)
    assert "".join(line.strip()[1:-1] + " " for line in body).split() == PERSIAN_BODY.split()
    assert all(cell_len(line) <= width for line in body)
    # The model's unsure guess in the history, in words and in --json.
    history = " ".join(persian.split("\nHistory\n", 1)[1].split())
    assert "category: v3 guessed billing (p=0.41, unsure: left to a person)" in history
    data = json.loads(desk("tickets", "show", "2", "--json").stdout)
    guesses = [e for e in data["events"] if e["kind"] == "category"]
    assert guesses and guesses[0]["data"]["suggestion"] == "billing"
    assert "unsure" in guesses[0]["summary"]
    # Mail with escape sequences: none reaches the terminal, the words do.
    hostile = desk("tickets", "show", "3", width=width).stdout
    assert "Look here and click evil end\n  next" in hostile
    assert "evil.example" not in hostile and "cm0gLXJmIH4K" not in hostile
    for text in (shown, full, persian, hostile, gone):
        assert_no_controls(text)


def test_colours_only_on_a_terminal_and_without_no_color(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = json.loads(desk("tickets", "list", "--json").stdout)
    coloured = render_table(rows, ["number", "status", "subject"], Screen(80, True, UTC, NOW))
    assert "\x1b[" in coloured
    plain = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;]*m", "", coloured).splitlines()]
    uncoloured = render_table(rows, ["number", "status", "subject"], Screen(80, False, UTC, NOW))
    assert plain == uncoloured.splitlines() and "\x1b" not in uncoloured

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert screen(UTC, NOW).color
    monkeypatch.setenv("NO_COLOR", "1")
    assert not screen(UTC, NOW).color
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.delenv("NO_COLOR")
    assert not screen(UTC, NOW).color


def test_list_filters_sort_and_pages(any_desk: Desk) -> None:
    desk = any_desk

    def numbers(*args: str) -> list[int]:
        return [r["number"] for r in json.loads(desk("tickets", "list", *args, "--json").stdout)]

    everything = [5, 4, 3, 2, 1]
    assert numbers() == everything
    assert numbers("--status", "closed") == [5]
    assert numbers("--status", "new,closed") == everything
    assert numbers("--status", "new", "--status", "closed") == everything
    assert numbers("--requester", "very-long-subsidiary") == [1]
    assert numbers("--requester", "@EXAMPLE.org") == [5, 4, 2]
    assert numbers("--category", "Billing") == [1]
    assert numbers("--priority", "high") == [1]
    assert numbers("--needs-triage") == [2]
    assert numbers("--assignee", "none") == everything
    assert numbers("--assignee", "someone@") == []
    assert numbers("--sort", "number") == [1, 2, 3, 4, 5]
    assert numbers("--sort", "-priority")[-1] == 1 and numbers("--sort", "priority")[0] == 1
    assert numbers("--limit", "2", "--offset", "1") == [4, 3]
    # 26 h 10 min before NOW (taken at import: a long test run has moved the clock on).
    since = 1570 + int((datetime.now(UTC) - NOW).total_seconds() // 60)
    assert numbers("--since", f"{since}m") == [5, 4, 3]
    assert numbers("--since", (NOW - timedelta(hours=27, minutes=30)).isoformat()) == [5, 4, 3, 2]
    assert numbers("--until", "2000-01-01") == []
    today = datetime.now(_tehran()).strftime("%Y-%m-%d")
    assert numbers("--until", today) == everything  # a date includes that whole day
    # A page of a table says what is left.
    table = desk("tickets", "list", "--limit", "2").stdout
    assert "2 of 5 tickets shown; 3 more" in table and "--offset 2" in table
    assert len(table.splitlines()) == 1 + 2 + 1
    # Formats and columns; --json stays an alias of --format json.
    assert (
        desk("tickets", "list", "--json").stdout
        == desk("tickets", "list", "--format", "json").stdout
    )
    picked = json.loads(
        desk("tickets", "list", "--format", "json", "--columns", "number,messages,subject").stdout
    )
    assert picked[-1] == {"number": 1, "messages": 3, "subject": LONG_SUBJECT}
    rows = list(csv.reader(io.StringIO(desk("tickets", "list", "--format", "csv").stdout)))
    assert rows[0][:3] == ["number", "status", "priority"] and len(rows) == 6
    assert [r[rows[0].index("subject")] for r in rows if r[0] == "1"] == [LONG_SUBJECT]
    tsv = desk("tickets", "list", "--format", "tsv", "--columns", "number,requester").stdout
    assert tsv.splitlines()[0] == "number\trequester"
    assert f"1\t{LONG_ADDRESS}" in tsv.splitlines()
    assert_no_controls(tsv)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--sort", "size"], "cannot sort by 'size'"),
        (["--columns", "number,colour"], "unknown column 'colour'"),
        (["--since", "yesterday"], "--since 'yesterday': expected a date"),
        (["--status", "done"], "unknown ticket status 'done'"),
        (["--priority", "hgh"], "unknown priority 'hgh'; [triage] priority_levels: low,"),
        (["--mailbox", "sales"], "no mailbox named 'sales'"),
    ],
)
def test_list_bad_options_are_one_line(desk: Desk, args: list[str], words: str) -> None:
    result = desk("tickets", "list", *args, code=1)
    assert words in assert_one_line_error(result.stderr)


def test_show_of_a_number_beyond_any_ticket_is_one_line(desk: Desk) -> None:
    # A number beyond any ticket id is a usage error (click's range check, exit 2).
    result = desk("tickets", "show", "99999999999999999999", code=2)
    assert "99999999999999999999 is not in the range" in result.stderr


def test_terminal_safe() -> None:
    assert terminal_safe(HOSTILE) == "Look here and click evil end\nnext"
    assert terminal_safe("tab\tand\nnewline, ZWNJ می‌خواهم") == "tab\tand\nnewline, ZWNJ می‌خواهم"
    # Linear on a long run of unterminated sequences.
    assert terminal_safe("\x1b]" + "a" * 100_000) == ""
    assert terminal_safe("\x1b[" * 50_000) == ""


def test_history_in_words() -> None:
    emails = {7: "sara@example.com"}
    said = {
        kind: describe_event(kind, "postdesk", data, emails)
        for kind, data in (
            ("created", {"follow_up": 3}),
            ("status", {"from": "new", "to": "pending", "why": "replied"}),
            ("assigned", {"from": None, "to": 7}),
            ("merged", {"from": 9, "messages": 2}),
            ("csat", {"score": 2, "comment": "slow\x1b[2J"}),
        )
    }
    assert said == {
        "created": "opened as a follow-up of #3",
        "status": "status new -> pending (replied)",
        "assigned": "assigned nobody -> sara@example.com",
        "merged": "ticket #9 merged into this one (2 message(s) moved)",
        "csat": "satisfaction 2/5: slow",
    }
    model = {"to": "billing", "source": "model", "model": "c-2", "probability": 0.93,
             "suggestion": "billing", "confident": True}  # fmt: skip
    assert describe_event("category", "postdesk", model, {}) == (
        "category: c-2 set billing (p=0.93, confident)"
    )
    rule = {"to": "urgent", "source": "rule:keyword:urgent",
            "model_suggestion": {"model": "p-1", "label": "low", "probability": 0.4,
                                 "confident": False}}  # fmt: skip
    assert describe_event("priority", "postdesk", rule, {}) == (
        "priority urgent by rule:keyword:urgent; "
        "model p-1 guessed low (p=0.40, unsure: left to a person)"
    )
    person = {"from": "low", "to": "low", "source": "human", "confirmed": True}
    assert describe_event("priority", "sara", person, {}) == "priority low confirmed by a person"


def test_inbound_list_prints_no_escape_sequence(tmp_path: Path, sqlite_url: str) -> None:
    # A file name is as much outside text as a header: here it carries a title-setting
    # OSC sequence into `inbound list` (the mail has no From, so it is quarantined).
    desk = Desk(write_config(tmp_path, sqlite_url))
    desk("init")
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "x\x1b]0;owned\x07y.eml").write_bytes(_mail(1, sender=None))
    desk("import", str(folder))
    listed = desk("inbound", "list").stdout
    assert "quarantined" in listed
    assert_no_controls(listed)
    shown = desk("inbound", "show", "1").stdout
    assert "xy.eml" in shown
    assert_no_controls(shown)
