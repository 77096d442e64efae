"""QA scorecards: the TOML file, its one-line errors, the default one, and versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from postdesk.models.db import Database
from postdesk.qa.scorecard import (
    Scorecard,
    ScorecardError,
    default_scorecard,
    default_scorecard_path,
    load_scorecard,
)
from postdesk.qa.store import register_scorecard, stored_scorecard

GOOD = """
name = "support"
[[criterion]]
key = "tone"
title = "Greeting and tone"
title_fa = "احوال‌پرسی و لحن"
scale = "1-5"
weight = 2
na_allowed = true
critical = false
root_causes = ["template misuse", "rude wording"]

[[criterion]]
key = "policy"
title = "Policy"
scale = "pass-fail"
critical = true
"""


def write(tmp_path: Path, text: str, name: str = "card.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_scorecard_file_is_read(tmp_path: Path) -> None:
    card = load_scorecard(write(tmp_path, GOOD))
    assert card.name == "support"
    tone, policy = card.criteria
    assert (tone.key, tone.scale, tone.weight, tone.na_allowed, tone.critical) == (
        "tone",
        "1-5",
        2.0,
        True,
        False,
    )
    assert tone.root_causes == ("template misuse", "rude wording")
    assert tone.label("fa") == "احوال‌پرسی و لحن" and policy.label("fa") == "Policy"
    assert (policy.ratings, policy.weight, policy.critical) == ((0, 1), 1.0, True)
    assert card.warnings() == []


def test_the_default_scorecard_has_the_seven_criteria_in_english_and_persian() -> None:
    card = default_scorecard()
    assert [c.key for c in card.criteria] == [
        "tone",
        "understanding",
        "correct",
        "policy",
        "empathy",
        "clarity",
        "resolution",
    ]
    for c in card.criteria:
        assert c.title and c.title_fa and c.title != c.title_fa
        assert any("\u0600" <= ch <= "\u06ff" for ch in c.title_fa)
        assert len(c.root_causes_fa) == len(c.root_causes)
    assert default_scorecard_path().name == "default.toml"
    assert card.warnings() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace('"1-5"', '"1-6"'), "criterion 'tone'.scale: got '1-6'; expected one of"),
        (
            GOOD.replace("weight = 2", "wieght = 2"),
            "criterion[0].wieght: unknown key; did you mean 'weight'?",
        ),
        (GOOD.replace("weight = 2", "weight = 0"), "criterion 'tone'.weight: got 0; expected a"),
        (GOOD.replace('key = "policy"', 'key = "tone"'), "criterion 'tone': the key is used twice"),
        (GOOD.replace('key = "tone"', 'key = "Tone Score"'), "is not a criterion key"),
        (GOOD.replace('title = "Policy"', 'title = ""'), "title: must not be empty"),
        (GOOD.replace('title = "Policy"\n', ""), "criterion 'policy'.title: is missing"),
        (GOOD.replace("critical = true", 'critical = "yes"'), "expected true or false"),
        ('name = "support"\n', "criterion: is missing; expected an array"),
        (GOOD.replace('name = "support"', ""), "name: is missing"),
        (
            GOOD.replace("root_causes = [", 'root_causes_fa = ["یک"]\nroot_causes = ['),
            "root_causes_fa: has 1 entries and root_causes 2",
        ),
        ("name = [", "is not valid TOML"),
    ],
)
def test_mistakes_are_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScorecardError) as excinfo:
        load_scorecard(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message


def test_a_missing_file_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ScorecardError, match="no such scorecard file"):
        load_scorecard(tmp_path / "nope.toml")


def test_more_than_ten_criteria_warns(tmp_path: Path) -> None:
    blocks = "".join(
        f'[[criterion]]\nkey = "c{i}"\ntitle = "C {i}"\nscale = "1-3"\n' for i in range(11)
    )
    card = load_scorecard(write(tmp_path, 'name = "long"\n' + blocks))
    (warning,) = card.warnings()
    assert "11 criteria" in warning and "more than 10" in warning


def test_a_changed_file_is_a_new_version_and_old_versions_stay(
    tmp_path: Path, db: Database
) -> None:
    path = write(tmp_path, GOOD)
    with db.transaction() as session:
        conn = session.connection()
        v1 = register_scorecard(conn, load_scorecard(path))
        assert (v1.version, v1.new) == (1, True)
        # Loading the same rubric again, even reformatted with comments, is the same version.
        write(tmp_path, "# our rubric\n" + GOOD.replace("weight = 2", "weight   = 2.0"))
        again = register_scorecard(conn, load_scorecard(path))
        assert (again.id, again.version, again.new) == (v1.id, 1, False)
        write(tmp_path, GOOD.replace("weight = 2", "weight = 3"))
        v2 = register_scorecard(conn, load_scorecard(path))
        assert (v2.version, v2.new) == (2, True) and v2.id != v1.id
        assert v2.scorecard.content_hash != v1.scorecard.content_hash
        latest = stored_scorecard(conn, "support")
        assert (latest.id, latest.scorecard.criteria[0].weight) == (v2.id, 3.0)
        first = stored_scorecard(conn, "support", 1)
        assert first.scorecard == Scorecard.from_definition(v1.scorecard.definition())
        assert first.scorecard.criteria[0].weight == 2.0
