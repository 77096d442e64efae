"""The Authentication-Results the receiving server wrote on each inbound message.

Messages stored before this revision have none (NULL), as do messages that arrived
without a header from the configured `[authentication] authserv_id`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_results", sa.Text(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): a batch copy of messages would lose the search
    # index's triggers (migration 0009) and drop a table others refer to.
    op.drop_column("messages", "auth_results")
