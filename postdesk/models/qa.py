"""Tables of QA reviews: scorecard versions, samples of tickets, assignments, reviews and
their ratings. Written by postdesk/qa/ only; none of them is ticket state.

How they fit together:

    qa_scorecards (a version of a rubric) <── qa_samples (one draw: design, seed, frame)
                                                  └── qa_sampled_tickets (ticket, pi)
                                                        └── qa_assignments (reviewer)
    qa_reviews (ticket, reviewer, scorecard version; from a session or an import)
        └── qa_ratings (one per criterion answered: rating or N/A, comment, root causes)

A review made in a scoring session points at its assignment (and so at the sampled
ticket's inclusion probability, which reports weight it by); an imported review has none.
Each answer is its own row, written when it is given, so an interrupted session resumes
at the first criterion without one; `finished_at` is set and `score` computed at the end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from postdesk.models.base import Base, UTCDateTime, utcnow


class QaScorecard(Base):
    """One version of a scorecard: the rubric as it was when reviews were scored with it.

    A scorecard file whose content changed (a new `content_hash`) becomes the next
    `version` under the same `name`; reviews keep pointing at the version they used.
    """

    __tablename__ = "qa_scorecards"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        UniqueConstraint("name", "content_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text, default="")
    # The whole rubric (name, titles, criteria with scale, weight, N/A, critical, root
    # causes), as `Scorecard.definition()` gives it.
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QaSample(Base):
    """One run of `postdesk qa sample`: how tickets were drawn, from how many, and the seed
    that reproduces the draw."""

    __tablename__ = "qa_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scorecard_id: Mapped[int] = mapped_column(ForeignKey("qa_scorecards.id"), index=True)
    # "simple", "stratified", "pps" (risk-weighted) or "stratified-pps".
    design: Mapped[str] = mapped_column(String(30))
    # The options it was drawn with: since, until, queue, agent, n, per_agent, risk,
    # reviewers, overlap.
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(BigInteger)
    frame_size: Mapped[int] = mapped_column(Integer)  # eligible tickets drawn from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320), default="")


class QaSampledTicket(Base):
    """A ticket a sample drew, with the probability that the sample's design drew it."""

    __tablename__ = "qa_sampled_tickets"
    __table_args__ = (UniqueConstraint("sample_id", "ticket_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("qa_samples.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    # The first-order inclusion probability pi: reports weight the review by 1/pi.
    inclusion_probability: Mapped[float] = mapped_column(Float)
    stratum: Mapped[str] = mapped_column(String(320), default="")  # the agent, if stratified
    risk_weight: Mapped[float] = mapped_column(Float, default=1.0)
    risk_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)  # order in the reviewer's queue


class QaAssignment(Base):
    """A sampled ticket given to a reviewer. `blind`: it is also given to another reviewer
    (double review for calibration); neither sees the other's scores."""

    __tablename__ = "qa_assignments"
    __table_args__ = (UniqueConstraint("sampled_ticket_id", "reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sampled_ticket_id: Mapped[int] = mapped_column(ForeignKey("qa_sampled_tickets.id"))
    reviewer: Mapped[str] = mapped_column(String(320), index=True)
    blind: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QaReview(Base):
    """One reviewer's review of one ticket with one scorecard version."""

    __tablename__ = "qa_reviews"
    __table_args__ = (UniqueConstraint("ticket_id", "reviewer", "scorecard_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(320))
    scorecard_id: Mapped[int] = mapped_column(ForeignKey("qa_scorecards.id"), index=True)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("qa_assignments.id"))
    source: Mapped[str] = mapped_column(String(20), default="session")  # or "import"
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    time_spent_s: Mapped[float] = mapped_column(Float, default=0.0)
    # 0-100 (postdesk/qa/scoring.py), set when finished; None when every criterion was N/A.
    score: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, default="")


class QaRating(Base):
    """The answer to one criterion of a review: a rating on its scale, or N/A."""

    __tablename__ = "qa_ratings"
    __table_args__ = (UniqueConstraint("review_id", "criterion"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("qa_reviews.id"))
    criterion: Mapped[str] = mapped_column(String(100))
    rating: Mapped[int | None] = mapped_column(Integer)  # None exactly when `na`
    na: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    comment: Mapped[str] = mapped_column(Text, default="")
    root_causes: Mapped[list[str]] = mapped_column(JSON, default=list)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
