"""Risk weights for risk-weighted QA samples (`postdesk qa sample --risk`).

A ticket's weight is 1 plus the points of each risk factor it shows. Every ticket keeps
at least weight 1: a ticket that could never be drawn could never be represented, and
the weighted IQS would no longer estimate the quality of all tickets. A risky ticket is
drawn more often, and the IQS gives its review less weight (1 / inclusion probability)
in return, so risk sampling finds problems faster without biasing the score.

The factors are one visible table, `RISK_FACTORS`. The `sla_breached` fact comes from the
SLA clocks (postdesk/sla/clock.py, read in `qa/frame.py` through `qa/kpi.py`): whether
either clock was breached; None where no [sla] is configured (no SLA data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class TicketFacts:
    """What sampling knows of a solved or closed ticket."""

    ticket: int
    queue: str | None  # the mailbox's name
    agent: str | None  # the assignee's email
    created_at: datetime
    resolved_at: datetime  # when last solved (or closed, if never solved)
    messages: int
    reopened: int  # times it went from solved or closed back to a status not done
    csat: int | None
    category_probability: float | None  # the model's, when the category was predicted
    category_source: str | None
    needs_triage: bool
    sla_breached: bool | None = None  # None: no SLA data for this ticket (yet)


LONG_RESOLUTION = timedelta(days=3)
LOW_CONFIDENCE = 0.6
MANY_MESSAGES = 6


@dataclass(frozen=True)
class RiskFactor:
    """A reason a ticket is more likely to need review, and how many points it adds."""

    name: str
    points: float
    applies: Callable[[TicketFacts], bool]
    description: str


def _low_confidence(t: TicketFacts) -> bool:
    if t.needs_triage:
        return True
    return (
        t.category_source == "model"
        and t.category_probability is not None
        and t.category_probability < LOW_CONFIDENCE
    )


RISK_FACTORS: tuple[RiskFactor, ...] = (
    RiskFactor("low-csat", 3.0, lambda t: t.csat is not None and t.csat <= 2, "CSAT 1 or 2"),
    RiskFactor("reopened", 2.0, lambda t: t.reopened > 0, "reopened after being solved"),
    RiskFactor("sla-breach", 2.0, lambda t: t.sla_breached is True, "an SLA target was missed"),
    RiskFactor(
        "long-resolution",
        1.0,
        lambda t: t.resolved_at - t.created_at > LONG_RESOLUTION,
        "open for more than 3 days",
    ),
    RiskFactor(
        "low-confidence",
        1.0,
        _low_confidence,
        f"category model unsure (below {LOW_CONFIDENCE}) or needs triage",
    ),
    RiskFactor(
        "many-messages",
        1.0,
        lambda t: t.messages > MANY_MESSAGES,
        f"more than {MANY_MESSAGES} messages",
    ),
)


def risk(ticket: TicketFacts) -> tuple[float, list[str]]:
    """The ticket's risk weight (1 or more) and the names of the factors it shows."""
    reasons = [f.name for f in RISK_FACTORS if f.applies(ticket)]
    points = sum(f.points for f in RISK_FACTORS if f.name in reasons)
    return 1.0 + points, reasons
