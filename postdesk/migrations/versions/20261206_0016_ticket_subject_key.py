"""Tickets keep their subject key: threading's subject rule finds a requester's ticket
with one index seek on (requester_id, subject_key, last_message_at) instead of reading
the requester's 20 most recent open tickets and computing each one's key in Python
(ingest/threader.py: ticket_subject_key).

Existing tickets get the key computed from their subject by the function in this
release, in chunks of CHUNK rows. The downgrade drops the column and its index (on
SQLite with its own ALTER TABLE ... DROP COLUMN, which needs SQLite 3.35 or later).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from postdesk.ingest.threader import ticket_subject_key

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000
_tickets = sa.table(
    "tickets", sa.column("id", sa.Integer), sa.column("subject", sa.Text), sa.column("subject_key")
)


def upgrade() -> None:
    op.add_column("tickets", sa.Column("subject_key", sa.Text(), nullable=True))
    conn = op.get_bind()
    update = (
        sa.update(_tickets)
        .where(_tickets.c.id == sa.bindparam("ticket_id"))
        .values(subject_key=sa.bindparam("key"))
    )
    after = 0
    while True:
        rows = conn.execute(
            sa.select(_tickets.c.id, _tickets.c.subject)
            .where(_tickets.c.id > after)
            .order_by(_tickets.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        conn.execute(
            update,
            [{"ticket_id": id_, "key": ticket_subject_key(subject or "")} for id_, subject in rows],
        )
        after = rows[-1][0]
    op.create_index(
        "ix_tickets_requester_id_subject_key_last_message_at",
        "tickets",
        ["requester_id", "subject_key", "last_message_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_requester_id_subject_key_last_message_at", table_name="tickets")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's own DROP COLUMN (3.35+), not Alembic's batch mode: that copies the
        # table and drops the original, which the foreign keys of messages, events and
        # the rest refuse while they point at it.
        op.execute("ALTER TABLE tickets DROP COLUMN subject_key")
    else:
        op.drop_column("tickets", "subject_key")
