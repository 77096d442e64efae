"""Who is processing a raw message, and how many attempts at it never finished.

`claimed_by`/`claimed_at` are set, in a transaction of their own, before a message is
processed and cleared by the transaction that files it; `unfinished` counts the attempts
that ended without either (the process or the parse worker died), so that a message that
kills postdesk is given up after a few tries instead of blocking the mail behind it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("unfinished", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    # Plain DROP COLUMNs (SQLite 3.35+): a batch copy of raw_messages would drop the
    # table that messages refer to, which SQLite refuses once mail is stored.
    for column in ("unfinished", "claimed_at", "claimed_by"):
        op.drop_column("raw_messages", column)
