"""Reading answers to the satisfaction survey: a lone digit 1-5 first, in any digits."""

from __future__ import annotations

import pytest

from postdesk.notify.survey import survey_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4 thanks", (4, "thanks")),
        ("5", (5, "")),
        ("  3.\nslow but fine", (3, "slow but fine")),
        ("۴ ممنون", (4, "ممنون")),
        ("٢ - بطيء", (2, "بطيء")),
        ("1) never again", (1, "never again")),
    ],
)
def test_answers(text: str, expected: tuple[int, str]) -> None:
    assert survey_answer(text) == expected


@pytest.mark.parametrize(
    "text", ["", "thanks", "12 days late", "3.5 stars", "6 out of 5", "0", "4/5", "۱۲ روز"]
)
def test_not_answers(text: str) -> None:
    assert survey_answer(text) is None


def test_a_huge_comment_is_cut() -> None:
    answer = survey_answer("5 " + "great " * 100_000)
    assert answer is not None and answer[0] == 5 and len(answer[1]) < 2100
