"""Demo-like QA data for the README chart: 6 weeks, 4 agents, one risk-weighted sample.

Usage: python scripts/qa_report_chart_data.py DIR, then
`postdesk --config DIR/postdesk.toml qa report --plot docs/qa-report.png`.
"""

import random
import sys
from pathlib import Path

from sqlalchemy import select

from postdesk.models import QaAssignment, QaSampledTicket
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.qa.scorecard import default_scorecard
from postdesk.qa.store import (
    SampledTicket,
    finish_review,
    register_scorecard,
    save_answer,
    save_sample,
    start_review,
)
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config
from postdesk.tickets.lifecycle import set_label

d = Path(sys.argv[1])
d.mkdir(parents=True, exist_ok=True)
(d / "postdesk.db").unlink(missing_ok=True)
db = Database(f"sqlite:///{d / 'postdesk.db'}")
upgrade(db)
rng = random.Random(7)
agents = {
    "sara@example.com": 0.85,
    "omid@example.com": 0.7,
    "neda@example.com": 0.9,
    "reza@example.com": 0.75,
}
specs, meta = [], []
for week in range(6):
    for agent in agents:
        for _ in range(5):
            specs.append(SolvedTicket(agent=agent, day=week * 7 + rng.randrange(5)))
            meta.append(
                (
                    agent,
                    week,
                    rng.choice(["billing", "shipping", "account"]),
                    rng.choice([1, 1, 2, 4]),
                )
            )
numbers = add_solved_tickets(db, specs)
card = default_scorecard()
with db.transaction() as s:
    conn = s.connection()
    stored = register_scorecard(conn, card)
    for n, (_, _, cat, _) in zip(numbers, meta, strict=True):
        set_label(conn, n, "category", cat, actor="x")
    total = sum(m[3] for m in meta)
    sampled = [
        SampledTicket(n, min(1.0, 60 * m[3] / total), reviewers=("rita@example.com",))
        for n, m in zip(numbers, meta, strict=True)
    ]
    save_sample(
        conn, stored, design="pps", parameters={}, seed=7, frame_size=len(numbers), tickets=sampled
    )
    for n, (agent, week, _, risk) in zip(numbers, meta, strict=True):
        aid = conn.execute(
            select(QaAssignment.id)
            .join(QaSampledTicket, QaSampledTicket.id == QaAssignment.sampled_ticket_id)
            .where(QaSampledTicket.ticket_id == n)
        ).scalar_one()
        rid = start_review(conn, n, "rita@example.com", stored, assignment_id=aid)
        q = agents[agent] + 0.02 * week - 0.08 * (risk > 1)
        for c in card.criteria:
            if c.na_allowed and rng.random() < 0.15:
                save_answer(conn, rid, card, c.key, None)
                continue
            lo, hi = c.lowest, c.highest
            r = lo + round((hi - lo) * min(1, max(0, rng.gauss(q, 0.2))))
            if c.critical and rng.random() < 0.04:
                r = lo
            causes = (
                [rng.choice(c.root_causes)] if c.root_causes and (r - lo) / (hi - lo) < 0.5 else []
            )
            save_answer(conn, rid, card, c.key, r, root_causes=causes)
        finish_review(conn, rid, card)
print(qa_config(d, db.url))
