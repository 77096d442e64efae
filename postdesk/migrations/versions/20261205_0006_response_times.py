"""When a ticket was first answered and last solved; why mail was (not) an agent's.

Tickets solved before this revision get their `closed_at` as `solved_at` (set then, on
the solve). First responses before it are not known and stay empty.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        for name in ("first_response_at", "solved_at"):
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_check", sa.Text(), nullable=True))
    op.execute("UPDATE tickets SET solved_at = closed_at WHERE status = 'solved'")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("agent_check")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("solved_at")
        batch_op.drop_column("first_response_at")
