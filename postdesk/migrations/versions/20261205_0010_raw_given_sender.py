"""The sender an operator gave a quarantined message that had none
(`postdesk inbound retry ID --sender EMAIL`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("given_sender", sa.String(length=320), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of raw_messages
    # would drop the table that messages refer to, which SQLite refuses once mail is stored.
    op.drop_column("raw_messages", "given_sender")
