"""SLA alerts: the record of at-risk and breach alerts sent, once per ticket, clock,
kind and due time (the unique constraint).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postdesk.models.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sla_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("clock", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("due_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_sla_alerts_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_alerts")),
        sa.UniqueConstraint(
            "ticket_id",
            "clock",
            "kind",
            "due_at",
            name=op.f("uq_sla_alerts_ticket_id_clock_kind_due_at"),
        ),
    )
    with op.batch_alter_table("sla_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sla_alerts_ticket_id"), ["ticket_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sla_alerts_ticket_id"))

    op.drop_table("sla_alerts")
