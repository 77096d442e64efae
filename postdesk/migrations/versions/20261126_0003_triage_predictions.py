"""Triage: who set a ticket's category and priority, with what probability, by which
model version, and whether the ticket needs a person to triage it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 06:56:18.047128
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category_source", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("category_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("category_model", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("priority_source", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("priority_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("priority_model", sa.String(length=100), nullable=True))
        # sa.false() renders as 0 on SQLite and false on PostgreSQL.
        batch_op.add_column(
            sa.Column("needs_triage", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("needs_triage")
        batch_op.drop_column("priority_model")
        batch_op.drop_column("priority_probability")
        batch_op.drop_column("priority_source")
        batch_op.drop_column("category_model")
        batch_op.drop_column("category_probability")
        batch_op.drop_column("category_source")
