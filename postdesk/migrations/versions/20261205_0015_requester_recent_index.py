"""A requester's tickets by last message: index (requester_id, last_message_at) replaces
(requester_id), so threading's subject rule reads a requester's 20 most recent tickets in
index order instead of reading and sorting all of them (ingest/threader.py).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tickets_requester_id_last_message_at", "tickets", ["requester_id", "last_message_at"]
    )
    op.drop_index("ix_tickets_requester_id", table_name="tickets")


def downgrade() -> None:
    op.create_index("ix_tickets_requester_id", "tickets", ["requester_id"])
    op.drop_index("ix_tickets_requester_id_last_message_at", table_name="tickets")
