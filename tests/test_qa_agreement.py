"""Reviewer agreement through the real CLI: `qa import-reviews` then `qa agreement --json`,
checked against published worked examples, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from postdesk.models.db import Database
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config

RATING_CARD = """
name = "calibration"
[[criterion]]
key = "tone"
title = "Greeting and tone"
scale = "1-5"
"""

PASS_FAIL_CARD = """
name = "calibration"
[[criterion]]
key = "resolution"
title = "Resolution"
scale = "pass-fail"
"""

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with
# 4 observers, 12 units and missing values (None). Published: nominal 0.743, ordinal
# 0.815, interval 0.849.
KRIPPENDORFF = {
    "a": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "b": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "c": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "d": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def setup(tmp_path: Path, db: Database, tickets: int, card: str) -> tuple[Cli, list[int], Path]:
    numbers = add_solved_tickets(db, [SolvedTicket() for _ in range(tickets)])
    scorecard = tmp_path / "calibration.toml"
    scorecard.write_text(card, encoding="utf-8")
    return Cli(qa_config(tmp_path, db.url)), numbers, scorecard


def write_csv(path: Path, rows: list[tuple[object, ...]], header: str) -> Path:
    lines = [header] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_krippendorffs_example_with_missing_data(tmp_path: Path, db: Database) -> None:
    cli, numbers, card = setup(tmp_path, db, 12, RATING_CARD)
    rows = [
        (numbers[unit], reviewer, "tone", rating)
        for reviewer, ratings in KRIPPENDORFF.items()
        for unit, rating in enumerate(ratings)
        if rating is not None
    ]
    csv = write_csv(tmp_path / "reviews.csv", rows, "ticket,reviewer,criterion,rating")
    out = cli("qa", "import-reviews", str(csv), "--scorecard", str(card)).output
    assert "imported 41 review(s) (41 ratings) of 12 ticket(s) by 4 reviewer(s)" in out
    assert "scorecard calibration v1" in out

    report = cli.json("qa", "agreement")
    tone = report["per_criterion"]["tone"]
    # Unit 12 has one rating only: it is not pairable and not an item.
    assert (tone["n_items"], tone["n_reviewers"], tone["level"]) == (11, 4, "ordinal")
    assert round(tone["krippendorff_alpha"], 3) == 0.815
    levels = tone["alpha_by_level"]
    assert round(levels["nominal"], 3) == 0.743
    assert round(levels["ordinal"], 3) == 0.815
    assert round(levels["interval"], 3) == 0.849
    assert tone["cohen_kappa"] is None  # four reviewers, not two
    low, high = tone["alpha_ci"]
    assert low < tone["krippendorff_alpha"] < high <= 1
    assert tone["unreliable"] is False
    # Pairwise agreement per unit, averaged: units 1, 3-5, 7 and 9-11 agree fully, units
    # 2 (2, 2, 3, 2) and 8 (1, 1, 2, 1) in 3 pairs of 6, unit 6 (1, 2, 3, 4) in none.
    assert tone["percent_agreement"] == pytest.approx((8 + 3 / 6 + 3 / 6 + 0) / 11)
    # One criterion: overall is the same data on criterion scores, ordinal.
    assert round(report["overall"]["krippendorff_alpha"], 3) == 0.815
    assert report["scorecard"] == {"name": "calibration", "versions": [1]}

    text = cli("qa", "agreement", "--scorecard", "calibration").output
    assert "tone" in text and "0.815" in text and "unreliable" not in text


def test_a_textbook_cohens_kappa_of_040(tmp_path: Path, db: Database) -> None:
    # 50 tickets, two reviewers: both pass 20, A passes and B fails 5, A fails and B
    # passes 10, both fail 15. p_o = 0.70, p_e = 0.5*0.6 + 0.5*0.4 = 0.50, kappa = 0.40.
    cli, numbers, card = setup(tmp_path, db, 50, PASS_FAIL_CARD)
    pairs = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
    rows: list[tuple[object, ...]] = []
    for number, (a, b) in zip(numbers, pairs, strict=True):
        rows.append((number, "ana@example.com", "resolution", "pass" if a else "fail", ""))
        rows.append((f"#{number}", "Bo@Example.com", "resolution", b, "checked"))
    csv = write_csv(tmp_path / "reviews.csv", rows, "ticket,reviewer,criterion,rating,comment")
    cli("qa", "import-reviews", str(csv), "--scorecard", str(card))

    report = cli.json("qa", "agreement", "--scorecard", "calibration")
    resolution = report["per_criterion"]["resolution"]
    assert (resolution["n_items"], resolution["n_reviewers"]) == (50, 2)
    assert round(resolution["cohen_kappa"], 3) == 0.400
    assert resolution["percent_agreement"] == pytest.approx(0.70)
    assert resolution["level"] == "nominal"
    # Alpha corrects for chance with the pooled distribution: a little above kappa here,
    # and below 0.667, so flagged.
    assert 0.35 < resolution["krippendorff_alpha"] < 0.45
    assert resolution["unreliable"] is True
    text = cli("qa", "agreement").output
    assert "unreliable" in text


def test_agreement_needs_a_scorecard_with_reviews(tmp_path: Path, db: Database) -> None:
    cli, _, _ = setup(tmp_path, db, 1, RATING_CARD)
    result = cli("qa", "agreement", code=1)
    assert "--scorecard NAME" in result.stderr
    result = cli("qa", "agreement", "--scorecard", "nope", code=1)
    assert "no scorecard named 'nope'" in result.stderr
