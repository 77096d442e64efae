"""The search index folds in Python on SQLite (the `postdesk_fold` function, migration
0014): it indexes exactly what the SQL folding of migration 0009 indexed, for any text,
on a real SQLite; 0014 goes up and down between the two sets of triggers and leaves
PostgreSQL alone; a program without the function reads the database but cannot write
messages."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, text

from postdesk.lexicon.persian import FOLDING, ZERO_WIDTH_NON_JOINER, index_text
from postdesk.models import Contact, Message, Ticket
from postdesk.models.base import table_of
from postdesk.models.db import Database, sqlite_file
from postdesk.models.migrate import _alembic_config, upgrade
from postdesk.tickets.search import fold, indexed_rows

ZWNJ = ZERO_WIDTH_NON_JOINER
# Characters the folding must get right, and neighbours it must leave alone.
ALPHABET = (
    "".join(FOLDING)  # Arabic letters, Persian and Arabic-Indic digits, marks, invisibles
    + "ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهیءآأؤإئ"  # Persian letters, folded or not
    + "\u200c\u200d\u0640\u00ad\u200e\u200f"  # ZWNJ, ZWJ, tatweel, soft hyphen, marks
    + "\u06c0\u06cc\u06a9\u0654\u0655\u0656\u066b\u066c\u060c\u061f"  # near misses
    + "aZ09 .\t\n'\"%\x00\u00e9e\u0301\u00a0\u2028😀"  # ASCII, NUL, Latin, astral
)
EDGE_CASES = [
    "",
    " ",
    ZWNJ,
    ZWNJ * 3,
    "می" + ZWNJ + "خواهم",
    "كتاب" + ZWNJ + "ها ۱۲۳ ٤٥٦",
    "ـــ",
    "\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0670",
    "soft\u00adhyphen and zero\u200dwidth joiner",
    "plain ASCII only, 12345",
    "\x00" + ZWNJ + "\x00",
    "".join(FOLDING),
]
# Bytes that are not valid UTF-8 (stored as text or as a blob by some other program):
# SQLite's replace() works on bytes, and so must the function.
BAD_UTF8 = [
    b"\xd9",
    b"\xe2\x80",
    b"\xdb\xe2\x80\x8c\xb0",  # a ZWNJ between the two halves of PERSIAN DIGIT ZERO
    b"\xd9\xd9\x8a\x8a",
    b"ok \xff\xfe " + ZWNJ.encode() + b" \xd9\x80\x80",
    b"\x80\x8c" + "ي".encode() + b"\xe2",
]


def random_texts(count: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=rng.randrange(0, 40))) for _ in range(count)]


def random_bytes(count: int, seed: int = 15) -> list[bytes]:
    pieces = [b"\xd8", b"\xd9", b"\xdb", b"\xe2", b"\x80", b"\x8c", b"\x8a", b"\xb0", b"\xc2"]
    pieces += [b"\xad", b" ", b"a", ZWNJ.encode(), "ي".encode(), "۰".encode()]
    rng = random.Random(seed)
    return [b"".join(rng.choices(pieces, k=rng.randrange(1, 20))) for _ in range(count)]


def folded_both_ways(conn: Connection) -> list[tuple[Any, ...]]:
    """For each row of `samples`: (id, then subject and body as the 0009 SQL folds them
    and as the function does), each as (type, bytes)."""
    source = "FROM samples m"
    old = indexed_rows("m", "sqlite", source)
    new = indexed_rows("m", "sqlite", source, fold_function=True)
    columns = "typeof(subject), CAST(subject AS BLOB), typeof(body), CAST(body AS BLOB)"
    rows = conn.execute(
        text(
            f"SELECT o.id, {columns.replace('subject', 'o.subject').replace('body', 'o.body')}, "
            f"{columns.replace('subject', 'n.subject').replace('body', 'n.body')} "
            f"FROM ({old}) AS o JOIN ({new}) AS n ON n.id = o.id ORDER BY o.id"
        )
    ).all()
    return [tuple(row) for row in rows]


def a_ticket(conn: Connection) -> None:
    """Ticket 1, for messages to belong to."""
    at = datetime(2026, 12, 5, tzinfo=UTC)
    conn.execute(table_of(Contact).insert(), [{"id": 1, "email": "c@x"}])
    conn.execute(
        table_of(Ticket).insert(),
        [
            {"id": 1, "subject": "s", "requester_id": 1, "status": "open"}
            | {"created_at": at, "updated_at": at, "last_message_at": at}
        ],
    )


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    try:
        yield database
    finally:
        database.dispose()


def test_the_function_folds_exactly_as_the_sql_did(sqlite_db: Database) -> None:
    texts: list[str | None] = [*EDGE_CASES, *random_texts(3000), None]
    with sqlite_db.engine.begin() as conn:
        conn.execute(
            text("CREATE TEMP TABLE samples (id INTEGER PRIMARY KEY, subject, visible_text, text)")
        )
        rows: list[dict[str, Any]] = []
        for value in texts:
            # The subject; the body three ways: visible text, the whole text when there
            # is no visible text, nothing at all.
            rows.append({"s": value, "v": value, "t": "unused"})
            rows.append({"s": None, "v": None, "t": value})
        rows.append({"s": None, "v": None, "t": None})
        for raw in [*BAD_UTF8, *random_bytes(500)]:
            rows.append({"s": raw, "v": raw, "t": None})  # as blobs
        insert = "INSERT INTO samples (subject, visible_text, text) VALUES (:s, :v, :t)"
        conn.execute(text(insert), rows)
        # And the bytes as text, which no Python program could store.
        conn.execute(
            text(
                "UPDATE samples SET subject = CAST(subject AS TEXT), "
                "text = CAST(visible_text AS TEXT), visible_text = NULL "
                "WHERE typeof(subject) = 'blob' AND id % 2 = 0"
            )
        )
        compared = folded_both_ways(conn)
        kinds = conn.execute(
            text("SELECT typeof(subject), count(*) FROM samples GROUP BY 1 ORDER BY 1")
        ).all()
    assert len(compared) == len(rows) and {kind for kind, _ in kinds} == {
        "blob",
        "null",
        "text",
    }
    for row in compared:
        assert row[1:5] == row[5:9], row
        assert row[1] == row[3] == "text"
    # Both fold what they must: spot checks of the rows above.
    by_text = {value: index_text(value.encode()) for value in EDGE_CASES}
    assert by_text["می" + ZWNJ + "خواهم"] == "میخواهم می خواهم".encode()
    assert by_text["كتاب" + ZWNJ + "ها ۱۲۳ ٤٥٦"] == "کتابها 123 456 کتاب ها 123 456".encode()
    assert (
        by_text["soft\u00adhyphen and zero\u200dwidth joiner"] == b"softhyphen and zerowidth joiner"
    )
    assert index_text(None) is None


def test_the_function_is_the_query_folding_plus_both_spellings() -> None:
    # The query side folds with search.fold (str.translate): the same table.
    for value in [*EDGE_CASES, *random_texts(2000, seed=16)]:
        expected = fold(value)
        if ZWNJ in value:
            expected += " " + fold(value.replace(ZWNJ, " "))
        assert index_text(value.encode()) == expected.encode() == index_text(value)


def test_the_triggers_index_what_the_sql_would(sqlite_db: Database) -> None:
    upgrade(sqlite_db)
    messages = table_of(Message)
    with sqlite_db.transaction() as session:
        a_ticket(session.connection())
        values = random_texts(200, seed=17) + EDGE_CASES
        session.execute(
            messages.insert(),
            [
                {"ticket_id": 1, "subject": value, "text": value[::-1], "visible_text": None}
                if n % 2
                else {"ticket_id": 1, "subject": value[::-1], "text": "x", "visible_text": value}
                for n, value in enumerate(values)
            ],
        )
        session.execute(text("UPDATE messages SET subject = 'كي' || subject WHERE id % 3 = 0"))
        session.execute(text("DELETE FROM messages WHERE id % 5 = 0"))
        indexed = session.execute(
            text("SELECT rowid, subject, body FROM message_search ORDER BY rowid")
        ).all()
        expected = session.execute(
            text(f"SELECT * FROM ({indexed_rows('m', 'sqlite', 'FROM messages m')}) ORDER BY id")
        ).all()
    assert len(indexed) == len(values) - len(values) // 5
    assert [tuple(row) for row in indexed] == [tuple(row) for row in expected]


# --- migration 0014 ---------------------------------------------------------------------


def migrate(db: Database, direction: str, revision: str) -> None:
    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)


def sqlite_schema(db: Database) -> list[tuple[Any, ...]]:
    """Every table, index and trigger with its SQL (sorted: Alembic's batch mode creates a
    rebuilt table's indexes in no fixed order)."""
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master")).all()
    return sorted(tuple(row) for row in rows)


def triggers(db: Database) -> dict[str, str]:
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT tgname, pg_get_triggerdef(t.oid) || ' ' || pg_get_functiondef(tgfoid) "
                    "FROM pg_trigger t WHERE tgname LIKE 'message_search%'"
                )
            ).all()
        else:
            rows = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            ).all()
    return {name: sql for name, sql in rows}


def test_migration_0014_up_and_down(db_url: str) -> None:
    # (Against the same database at 0013: two databases migrated alike may list a
    # batch-rebuilt table's constraints in different orders, Alembic's doing.)
    database = Database(db_url)
    try:
        migrate(database, "upgrade", "0013")
        at_0013 = sqlite_schema(database) if database.dialect == "sqlite" else []
        before = triggers(database)
        upgrade(database)
        after = triggers(database)
        if database.dialect == "postgresql":
            assert after == before and len(after) == 1  # untouched
        else:
            assert (
                set(after)
                == set(before)
                == {f"message_search_{k}" for k in ("insert", "update", "delete")}
            )
            assert after["message_search_delete"] == before["message_search_delete"]
            for kind in ("insert", "update"):
                assert "replace(" in before[f"message_search_{kind}"]
                assert "replace(" not in after[f"message_search_{kind}"]
                assert "postdesk_fold(" in after[f"message_search_{kind}"]
            at_0014 = sqlite_schema(database)
            # Down again gives back 0013's schema exactly, and up again 0014's.
            migrate(database, "downgrade", "0013")
            assert sqlite_schema(database) == at_0013
            upgrade(database)
            assert sqlite_schema(database) == at_0014
        assert triggers(database) == after
    finally:
        database.dispose()


def test_an_index_made_before_0014_stays_as_it_was(sqlite_db: Database) -> None:
    migrate(sqlite_db, "upgrade", "0013")
    with sqlite_db.engine.begin() as conn:
        a_ticket(conn)
        conn.execute(
            table_of(Message).insert(),
            [{"ticket_id": 1, "subject": s, "text": s} for s in [*EDGE_CASES, "مي\u200cخواهم"]],
        )

    def index() -> list[tuple[Any, ...]]:
        with sqlite_db.engine.connect() as conn:
            rows = conn.execute(text("SELECT rowid, subject, body FROM message_search")).all()
        return [tuple(row) for row in rows]

    made_by_0009 = index()
    upgrade(sqlite_db)
    assert index() == made_by_0009
    with sqlite_db.engine.begin() as conn:  # written again by the new triggers
        conn.execute(text("UPDATE messages SET subject = subject || '', text = text || ''"))
    assert index() == made_by_0009


def test_other_programs_read_but_cannot_write_messages(sqlite_db: Database) -> None:
    upgrade(sqlite_db)
    with sqlite_db.engine.begin() as conn:
        a_ticket(conn)
        conn.execute(table_of(Message).insert(), [{"ticket_id": 1, "subject": "اشتراك"}])
    path = sqlite_file(sqlite_db.url)
    assert path is not None
    other = sqlite3.connect(path)  # as the sqlite3 shell would: no postdesk_fold
    try:
        found = other.execute(
            "SELECT rowid FROM message_search WHERE message_search MATCH '\"اشتراک\"'"
        ).fetchall()
        assert found == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="no such function: postdesk_fold"):
            other.execute("UPDATE messages SET subject = 'x'")
        with pytest.raises(sqlite3.OperationalError, match="no such function: postdesk_fold"):
            other.execute(
                "INSERT INTO messages (ticket_id, subject, text) "
                "SELECT ticket_id, subject, text FROM messages"
            )
        other.execute("DELETE FROM messages")  # deleting needs no folding
        other.commit()
        assert other.execute("SELECT count(*) FROM message_search").fetchall() == [(0,)]
    finally:
        other.close()
