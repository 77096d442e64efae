"""Full-text search: the message_search index (FTS5 on SQLite, tsvector with a GIN index
on PostgreSQL), the triggers on messages that keep it, and the messages already stored
indexed (postdesk/tickets/search.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from postdesk.tickets import search

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The triggers as 0009 made them, folding in SQL; 0014 replaces them on SQLite.
    search.create_index(op.get_bind(), fold_function=False)


def downgrade() -> None:
    search.drop_index(op.get_bind())
