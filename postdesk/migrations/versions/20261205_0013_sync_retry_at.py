"""When the service tries a failing mailbox folder again (its back-off), for `postdesk status`.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postdesk.models.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "mailbox_sync",
        sa.Column("retry_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+), as 0010 and 0011 do: no copy of the table.
    op.drop_column("mailbox_sync", "retry_at")
