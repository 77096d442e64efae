"""`postdesk qa sample` through the real CLI on SQLite and PostgreSQL: the frame, the
designs' stored inclusion probabilities, seeds, exclusion of reviewed tickets, reviewers."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from postdesk.models import QaAssignment, QaSampledTicket
from postdesk.models.db import Database
from postdesk.qa.scorecard import default_scorecard
from postdesk.qa.store import finish_review, register_scorecard, save_answer, start_review
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config

NOVEMBER = ("--since", "2026-11-01", "--until", "2026-11-30")
SARA, OMID = "sara@example.com", "omid@example.com"


@pytest.fixture
def cli(tmp_path: Path, db: Database) -> Cli:
    return Cli(qa_config(tmp_path, db.url, queues=("support", "billing")))


def sample(cli: Cli, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.json("qa", "sample", *NOVEMBER, *args)
    return data


def drawn(data: dict[str, Any]) -> list[int]:
    return [t["ticket"] for t in data["tickets"]]


def test_the_frame_is_solved_tickets_of_the_period_queue_and_agent(cli: Cli, db: Database) -> None:
    numbers = add_solved_tickets(
        db,
        [
            SolvedTicket(agent=SARA, day=1),
            SolvedTicket(agent=OMID, day=2, status="closed"),
            SolvedTicket(agent=SARA, queue="billing", day=3),
            SolvedTicket(agent=SARA, day=40),  # solved in December
            SolvedTicket(agent=None, day=4),
            SolvedTicket(agent=OMID, day=5, closed_day=45),  # solved in November
        ],
    )
    everything = sample(cli, "--n", "100", "--dry-run")
    assert everything["frame_size"] == 5
    assert sorted(drawn(everything)) == [numbers[i] for i in (0, 1, 2, 4, 5)]
    assert all(t["inclusion_probability"] == 1.0 for t in everything["tickets"])
    assert everything["saved"] is False and everything["sample"] is None
    assert drawn(sample(cli, "--n", "9", "--queue", "billing", "--dry-run")) == [numbers[2]]
    assert drawn(sample(cli, "--n", "9", "--agent", "Omid@Example.com", "--dry-run")) == [
        numbers[1],
        numbers[5],
    ]
    december = cli.json(
        "qa", "sample", "--n", "9", "--since", "2026-12-01", "--until", "2026-12-31"
    )
    assert drawn(december) == [numbers[3]]
    result = cli("qa", "sample", *NOVEMBER, "--n", "2", "--queue", "sales", code=1)
    assert "no mailbox named 'sales'" in result.stderr


def test_a_seed_redraws_the_same_sample_and_drawn_tickets_are_not_drawn_again(
    cli: Cli, db: Database
) -> None:
    add_solved_tickets(db, [SolvedTicket(day=i % 20) for i in range(30)])
    preview = sample(cli, "--n", "5", "--seed", "11", "--dry-run")
    assert drawn(preview) == drawn(sample(cli, "--n", "5", "--seed", "11", "--dry-run"))
    assert drawn(preview) != drawn(sample(cli, "--n", "5", "--seed", "12", "--dry-run"))
    assert [t["inclusion_probability"] for t in preview["tickets"]] == [5 / 30] * 5

    saved = sample(cli, "--n", "5", "--seed", "11")
    assert drawn(saved) == drawn(preview) and saved["seed"] == 11 and saved["saved"]
    assert saved["design"] == "simple" and saved["scorecard"] == {"name": "default", "version": 1}
    with db.read_session() as session:
        stored = dict(
            session.execute(
                select(QaSampledTicket.ticket_id, QaSampledTicket.inclusion_probability).where(
                    QaSampledTicket.sample_id == saved["sample"]
                )
            ).all()
        )
    assert stored == {t: pytest.approx(5 / 30) for t in drawn(preview)}

    # The next draw, same seed and all, comes from the 25 tickets not yet sampled.
    again = sample(cli, "--n", "5", "--seed", "11")
    assert again["frame_size"] == 25 and not set(drawn(again)) & set(drawn(saved))
    # Without --seed one is chosen, printed and stored.
    text = cli("qa", "sample", *NOVEMBER, "--n", "2").output
    assert "seed " in text and "of 20 eligible ticket(s)" in text


def test_reviewed_tickets_are_not_drawn_again_with_the_same_scorecard(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    first, second = add_solved_tickets(db, [SolvedTicket(), SolvedTicket()])
    card = default_scorecard()
    with db.transaction() as session:
        conn = session.connection()
        stored = register_scorecard(conn, card)
        review = start_review(conn, first, "rita", stored, source="import")
        save_answer(conn, review, card, "tone", 5)
        finish_review(conn, review, card, require_all=False)
    assert drawn(sample(cli, "--n", "5", "--dry-run")) == [second]
    # Another scorecard has reviewed nothing yet: both tickets are eligible for it.
    other = tmp_path / "other.toml"
    other.write_text(
        'name = "other"\n[[criterion]]\nkey = "x"\ntitle = "X"\nscale = "1-3"\n', "utf-8"
    )
    assert sorted(drawn(sample(cli, "--n", "5", "--scorecard", str(other), "--dry-run"))) == [
        first,
        second,
    ]


def test_per_agent_and_risk_weighted_designs_store_their_probabilities(
    cli: Cli, db: Database
) -> None:
    specs = [SolvedTicket(agent=SARA, day=i) for i in range(8)]
    specs += [SolvedTicket(agent=OMID, day=i) for i in range(2)]
    specs += [SolvedTicket(agent=OMID, day=3, csat=1, reopened=True, hours=100)]
    numbers = add_solved_tickets(db, specs)
    per_agent = sample(cli, "--per-agent", "2", "--seed", "3", "--dry-run")
    assert per_agent["design"] == "stratified"
    by_agent = Counter(t["stratum"] for t in per_agent["tickets"])
    assert by_agent == {SARA: 2, OMID: 2}
    for t in per_agent["tickets"]:
        assert t["inclusion_probability"] == pytest.approx(2 / 8 if t["stratum"] == SARA else 2 / 3)

    risky = sample(cli, "--n", "3", "--risk", "--seed", "3", "--dry-run")
    assert risky["design"] == "pps"
    # The stormy ticket weighs 1 + 3 (CSAT 1) + 2 (reopened) + 1 (over 3 days) = 7 of a
    # total of 10 x 1 + 7 = 17: 3 x 7/17 > 1, so it is taken for certain and the other
    # two places spread evenly over the ten calm ones.
    tickets = {t["ticket"]: t for t in risky["tickets"]}
    stormy = tickets[numbers[-1]]
    assert stormy["inclusion_probability"] == 1.0 and stormy["risk_weight"] == 7.0
    assert stormy["risk"] == ["low-csat", "reopened", "long-resolution"]
    assert sorted(t["inclusion_probability"] for t in tickets.values())[:2] == [0.2, 0.2]

    both = sample(cli, "--per-agent", "1", "--risk", "--seed", "3", "--dry-run")
    assert both["design"] == "stratified-pps" and len(both["tickets"]) == 2


def test_a_ticket_reopened_to_pending_is_a_reopened_risk_as_in_the_kpis(
    cli: Cli, db: Database
) -> None:
    """The risk factor counts a reopen as the KPI report's reopen rate does: back from
    solved to any status not done, not only to open."""
    specs = [SolvedTicket(agent=SARA, day=i) for i in range(4)]
    specs += [SolvedTicket(agent=SARA, day=5, reopened=True, reopened_to="pending")]
    numbers = add_solved_tickets(db, specs)
    # Weights 4 x 1 and 1 + 2 (reopened) = 3: with 3 draws of 7, 3 x 3/7 > 1, so the
    # reopened ticket is taken for certain (were it not counted, all five would weigh 1).
    risky = sample(cli, "--n", "3", "--risk", "--seed", "1", "--dry-run")
    tickets = {t["ticket"]: t for t in risky["tickets"]}
    reopened = tickets[numbers[-1]]
    assert reopened["risk"] == ["reopened"] and reopened["risk_weight"] == 3.0
    assert reopened["inclusion_probability"] == 1.0


def test_reviewers_share_the_tickets_and_some_are_reviewed_blind_twice(
    cli: Cli, db: Database
) -> None:
    add_solved_tickets(db, [SolvedTicket(day=i) for i in range(10)])
    data = sample(cli, "--n", "10", "--seed", "1", "--reviewer", "Ana", "--reviewer", "bo")
    firsts = Counter(t["reviewers"][0] for t in data["tickets"])
    assert firsts == {"ana": 5, "bo": 5}
    assert all(not t["blind"] and len(t["reviewers"]) == 1 for t in data["tickets"])

    add_solved_tickets(db, [SolvedTicket(day=i) for i in range(10)])
    data = sample(
        cli, "--n", "10", "--seed", "1", "--reviewer", "ana", "--reviewer", "bo", "--overlap", "0.2"
    )
    doubles = [t for t in data["tickets"] if len(t["reviewers"]) == 2]
    assert len(doubles) == 2
    assert all(t["blind"] and sorted(t["reviewers"]) == ["ana", "bo"] for t in doubles)
    with db.read_session() as session:
        rows = session.execute(select(QaAssignment.reviewer, QaAssignment.blind)).all()
    assert len(rows) == 10 + 12 and sum(blind for _, blind in rows) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "give --n N or --per-agent N"),
        (("--n", "2", "--per-agent", "1"), "give --n N or --per-agent N"),
        (("--n", "0"), "1 or more"),
        (("--n", "2", "--reviewer", "ana", "--overlap", "0.3"), "two or more --reviewer"),
        (("--n", "2", "--overlap", "1.5", "--reviewer", "a", "--reviewer", "b"), "from 0 to 1"),
        (("--n", "2", "--scorecard", "missing.toml"), "no such scorecard file"),
    ],
)
def test_mistakes_are_one_line(cli: Cli, args: tuple[str, ...], expected: str) -> None:
    result = cli("qa", "sample", *NOVEMBER, *args, code=1)
    assert expected in result.stderr


def test_the_sample_as_a_table_csv_tsv_and_json_columns(cli: Cli, db: Database) -> None:
    add_solved_tickets(db, [SolvedTicket(agent=SARA, day=i % 20) for i in range(6)])
    args = (*NOVEMBER, "--n", "3", "--seed", "4", "--dry-run", "--reviewer", "نگار@example.com")
    full = cli.json("qa", "sample", *args)
    table = cli("qa", "sample", *args).stdout.splitlines()
    assert "seed 4" in table[0]
    assert table[1].split() == ["#", "p", "stratum", "reviewers", "blind", "risk", "why"]
    assert [int(line.split()[0]) for line in table[2:]] == drawn(full)
    as_csv = cli("qa", "sample", *args, "--format", "csv", "--columns", "ticket,reviewers")
    assert "seed 4" in as_csv.stderr and "seed" not in as_csv.stdout  # stdout is only the rows
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["ticket", "reviewers"]
    assert [(int(r[0]), r[1]) for r in rows[1:]] == [(t, "نگار@example.com") for t in drawn(full)]
    tsv = cli("qa", "sample", *args, "--format", "tsv").stdout.splitlines()
    assert tsv[0].split("\t")[0] == "ticket" and len(tsv) == 1 + 3
    cut = cli.json("qa", "sample", *args, "--columns", "ticket,inclusion_probability")
    assert cut["seed"] == 4 and cut["tickets"] == [
        {"ticket": t["ticket"], "inclusion_probability": t["inclusion_probability"]}
        for t in full["tickets"]
    ]
    line = cli("qa", "sample", *args, "--columns", "nope", code=1).stderr
    assert "unknown column 'nope'; choose from ticket, inclusion_probability" in line
