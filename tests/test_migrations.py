"""Alembic migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from postdesk.errors import DatabaseError
from postdesk.models import Base
from postdesk.models import migrate as migrate_module
from postdesk.models.db import Database
from postdesk.models.migrate import current_revision, head_revision, require_current, upgrade
from postdesk.tickets.search import INDEX_TABLES, in_models


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """An empty, not yet migrated database on each backend."""
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()


def schema_differences(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": in_models,  # not the search index's tables
            },
        )
        return list(compare_metadata(context, Base.metadata))


def table_names(db: Database) -> set[str]:
    """The tables, without the search index's (tickets/search.py; a test below checks it)."""
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names()) - INDEX_TABLES


def set_revision(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": revision})


def test_upgrade_to_head_yields_exactly_the_models_schema(database: Database) -> None:
    before, after = upgrade(database)
    assert before is None
    assert after == head_revision() == current_revision(database)
    assert table_names(database) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_differences(database) == []


def test_an_empty_database_differs_from_the_models(database: Database) -> None:
    # Guards the test above: compare_metadata does see a missing schema.
    differences = schema_differences(database)
    added = {d[1].name for d in differences if d[0] == "add_table"}
    assert added == set(Base.metadata.tables)


def test_upgrade_twice_is_a_no_op(database: Database) -> None:
    upgrade(database)
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailboxes (name, address, created_at) "
                "VALUES ('support', 'support@example.com', CURRENT_TIMESTAMP)"
            )
        )
    before, after = upgrade(database)
    assert before == after == head_revision()
    assert schema_differences(database) == []
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM mailboxes")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_require_current_passes_after_upgrade(database: Database) -> None:
    upgrade(database)
    require_current(database)  # does not raise


def test_require_current_on_an_empty_database(database: Database) -> None:
    with pytest.raises(DatabaseError) as excinfo:
        require_current(database)
    message = str(excinfo.value)
    assert "no postdesk schema" in message and "run `postdesk init`" in message
    assert "\n" not in message
    assert table_names(database) == set()  # checking created nothing


def test_require_current_on_an_outdated_database(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(database)
    current = head_revision()
    # Pretend this postdesk ships a newer migration than the one the database is at.
    monkeypatch.setattr(migrate_module, "head_revision", lambda: "9999")
    with pytest.raises(DatabaseError) as excinfo:
        require_current(database)
    message = str(excinfo.value)
    assert f"at schema {current}" in message and "needs 9999" in message
    assert "run `postdesk init`" in message
    assert "\n" not in message


def test_database_newer_than_this_postdesk(database: Database) -> None:
    upgrade(database)
    set_revision(database, "ffff_from_the_future")
    with pytest.raises(DatabaseError) as excinfo:
        require_current(database)
    message = str(excinfo.value)
    assert "newer than this postdesk" in message and "upgrade postdesk" in message
    assert "\n" not in message
    # `postdesk init` says the same rather than failing inside Alembic.
    with pytest.raises(DatabaseError, match="newer than this postdesk"):
        upgrade(database)
    assert current_revision(database) == "ffff_from_the_future"


def test_unreachable_database_is_one_line() -> None:
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    try:
        with pytest.raises(DatabaseError) as excinfo:
            require_current(db)
        with pytest.raises(DatabaseError):
            upgrade(db)
    finally:
        db.dispose()
    message = str(excinfo.value)
    assert message.startswith("cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/")
    assert "\n" not in message


def test_unparsable_url_is_a_database_error_without_the_password() -> None:
    with pytest.raises(DatabaseError) as excinfo:
        Database("postgresql+psycopg://u:topsecret@db.example.com:port/x")
    message = str(excinfo.value)
    assert "not a valid database URL" in message
    assert "topsecret" not in message and "\n" not in message


def test_migrations_form_a_single_line_of_history() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate_module._alembic_config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert revisions[0].revision == head_revision()


def test_downgrade_to_base_and_back(database: Database) -> None:
    from alembic import command

    upgrade(database)
    cfg = migrate_module._alembic_config()
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert table_names(database) <= {"alembic_version"}
    assert current_revision(database) is None
    assert upgrade(database) == (None, head_revision())
    assert schema_differences(database) == []


def test_sqlite_durable_transactions_commit_with_full_sync(sqlite_url: str) -> None:
    """`durable=True` runs with synchronous=FULL, other writes with NORMAL, alternating
    on the one pooled connection (the level is only re-issued when it changes)."""
    db = Database(sqlite_url)
    try:
        seen = []
        for durable in (False, True, True, False, True):
            with db.transaction(durable=durable) as session:
                seen.append(session.execute(text("PRAGMA synchronous")).scalar())
        assert seen == [1, 2, 2, 1, 2]  # 1 = NORMAL, 2 = FULL
        with db.read_session() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        db.dispose()


def test_0016_gives_existing_tickets_their_subject_key(database: Database) -> None:
    """Tickets stored before 0016 get the key threading now looks up (ingest/threader.py),
    a digest for a key too long to index; the downgrade takes the column away again."""
    from alembic import command

    from postdesk.ingest.threader import SUBJECT_KEY_CHARS, ticket_subject_key

    cfg = migrate_module._alembic_config()
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0015")
    long_subject = "Re: " + "شکایت " * 80
    subjects = ["Re: [#7] Order 10023 arrived DAMAGED", "سفارش ۴۵۶۷", "", long_subject]
    now = datetime(2026, 12, 6, tzinfo=UTC)
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, email, name, role, created_at, updated_at) "
                "VALUES (1, 'c@example.com', '', 'customer', :t, :t)"
            ),
            {"t": now},
        )
        for subject in subjects:
            conn.execute(
                text(
                    "INSERT INTO tickets (subject, status, requester_id, needs_triage, "
                    "created_at, updated_at, last_message_at) "
                    "VALUES (:s, 'new', 1, false, :t, :t, :t)"
                ),
                {"s": subject, "t": now},
            )
    assert upgrade(database)[1] == head_revision()
    with database.engine.connect() as conn:
        keys = [row[0] for row in conn.execute(text("SELECT subject_key FROM tickets ORDER BY id"))]
    assert keys == [ticket_subject_key(s) for s in subjects]
    assert keys[0] == "order 10023 arrived damaged"
    assert keys[1] == ticket_subject_key("Re: سفارش 4567")  # Persian digits folded
    assert keys[3].startswith("sha256:") and len(keys[3]) == 71
    assert len(ticket_subject_key(long_subject[:SUBJECT_KEY_CHARS])) <= SUBJECT_KEY_CHARS
    assert schema_differences(database) == []
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0015")
    with database.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("tickets")}
    assert "subject_key" not in columns
