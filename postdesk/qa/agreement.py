"""Do reviewers agree? Inter-rater reliability of QA ratings (`postdesk qa agreement`).

For each criterion, over the tickets rated by two or more reviewers (the items):

- `percent_agreement`: per item, the share of pairs of its reviewers who gave the same
  rating; averaged over items (with two reviewers: the share of items they agree on).
- `krippendorff_alpha` (the `krippendorff` package): chance-corrected agreement for any
  number of reviewers with missing ratings, with the ordinal metric for rating scales
  (1-3, 1-4, 1-5) and the nominal one for pass-fail; 1 is perfect, 0 is chance. Below
  0.667 (Krippendorff's lowest acceptable value for tentative conclusions) the
  criterion is flagged `unreliable`. `alpha_by_level` also gives the nominal, ordinal and
  interval values for rating scales, to compare with published figures.
- `alpha_ci`: a 95% percentile bootstrap interval, resampling items (tickets) with
  replacement (`BOOTSTRAP` resamples, a fixed seed so the output is reproducible).
- `cohen_kappa` (scikit-learn's `cohen_kappa_score`), only where exactly two reviewers
  rated: unweighted for pass-fail, linearly weighted for rating scales.

N/A answers are left out (missing), as is everything but finished reviews. `overall`
pools every criterion's ratings as criterion scores (0 to 1), nominal when all criteria
are pass-fail and ordinal otherwise.

QA ratings are mostly "pass": when nearly everything falls in one category, chance
agreement is high, so kappa and alpha can be low while percent agreement is high. Both
are shown; a low alpha with high agreement means the rare ratings (the failures QA is
looking for) are the ones reviewers disagree on.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score  # type: ignore[import-untyped]
from sqlalchemy import Connection, select

from postdesk.models import QaRating, QaReview
from postdesk.qa.scorecard import Criterion
from postdesk.qa.scoring import criterion_score
from postdesk.qa.store import StoredScorecard, scorecard_versions

Level = Literal["nominal", "ordinal", "interval"]
RELIABLE = 0.667
BOOTSTRAP = 1000
SEED = 20070101  # fixed: the same ratings always print the same interval
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")

Item = Any  # a ticket number, or (ticket, criterion) when pooled
Ratings = Mapping[Item, Mapping[str, float]]  # item -> reviewer -> value


def _matrix(ratings: Ratings, items: Sequence[Item], reviewers: Sequence[str]) -> np.ndarray:
    data = np.full((len(reviewers), len(items)), np.nan)
    where = {r: i for i, r in enumerate(reviewers)}
    for j, item in enumerate(items):
        for reviewer, value in ratings[item].items():
            data[where[reviewer], j] = value
    return data


def _alpha(data: np.ndarray, level: Level, domain: Sequence[float]) -> float | None:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = krippendorff.alpha(
                reliability_data=data, level_of_measurement=level, value_domain=list(domain)
            )
        except ValueError:  # fewer than two values, nothing pairable
            return None
    return None if math.isnan(value) else float(value)


def percent_agreement(ratings: Ratings, items: Sequence[Item]) -> float | None:
    """Mean over items of the share of reviewer pairs giving the same rating."""
    shares = []
    for item in items:
        values = list(ratings[item].values())
        pairs = list(combinations(values, 2))
        shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else None


def bootstrap_alpha(
    data: np.ndarray, level: Level, domain: Sequence[float], resamples: int, seed: int
) -> list[float] | None:
    """The 2.5% and 97.5% percentiles of alpha over item resamples, or None when fewer
    than half of the resamples give a defined alpha."""
    rng = np.random.default_rng(seed)
    n = data.shape[1]
    values = []
    for _ in range(resamples):
        value = _alpha(data[:, rng.integers(0, n, size=n)], level, domain)
        if value is not None:
            values.append(value)
    if len(values) < resamples / 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def cohen_kappa(
    ratings: Ratings,
    items: Sequence[Item],
    reviewers: Sequence[str],
    labels: Sequence[float],
    *,
    weighted: bool,
) -> float | None:
    """Cohen's kappa of two reviewers over the items both rated (linear weights if
    `weighted`); None unless exactly two reviewers rated or when it is undefined."""
    if len(reviewers) != 2:
        return None
    first, second = reviewers
    pairs = [(ratings[i][first], ratings[i][second]) for i in items if len(ratings[i]) == 2]
    if not pairs:
        return None
    a, b = zip(*pairs, strict=True)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(
            list(a), list(b), labels=list(labels), weights="linear" if weighted else None
        )
    return None if math.isnan(value) else float(value)


def agreement(
    ratings: Ratings,
    level: Level,
    domain: Sequence[float],
    *,
    all_levels: bool = False,
    resamples: int = BOOTSTRAP,
    seed: int = SEED,
) -> dict[str, Any]:
    """The agreement figures (see the module docstring) of `ratings` on `domain`, the
    scale's possible values, with Krippendorff's `level` of measurement."""
    items = sorted((i for i in ratings if len(ratings[i]) >= 2), key=repr)
    reviewers = sorted({r for i in items for r in ratings[i]})
    result: dict[str, Any] = {
        "n_items": len(items),
        "n_reviewers": len(reviewers),
        "level": level,
        "percent_agreement": percent_agreement(ratings, items),
        "krippendorff_alpha": None,
        "alpha_ci": None,
        "cohen_kappa": None,
        "unreliable": None,
    }
    if not items:
        return result
    data = _matrix(ratings, items, reviewers)
    alpha = _alpha(data, level, domain)
    result["krippendorff_alpha"] = alpha
    result["alpha_ci"] = bootstrap_alpha(data, level, domain, resamples, seed)
    result["cohen_kappa"] = cohen_kappa(
        ratings, items, reviewers, domain, weighted=level != "nominal"
    )
    result["unreliable"] = alpha is None or alpha < RELIABLE
    if all_levels:
        result["alpha_by_level"] = {lv: _alpha(data, lv, domain) for lv in LEVELS}
    return result


def _level_of(criterion: Criterion) -> Level:
    return "nominal" if criterion.scale == "pass-fail" else "ordinal"


@dataclass(frozen=True)
class Collected:
    """Finished reviews' ratings of one scorecard, ready for `agreement`."""

    criteria: list[Criterion]
    per_criterion: dict[str, dict[int, dict[str, float]]]  # key -> ticket -> reviewer -> rating
    versions: list[int]


def collect(conn: Connection, latest: StoredScorecard) -> Collected:
    """The ratings of finished reviews with any version of `latest`'s scorecard, for the
    criteria of `latest`; a version in which a criterion had another scale does not count
    for it. A reviewer's latest finished review of a ticket stands for them."""
    versions = scorecard_versions(conn, latest.name)
    rows = conn.execute(
        select(
            QaReview.ticket_id,
            QaReview.reviewer,
            QaReview.scorecard_id,
            QaReview.finished_at,
            QaRating.criterion,
            QaRating.rating,
        )
        .join(QaRating, QaRating.review_id == QaReview.id)
        .where(
            QaReview.scorecard_id.in_(list(versions)),
            QaReview.finished_at.is_not(None),
            QaRating.rating.is_not(None),
        )
        .order_by(QaReview.finished_at, QaReview.id)
    )
    criteria = list(latest.scorecard.criteria)
    scales = {c.key: c.scale for c in criteria}
    per: dict[str, dict[int, dict[str, float]]] = {c.key: defaultdict(dict) for c in criteria}
    used: set[int] = set()
    for row in rows:
        then = versions[row.scorecard_id].scorecard.criterion(row.criterion)
        if row.criterion not in scales or then is None or then.scale != scales[row.criterion]:
            continue
        per[row.criterion][row.ticket_id][row.reviewer] = float(row.rating)  # later wins
        used.add(versions[row.scorecard_id].version)
    return Collected(criteria, {k: dict(v) for k, v in per.items()}, sorted(used))


def agreement_report(collected: Collected, *, resamples: int = BOOTSTRAP) -> dict[str, Any]:
    """`{"overall": {...}, "per_criterion": {key: {...}}}` for `qa agreement --json`."""
    per_criterion = {}
    pooled: dict[Item, dict[str, float]] = {}
    pooled_domain: set[float] = set()
    for c in collected.criteria:
        ratings = collected.per_criterion[c.key]
        per_criterion[c.key] = agreement(
            ratings,
            _level_of(c),
            [float(r) for r in c.ratings],
            all_levels=c.scale != "pass-fail",
            resamples=resamples,
        )
        per_criterion[c.key]["scale"] = c.scale
        for ticket, by_reviewer in ratings.items():
            pooled[(ticket, c.key)] = {
                r: criterion_score(int(v), c.scale) for r, v in by_reviewer.items()
            }
        pooled_domain.update(criterion_score(r, c.scale) for r in c.ratings)
    level: Level = (
        "nominal" if all(c.scale == "pass-fail" for c in collected.criteria) else "ordinal"
    )
    overall = agreement(pooled, level, sorted(pooled_domain), resamples=resamples)
    return {"overall": overall, "per_criterion": per_criterion}
