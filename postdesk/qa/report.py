"""`postdesk qa report`: the IQS per agent, category, criterion and week, and root causes.

What is counted: the finished reviews made with one scorecard (every version of its name)
of tickets resolved in the period (`solved_at`, else `closed_at` for a ticket closed
without being solved: the time sampling uses too), UTC.

- The unit is the reviewed ticket. A ticket two reviewers scored (calibration overlap)
  counts once, with the mean of their scores; `n` is the number of tickets, `reviews` the
  number of reviews behind them.
- A ticket's inclusion probability is that of the sample that drew it (a review scored in
  `qa score` points at its assignment, and so at the sampled ticket). Imported reviews
  (`qa import-reviews`) have none: they are left out of every IQS, because their tickets
  were not drawn by a known design and weighting them by 1 would mix two unlike things;
  the report counts them and gives their plain mean apart (`unweighted`).
- Each IQS is Hájek's weighted mean with its 95% interval (`postdesk.qa.scoring.iqs`),
  strata being each sample's own strata (the agent, for stratified samples), so separate
  draws are separate strata.
- `by_criterion`: the criterion's score x 100 (0-100) instead of the review score, N/A
  left out; a critical failure zeroes the review's score, not the other criteria's.
- `by_week`: the ISO week (`2026-W45`) of the ticket's resolution, not of the review:
  the trend then follows the work as it was done, whenever it was reviewed, and imported
  reviews (all finished on the day of the import) do not pile up in one week.
- `by_agent`: the ticket's assignee (`-`: none); `by_category`: its category (`-`: none).
- `root_causes`: every root-cause tag given in the counted reviews, imported ones included
  (a count, not an estimate): per criterion and tag, `count` (ratings carrying the tag)
  and `share` (of all tags given), most frequent first.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from postdesk.models import (
    Contact,
    QaAssignment,
    QaRating,
    QaReview,
    QaSampledTicket,
    Ticket,
)
from postdesk.qa.scorecard import Criterion
from postdesk.qa.scoring import criterion_score, iqs
from postdesk.qa.store import StoredScorecard, scorecard_versions

GROUP_KINDS = ("all", "agent", "category", "criterion", "week")
CSV_COLUMNS = ("group_kind", "group", "n", "iqs", "ci_low", "ci_high")
NONE = "-"


@dataclass(frozen=True)
class Period:
    """Tickets resolved at or after `since` and before `until` (UTC); None: no bound."""

    since: datetime | None = None
    until: datetime | None = None


@dataclass
class ReviewedTicket:
    """A ticket with its finished reviews, as the report counts it."""

    ticket: int
    agent: str
    category: str
    week: str
    probability: float | None  # None: only imported reviews, no sampling design
    stratum: str
    scores: list[float] = field(default_factory=list)  # review scores (all-N/A left out)
    criteria: dict[str, list[float]] = field(default_factory=dict)  # key -> scores 0-100
    reviews: int = 0

    @property
    def score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None


@dataclass(frozen=True)
class RootCause:
    criterion: str
    tag: str
    count: int


@dataclass(frozen=True)
class Collected:
    tickets: list[ReviewedTicket]
    root_causes: list[RootCause]
    versions: list[int]


def iso_week(moment: datetime | None) -> str:
    """`2026-W45`: the ISO year and week of `moment` (`-` without one)."""
    if moment is None:
        return NONE
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def collect(conn: Connection, latest: StoredScorecard, period: Period) -> Collected:
    """The finished reviews of every version of `latest`'s scorecard, by ticket."""
    versions = scorecard_versions(conn, latest.name)
    resolved = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    query = (
        select(
            QaReview.id,
            QaReview.ticket_id,
            QaReview.scorecard_id,
            QaReview.score,
            QaSampledTicket.inclusion_probability,
            QaSampledTicket.sample_id,
            QaSampledTicket.stratum,
            Ticket.category,
            Contact.email,
            resolved,
        )
        .join(Ticket, Ticket.id == QaReview.ticket_id)
        .outerjoin(Contact, Contact.id == Ticket.assignee_id)
        .outerjoin(QaAssignment, QaAssignment.id == QaReview.assignment_id)
        .outerjoin(QaSampledTicket, QaSampledTicket.id == QaAssignment.sampled_ticket_id)
        .where(QaReview.scorecard_id.in_(list(versions)), QaReview.finished_at.is_not(None))
        .order_by(QaReview.ticket_id, QaReview.id)
    )
    if period.since is not None:
        query = query.where(resolved >= period.since)
    if period.until is not None:
        query = query.where(resolved < period.until)
    rows = conn.execute(query).all()
    review_ids = [r.id for r in rows]
    ratings: dict[int, list[Any]] = defaultdict(list)
    for chunk in range(0, len(review_ids), 500):
        for rating in conn.execute(
            select(
                QaRating.review_id, QaRating.criterion, QaRating.rating, QaRating.root_causes
            ).where(QaRating.review_id.in_(review_ids[chunk : chunk + 500]))
        ):
            ratings[rating.review_id].append(rating)
    tickets: dict[int, ReviewedTicket] = {}
    tags: Counter[tuple[str, str]] = Counter()
    for row in rows:
        t = tickets.get(row.ticket_id)
        if t is None:
            t = tickets[row.ticket_id] = ReviewedTicket(
                ticket=row.ticket_id,
                agent=row.email or NONE,
                category=row.category or NONE,
                week=iso_week(row[9]),
                probability=None,
                stratum="",
            )
        if row.inclusion_probability is not None and t.probability is None:
            t.probability = float(row.inclusion_probability)
            t.stratum = f"{row.sample_id}:{row.stratum}"
        t.reviews += 1
        if row.score is not None:
            t.scores.append(float(row.score))
        scorecard = versions[row.scorecard_id].scorecard
        for rating in ratings[row.id]:
            criterion = scorecard.criterion(rating.criterion)
            if criterion is None:
                continue
            if rating.rating is not None:
                value = 100.0 * criterion_score(rating.rating, criterion.scale)
                t.criteria.setdefault(rating.criterion, []).append(value)
            for tag in rating.root_causes or ():
                tags[(rating.criterion, tag)] += 1
    causes = [RootCause(c, tag, n) for (c, tag), n in tags.items()]
    causes.sort(key=lambda r: (-r.count, r.criterion, r.tag))
    return Collected(list(tickets.values()), causes, sorted(v.version for v in versions.values()))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _round(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 4)


def _estimate(
    kind: str, group: str, members: Sequence[tuple[ReviewedTicket, float]]
) -> dict[str, Any]:
    """One row: the IQS of `members` (tickets with their value) and its interval."""
    estimate = iqs(
        [value for _, value in members],
        [t.probability or 1.0 for t, _ in members],
        [t.stratum for t, _ in members],
    )
    return {
        "group_kind": kind,
        "group": group,
        "n": len(members),
        "reviews": sum(t.reviews for t, _ in members),
        "iqs": _round(estimate.value) if estimate else None,
        "ci_low": _round(estimate.low) if estimate else None,
        "ci_high": _round(estimate.high) if estimate else None,
        "standard_error": _round(estimate.standard_error) if estimate else None,
    }


def _grouped(
    kind: str, tickets: Iterable[ReviewedTicket], key: str, order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    groups: dict[str, list[tuple[ReviewedTicket, float]]] = defaultdict(list)
    for t in tickets:
        if t.score is not None:
            groups[getattr(t, key)].append((t, t.score))
    names = order if order is not None else sorted(groups)
    return [_estimate(kind, name, groups[name]) for name in names if groups.get(name)]


def build_report(
    collected: Collected, criteria: Sequence[Criterion], name: str, period: Period
) -> dict[str, Any]:
    """The report as JSON-ready data (keys documented in `postdesk qa report --help`)."""
    weighted = [t for t in collected.tickets if t.probability is not None]
    imported = [t for t in collected.tickets if t.probability is None]
    scored = [(t, t.score) for t in weighted if t.score is not None]
    by_criterion = []
    for c in criteria:
        members = [(t, _mean(t.criteria[c.key])) for t in weighted if c.key in t.criteria]
        if members:
            row = _estimate("criterion", c.key, members)
            row["title"], row["title_fa"] = c.title, c.title_fa
            by_criterion.append(row)
    imported_scores = [s for t in imported if (s := t.score) is not None]
    total_tags = sum(r.count for r in collected.root_causes)
    return {
        "scorecard": {"name": name, "versions": collected.versions},
        "period": {
            "since": period.since.date().isoformat() if period.since else None,
            "until": period.until.date().isoformat() if period.until else None,
            "of": "ticket resolved (solved, else closed), UTC; until is exclusive",
        },
        "weighting": "hajek: 1 / inclusion probability; imported reviews left out",
        "reviews": sum(t.reviews for t in collected.tickets),
        "tickets": len(collected.tickets),
        "weighted": {
            "reviews": sum(t.reviews for t in weighted),
            "tickets": len(weighted),
        },
        "unweighted": {
            "reviews": sum(t.reviews for t in imported),
            "tickets": len(imported),
            "mean": _round(_mean(imported_scores)) if imported_scores else None,
        },
        "iqs": _estimate("all", "all", scored) if scored else None,
        "by_agent": _grouped("agent", weighted, "agent"),
        "by_category": _grouped("category", weighted, "category"),
        "by_criterion": by_criterion,
        "by_week": _grouped("week", weighted, "week"),
        "root_causes": [
            {
                "criterion": r.criterion,
                "root_cause": r.tag,
                "count": r.count,
                "share": round(r.count / total_tags, 4),
            }
            for r in collected.root_causes
        ],
    }


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every IQS row of the report, in order: all, per agent, category, criterion, week."""
    found = [report["iqs"]] if report["iqs"] else []
    for key in ("by_agent", "by_category", "by_criterion", "by_week"):
        found += report[key]
    return found


def to_csv(report: dict[str, Any]) -> str:
    """One table: group_kind, group, n, iqs, ci_low, ci_high (one row per group)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows(report):
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()
