"""Reviews: saved one answer at a time (so a session resumes), and `qa import-reviews`,
which imports a whole file or nothing and names every bad line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from postdesk.models import QaRating, QaReview, QaScorecard
from postdesk.models.db import Database
from postdesk.qa.scorecard import default_scorecard
from postdesk.qa.store import (
    ReviewError,
    answers,
    finish_review,
    register_scorecard,
    save_answer,
    start_review,
    unanswered,
)
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config

CARD = """
name = "support"
[[criterion]]
key = "tone"
title = "Tone"
scale = "1-5"
weight = 2
na_allowed = true

[[criterion]]
key = "policy"
title = "Policy"
scale = "pass-fail"
critical = true
"""


def counts(db: Database) -> tuple[int, int, int]:
    with db.read_session() as session:
        return (
            session.scalar(select(func.count(QaScorecard.id))) or 0,
            session.scalar(select(func.count(QaReview.id))) or 0,
            session.scalar(select(func.count(QaRating.id))) or 0,
        )


def test_answers_are_saved_one_at_a_time_and_a_review_resumes(db: Database) -> None:
    (ticket,) = add_solved_tickets(db, [SolvedTicket()])
    card = default_scorecard()
    with db.transaction() as session:
        stored = register_scorecard(session.connection(), card)
        review = start_review(session.connection(), ticket, "rita", stored)
        save_answer(session.connection(), review, card, "tone", 4, comment="warm")
        save_answer(session.connection(), review, card, "understanding", 2)
    # ... the session is interrupted here; a new one finds the same review and goes on.
    with db.transaction() as session:
        conn = session.connection()
        assert start_review(conn, ticket, "rita", stored) == review
        assert unanswered(conn, review, card) == [
            "correct",
            "policy",
            "empathy",
            "clarity",
            "resolution",
        ]
        save_answer(conn, review, card, "understanding", 3)  # going back changes an answer
        with pytest.raises(ReviewError, match="cannot be N/A"):
            save_answer(conn, review, card, "correct", None)
        with pytest.raises(ReviewError, match="not on 'correct'"):
            save_answer(conn, review, card, "correct", 7)
        with pytest.raises(ReviewError, match="no answer yet for correct"):
            finish_review(conn, review, card)
        for key, rating in [
            ("correct", 5),
            ("policy", None),
            ("empathy", None),
            ("clarity", 5),
            ("resolution", 1),
        ]:
            save_answer(conn, review, card, key, rating)
        assert answers(conn, review)["understanding"] == 3
        score = finish_review(conn, review, card, time_spent_s=95.0)
    # tone 0.75 x1, understanding 0.5 x2, correct 1 x3, clarity 1 x1, resolution 1 x2;
    # policy and empathy N/A.
    assert score == pytest.approx(100 * (0.75 + 1 + 3 + 1 + 2) / 9)
    assert counts(db) == (1, 1, 7)


def test_import_reviews_of_a_whole_file(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    numbers = add_solved_tickets(db, [SolvedTicket() for _ in range(2)])
    (tmp_path / "card.toml").write_text(CARD, encoding="utf-8")
    rows = [
        "ticket,reviewer,criterion,rating,comment",
        f"{numbers[0]},rita,tone,۴,خوب بود",  # Persian digit 4
        f"{numbers[0]},rita,policy,pass,",
        f"{numbers[1]},rita,tone,NA,",
        f"{numbers[1]},rita,policy,0,refund outside policy",
        "",
    ]
    (tmp_path / "r.csv").write_text("\n".join(rows), encoding="utf-8")
    cli = Cli(qa_config(tmp_path, db.url))
    out = cli("qa", "import-reviews", str(tmp_path / "r.csv"), "--scorecard", "card.toml").output
    assert "imported 2 review(s) (4 ratings) of 2 ticket(s) by 1 reviewer(s)" in out
    with db.read_session() as session:
        scores = dict(session.execute(select(QaReview.ticket_id, QaReview.score)).all())
        comment = session.scalar(select(QaRating.comment).where(QaRating.rating == 4))
    assert scores == {numbers[0]: pytest.approx(100 * (2 * 0.75 + 1) / 3), numbers[1]: 0.0}
    assert comment == "خوب بود"
    # The same file again: those reviews exist; nothing is imported twice.
    result = cli("qa", "import-reviews", "r.csv", "--scorecard", "card.toml", code=1)
    assert "line 2: rita already reviewed ticket" in result.stderr
    assert counts(db) == (1, 2, 4)


def test_an_imported_review_of_a_sampled_ticket_keeps_its_assignment(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sample in postdesk, score elsewhere, import: the review is the assignment's, so
    its ticket's inclusion probability weighs it in the IQS; an unsampled one has none."""
    monkeypatch.chdir(tmp_path)
    numbers = add_solved_tickets(db, [SolvedTicket() for _ in range(3)])
    (tmp_path / "card.toml").write_text(CARD, encoding="utf-8")
    cli = Cli(qa_config(tmp_path, db.url))
    since, until = "2026-01-01", "2027-12-31"
    drawn = cli.json(
        "qa", "sample", "--scorecard", "card.toml", "--n", "2", "--seed", "3",
        "--since", since, "--until", until, "--reviewer", "Rita@Example.com",
    )  # fmt: skip
    sampled = sorted({row["ticket"] for row in drawn["tickets"]})
    [other] = [n for n in numbers if n not in sampled]
    rows = ["ticket,reviewer,criterion,rating"] + [
        f"{n},rita@example.com,{key},{rating}"
        for n in (*sampled, other)
        for key, rating in (("tone", 5), ("policy", 1))
    ]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cli("qa", "import-reviews", "r.csv", "--scorecard", "card.toml")
    with db.read_session() as session:
        linked = dict(session.execute(select(QaReview.ticket_id, QaReview.assignment_id)).all())
    assert all(linked[n] is not None for n in sampled) and linked[other] is None
    report = cli.json("qa", "report")
    assert report["iqs"]["n"] == 2  # the two sampled tickets; the other is left out


def test_bad_rows_are_named_by_line_and_nothing_is_imported(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (number,) = add_solved_tickets(db, [SolvedTicket()])
    (tmp_path / "card.toml").write_text(CARD, encoding="utf-8")
    rows = [
        "Ticket,Reviewer,Criterion,Rating",
        f"{number},rita,tone,5",  # line 2: good
        f"{number},rita,tonee,3",  # 3: unknown criterion
        f"{number},rita,policy,2",  # 4: not on pass-fail
        f"{number},sam,policy,NA",  # 5: N/A not allowed
        f"x{number},sam,tone,3",  # 6: not a number
        f"{number},sam,tone,3.5",  # 7: not a whole number
        f"{number},rita,tone,4",  # 8: repeats line 2
        f"{number},,tone,4",  # 9: no reviewer
        f"{number},sam,tone,4,extra",  # 10: too many fields
    ]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cli = Cli(qa_config(tmp_path, db.url))
    result = cli("qa", "import-reviews", "r.csv", "--scorecard", "card.toml", code=1)
    error = result.stderr
    assert "r.csv: 8 bad row(s), nothing imported" in error
    for expected in [
        "line 3: scorecard 'support' has no criterion 'tonee'; did you mean 'tone'?",
        "line 4: 2 is not on 'policy''s scale; expected 1 (pass) or 0 (fail)",
        "line 5: 'policy' cannot be N/A",
        f"line 6: ticket 'x{number}' is not a ticket number",
        "line 7: rating '3.5' is not a whole number or NA",
        "line 8: repeats line 2",
        "line 9: the reviewer is empty",
        "line 10: 5 fields, the header names 4",
    ]:
        assert expected in error, (expected, error)
    assert counts(db) == (0, 0, 0)

    # Rows that are fine on their own but name a ticket that does not exist.
    (tmp_path / "r.csv").write_text(
        f"ticket,reviewer,criterion,rating\n{number},rita,tone,5\n99999,rita,tone,4\n",
        encoding="utf-8",
    )
    result = cli("qa", "import-reviews", "r.csv", "--scorecard", "card.toml", code=1)
    assert "1 bad row(s), nothing imported: line 3: there is no ticket #99999" in result.stderr
    assert counts(db) == (0, 0, 0)  # not even the scorecard version

    (tmp_path / "r.csv").write_text("ticket,reviewer,rating\n", encoding="utf-8")
    result = cli("qa", "import-reviews", "r.csv", "--scorecard", "card.toml", code=1)
    assert "r.csv:1: the header row lacks criterion" in result.stderr
