"""`postdesk qa report`: the IQS per group on a small fixed set of reviews, figures
computed by hand (weighting by 1 / inclusion probability included), its CSV and JSON,
the chart (a real PNG, Persian labels without missing glyphs), and no data."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from scipy import stats  # type: ignore[import-untyped]
from sqlalchemy import select

from postdesk.models import QaAssignment, QaSampledTicket
from postdesk.models.db import Database
from postdesk.qa.charts import render, visual
from postdesk.qa.scorecard import Scorecard, load_scorecard
from postdesk.qa.store import (
    SampledTicket,
    StoredScorecard,
    finish_review,
    register_scorecard,
    save_answer,
    save_sample,
    start_review,
)
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config
from postdesk.tickets.lifecycle import set_label

CARD = """
name = "support"
[[criterion]]
key = "tone"
title = "Tone"
title_fa = "احوال‌پرسی و لحن"
scale = "1-5"
root_causes = ["rude wording", "template misuse"]

[[criterion]]
key = "policy"
title = "Policy"
title_fa = "سیاست و روال"
scale = "pass-fail"
critical = true
root_causes = ["refund outside policy"]
"""

# ticket: agent, day after Monday 2026-11-02 (ISO week 45; day 7 on: week 46), category,
# inclusion probability (None: an imported review), reviews as (reviewer, tone, policy,
# tone's root causes, policy's root causes).
TICKETS: list[tuple[str, int, str, float | None, list[tuple[Any, ...]]]] = [
    ("sara@example.com", 0, "billing", 0.5, [("rita", 5, 1, [], [])]),
    ("sara@example.com", 1, "shipping", 0.25, [("rita", 3, 1, ["template misuse"], [])]),
    (
        "omid@example.com",
        7,
        "billing",
        0.5,
        [("rita", 1, 0, ["rude wording"], ["refund outside policy"])],
    ),
    (
        "omid@example.com",
        8,
        "shipping",
        1.0,
        [("rita", 4, 1, [], []), ("bob", 2, 1, ["template misuse"], [])],
    ),
    ("sara@example.com", 1, "billing", None, [("rita", 5, 1, [], [])]),
]
# Review scores (tone (r-1)/4, policy 0/1, weight 1 each; policy failed -> 0):
#   #0 (1 + 1)/2 = 100; #1 (0.5 + 1)/2 = 75; #2 critical failure = 0;
#   #3 rita (0.75 + 1)/2 = 87.5, bob (0.25 + 1)/2 = 62.5 -> the ticket's mean 75;
#   #4 100, imported: no inclusion probability, left out of the IQS.
# Weights 1/pi: 2, 4, 2, 1 (sum 9).
SCORES, WEIGHTS = [100.0, 75.0, 0.0, 75.0], [2.0, 4.0, 2.0, 1.0]
IQS_ALL = (2 * 100 + 4 * 75 + 2 * 0 + 1 * 75) / 9  # 63.889
BY_AGENT = {"omid@example.com": (2 * 0 + 1 * 75) / 3, "sara@example.com": (2 * 100 + 4 * 75) / 6}
BY_CATEGORY = {"billing": (2 * 100 + 2 * 0) / 4, "shipping": (4 * 75 + 1 * 75) / 5}
BY_WEEK = {"2026-W45": (2 * 100 + 4 * 75) / 6, "2026-W46": (2 * 0 + 1 * 75) / 3}
# tone x100: 100, 50, 0, mean(75, 25) = 50; policy: 100, 100, 0, 100.
BY_CRITERION = {
    "tone": (2 * 100 + 4 * 50 + 2 * 0 + 1 * 50) / 9,
    "policy": (2 * 100 + 4 * 100 + 2 * 0 + 1 * 100) / 9,
}


def hand_interval(values: list[float], weights: list[float]) -> tuple[float, float]:
    """Linearized variance, with replacement: n/(n-1) sum((w (y - est) / W)^2), t(n-1)."""
    n, total = len(values), sum(weights)
    estimate = sum(w * y for w, y in zip(weights, values, strict=True)) / total
    terms = [w * (y - estimate) / total for w, y in zip(weights, values, strict=True)]
    se = math.sqrt(n / (n - 1) * sum(t * t for t in terms))
    margin = stats.t.ppf(0.975, n - 1) * se
    return max(0.0, estimate - margin), min(100.0, estimate + margin)


def review(
    conn: Any, stored: StoredScorecard, ticket: int, spec: tuple[Any, ...], **kw: Any
) -> None:
    reviewer, tone, policy, tone_causes, policy_causes = spec
    card = stored.scorecard
    review_id = start_review(conn, ticket, reviewer, stored, **kw)
    save_answer(conn, review_id, card, "tone", tone, root_causes=tone_causes)
    save_answer(conn, review_id, card, "policy", policy, root_causes=policy_causes)
    finish_review(conn, review_id, card)


def add_reviews(db: Database, card: Scorecard) -> list[int]:
    numbers = add_solved_tickets(db, [SolvedTicket(agent=a, day=d) for a, d, *_ in TICKETS])
    with db.transaction() as session:
        conn = session.connection()
        stored = register_scorecard(conn, card)
        for number, (_, _, category, _, _) in zip(numbers, TICKETS, strict=True):
            set_label(conn, number, "category", category, actor="sara@example.com")
        sampled = [
            SampledTicket(number, pi, reviewers=tuple(r[0] for r in reviews))
            for number, (_, _, _, pi, reviews) in zip(numbers, TICKETS, strict=True)
            if pi is not None
        ]
        save_sample(
            conn, stored, design="simple", parameters={}, seed=1, frame_size=9, tickets=sampled
        )
        for number, (_, _, _, pi, reviews) in zip(numbers, TICKETS, strict=True):
            for spec in reviews:
                if pi is None:
                    review(conn, stored, number, spec, source="import")
                    continue
                assignment = conn.execute(
                    select(QaAssignment.id)
                    .join(QaSampledTicket, QaSampledTicket.id == QaAssignment.sampled_ticket_id)
                    .where(QaSampledTicket.ticket_id == number, QaAssignment.reviewer == spec[0])
                ).scalar_one()
                review(conn, stored, number, spec, assignment_id=assignment)
    return numbers


@pytest.fixture
def cli(tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "card.toml").write_text(CARD, encoding="utf-8")
    add_reviews(db, load_scorecard(tmp_path / "card.toml"))
    return Cli(qa_config(tmp_path, db.url))


def by_group(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {r["group"]: r["iqs"] for r in rows}


def test_report_figures_match_hand_computed_weighted_iqs(cli: Cli) -> None:
    report = json.loads(cli("qa", "report", "--json").output)
    overall = report["iqs"]
    assert overall["iqs"] == pytest.approx(IQS_ALL, abs=1e-4)
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(
        hand_interval(SCORES, WEIGHTS), abs=1e-4
    )
    assert (overall["n"], overall["reviews"]) == (4, 5)  # ticket #3 reviewed twice
    # The unweighted mean would be 62.5: weighting moves it.
    assert sum(SCORES) / 4 == pytest.approx(62.5)
    assert by_group(report["by_agent"]) == pytest.approx(BY_AGENT, abs=1e-4)
    assert by_group(report["by_category"]) == pytest.approx(BY_CATEGORY, abs=1e-4)
    assert by_group(report["by_week"]) == pytest.approx(BY_WEEK, abs=1e-4)
    assert by_group(report["by_criterion"]) == pytest.approx(BY_CRITERION, abs=1e-4)
    sara = next(r for r in report["by_agent"] if r["group"] == "sara@example.com")
    assert (sara["ci_low"], sara["ci_high"]) == pytest.approx(
        hand_interval([100, 75], [2, 4]), abs=1e-4
    )
    assert report["weighted"] == {"reviews": 5, "tickets": 4}
    assert report["unweighted"] == {"reviews": 1, "tickets": 1, "mean": 100.0}
    assert report["root_causes"] == [
        {"criterion": "tone", "root_cause": "template misuse", "count": 2, "share": 0.5},
        {"criterion": "policy", "root_cause": "refund outside policy", "count": 1, "share": 0.25},
        {"criterion": "tone", "root_cause": "rude wording", "count": 1, "share": 0.25},
    ]
    tone = report["by_criterion"][0]
    assert (tone["title"], tone["title_fa"]) == ("Tone", "احوال‌پرسی و لحن")


def test_json_keys_csv_table_and_plain_text(cli: Cli) -> None:
    report = json.loads(cli("qa", "report", "--scorecard", "support", "--json").output)
    assert set(report) == {
        "scorecard",
        "period",
        "weighting",
        "reviews",
        "tickets",
        "weighted",
        "unweighted",
        "iqs",
        "by_agent",
        "by_category",
        "by_criterion",
        "by_week",
        "root_causes",
    }
    assert report["scorecard"] == {"name": "support", "versions": [1]}
    table = list(csv.reader(io.StringIO(cli("qa", "report", "--csv").output)))
    assert table[0] == ["group_kind", "group", "n", "iqs", "ci_low", "ci_high"]
    assert [row[0] for row in table[1:]] == ["all"] + ["agent"] * 2 + ["category"] * 2 + [
        "criterion"
    ] * 2 + ["week"] * 2
    assert table[1][:3] == ["all", "all", "4"]
    assert float(table[1][3]) == pytest.approx(IQS_ALL, abs=1e-4)
    text = cli("qa", "report").output
    assert "IQS  63.9  [" in text
    assert "1 imported review(s) of 1 ticket(s) have no inclusion probability" in text
    assert "2026-W46" in text and "template misuse" in text
    # The period is of the tickets' resolution: week 46 only.
    late = json.loads(cli("qa", "report", "--since", "2026-11-09", "--json").output)
    assert by_group(late["by_week"]) == pytest.approx({"2026-W46": 25.0})
    assert late["unweighted"]["reviews"] == 0


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png_and_persian_labels_have_every_glyph(cli: Cli, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cli("qa", "report", "--plot", "chart.png").output
    assert "chart written to chart.png" in out
    assert not [w for w in caught if "glyph" in str(w.message).lower()]
    data = (tmp_path / "chart.png").read_bytes()
    width, height = png_size(data)
    assert 600 <= width <= 1600 and 400 <= height <= 1600
    assert len(data) < 150_000
    from PIL import Image

    with Image.open(tmp_path / "chart.png") as image:
        image.verify()


def test_persian_text_is_shaped_and_right_to_left() -> None:
    shown = visual("لحن")
    # ل ح ن joined: final nun, medial hah, initial lam, in visual (reversed) order.
    assert shown == "\ufee6\ufea4\ufedf"
    assert visual("Tone") == "Tone"
    report: dict[str, Any] = {
        "scorecard": {"name": "x"},
        "iqs": None,
        "by_week": [],
        "by_agent": [],
        "by_criterion": [
            {"group": "t", "title": "T", "title_fa": "احوال‌پرسی گچ ژ", "n": 1, "iqs": 50.0}
            | {"ci_low": 0.0, "ci_high": 100.0}
        ],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png_size(render(report))
    assert not [w for w in caught if "glyph" in str(w.message).lower()]


def test_no_reviews_gives_a_clear_message(tmp_path: Path, db: Database) -> None:
    cli = Cli(qa_config(tmp_path, db.url))
    result = cli("qa", "report", code=1)
    assert "no finished QA reviews yet" in result.stderr


def test_a_period_without_reviews_says_so(cli: Cli) -> None:
    result = cli("qa", "report", "--since", "2027-01-01", code=1)
    assert "no finished reviews with scorecard support of tickets resolved from 2027-01-01" in (
        result.stderr
    )
    assert "not both" in cli("qa", "report", "--json", "--csv", code=1).stderr
