"""Search index triggers fold in Python on SQLite (the postdesk_fold function, about 40
microseconds less per message filed than 56 nested SQL replace() calls).

SQLite only: the insert and update triggers of the message_search index call
`postdesk_fold`, a function postdesk registers on every connection it opens
(postdesk/models/db.py, postdesk.lexicon.persian.index_text), instead of folding with
replace() calls. The text indexed is the same, byte for byte, so the index's rows are
kept as they are. A program that has not registered the function (the sqlite3 shell)
can still read the database, but inserting or updating a message there fails with "no
such function: postdesk_fold". PostgreSQL is unchanged. The downgrade puts back the
triggers 0009 made.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from postdesk.tickets import search

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        search.replace_sqlite_triggers(conn, fold_function=True)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        search.replace_sqlite_triggers(conn, fold_function=False)
