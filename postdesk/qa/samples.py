"""`postdesk qa sample`: draw tickets for review from the frame and store the draw.

Designs (see postdesk/qa/sampling.py for the methods and their inclusion probabilities):

| options                | design           | each ticket's inclusion probability            |
|------------------------|------------------|------------------------------------------------|
| `--n N`                | `simple`         | N / frame size                                  |
| `--per-agent N`        | `stratified`     | N / tickets of its agent (1 if fewer)           |
| `--n N --risk`         | `pps`            | N x risk / total risk, capped at 1              |
| `--per-agent N --risk` | `stratified-pps` | the same within its agent's tickets             |

Strata are assignees (unassigned tickets form a stratum of their own).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection

from postdesk.config import Settings
from postdesk.errors import PostdeskError
from postdesk.qa.frame import Period, eligible_tickets
from postdesk.qa.risk import TicketFacts, risk
from postdesk.qa.sampling import Draw, assign_reviewers, pps, simple, stratified
from postdesk.qa.store import SampledTicket, SavedSample, StoredScorecard, save_sample

UNASSIGNED = "(unassigned)"


@dataclass(frozen=True)
class SampleRequest:
    """What `qa sample` was asked for."""

    period: Period
    n: int | None = None
    per_agent: int | None = None
    risk: bool = False
    queue: str | None = None
    agent: str | None = None
    seed: int | None = None
    reviewers: Sequence[str] = ()
    overlap: float = 0.0

    def check(self) -> None:
        if (self.n is None) == (self.per_agent is None):
            raise PostdeskError("say how many tickets: give --n N or --per-agent N (one of them)")
        size = self.n if self.n is not None else self.per_agent
        if size is not None and size < 1:
            raise PostdeskError(f"the sample size must be 1 or more, not {size}")
        if not 0 <= self.overlap <= 1:
            raise PostdeskError(f"--overlap is a share from 0 to 1, not {self.overlap:g}")
        if self.overlap and len(set(self.reviewers)) < 2:
            raise PostdeskError("--overlap needs two or more --reviewer (a ticket's two reviewers)")
        if len(set(self.reviewers)) != len(self.reviewers):
            raise PostdeskError("a --reviewer is named twice")
        if self.period.since >= self.period.until:
            raise PostdeskError("--since must be before --until")

    @property
    def design(self) -> str:
        base = "simple" if self.n is not None else "stratified"
        if self.risk:
            return "pps" if base == "simple" else "stratified-pps"
        return base

    def parameters(self) -> dict[str, Any]:
        return {
            "since": self.period.since.isoformat(),
            "until": self.period.until.isoformat(),
            "queue": self.queue,
            "agent": self.agent,
            "n": self.n,
            "per_agent": self.per_agent,
            "risk": self.risk,
            "reviewers": list(self.reviewers),
            "overlap": self.overlap,
        }


@dataclass
class SampleResult:
    scorecard: StoredScorecard
    request: SampleRequest
    seed: int
    frame_size: int
    tickets: list[SampledTicket]
    saved: SavedSample | None = None
    created_at: datetime | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        return {
            "sample": self.saved.id if self.saved else None,
            "saved": self.saved is not None,
            "scorecard": {"name": self.scorecard.name, "version": self.scorecard.version},
            "design": self.request.design,
            "seed": self.seed,
            "frame_size": self.frame_size,
            "parameters": self.request.parameters(),
            "tickets": [
                {
                    "ticket": t.ticket,
                    "inclusion_probability": t.inclusion_probability,
                    "stratum": t.stratum,
                    "risk_weight": t.risk_weight,
                    "risk": list(t.risk_reasons),
                    "reviewers": list(t.reviewers),
                    "blind": t.blind,
                }
                for t in self.tickets
            ],
        }


def _draws(
    frame: list[TicketFacts], request: SampleRequest, rng: np.random.Generator
) -> list[Draw]:
    sizes = [risk(t)[0] for t in frame] if request.risk else None
    if request.n is not None:
        if sizes is None:
            return simple(len(frame), request.n, rng)
        return pps(sizes, request.n, rng)
    assert request.per_agent is not None
    strata = [t.agent or UNASSIGNED for t in frame]
    return stratified(strata, request.per_agent, rng, sizes)


def draw_sample(
    conn: Connection,
    scorecard: StoredScorecard,
    request: SampleRequest,
    *,
    save: bool = True,
    created_by: str = "",
    settings: Settings | None = None,
) -> SampleResult:
    """Draw a sample as `request` says, from the tickets eligible for `scorecard`, and
    store it (unless `save` is false: a preview). The same seed on the same frame gives
    the same tickets and the same reviewers."""
    request.check()
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    rng = np.random.default_rng(seed)
    frame = eligible_tickets(
        conn,
        request.period,
        scorecard=scorecard.name,
        queue=request.queue,
        agent=request.agent,
        settings=settings,
    )
    draws = _draws(frame, request, rng)
    # Reviewers get tickets in a random order, so an even split mixes agents and risks.
    reviewers = assign_reviewers(len(draws), list(request.reviewers), request.overlap, rng)
    stratify = request.per_agent is not None
    tickets = []
    for draw, assigned in zip(draws, reviewers, strict=True):
        facts = frame[draw.index]
        weight, reasons = risk(facts)
        tickets.append(
            SampledTicket(
                ticket=facts.ticket,
                inclusion_probability=draw.probability,
                stratum=(facts.agent or UNASSIGNED) if stratify else "",
                risk_weight=weight,
                risk_reasons=reasons,
                reviewers=assigned,
                blind=len(assigned) > 1,
            )
        )
    result = SampleResult(scorecard, request, seed, len(frame), tickets)
    if save and tickets:
        result.saved = save_sample(
            conn,
            scorecard,
            design=request.design,
            parameters=request.parameters(),
            seed=seed,
            frame_size=len(frame),
            tickets=tickets,
            created_by=created_by,
        )
    return result
