"""`--format table|json|csv|tsv` and `--columns` on every list postdesk prints: `inbound
list`, `outbox list`, `tickets search` and `model list` (`tickets list` is covered by
tests/test_ticket_tables.py).

For each: CSV and TSV parse back to the JSON's rows, `--columns` chooses and orders the
columns in every format, an unknown column is a one-line error (exit 1), `--json` is
`--format json` and unchanged without `--columns`; tables are aligned by display width
with Persian and CJK text at 80 and 120 columns, fit the screen, isolate right-to-left
text, and no control character from mail reaches any output.

The outbox's failed mail is a real SMTP refusal (the sink answers 550 on cue).
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from postdesk.classify.store import ModelStore
from postdesk.classify.training import train_model
from postdesk.cli import main
from postdesk.config import load_settings
from postdesk.daemon import Service
from postdesk.models.db import Database
from postdesk.tables import Field, pick
from postdesk.testing.cli import CLEAN_ENV, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.labelled import CATEGORIES, synthetic
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink
from postdesk.tickets.render import FSI, PDI

PERSIAN = "درخواست لغو اشتراک (89788)"
CJK = "請求書の再発行をお願いします 請求書番号 123456"
LONG = "Invoice 2026-0042 was charged twice on my corporate card and the refund never arrived"
HOSTILE = "Help \x1b]0;owned\x07 \x1b[2Jnow \u202eevil\u202c"
SUBJECTS = [PERSIAN, CJK, LONG, HOSTILE]
AGENT = "sara@agents.example"


class Desk:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, width: int = 100) -> Result:
        env = {**CLEAN_ENV, "COLUMNS": str(width), "NO_COLOR": None}
        result = self.runner.invoke(main, ["-c", str(self.config), *args], env=env)
        assert result.exit_code == code, (result.output, result.exception)
        if code == 1:
            assert_one_line_error(result.stderr)
        return result


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """Persian, CJK, long and hostile mail; one message without a From (quarantined);
    two replies, one refused by the SMTP server (550, failed), one sent; a model."""
    tmp = tmp_path_factory.mktemp("lists")
    with SmtpSink() as sink:
        mailbox = (
            '[[mailbox]]\nname = "support"\naddress = "support@example.com"\n'
            'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
        )
        smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
        agent = f'[[agent]]\nemail = "{AGENT}"\nname = "Sara"\n'
        url = f"sqlite:///{tmp / 'desk.db'}"
        config = write_config(
            tmp, url, mailbox, smtp, agent, top='display_timezone = "Asia/Tehran"'
        )
        d = Desk(config)
        d("init")
        folder = tmp / "mail"
        folder.mkdir()
        for i, subject in enumerate(SUBJECTS):
            mail = Mail(
                sender=f"کاربر {i} <user{i}-with-a-long-address@very-long-subsidiary.example.org>",
                to="support@example.com",
                subject=subject,
                body="سلام، لطفاً اشتراک مرا لغو کنید\n",
                message_id=f"m{i}@example.org",
            )
            (folder / f"{i}.eml").write_bytes(bytes(mail))
        nofrom = Mail(sender=None, to="support@example.com", subject="بدون فرستنده (12)")
        (folder / "nofrom.eml").write_bytes(bytes(nofrom))
        d("import", str(folder), "--mailbox", "support")
        d("tickets", "reply", "1", "ممنون، لغو شد", "--as", AGENT)
        d("tickets", "reply", "2", "Done", "--as", AGENT)
        sink.fail_next(1, 550)
        settings = load_settings(config)
        db = Database(settings.database.url)
        try:
            Service(settings, db).outbox_sender().drain()
        finally:
            db.dispose()
        store = ModelStore(settings.data_dir)
        store.promote(store.add(train_model(synthetic(CATEGORIES), target="category", n_jobs=1)))
        yield d


LISTS = {
    "inbound": ("inbound", "list"),
    "outbox": ("outbox", "list"),
    "search": ("tickets", "search", "لغو"),
    "model": ("model", "list"),
}
# Each list's first column, its key in the JSON, and its CSV/TSV columns by default.
KEYS = {"inbound": "id", "outbox": "id", "search": "number", "model": "version"}
DEFAULT_CSV = {
    "inbound": [
        "id",
        "status",
        "from",
        "subject",
        "reason",
        "received",
        "source",
        "origin",
        "attempts",
        "size",
        "message_id",
    ],
    "outbox": [
        "id",
        "state",
        "ticket",
        "kind",
        "to",
        "subject",
        "created",
        "attempts",
        "next_attempt",
        "sent",
        "error",
        "message_id",
    ],
    "search": ["number", "status", "subject", "snippet"],
    "model": [
        "active",
        "version",
        "target",
        "created",
        "rows",
        "macro_f1",
        "coverage",
        "threshold",
    ],
}
TWO = {
    "inbound": "subject,id",
    "outbox": "subject,id",
    "search": "subject,number",
    "model": "target,version",
}


def assert_no_controls(text: str) -> None:
    bad = {
        ch
        for ch in text
        if ch not in "\n\t"
        and (unicodedata.category(ch) == "Cc" or ch in "\u202a\u202b\u202c\u202d\u202e")
    }
    assert not bad, sorted(map(hex, map(ord, bad)))


@pytest.mark.parametrize("name", LISTS)
def test_csv_and_tsv_parse_back_to_the_json_rows(desk: Desk, name: str) -> None:
    args = LISTS[name]
    rows = json.loads(desk(*args, "--json").stdout)
    assert rows, name
    assert json.loads(desk(*args, "--format", "json").stdout) == rows  # --json is an alias
    key = KEYS[name]
    text = desk(*args, "--format", "csv").stdout
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == DEFAULT_CSV[name]
    assert [r[0] if key != "version" else r[1] for r in parsed[1:]] == [
        str(row[key]) for row in rows
    ]
    assert all(len(r) == len(parsed[0]) for r in parsed)
    lines = desk(*args, "--format", "tsv").stdout.splitlines()
    tsv = [line.split("\t") for line in lines]
    assert tsv[0] == DEFAULT_CSV[name] and len(tsv) == len(parsed)
    assert all(len(r) == len(tsv[0]) for r in tsv)
    # CSV and TSV carry whole values: nothing shortened.
    assert "…" not in text
    for output in (text, "\n".join(lines)):
        assert_no_controls(output)


@pytest.mark.parametrize("name", LISTS)
def test_columns_choose_and_order_in_every_format(desk: Desk, name: str) -> None:
    args, spec = LISTS[name], TWO[name]
    names = spec.split(",")
    assert (
        next(csv.reader(io.StringIO(desk(*args, "--format", "csv", "--columns", spec).stdout)))
        == names
    )
    assert (
        desk(*args, "--format", "tsv", "--columns", spec).stdout.splitlines()[0].split("\t")
        == names
    )
    chosen = json.loads(desk(*args, "--json", "--columns", spec).stdout)
    assert chosen and all(list(row) == names for row in chosen)
    full = json.loads(desk(*args, "--json").stdout)
    key = KEYS[name]
    assert [row[names[1]] for row in chosen] == [row[key] for row in full]
    header = desk(*args, "--columns", spec).stdout.splitlines()[0].split()
    assert header[0] == names[0] and header[-1] in (names[1], "#")


@pytest.mark.parametrize("name", LISTS)
def test_an_unknown_column_or_two_formats_is_one_line(desk: Desk, name: str) -> None:
    line = assert_one_line_error(desk(*LISTS[name], "--columns", "bogus", code=1).stderr)
    assert "unknown column 'bogus'; choose from " in line
    line = assert_one_line_error(desk(*LISTS[name], "--json", "--format", "csv", code=1).stderr)
    assert "not both" in line
    desk(*LISTS[name], "--format", "xml", code=2)  # click's usage error


LEFT = {
    "inbound": ["status", "from", "subject"],
    "outbox": ["state", "kind", "to", "subject"],
    "search": ["status", "subject", "snippet"],
    "model": ["version", "target", "created"],
}


def starts(line: str) -> list[int]:
    """The cell at which each run of text after two or more spaces begins."""
    out, run = [], 0
    clean = line.replace(FSI, "").replace(PDI, "")
    at = 0
    for i, ch in enumerate(clean):
        if ch == " ":
            run += 1
        else:
            if run >= 2 or i == 0:
                out.append(at)
            run = 0
        at += cell_len(ch)
    return out


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", ["inbound", "outbox", "search", "model"])
def test_tables_align_by_display_width_and_fit(desk: Desk, name: str, width: int) -> None:
    text = desk(*LISTS[name], width=width).stdout
    assert_no_controls(text)
    lines = [line for line in text.splitlines() if not line.startswith(" " * 8)]
    header = lines[0]
    # Where each left-aligned column begins (numbers are right-aligned).
    lefts = [cell_len(header[: header.index(f"  {word}") + 2]) for word in LEFT[name]]
    assert all(cell_len(line) <= width for line in text.splitlines())
    rows = lines[1:]
    assert len(rows) >= (1 if name == "model" else 2)
    for line in rows:
        # Every column begins at the same cell on every row, after Persian and CJK too.
        assert set(lefts) <= set(starts(line)), (line, lefts)
    if name == "model":
        assert rows[0].split()[:2] == ["*", "category-1"]  # nothing cut on 80 columns
        return
    persian = [line for line in rows if "درخواست" in line]
    assert persian and all(FSI in line and PDI in line for line in persian)
    if name != "outbox":
        assert any("請求書" in line for line in rows)


def test_inbound_table_shows_sender_subject_and_the_reason_under_it(desk: Desk) -> None:
    lines = desk("inbound", "list", width=80).stdout.splitlines()
    assert lines[0].split() == ["id", "status", "from", "subject"]
    assert "quarantined" in lines[1] and "(no From)" in lines[1] and "بدون فرستنده" in lines[1]
    assert lines[2].strip().startswith("reason: sender: no sender address")
    # Long addresses are shortened in the table, whole in CSV.
    assert any("…" in line and "user0" in line for line in lines)
    rows = list(csv.DictReader(io.StringIO(desk("inbound", "list", "--format", "csv").stdout)))
    assert any(r["from"].endswith("very-long-subsidiary.example.org>") for r in rows)
    assert any(r["reason"].startswith("sender: no sender address") for r in rows)
    assert all(r["received"].endswith("+03:30") for r in rows)  # display_timezone


def test_outbox_table_shows_the_servers_refusal(desk: Desk) -> None:
    lines = desk("outbox", "list", width=120).stdout.splitlines()
    assert lines[0].split() == ["id", "state", "ticket", "kind", "to", "subject"]
    failed = next(i for i, line in enumerate(lines) if " failed " in line)
    assert lines[failed + 1].strip().startswith("error: ") and "550" in lines[failed + 1]
    rows = json.loads(desk("outbox", "list", "--json", "--columns", "state,error").stdout)
    assert {r["state"] for r in rows} == {"failed", "sent"}
    assert any(r["error"] and "550" in r["error"] for r in rows)


def test_model_list_marks_the_active_model(desk: Desk) -> None:
    lines = desk("model", "list").stdout.splitlines()
    assert lines[0].split()[:2] == ["version", "target"]
    assert lines[1].split()[:3] == ["*", "category-1", "category"]
    rows = list(csv.DictReader(io.StringIO(desk("model", "list", "--format", "csv").stdout)))
    assert rows[0]["active"] == "true" and float(rows[0]["macro_f1"]) > 0


def test_pick_keeps_the_order_given() -> None:
    fields = [Field("a", "A"), Field("b", "B"), Field("c", "C")]
    assert [f.name for f in pick(fields, " C, a ", None)] == ["c", "a"]
    assert [f.name for f in pick(fields, None, ("b",))] == ["b"]
    assert [f.name for f in pick(fields, None, None)] == ["a", "b", "c"]
