"""Reading and writing the QA tables (postdesk/models/qa.py). Never ticket state.

- Scorecard versions: `register_scorecard` stores a scorecard file's rubric once per
  content hash; a changed file becomes the next version of its name.
- Samples: `save_sample` writes a draw, its tickets' inclusion probabilities and the
  reviewers' assignments.
- Reviews, one answer at a time: `start_review` (or resume), `save_answer` (each answer
  is written when given), `unanswered`, `finish_review` (computes the score). The scoring
  session (`qa score`) and `qa import-reviews` both go through these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from postdesk.errors import PostdeskError
from postdesk.models import (
    QaAssignment,
    QaRating,
    QaReview,
    QaSample,
    QaSampledTicket,
    QaScorecard,
    utcnow,
)
from postdesk.models.base import table_of
from postdesk.qa.scorecard import Scorecard
from postdesk.qa.scoring import Rating, review_score

_scorecards = table_of(QaScorecard)
_samples = table_of(QaSample)
_sampled = table_of(QaSampledTicket)
_assignments = table_of(QaAssignment)
_reviews = table_of(QaReview)
_ratings = table_of(QaRating)


@dataclass(frozen=True)
class StoredScorecard:
    """A scorecard version as stored: its row id, name, version number and rubric."""

    id: int
    version: int
    scorecard: Scorecard
    new: bool = False  # stored by this call (a new name or a changed file)

    @property
    def name(self) -> str:
        return self.scorecard.name

    @property
    def label(self) -> str:
        """How people see it: "support v2"."""
        return f"{self.name} v{self.version}"


def register_scorecard(conn: Connection, scorecard: Scorecard) -> StoredScorecard:
    """The stored version of `scorecard`: the existing one with the same content hash,
    else a new version (one more than the name's latest)."""
    digest = scorecard.content_hash
    found = conn.execute(
        select(_scorecards.c.id, _scorecards.c.version).where(
            _scorecards.c.name == scorecard.name, _scorecards.c.content_hash == digest
        )
    ).one_or_none()
    if found is not None:
        return StoredScorecard(found.id, found.version, scorecard)
    latest = conn.execute(
        select(func.max(_scorecards.c.version)).where(_scorecards.c.name == scorecard.name)
    ).scalar_one()
    version = (latest or 0) + 1
    row_id: int = conn.execute(
        insert(_scorecards).returning(_scorecards.c.id),
        {
            "name": scorecard.name,
            "version": version,
            "content_hash": digest,
            "title": scorecard.title,
            "definition": scorecard.definition(),
            "created_at": utcnow(),
        },
    ).scalar_one()
    return StoredScorecard(row_id, version, scorecard, new=True)


def stored_scorecard(conn: Connection, name: str, version: int | None = None) -> StoredScorecard:
    """The stored scorecard `name` (its latest version unless `version` is given)."""
    query = select(_scorecards.c.id, _scorecards.c.version, _scorecards.c.definition).where(
        _scorecards.c.name == name
    )
    if version is not None:
        query = query.where(_scorecards.c.version == version)
    row = conn.execute(query.order_by(_scorecards.c.version.desc()).limit(1)).one_or_none()
    if row is None:
        known = scorecard_names(conn)
        hint = f" (known: {', '.join(known)})" if known else " (none is stored yet)"
        raise PostdeskError(
            f"no scorecard named {name!r}{hint}; give a scorecard file with --scorecard FILE.toml"
        )
    return StoredScorecard(row.id, row.version, Scorecard.from_definition(row.definition))


def scorecard_names(conn: Connection) -> list[str]:
    """The names of every stored scorecard, sorted."""
    return list(conn.execute(select(_scorecards.c.name).distinct().order_by("name")).scalars())


def scorecard_versions(conn: Connection, name: str) -> dict[int, StoredScorecard]:
    """Every stored version of scorecard `name`, by row id."""
    rows = conn.execute(
        select(_scorecards.c.id, _scorecards.c.version, _scorecards.c.definition).where(
            _scorecards.c.name == name
        )
    )
    return {
        r.id: StoredScorecard(r.id, r.version, Scorecard.from_definition(r.definition))
        for r in rows
    }


# --- samples ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampledTicket:
    """A drawn ticket as `save_sample` stores it."""

    ticket: int
    inclusion_probability: float
    stratum: str = ""
    risk_weight: float = 1.0
    risk_reasons: Sequence[str] = ()
    reviewers: Sequence[str] = ()
    blind: bool = False


@dataclass(frozen=True)
class SavedSample:
    id: int
    created_at: datetime
    tickets: list[SampledTicket] = field(default_factory=list)


def save_sample(
    conn: Connection,
    scorecard: StoredScorecard,
    *,
    design: str,
    parameters: Mapping[str, Any],
    seed: int,
    frame_size: int,
    tickets: Sequence[SampledTicket],
    created_by: str = "",
) -> SavedSample:
    """Store a sample, its tickets (in queue order) and their reviewers' assignments."""
    now = utcnow()
    sample_id: int = conn.execute(
        insert(_samples).returning(_samples.c.id),
        {
            "scorecard_id": scorecard.id,
            "design": design,
            "parameters": dict(parameters),
            "seed": seed,
            "frame_size": frame_size,
            "created_at": now,
            "created_by": created_by,
        },
    ).scalar_one()
    for position, t in enumerate(tickets):
        sampled_id: int = conn.execute(
            insert(_sampled).returning(_sampled.c.id),
            {
                "sample_id": sample_id,
                "ticket_id": t.ticket,
                "inclusion_probability": t.inclusion_probability,
                "stratum": t.stratum,
                "risk_weight": t.risk_weight,
                "risk_reasons": list(t.risk_reasons),
                "position": position,
            },
        ).scalar_one()
        if t.reviewers:
            conn.execute(
                insert(_assignments),
                [
                    {
                        "sampled_ticket_id": sampled_id,
                        "reviewer": reviewer,
                        "blind": t.blind,
                        "created_at": now,
                    }
                    for reviewer in t.reviewers
                ],
            )
    return SavedSample(sample_id, now, list(tickets))


# --- reviews, one answer at a time ------------------------------------------------------------


class ReviewError(PostdeskError):
    """An answer or review that does not fit its scorecard."""


def start_review(
    conn: Connection,
    ticket: int,
    reviewer: str,
    scorecard: StoredScorecard,
    *,
    assignment_id: int | None = None,
    source: str = "session",
    at: datetime | None = None,
) -> int:
    """The id of `reviewer`'s review of `ticket` with this scorecard version: the one
    already begun (a session resumes it) or a new one."""
    found = conn.execute(
        select(_reviews.c.id).where(
            _reviews.c.ticket_id == ticket,
            _reviews.c.reviewer == reviewer,
            _reviews.c.scorecard_id == scorecard.id,
        )
    ).scalar_one_or_none()
    if found is not None:
        return int(found)
    review_id: int = conn.execute(
        insert(_reviews).returning(_reviews.c.id),
        {
            "ticket_id": ticket,
            "reviewer": reviewer,
            "scorecard_id": scorecard.id,
            "assignment_id": assignment_id,
            "source": source,
            "started_at": at or utcnow(),
            "time_spent_s": 0.0,
            "comment": "",
        },
    ).scalar_one()
    return review_id


def check_answer(scorecard: Scorecard, criterion: str, rating: Rating) -> str | None:
    """Why `rating` is not an answer to `criterion` of `scorecard`, or None if it is."""
    c = scorecard.criterion(criterion)
    if c is None:
        keys = ", ".join(x.key for x in scorecard.criteria)
        return f"scorecard {scorecard.name!r} has no criterion {criterion!r} (it has: {keys})"
    if rating is None:
        return None if c.na_allowed else f"{criterion!r} cannot be N/A in this scorecard"
    if rating not in c.ratings:
        shown = "1 (pass) or 0 (fail)" if c.scale == "pass-fail" else c.scale
        return f"{rating} is not on {criterion!r}'s scale; expected {shown}"
    return None


def save_answer(
    conn: Connection,
    review_id: int,
    scorecard: Scorecard,
    criterion: str,
    rating: Rating,
    *,
    comment: str = "",
    root_causes: Sequence[str] = (),
    at: datetime | None = None,
) -> None:
    """Record (or change) the answer to one criterion: a rating, or N/A (None)."""
    problem = check_answer(scorecard, criterion, rating)
    if problem:
        raise ReviewError(problem)
    values = {
        "rating": rating,
        "na": rating is None,
        "comment": comment,
        "root_causes": list(root_causes),
        "answered_at": at or utcnow(),
    }
    changed = conn.execute(
        update(_ratings)
        .where(_ratings.c.review_id == review_id, _ratings.c.criterion == criterion)
        .values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(_ratings), {"review_id": review_id, "criterion": criterion, **values})


def answers(conn: Connection, review_id: int) -> dict[str, Rating]:
    """The answers given so far in a review: criterion key -> rating, or None for N/A."""
    rows = conn.execute(
        select(_ratings.c.criterion, _ratings.c.rating).where(_ratings.c.review_id == review_id)
    )
    return {r.criterion: r.rating for r in rows}


def unanswered(conn: Connection, review_id: int, scorecard: Scorecard) -> list[str]:
    """The criteria of a review still without an answer, in the scorecard's order: where
    an interrupted session resumes."""
    given = answers(conn, review_id)
    return [c.key for c in scorecard.criteria if c.key not in given]


def finish_review(
    conn: Connection,
    review_id: int,
    scorecard: Scorecard,
    *,
    time_spent_s: float | None = None,
    comment: str | None = None,
    require_all: bool = True,
    at: datetime | None = None,
) -> float | None:
    """Close a review: compute and store its score (None when every criterion was N/A).

    With `require_all`, every criterion must have an answer (a rating or N/A).
    """
    if require_all and (missing := unanswered(conn, review_id, scorecard)):
        raise ReviewError(f"review {review_id} has no answer yet for {', '.join(missing)}")
    score = review_score(scorecard.criteria, answers(conn, review_id))
    values: dict[str, Any] = {"finished_at": at or utcnow(), "score": score}
    if time_spent_s is not None:
        values["time_spent_s"] = time_spent_s
    if comment is not None:
        values["comment"] = comment
    conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(**values))
    return score


def set_time_spent(conn: Connection, review_id: int, seconds: float) -> None:
    """Record how long the review has taken so far (a session writes it with each answer)."""
    conn.execute(update(_reviews).where(_reviews.c.id == review_id).values(time_spent_s=seconds))


@dataclass(frozen=True)
class StoredAnswer:
    """An answer as stored: rating (None: N/A), comment, root-cause tags."""

    rating: int | None
    comment: str
    root_causes: tuple[str, ...]


def answers_in_full(conn: Connection, review_id: int) -> dict[str, StoredAnswer]:
    """The answers of a review with their comments and tags, by criterion key."""
    rows = conn.execute(
        select(
            _ratings.c.criterion, _ratings.c.rating, _ratings.c.comment, _ratings.c.root_causes
        ).where(_ratings.c.review_id == review_id)
    )
    return {
        r.criterion: StoredAnswer(r.rating, r.comment or "", tuple(r.root_causes or ()))
        for r in rows
    }


# --- a reviewer's queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedTicket:
    """A ticket assigned to a reviewer, with the scorecard version its sample is for and
    the review begun on it, if any."""

    assignment_id: int
    ticket: int
    scorecard_id: int
    blind: bool
    review_id: int | None
    finished: bool
    time_spent_s: float


def reviewer_queue(
    conn: Connection, reviewer: str, scorecard_name: str | None = None
) -> list[QueuedTicket]:
    """Every ticket assigned to `reviewer` (in samples for `scorecard_name`, if given), in
    queue order: oldest sample first, then the sample's order; finished ones included."""
    query = (
        select(
            _assignments.c.id,
            _sampled.c.ticket_id,
            _samples.c.scorecard_id,
            _assignments.c.blind,
            _reviews.c.id.label("review_id"),
            _reviews.c.finished_at,
            _reviews.c.time_spent_s,
        )
        .join(_sampled, _sampled.c.id == _assignments.c.sampled_ticket_id)
        .join(_samples, _samples.c.id == _sampled.c.sample_id)
        .join(_scorecards, _scorecards.c.id == _samples.c.scorecard_id)
        .outerjoin(
            _reviews,
            (_reviews.c.ticket_id == _sampled.c.ticket_id)
            & (_reviews.c.reviewer == _assignments.c.reviewer)
            & (_reviews.c.scorecard_id == _samples.c.scorecard_id),
        )
        .where(_assignments.c.reviewer == reviewer)
        .order_by(_samples.c.id, _sampled.c.position, _assignments.c.id)
    )
    if scorecard_name is not None:
        query = query.where(_scorecards.c.name == scorecard_name)
    return [
        QueuedTicket(
            assignment_id=r.id,
            ticket=r.ticket_id,
            scorecard_id=r.scorecard_id,
            blind=bool(r.blind),
            review_id=r.review_id,
            finished=r.finished_at is not None,
            time_spent_s=float(r.time_spent_s or 0.0),
        )
        for r in conn.execute(query)
    ]


def scorecard_by_id(conn: Connection, scorecard_id: int) -> StoredScorecard:
    """The stored scorecard version with row id `scorecard_id`."""
    row = conn.execute(
        select(_scorecards.c.id, _scorecards.c.version, _scorecards.c.definition).where(
            _scorecards.c.id == scorecard_id
        )
    ).one()
    return StoredScorecard(row.id, row.version, Scorecard.from_definition(row.definition))


@dataclass(frozen=True)
class ReviewSummary:
    reviewer: str
    score: float | None
    finished: bool


def other_reviews(conn: Connection, ticket: int, reviewer: str) -> list[ReviewSummary]:
    """The reviews of `ticket` by anyone but `reviewer` (any scorecard), oldest first."""
    rows = conn.execute(
        select(_reviews.c.reviewer, _reviews.c.score, _reviews.c.finished_at)
        .where(_reviews.c.ticket_id == ticket, _reviews.c.reviewer != reviewer)
        .order_by(_reviews.c.started_at, _reviews.c.id)
    )
    return [ReviewSummary(r.reviewer, r.score, r.finished_at is not None) for r in rows]
