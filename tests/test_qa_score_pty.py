"""`postdesk qa score` driven through a pseudo-terminal (issue 13, criterion 1): three
tickets scored with N/A, a comment and root-cause tags, going back (also from the
summary), a critical failure, and a process killed mid-ticket and resumed; the reviews,
answers and scores are then read from the database."""

from __future__ import annotations

import signal
from pathlib import Path

import pexpect
import pytest
from sqlalchemy import select

from postdesk.models import QaRating, QaReview
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config
from postdesk.testing.terminal import spawn_postdesk

CARD = """
name = "phone"
[[criterion]]
key = "tone"
title = "Tone"
scale = "1-5"
na_allowed = true
root_causes = ["rude wording", "no greeting"]

[[criterion]]
key = "policy"
title = "Policy"
scale = "pass-fail"
weight = 2
critical = true

[[criterion]]
key = "resolution"
title = "Resolution"
scale = "1-3"
"""


def key(child: pexpect.spawn, expected: str, keys: str) -> None:
    """Wait until `expected` is on the screen, then type `keys`."""
    child.expect_exact(expected)
    child.send(keys)


def test_scoring_through_a_terminal_with_an_interruption_and_a_resume(
    tmp_path: Path, sqlite_url: str
) -> None:
    db = Database(sqlite_url)
    upgrade(db)
    add_solved_tickets(
        db,
        [
            SolvedTicket(reply="Hello, Sara here. Done.", note="refund checked", csat=5),
            SolvedTicket(day=1, text="سلام، سفارش من هنوز نرسیده است."),
            SolvedTicket(day=2, csat=2),
        ],
    )
    (tmp_path / "phone.toml").write_text(CARD, encoding="utf-8")
    config = qa_config(tmp_path, sqlite_url)
    drawn = Cli(config).json(
        "qa", "sample", "--since", "2026-11-01", "--until", "2026-11-30", "--n", "3",
        "--seed", "5", "--scorecard", str(tmp_path / "phone.toml"), "--reviewer", "Ana@Example.com",
    )  # fmt: skip
    first, second, third = [t["ticket"] for t in drawn["tickets"]]

    child = spawn_postdesk(config, "qa", "score", "--reviewer", "ana@example.com")
    # 1: tone N/A, policy pass, resolution 3; from the summary back twice to policy (a
    # comment on the given answer, Enter keeps it and returns to the summary); back to
    # resolution, now 2.
    key(child, f"Ticket #{first}:", "")
    key(child, "Ticket 1 of 3 · criterion 1 of 3", "n")
    key(child, "[policy]", "p")
    key(child, "[resolution]", "3")
    key(child, "Enter finish", "b")
    key(child, "answered: 3 of 3", "b")
    key(child, "answered: pass", "c")
    key(child, "Comment on policy:", "identity checked\r")
    key(child, "comment saved", "\r")
    key(child, "Enter finish", "b")
    key(child, "answered: 3 of 3", "2")
    key(child, "Enter finish", "\r")
    child.expect_exact(f"Ticket #{first} reviewed: score 83.3")
    # 2: root-cause tag before the rating, tone 4, policy FAIL (critical), resolution 3.
    key(child, "Ticket 2 of 3 · criterion 1 of 3", "r")
    key(child, "Root causes", "1")
    key(child, "[x] 1 rude wording", "\r")
    key(child, "root causes: rude wording", "4")
    key(child, "[policy]", "f")
    key(child, "[resolution]", "3")
    key(child, "Enter finish", "\r")
    child.expect_exact(f"Ticket #{second} reviewed: score 0 (critical failure: policy)")
    # 3: tone 5, then the process is killed while policy waits for its answer.
    key(child, "Ticket 3 of 3 · criterion 1 of 3", "5")
    child.expect_exact("criterion 2 of 3")
    child.kill(signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()

    with db.read_session() as session:
        reviews = {r.ticket_id: r for r in session.scalars(select(QaReview))}
    assert set(reviews) == {first, second, third}
    assert reviews[third].finished_at is None and reviews[third].score is None

    # The next session starts at ticket 3's first unanswered criterion.
    child = spawn_postdesk(config, "qa", "score", "--reviewer", "ana@example.com")
    key(child, "resumed (1 answered)", "")
    key(child, "Ticket 3 of 3 · criterion 2 of 3 · 1 answered", "p")
    key(child, "[resolution]", "1")
    key(child, "Enter finish", "\r")
    child.expect_exact(f"Ticket #{third} reviewed: score 75.0")
    child.expect_exact("3 of 3 assigned ticket(s) reviewed. Nothing left to review.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    with db.read_session() as session:
        reviews = {r.ticket_id: r for r in session.scalars(select(QaReview))}
        ratings = {(r.review_id, r.criterion): r for r in session.scalars(select(QaRating)).all()}
    db.dispose()

    def answer(ticket: int, criterion: str) -> QaRating:
        return ratings[(reviews[ticket].id, criterion)]

    assert {t: r.score for t, r in reviews.items()} == {
        first: pytest.approx(100 * (2 * 1 + 0.5) / 3),  # tone N/A
        second: 0.0,  # policy failed: critical
        third: pytest.approx(100 * (1 + 2 * 1 + 0) / 4),
    }
    assert all(
        r.finished_at is not None and r.reviewer == "ana@example.com" for r in reviews.values()
    )
    assert all(r.assignment_id is not None and r.source == "session" for r in reviews.values())
    assert all(r.time_spent_s > 0 for r in reviews.values())
    assert answer(first, "tone").na and answer(first, "tone").rating is None
    assert answer(first, "policy").comment == "identity checked"
    assert answer(first, "resolution").rating == 2
    assert answer(second, "policy").rating == 0  # the failed rating is kept, the score is 0
    assert answer(second, "tone").root_causes == ["rude wording"]
    assert answer(third, "tone").rating == 5  # given before the kill
    assert len(ratings) == 9
