"""QA: scorecard versions, samples with inclusion probabilities, reviewer assignments,
reviews and their per-criterion ratings.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postdesk.models.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "qa_scorecards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_scorecards")),
        sa.UniqueConstraint(
            "name", "content_hash", name=op.f("uq_qa_scorecards_name_content_hash")
        ),
        sa.UniqueConstraint("name", "version", name=op.f("uq_qa_scorecards_name_version")),
    )
    op.create_table(
        "qa_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scorecard_id", sa.Integer(), nullable=False),
        sa.Column("design", sa.String(length=30), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("frame_size", sa.Integer(), nullable=False),
        sa.Column("created_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(
            ["scorecard_id"],
            ["qa_scorecards.id"],
            name=op.f("fk_qa_samples_scorecard_id_qa_scorecards"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_samples")),
    )
    with op.batch_alter_table("qa_samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_qa_samples_scorecard_id"), ["scorecard_id"], unique=False
        )

    op.create_table(
        "qa_sampled_tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("stratum", sa.String(length=320), nullable=False),
        sa.Column("risk_weight", sa.Float(), nullable=False),
        sa.Column("risk_reasons", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sample_id"],
            ["qa_samples.id"],
            name=op.f("fk_qa_sampled_tickets_sample_id_qa_samples"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_qa_sampled_tickets_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_sampled_tickets")),
        sa.UniqueConstraint(
            "sample_id", "ticket_id", name=op.f("uq_qa_sampled_tickets_sample_id_ticket_id")
        ),
    )
    with op.batch_alter_table("qa_sampled_tickets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_qa_sampled_tickets_sample_id"), ["sample_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_qa_sampled_tickets_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "qa_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sampled_ticket_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=320), nullable=False),
        sa.Column("blind", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sampled_ticket_id"],
            ["qa_sampled_tickets.id"],
            name=op.f("fk_qa_assignments_sampled_ticket_id_qa_sampled_tickets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_assignments")),
        sa.UniqueConstraint(
            "sampled_ticket_id",
            "reviewer",
            name=op.f("uq_qa_assignments_sampled_ticket_id_reviewer"),
        ),
    )
    with op.batch_alter_table("qa_assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_qa_assignments_reviewer"), ["reviewer"], unique=False)

    op.create_table(
        "qa_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=320), nullable=False),
        sa.Column("scorecard_id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("started_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("time_spent_s", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["qa_assignments.id"],
            name=op.f("fk_qa_reviews_assignment_id_qa_assignments"),
        ),
        sa.ForeignKeyConstraint(
            ["scorecard_id"],
            ["qa_scorecards.id"],
            name=op.f("fk_qa_reviews_scorecard_id_qa_scorecards"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_qa_reviews_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_reviews")),
        sa.UniqueConstraint(
            "ticket_id",
            "reviewer",
            "scorecard_id",
            name=op.f("uq_qa_reviews_ticket_id_reviewer_scorecard_id"),
        ),
    )
    with op.batch_alter_table("qa_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_qa_reviews_scorecard_id"), ["scorecard_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_qa_reviews_ticket_id"), ["ticket_id"], unique=False)

    op.create_table(
        "qa_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("criterion", sa.String(length=100), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("na", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("root_causes", sa.JSON(), nullable=False),
        sa.Column("answered_at", postdesk.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["review_id"], ["qa_reviews.id"], name=op.f("fk_qa_ratings_review_id_qa_reviews")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qa_ratings")),
        sa.UniqueConstraint(
            "review_id", "criterion", name=op.f("uq_qa_ratings_review_id_criterion")
        ),
    )


def downgrade() -> None:
    op.drop_table("qa_ratings")
    with op.batch_alter_table("qa_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qa_reviews_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_qa_reviews_scorecard_id"))

    op.drop_table("qa_reviews")
    with op.batch_alter_table("qa_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qa_assignments_reviewer"))

    op.drop_table("qa_assignments")
    with op.batch_alter_table("qa_sampled_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qa_sampled_tickets_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_qa_sampled_tickets_sample_id"))

    op.drop_table("qa_sampled_tickets")
    with op.batch_alter_table("qa_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qa_samples_scorecard_id"))

    op.drop_table("qa_samples")
    op.drop_table("qa_scorecards")
