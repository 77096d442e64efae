"""The arithmetic of QA scores: pure functions, no database.

- A criterion's score is (rating - min) / (max - min) on its scale: 0 to 1.
- A review's score is the weighted mean of its rated criteria's scores, times 100 (0 to
  100); criteria answered N/A are left out. A critical criterion whose score is below
  half (a fail, or 1-2 of 5) sets the review's score to 0; its ratings are kept as given.
- The IQS (internal quality score) of a set of reviews estimates the mean review score of
  all the tickets the samples were drawn from: each review counts with the inverse of its
  ticket's inclusion probability (Hájek), with a 95% confidence interval. See `iqs`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postdesk.qa.scorecard import SCALES, Criterion

NA = None
"""A criterion answered "not applicable" (only where the scorecard allows it)."""

Rating = int | None
"""A criterion's answer: a rating on its scale, or NA (None)."""


def criterion_score(rating: int, scale: str) -> float:
    """(rating - min) / (max - min) on `scale`: 0 for the lowest rating, 1 for the highest."""
    lowest, highest = SCALES[scale]
    if not lowest <= rating <= highest:
        raise ValueError(f"rating {rating} is not on the {scale} scale")
    return (rating - lowest) / (highest - lowest)


def critical_failure(criteria: Sequence[Criterion], ratings: Mapping[str, Rating]) -> list[str]:
    """The keys of the critical criteria rated below half of their scale."""
    return [
        c.key
        for c in criteria
        if c.critical
        and ratings.get(c.key) is not None
        and criterion_score(ratings[c.key], c.scale) < 0.5  # type: ignore[arg-type]
    ]


def review_score(criteria: Sequence[Criterion], ratings: Mapping[str, Rating]) -> float | None:
    """A review's score, 0-100: the weighted mean of the rated criteria's scores x 100.

    `ratings` maps criterion keys to a rating or NA; criteria answered NA, or not in
    `ratings`, are left out. A critical criterion below half makes the score 0. None when
    no criterion was rated (everything NA): such a review says nothing about quality.
    """
    total = weights = 0.0
    for c in criteria:
        rating = ratings.get(c.key)
        if rating is None:
            continue
        total += c.weight * criterion_score(rating, c.scale)
        weights += c.weight
    if weights == 0:
        return None
    if critical_failure(criteria, ratings):
        return 0.0
    return 100.0 * total / weights


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% confidence interval, from `n` reviews."""

    value: float
    low: float
    high: float
    n: int
    standard_error: float
    method: str

    def as_json(self) -> dict[str, object]:
        return {
            "value": self.value,
            "ci": [self.low, self.high],
            "n": self.n,
            "standard_error": self.standard_error,
            "method": self.method,
        }


def iqs(
    scores: Sequence[float],
    inclusion_probabilities: Sequence[float] | None = None,
    strata: Sequence[str] | None = None,
    *,
    level: float = 0.95,
    bounds: tuple[float, float] = (0.0, 100.0),
) -> Estimate | None:
    """The internal quality score: the estimated mean review score of the whole population.

    Estimator: Hájek's ratio estimator, sum(y_i / pi_i) / sum(1 / pi_i), where pi_i is the
    probability that ticket i was drawn. Unlike the plain mean of the reviewed tickets it
    is (approximately, with a bias of order 1/n) unbiased when tickets were drawn with
    unequal probabilities (risk-weighted or stratified samples); for a simple random
    sample all pi_i are equal and it is the plain mean. Without probabilities (None) each
    review counts once.

    Variance: Taylor linearization of the ratio with the with-replacement approximation
    (as R's `survey` package does when joint inclusion probabilities are not given):
    v = n/(n-1) * sum((w_i (y_i - estimate))^2) / (sum w_i)^2, w_i = 1/pi_i, summed within
    each stratum (tickets' strata, when given and every stratum has two or more reviews)
    and around the stratum mean. It ignores the finite-population correction, so it errs
    on the wide side when a large share of the tickets was reviewed. The interval is
    estimate ± t(n-1) * sqrt(v), clipped to `bounds` (0-100). None without any score.
    """
    n = len(scores)
    if n == 0:
        return None
    probabilities = list(inclusion_probabilities) if inclusion_probabilities else [1.0] * n
    if len(probabilities) != n or any(not 0 < p <= 1 for p in probabilities):
        raise ValueError("each score needs an inclusion probability in (0, 1]")
    weights = [1.0 / p for p in probabilities]
    total_weight = sum(weights)
    value = sum(w * y for w, y in zip(weights, scores, strict=True)) / total_weight
    method = "hajek" if inclusion_probabilities else "mean"
    if n == 1:
        return Estimate(value, bounds[0], bounds[1], 1, math.inf, method)
    residuals = [w * (y - value) / total_weight for w, y in zip(weights, scores, strict=True)]
    groups = list(strata) if strata is not None else ["all"] * n
    counts = Counter(groups)
    if min(counts.values()) < 2:
        groups, counts = ["all"] * n, Counter({"all": n})
    variance = 0.0
    for group, size in counts.items():
        members = [r for r, g in zip(residuals, groups, strict=True) if g == group]
        mean = sum(members) / size
        variance += size / (size - 1) * sum((r - mean) ** 2 for r in members)
    se = math.sqrt(variance)
    # Imported here: scipy.stats takes about half a second to import, which every
    # postdesk command paid at start-up while only this line needs it.
    from scipy import stats  # type: ignore[import-untyped]

    margin = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * se
    low, high = max(bounds[0], value - margin), min(bounds[1], value + margin)
    return Estimate(value, low, high, n, se, method)
