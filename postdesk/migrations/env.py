"""Alembic environment: run migrations on the connection postdesk hands over."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection

from postdesk.models import Base
from postdesk.models.db import add_sqlite_functions
from postdesk.tickets.search import in_models

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=True,
        compare_type=True,
        # The search index's tables (FTS5, tsvector) are the database's own, not models.
        include_name=in_models,
        # postdesk init's line per applied step (postdesk.models.migrate.upgrade).
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Used by developers running the `alembic` command directly (see alembic.ini).
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("POSTDESK_DATABASE_URL")
    if not url:
        raise SystemExit("set POSTDESK_DATABASE_URL to the database to migrate")
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        # The search index's triggers call postdesk_fold (migration 0014).
        event.listen(
            engine, "connect", lambda dbapi_conn, _record: add_sqlite_functions(dbapi_conn)
        )
    with engine.begin() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("postdesk migrations run online only: use `postdesk init`")
_main()
