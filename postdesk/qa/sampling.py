"""Sampling designs for QA: which tickets to review, each with its inclusion probability.

Pure functions over a frame (the eligible tickets, in a fixed order) and a seeded
`numpy.random.Generator`, so a sample is reproducible from its seed. Every design returns
the first-order inclusion probability pi_i of each drawn ticket, exactly: the probability
that this design, run on this frame, draws ticket i. That is what lets `scoring.iqs`
weight a review by 1/pi_i and estimate the quality of all tickets, not of the picked ones.

- `simple`: n tickets uniformly without replacement; pi = n / N.
- `stratified`: per stratum (agent) h, n_h = min(n, N_h) uniformly; pi = n_h / N_h.
- `pps` (risk-weighted): n tickets with probability proportional to a size measure (the
  risk weight), without replacement, by randomized systematic sampling: the frame is put
  in random order, each ticket covers an interval of length pi_i on a line of length n,
  and the tickets under the points u, u+1, ..., u+n-1 (u uniform in [0, 1)) are drawn.
  Why this method: its sample size is fixed (reviewers get the n tickets asked for, unlike
  Poisson sampling) and its inclusion probabilities are exactly pi_i = n * x_i / sum(x)
  (after tickets whose pi would reach 1 are taken with certainty), by construction,
  unlike conditional Poisson, whose pi are only approximately the working ones; and it
  needs no rejection loop (Sampford's). The price is that its joint inclusion
  probabilities are not known in closed form, which is why `iqs` uses the
  with-replacement variance approximation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draw:
    """One drawn unit: its index in the frame and its inclusion probability."""

    index: int
    probability: float


def pps_probabilities(sizes: Sequence[float], n: int) -> list[float]:
    """Inclusion probabilities proportional to `sizes` for a sample of `n`: n x_i / sum(x),
    with units that would exceed 1 set to 1 (taken with certainty) and the rest rescaled
    to the remaining sample size, until none exceeds 1. Sizes must be positive.
    """
    count = len(sizes)
    if any(s <= 0 for s in sizes):
        raise ValueError("every size must be positive: a unit that can never be drawn biases")
    if n >= count:
        return [1.0] * count
    pi = [0.0] * count
    certain: set[int] = set()
    while True:
        rest = [i for i in range(count) if i not in certain]
        left = n - len(certain)
        total = sum(sizes[i] for i in rest)
        newly = [i for i in rest if left * sizes[i] / total >= 1]
        if not newly:
            for i in rest:
                pi[i] = left * sizes[i] / total
            for i in certain:
                pi[i] = 1.0
            return pi
        certain.update(newly)


def systematic(probabilities: Sequence[float], rng: np.random.Generator) -> list[int]:
    """Randomized systematic sampling: the indices drawn, given inclusion probabilities
    below 1 summing to an integer n (each unit i is drawn with probability exactly pi_i)."""
    pi = np.asarray(probabilities, dtype=float)
    n = round(float(pi.sum()))
    if n == 0:
        return []
    order = rng.permutation(len(pi))
    cumulative = np.cumsum(pi[order])
    cumulative[-1] = n  # guard against rounding at the end of the line
    points = rng.uniform(0.0, 1.0) + np.arange(n)
    # Unit k covers [cumulative[k-1], cumulative[k]), shorter than the points' spacing,
    # so it holds one point with probability pi_k and never two.
    hits = np.searchsorted(cumulative, points, side="right")
    return sorted(int(order[h]) for h in hits)


def simple(frame_size: int, n: int, rng: np.random.Generator) -> list[Draw]:
    """n of `frame_size` units uniformly without replacement (all if n >= frame_size)."""
    take = min(n, frame_size)
    if take == 0:
        return []
    chosen = rng.choice(frame_size, size=take, replace=False)
    p = take / frame_size
    return [Draw(int(i), p) for i in sorted(chosen)]


def pps(sizes: Sequence[float], n: int, rng: np.random.Generator) -> list[Draw]:
    """n units with probability proportional to `sizes`, without replacement (see the
    module's docstring for the method)."""
    if not sizes or n <= 0:
        return []
    pi = pps_probabilities(sizes, n)
    # Certain units are taken as they are; the systematic pass runs over the others, whose
    # probabilities (each below 1) sum to the rest of n, so none can be hit twice.
    certain = [i for i, p in enumerate(pi) if p >= 1.0]
    others = [i for i, p in enumerate(pi) if p < 1.0]
    drawn = certain + [others[k] for k in systematic([pi[i] for i in others], rng)]
    return [Draw(i, pi[i]) for i in sorted(drawn)]


def stratified(
    strata: Sequence[Hashable],
    n_per_stratum: int,
    rng: np.random.Generator,
    sizes: Sequence[float] | None = None,
) -> list[Draw]:
    """Up to `n_per_stratum` units from each stratum: uniformly, or with probability
    proportional to `sizes` within the stratum when given. Strata are visited in sorted
    order of their labels' text, so the same seed gives the same sample."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(strata):
        members[label].append(index)
    draws: list[Draw] = []
    for label in sorted(members, key=str):
        units = members[label]
        if sizes is None:
            picked = simple(len(units), n_per_stratum, rng)
        else:
            picked = pps([sizes[i] for i in units], n_per_stratum, rng)
        draws.extend(Draw(units[d.index], d.probability) for d in picked)
    return sorted(draws, key=lambda d: d.index)


def assign_reviewers(
    count: int, reviewers: Sequence[str], overlap: float, rng: np.random.Generator
) -> list[list[str]]:
    """Reviewers for each of `count` drawn tickets: split evenly (counts differ by at most
    one), and a share `overlap` of the tickets, chosen at random, also goes to a second,
    different reviewer (blind double review, for calibration). One list per ticket."""
    if not reviewers:
        return [[] for _ in range(count)]
    if overlap and len(reviewers) < 2:
        raise ValueError("double review needs at least two reviewers")
    order = rng.permutation(count)
    assigned: list[list[str]] = [[] for _ in range(count)]
    for position, ticket in enumerate(order):
        assigned[int(ticket)].append(reviewers[position % len(reviewers)])
    doubles = round(overlap * count)
    for position, ticket in enumerate(rng.permutation(count)[:doubles]):
        first = reviewers.index(assigned[int(ticket)][0])
        # Second reviewers rotate too, starting one after the first, so no one reviews a
        # ticket twice and the extra work is spread evenly.
        second = reviewers[(first + 1 + position % (len(reviewers) - 1)) % len(reviewers)]
        assigned[int(ticket)].append(second)
    return assigned
