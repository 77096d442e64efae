"""QA arithmetic: criterion and review scores, the weighted IQS, and the sampling designs'
inclusion probabilities, on pure functions (no database)."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from postdesk.qa.risk import TicketFacts, risk
from postdesk.qa.sampling import (
    assign_reviewers,
    pps,
    pps_probabilities,
    simple,
    stratified,
)
from postdesk.qa.scorecard import Criterion
from postdesk.qa.scoring import NA, criterion_score, iqs, review_score

TONE = Criterion(key="tone", title="Tone", scale="1-5", weight=2, na_allowed=True)
POLICY = Criterion(key="policy", title="Policy", scale="pass-fail", critical=True, na_allowed=True)
CLARITY = Criterion(key="clarity", title="Clarity", scale="1-4", weight=1)
CARD = (TONE, POLICY, CLARITY)


def test_criterion_score_is_the_place_on_the_scale() -> None:
    assert [criterion_score(r, "1-5") for r in (1, 2, 3, 5)] == [0.0, 0.25, 0.5, 1.0]
    assert [criterion_score(r, "pass-fail") for r in (0, 1)] == [0.0, 1.0]
    assert criterion_score(2, "1-3") == 0.5
    assert criterion_score(3, "1-4") == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        criterion_score(6, "1-5")


def test_review_score_is_the_weighted_mean_of_rated_criteria() -> None:
    # tone 4 -> 0.75 (weight 2), policy pass -> 1 (weight 1), clarity 3 -> 2/3 (weight 1)
    assert review_score(CARD, {"tone": 4, "policy": 1, "clarity": 3}) == pytest.approx(
        100 * (2 * 0.75 + 1 + 2 / 3) / 4
    )
    # N/A is left out of the mean, weights and all.
    assert review_score(CARD, {"tone": 4, "policy": NA, "clarity": 3}) == pytest.approx(
        100 * (2 * 0.75 + 2 / 3) / 3
    )
    assert review_score(CARD, {"tone": NA, "policy": NA}) is None


def test_a_critical_criterion_below_half_fails_the_review() -> None:
    assert review_score(CARD, {"tone": 5, "policy": 0, "clarity": 4}) == 0.0
    critical_tone = Criterion(key="t", title="T", scale="1-5", critical=True)
    assert review_score([critical_tone], {"t": 2}) == 0.0  # 0.25 < 0.5
    assert review_score([critical_tone], {"t": 3}) == 50.0  # exactly half is not below


def test_iqs_of_a_simple_random_sample_is_the_mean_with_a_t_interval() -> None:
    scores = [70.0, 80.0, 90.0, 100.0, 60.0]
    estimate = iqs(scores, [0.1] * 5)
    assert estimate is not None
    assert estimate.value == pytest.approx(80.0)
    # s / sqrt(n) with s the sample standard deviation; t(4) 97.5% = 2.776
    se = statistics.stdev(scores) / math.sqrt(5)
    assert estimate.standard_error == pytest.approx(se)
    assert estimate.low == pytest.approx(80 - 2.7764 * se, abs=1e-3)
    assert estimate.high == pytest.approx(80 + 2.7764 * se, abs=1e-3)
    assert iqs([]) is None


def test_iqs_weights_by_inverse_inclusion_probability() -> None:
    # A ticket drawn with probability 0.5 stands for 2 tickets, one with 0.1 for 10.
    estimate = iqs([0.0, 100.0], [0.5, 0.1])
    assert estimate is not None and estimate.value == pytest.approx(100 * 10 / 12)
    assert estimate.method == "hajek"


# --- criterion 3: the weighted IQS from risk-weighted samples is unbiased --------------------


def population(size: int, seed: int) -> tuple[list[float], list[float]]:
    """Tickets of known quality whose risk weight goes with low quality (as in life)."""
    rng = np.random.default_rng(seed)
    risky = rng.random(size) < 0.25
    weights = np.where(risky, 1.0 + rng.integers(2, 7, size), 1.0)
    quality = np.clip(np.where(risky, 55.0, 88.0) + rng.normal(0, 12, size), 0, 100)
    return weights.tolist(), quality.tolist()


def test_weighted_iqs_of_risk_samples_is_unbiased_and_the_plain_mean_is_not() -> None:
    weights, quality = population(2000, seed=1)
    truth = statistics.fmean(quality)
    weighted, plain, covered = [], [], 0
    for seed in range(400):
        draws = pps(weights, 60, np.random.default_rng(seed))
        scores = [quality[d.index] for d in draws]
        estimate = iqs(scores, [d.probability for d in draws])
        assert estimate is not None and len(draws) == 60
        weighted.append(estimate.value)
        plain.append(statistics.fmean(scores))
        covered += estimate.low <= truth <= estimate.high
    monte_carlo_se = statistics.stdev(weighted) / math.sqrt(len(weighted))
    # Unbiased: the average estimate is the truth, up to Monte Carlo noise.
    assert abs(statistics.fmean(weighted) - truth) < 3 * monte_carlo_se + 0.1
    # The plain mean of the reviewed tickets over-represents risky ones: far too low.
    assert truth - statistics.fmean(plain) > 20 * monte_carlo_se
    assert truth - statistics.fmean(plain) > 5  # points of IQS
    # And the 95% interval covers the truth about 95% of the time (conservative is fine).
    assert 0.90 <= covered / 400 <= 1.0


# --- inclusion probabilities are what the designs say --------------------------------------


def test_pps_probabilities_are_proportional_and_capped_at_one() -> None:
    pi = pps_probabilities([1, 1, 1, 1, 20], 3)
    assert pi[4] == 1.0  # would be 3 * 20/24 > 1: taken for certain
    assert pi[:4] == pytest.approx([0.5] * 4)  # the other 2 spread over the rest
    assert sum(pi) == pytest.approx(3)
    assert pps_probabilities([2, 3], 5) == [1.0, 1.0]
    with pytest.raises(ValueError, match="positive"):
        pps_probabilities([1, 0, 2], 1)


@pytest.mark.parametrize("design", ["simple", "pps", "stratified", "stratified-pps"])
def test_drawn_frequencies_match_the_stored_probabilities(design: str) -> None:
    sizes = [1, 1, 2, 3, 1, 5, 1, 1, 8, 2, 1, 4]
    strata = ["a", "a", "a", "b", "b", "b", "b", "b", "c", "c", "c", "c"]
    rng = np.random.default_rng(2024)
    counts = [0] * len(sizes)
    probability: dict[int, float] = {}
    runs = 3000
    for _ in range(runs):
        if design == "simple":
            draws = simple(len(sizes), 4, rng)
        elif design == "pps":
            draws = pps(sizes, 4, rng)
        elif design == "stratified":
            draws = stratified(strata, 2, rng)
        else:
            draws = stratified(strata, 2, rng, sizes)
        assert len({d.index for d in draws}) == len(draws)  # without replacement
        assert len(draws) == (4 if design in ("simple", "pps") else 6)  # fixed size
        for d in draws:
            counts[d.index] += 1
            assert probability.setdefault(d.index, d.probability) == d.probability
    for index, count in enumerate(counts):
        p = probability[index]
        assert abs(count / runs - p) < 4 * math.sqrt(p * (1 - p) / runs) + 1e-9, (index, p)


def test_the_same_seed_draws_the_same_sample() -> None:
    sizes = [float(1 + i % 5) for i in range(200)]
    first = pps(sizes, 10, np.random.default_rng(42))
    assert first == pps(sizes, 10, np.random.default_rng(42))
    assert first != pps(sizes, 10, np.random.default_rng(43))


def test_reviewers_split_evenly_and_double_review_goes_to_two_people() -> None:
    assigned = assign_reviewers(10, ["ana", "bo", "cy"], 0.2, np.random.default_rng(5))
    firsts = [a[0] for a in assigned]
    assert sorted(firsts.count(r) for r in ("ana", "bo", "cy")) == [3, 3, 4]
    doubles = [a for a in assigned if len(a) == 2]
    assert len(doubles) == 2 and all(a[0] != a[1] for a in doubles)
    assert assign_reviewers(3, [], 0.0, np.random.default_rng(1)) == [[], [], []]


def test_risk_weight_counts_each_factor_and_never_drops_below_one() -> None:
    opened = datetime(2026, 11, 2, tzinfo=UTC)
    calm = TicketFacts(
        ticket=1,
        queue="support",
        agent=None,
        created_at=opened,
        resolved_at=opened + timedelta(hours=1),
        messages=2,
        reopened=0,
        csat=5,
        category_probability=0.95,
        category_source="model",
        needs_triage=False,
    )
    assert risk(calm) == (1.0, [])
    stormy = TicketFacts(
        **{
            **calm.__dict__,
            "resolved_at": opened + timedelta(days=5),
            "messages": 9,
            "reopened": 1,
            "csat": 1,
            "category_probability": 0.4,
            "sla_breached": True,
        }
    )
    weight, reasons = risk(stormy)
    assert reasons == [
        "low-csat",
        "reopened",
        "sla-breach",
        "long-resolution",
        "low-confidence",
        "many-messages",
    ]
    assert weight == 1 + 3 + 2 + 2 + 1 + 1 + 1
