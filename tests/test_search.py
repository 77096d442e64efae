"""`postdesk tickets search`: the full-text index (FTS5, tsvector) on SQLite and PostgreSQL,
Persian folding, the query language against hostile input, Message-ID search, the index
kept by triggers as mail is filed, changed, merged and deleted, migration 0009's backfill,
and the command's output formats (issue 16, criterion 2)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, inspect, text

from postdesk.daemon import Service
from postdesk.lexicon.persian import FOLDING
from postdesk.models import Message
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.models.migrate import _alembic_config, upgrade
from postdesk.testing.cli import Cli
from postdesk.testing.config import settings_for, write_config
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.ticket_commands import render_hits
from postdesk.tickets import merge_tickets
from postdesk.tickets.render import Screen
from postdesk.tickets.search import (
    Hit,
    SearchError,
    find_message_id,
    fold,
    fts5_query,
    indexed_rows,
    parse_query,
    search,
)

PERSIAN_ARABIC_LETTERS = "من مي‌خواهم اشتراك خود را لغو كنم؛ شماره سفارش ۸۹۷۸۸ است."


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    return Service(settings_for(tmp_path, db_url), db)


def numbers(db: Database, query: str) -> list[int]:
    with db.read_session() as session:
        return [hit.number for hit in search(session, query)]


@pytest.fixture
def filed(service: Service, db: Database) -> dict[str, int]:
    """Three tickets: English, Persian typed with Arabic letters and digits, and English
    again; the ticket number of each by Message-ID."""
    ingest(
        service,
        mail(
            "en@x",
            subject="Refund for order 1234",
            body="I want my money back, the printer arrived broken.",
        ),
        mail(
            "fa@x",
            sender="Reza <reza@example.ir>",
            subject="درخواست لغو اشتراک",
            body=PERSIAN_ARABIC_LETTERS,
        ),
        mail("pr@x", sender="bob@example.com", subject="Printer", body="Where is my PRINTER?"),
    )
    return {mid: ticket_of(db, mid) for mid in ("en@x", "fa@x", "pr@x")}


def test_english_and_persian_words_find_their_tickets(db: Database, filed: dict[str, int]) -> None:
    en, fa, pr = filed["en@x"], filed["fa@x"], filed["pr@x"]
    assert numbers(db, "money") == [en]
    assert numbers(db, "MONEY broken") == [en]  # case does not matter; every word counts
    assert numbers(db, "money nonsense") == []
    assert set(numbers(db, "printer")) == {en, pr}
    # The Persian message was typed with Arabic ي/ك and Persian digits: each spelling of
    # a word finds it, in the text and in the subject.
    for word in ("اشتراک", "اشتراك", "کنم", "كنم", "89788", "۸۹۷۸۸", "٨٩٧٨٨", "لغو"):
        assert numbers(db, word) == [fa], word
    # A word written with a ZWNJ is found joined, split, and with the ZWNJ.
    for spelling in ("میخواهم", "مي خواهم", "می‌خواهم"):
        assert numbers(db, spelling) == [fa], spelling
    assert numbers(db, "سفارش money") == []


def test_persian_affixes_joined_apart_or_with_a_zwnj(service: Service, db: Database) -> None:
    spellings = {"joined": "میخواهم کتابها", "space": "می خواهم کتاب ها", "zwnj": "می‌خواهم کتاب‌ها"}
    ingest(
        service,
        *(mail(f"{key}@x", subject=f"Ticket {key}", body=body) for key, body in spellings.items()),
    )
    every = {ticket_of(db, f"{key}@x") for key in spellings}
    # Each text as a query (two terms: verb and plural), and each ZWNJ word alone.
    for query in [*spellings.values(), *spellings["zwnj"].split()]:
        assert set(numbers(db, query)) == every, query
    assert set(numbers(db, "کتاب‌ها")) == set(numbers(db, "كتابها")) == every
    # No stemming: the bare word is in the spaced text and the ZWNJ text's split copy.
    assert set(numbers(db, "کتاب")) == {ticket_of(db, "space@x"), ticket_of(db, "zwnj@x")}


def test_ranking_and_snippets(db: Database, filed: dict[str, int]) -> None:
    with db.read_session() as session:
        hits = search(session, "printer")
    # The ticket with the word in its subject (and text) ranks above the one with it
    # only in the text.
    assert [hit.number for hit in hits] == [filed["pr@x"], filed["en@x"]]
    assert hits[0].score <= hits[1].score
    assert hits[1].snippet == "I want my money back, the printer arrived broken."
    with db.read_session() as session:
        (persian,) = search(session, "اشتراک")
    # The snippet is the text as written (Arabic letters, ZWNJ), not the folded form.
    assert "اشتراك" in persian.snippet and "\u200c" in persian.snippet


def test_phrases(db: Database, filed: dict[str, int]) -> None:
    assert numbers(db, '"arrived broken"') == [filed["en@x"]]
    assert numbers(db, '"broken arrived"') == []
    assert numbers(db, '"لغو كنم"') == [filed["fa@x"]]
    assert numbers(db, '"arrived broken') == [filed["en@x"]]  # an unclosed quote ends the query


HOSTILE = (
    'AND OR NOT "',
    "NEAR(money printer)",
    "money*",
    "subject:money",
    "money' OR '1'='1",
    "'); DROP TABLE messages; --",
    "money ^printer",
    'money""',
    "-money",
    "{subject body}: money",
    "money & printer | !x <-> y",
    "\\money",
    "money\x00",
)


def test_hostile_queries_never_fail(db: Database, filed: dict[str, int]) -> None:
    # Every word is plain text to the database: no syntax error, no injection, and the
    # words still find what they say ("money" where it appears as a word).
    for query in HOSTILE:
        found = numbers(db, query)
        assert set(found) <= set(filed.values()), query
        if "money" in query:
            assert found in ([filed["en@x"]], []), query
    assert numbers(db, "money*") == numbers(db, "-money") == [filed["en@x"]]
    with db.read_session() as session:
        assert session.execute(text("SELECT count(*) FROM messages")).scalar_one() == 3


def test_bad_queries_are_one_line_errors() -> None:
    for query in ("", "   ", "!!! ?? ...", '""'):
        with pytest.raises(SearchError, match="nothing to search for"):
            parse_query(query)
    with pytest.raises(SearchError, match="at most 500"):
        parse_query("a" * 501)
    with pytest.raises(SearchError, match="at most 16"):
        parse_query(" ".join(f"w{i}" for i in range(17)))


def test_query_terms_are_folded_and_quoted() -> None:
    terms = parse_query('كتاب "say ""hi" ۱۲ می‌خواهم')
    assert [term.spellings for term in terms] == [
        ("کتاب",),
        ("say",),
        ("hi",),
        ("12",),
        ("میخواهم", "می خواهم"),
    ]
    # A lone prefix or suffix belongs to its neighbour; each is searched both ways.
    assert [term.spellings for term in parse_query("نمی دانم کتاب ها میز")] == [
        ("نمی دانم", "نمیدانم"),
        ("کتاب ها", "کتابها"),
        ("میز",),
    ]
    assert fts5_query(parse_query('a"b')) == '("a") AND ("b")'
    assert fts5_query(parse_query('x"')) == '("x")'


def test_the_databases_fold_as_python_does(db: Database) -> None:
    # The SQL the triggers run, on a row of every folded character and a ZWNJ word.
    sample = "".join(FOLDING) + " Abc كي ۱۲۳ می‌خواهم"
    row = "FROM (SELECT 0 AS id, :value AS subject, NULL AS visible_text, 'x' AS text) AS m"
    with db.engine.connect() as conn:
        subject, body = conn.execute(
            text(f"SELECT subject, body FROM ({indexed_rows('m', db.dialect, row)}) AS f"),
            {"value": sample},
        ).one()
    assert subject == fold(sample) + " " + fold(sample.replace("\u200c", " "))
    assert fold(sample).endswith(" Abc کی 123 میخواهم")
    assert subject.endswith(" Abc کی 123 می خواهم") and body == "x"


def test_the_index_follows_changes_merges_and_deletes(
    service: Service, db: Database, filed: dict[str, int]
) -> None:
    en, pr = filed["en@x"], filed["pr@x"]
    # A reply filed later is searchable at once.
    ingest(service, mail("en2@x", reply_to="en@x", subject="Re: Refund", body="Any news? Tracking"))
    assert numbers(db, "tracking") == [en]
    # Merging moves the messages, and the hits, to the target; the merged ticket is gone.
    merge_tickets(db, en, pr)
    assert numbers(db, "where") == [en]
    assert set(numbers(db, "printer")) == {en}
    # A changed text is searched as changed.
    with db.transaction() as session:
        session.execute(
            text("UPDATE messages SET visible_text = 'replaced words' WHERE message_id = 'en2@x'")
        )
    assert numbers(db, "tracking") == []
    assert numbers(db, "replaced") == [en]
    # A deleted message is no longer found.
    with db.transaction() as session:
        session.execute(text("DELETE FROM message_refs"))
        session.execute(text("DELETE FROM messages WHERE message_id = 'en2@x'"))
    assert numbers(db, "replaced") == []


def test_message_id_search(db: Database, filed: dict[str, int]) -> None:
    with db.read_session() as session:
        for spelling in ("<fa@x>", "fa@x", " <fa@x> "):
            (hit,) = find_message_id(session, spelling)
            assert hit.number == filed["fa@x"]
        assert find_message_id(session, "<nobody@x>") == []
        for bad in ("no at sign", "<a\x00@x>", "<a b@x>", "a@x>"):
            with pytest.raises(SearchError, match="not a Message-ID"):
                find_message_id(session, bad)


def test_migration_indexes_messages_stored_before_it(db_url: str, tmp_path: Path) -> None:
    database = Database(db_url)
    try:
        cfg = _alembic_config()
        upgrade(database)
        service = Service(settings_for(tmp_path, db_url), database)
        ingest(service, mail("old@x", subject="Archived request", body="Legacy widget"))
        # Back to the schema before the index (the mail stays), then up again: 0009 must
        # index what was stored before it ran. (Filing on the old schema itself is not
        # possible: today's code writes columns that later migrations add.)
        with database.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        with database.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert "message_search" not in tables and "messages" in tables
        with database.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        assert numbers(database, "widget") == [ticket_of(database, "old@x")]
        # The triggers are back too: new mail is indexed as it is filed.
        ingest(service, mail("later@x", subject="Another", body="More"))
        assert numbers(database, "more") == [ticket_of(database, "later@x")]
    finally:
        database.dispose()


def test_render_formats() -> None:
    hits = [
        Hit(7, "open", "Printer, broken", 1, -1.0, 'the "printer"\nbroke'),
        Hit(12, "new", "درخواست لغو اشتراک (89788)", 2, -0.5, "اشتراك\x1b[31m"),
    ]
    out = Screen(80, False, UTC, datetime.now(UTC))
    table = render_hits(hits, "table", out).splitlines()
    assert table[0].split() == ["#", "status", "subject", "snippet"]
    assert table[1].startswith(" 7  open    Printer, broken")
    assert "\x1b" not in "\n".join(table)  # control characters from mail never reach a terminal
    assert "\u2068درخواست لغو اشتراک (89788)\u2069" in table[2]  # RTL isolated
    rows = list(csv.reader(io.StringIO(render_hits(hits, "csv", out))))
    assert rows[0] == ["number", "status", "subject", "snippet"]
    assert rows[1] == ["7", "open", "Printer, broken", 'the "printer" broke']
    assert render_hits(hits, "tsv", out).splitlines()[2].split("\t")[0] == "12"
    data = json.loads(render_hits(hits, "json", out))
    assert data[1]["subject"] == "درخواست لغو اشتراک (89788)" and data[0]["number"] == 7
    assert data[0]["score"] == -1.0 and data[0]["message"] == 1
    assert render_hits([], "table", out) == "" and json.loads(render_hits([], "json", out)) == []


def test_the_command(tmp_path: Path, sqlite_url: str) -> None:
    cli = Cli(write_config(tmp_path, sqlite_url))
    cli("init")
    database = cli.database()
    try:
        ingest(
            Service(settings_for(tmp_path, sqlite_url), database),
            mail("a@x", subject="Invoice missing", body="Please send the invoice again"),
            mail("b@x", subject="سلام", body="فاكتور را نگرفتم"),
        )
        a, b = ticket_of(database, "a@x"), ticket_of(database, "b@x")
    finally:
        database.dispose()
    out = cli("tickets", "search", "invoice", "again").stdout.splitlines()
    assert out[0].split() == ["#", "status", "subject", "snippet"]
    assert out[1].split()[0] == str(a) and "Invoice missing" in out[1]
    found = json.loads(cli("tickets", "search", "فاکتور", "--format", "json").stdout)
    assert [row["number"] for row in found] == [b]
    assert (
        cli("tickets", "search", "<b@x>", "--format", "tsv")
        .stdout.splitlines()[1]
        .startswith(f"{b}\t")
    )
    assert cli("tickets", "search", "--message-id", "a@x", "--format", "csv").stdout.startswith(
        "number,status,subject,snippet\n" + str(a)
    )
    assert cli("tickets", "search", "absent").stdout.strip() == "no tickets found"
    assert "nothing to search for" in cli("tickets", "search", "!!!", code=1).stderr
    assert "not both" in cli("tickets", "search", "x", "--message-id", "a@x", code=1).stderr
    cli("tickets", "search", "x", "--limit", "0", code=2)


def test_a_long_thread_does_not_hide_other_tickets(
    service: Service, db: Database, filed: dict[str, int]
) -> None:
    # Ticket `en` gets 12 more messages saying "printer" twice (a bare INSERT: the
    # triggers index them too); they outrank the other ticket's one message, so
    # the first window of best messages holds one ticket and a larger one is read.
    en, pr = filed["en@x"], filed["pr@x"]
    rows = [
        {"ticket_id": en, "subject": "printer printer", "visible_text": f"printer printer {i}"}
        for i in range(12)
    ]
    with db.transaction() as session:
        session.execute(insert(table_of(Message)), rows)
    with db.read_session() as session:
        assert [hit.number for hit in search(session, "printer", limit=2)] == [en, pr]
        assert [hit.number for hit in search(session, "printer", limit=1)] == [en]
