"""The scoring session without a terminal: the transcript (blind mode, Persian, notes,
CSAT, SLA) and the one-key state machine with a dict for a database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postdesk.models.db import Database
from postdesk.qa.scorecard import default_scorecard
from postdesk.qa.session import ENTER, Answer, Outcome, TicketReview
from postdesk.qa.transcript import (
    OtherReview,
    display_width,
    plain,
    render_transcript,
    ticket_language,
    wrap,
)
from postdesk.testing.qa import SolvedTicket, add_solved_tickets
from postdesk.tickets import show_ticket

PERSIAN = (
    "سلام، سفارش من هنوز نرسیده است. لطفاً پیگیری کنید؛ کد پیگیری ۱۲۳۴ است و می‌خواهم بدانم کجاست."
)


def ticket(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "number": 7,
        "subject": "Where is my order?",
        "status": "solved",
        "requester": {"email": "neda@example.org", "name": "Neda"},
        "assignee": {"email": "sara@example.com", "name": "Sara Karimi"},
        "queue": "support",
        "category": "shipping",
        "priority": "normal",
        "created_at": "2026-11-02T09:00:00+00:00",
        "first_response_at": "2026-11-02T10:30:00+00:00",
        "solved_at": "2026-11-02T11:00:00+00:00",
        "csat": {"score": 2, "comment": "slow"},
        "messages": [
            {
                "direction": "in",
                "from": {"email": "neda@example.org", "name": "Neda"},
                "date": "2026-11-02T09:00:00+00:00",
                "text": "Where is my order?",
            },
            {
                "direction": "note",
                "from": {"email": "sara@example.com", "name": ""},
                "date": "2026-11-02T09:40:00+00:00",
                "text": "asked the courier",
            },
            {
                "direction": "out",
                "from": {"email": "support@example.com", "name": "Sara Karimi via Support"},
                "date": "2026-11-02T10:30:00+00:00",
                "text": "Hi Neda, it ships today.\nBest, Sara Karimi",
            },
        ],
    }
    data.update(extra)
    return data


def test_the_transcript_reads_as_a_conversation() -> None:
    others = [OtherReview("bo@example.com", 80.0, True)]
    text = plain(render_transcript(ticket(), others=others))
    assert "Ticket #7: Where is my order?" in text
    assert "Agent: Sara Karimi <sara@example.com>" in text
    assert "CSAT: 2/5 — “slow”" in text
    assert "SLA" not in text  # no `sla` key: no SLA line
    assert "── CUSTOMER · Neda <neda@example.org> · 2026-11-02 09:00" in text
    assert "── INTERNAL NOTE (never sent) · sara@example.com · 2026-11-02 09:40  (+40m)" in text
    assert "── AGENT · Sara Karimi via Support · 2026-11-02 10:30  (+1h 30m)" in text
    assert "Other reviews: bo@example.com 80" in text
    lines = text.splitlines()
    assert lines.index("  asked the courier") < lines.index("  Hi Neda, it ships today.")


def test_blind_mode_hides_the_agent_and_other_reviewers() -> None:
    others = [OtherReview("bo@example.com", 80.0, True)]
    text = plain(render_transcript(ticket(), blind=True, others=others))
    assert "Sara" not in text and "sara@" not in text and "Karimi" not in text
    assert "Agent: (hidden: blind review)" in text
    assert "── AGENT · Agent via Support" in text
    assert "INTERNAL NOTE (never sent) · Agent ·" in text
    assert "Best, Agent" in text  # the signature too
    assert "80" not in text and "Other reviews: hidden (blind review)" in text
    assert "Neda" in text  # the customer is not hidden


def test_sla_is_shown_when_the_ticket_has_one() -> None:
    sla = {
        "first_response": {"due": "2026-11-02T10:00:00+00:00", "breached": True},
        "resolution": {"due": "2026-11-03T09:00:00+00:00", "breached": False},
    }
    text = plain(render_transcript(ticket(sla=sla)))
    assert (
        "SLA: first response: due 2026-11-02 10:00 BREACHED; resolution: due 2026-11-03 09:00"
        in text
    )
    assert "SLA: -" in plain(render_transcript(ticket(sla=None)))


def test_persian_is_kept_in_order_and_wrapped_by_display_width() -> None:
    persian = ticket(
        subject="سفارش",
        messages=[
            {"direction": "in", "from": {"email": "neda@example.org", "name": "ندا"},
             "date": "2026-11-02T09:00:00+00:00", "text": PERSIAN},
        ],
    )  # fmt: skip
    assert ticket_language(persian) == "fa" and ticket_language(ticket()) == "en"
    lines = render_transcript(persian, width=40)
    body = [line.text.strip() for line in lines if line.style == "text" and line.text.strip()]
    assert " ".join(body) == PERSIAN  # every word, in logical order, nothing reordered
    assert len(body) > 1 and all(display_width(f"  {b}") <= 40 for b in body)
    assert "می‌خواهم" in " ".join(body)  # the zero-width non-joiner stays inside its word
    assert display_width("می‌خواهم") == 7
    assert wrap("a\n\nb", 10) == ["a", "", "b"]


def test_no_escape_sequence_from_mail_reaches_the_reviewer() -> None:
    hostile = ticket(
        subject="Order \x1b]0;owned\x07late",
        messages=[
            {"direction": "in", "from": {"email": "neda@example.org", "name": "Neda\x1b[2J"},
             "date": "2026-11-02T09:00:00+00:00",
             "text": "copy \x1b]52;c;cm0gLXJmIH4K\x07this \x1b]8;;https://evil.example/\x1b\\link"
                     "\x1b]8;;\x1b\\ \x9b2J\u202edone"},
        ],
    )  # fmt: skip
    text = plain(render_transcript(hostile, width=80))
    assert "copy this link done" in text and "Ticket #7: Order late" in text
    assert not any(ch < " " and ch not in "\n\t" for ch in text)
    assert not any("\x7f" <= ch < "\xa0" or ch == "\u202e" for ch in text)
    assert "evil.example" not in text and "owned" not in text


def test_a_ticket_from_the_database_renders(tmp_path: Path, db: Database) -> None:
    (number,) = add_solved_tickets(
        db, [SolvedTicket(reply="Sara here, sorted.", note="checked", text=PERSIAN, csat=4)]
    )
    data = show_ticket(db, number)
    text = plain(render_transcript(data, blind=True))
    assert PERSIAN in text and "CSAT: 4/5" in text
    assert "Sara" not in text and "sara@" not in text and "Agent here, sorted." in text


class DictSaver:
    def __init__(self) -> None:
        self.saved: dict[str, Answer] = {}
        self.writes = 0
        self.finished: float | None = None

    def save(self, criterion: str, answer: Answer, time_spent_s: float) -> None:
        self.saved[criterion] = answer
        self.writes += 1

    def finish(self, time_spent_s: float) -> float | None:
        self.finished = time_spent_s
        return 0.0


def test_keys_answer_save_at_once_go_back_and_finish() -> None:
    card = default_scorecard()  # tone understanding correct policy empathy clarity resolution
    saver = DictSaver()
    now = [100.0]
    review = TicketReview(card, saver, clock=lambda: now[0], spent_before=30.0)
    assert review.handle("n") is Outcome.AGAIN and "not an answer" in review.message
    assert review.handle("۴") is Outcome.AGAIN  # a Persian 4
    assert saver.saved["tone"] == Answer(4)
    assert review.handle("r") is Outcome.AGAIN and review.mode == "causes"
    review.handle("2")
    review.handle(ENTER)
    assert "understanding" not in saver.saved  # the tag waits for the rating
    review.handle("3")
    assert saver.saved["understanding"].root_causes == ("asked for known details",)
    assert review.handle("b") is Outcome.AGAIN and review.criterion.key == "understanding"
    assert review.handle("c") is Outcome.COMMENT
    review.comment("misread the order number")  # an answered criterion: saved at once
    assert saver.saved["understanding"].comment == "misread the order number"
    review.handle(ENTER)  # keep; back to the first unanswered
    assert review.criterion.key == "correct"
    for key in ["1", "n", "n", "5", "p"]:
        review.handle(key)
    assert review.mode == "summary"
    screen = plain(review.screen(1, 4))
    assert "Score: 0 (critical failure: correct)" in screen
    assert "all 7 criteria answered" in screen
    now[0] += 15
    assert review.handle(ENTER) is Outcome.FINISHED
    assert saver.finished == pytest.approx(45.0)
    assert saver.writes == 8
    assert review.handle("s") is Outcome.SKIP and review.handle("c-c") is Outcome.QUIT


class ScriptedTerminal:
    """The session's terminal, with keys from a list and everything shown kept as text."""

    width = 100

    def __init__(self, keys: list[str]) -> None:
        self.keys, self.shown = list(keys), []  # type: list[str], list[str]

    def show(self, lines: list[Any]) -> None:
        self.shown += [line.text for line in lines]

    def ask(self, screen: Any) -> str:
        self.shown += [line.text for line in screen()]
        return self.keys.pop(0)

    def read_line(self, prompt: str) -> str | None:
        return self.keys.pop(0)


def test_blind_double_reviews_hide_the_agent_and_skipped_tickets_wait(db: Database) -> None:
    from postdesk.qa.score import run_session
    from postdesk.qa.store import SampledTicket, register_scorecard, save_sample

    first, second = add_solved_tickets(db, [SolvedTicket(reply="Sara here."), SolvedTicket()])
    card = default_scorecard()
    with db.transaction() as session:
        stored = register_scorecard(session.connection(), card)
        save_sample(
            session.connection(), stored, design="simple", parameters={}, seed=1, frame_size=2,
            tickets=[
                SampledTicket(first, 1.0, reviewers=("ana", "bo"), blind=True),
                SampledTicket(second, 1.0, reviewers=("ana",)),
            ],
        )  # fmt: skip
    bo = ScriptedTerminal([*"445p55p", ENTER])
    # tone 0.75 x1, understanding 0.75 x2, the rest full marks: 11.25 of 12.
    assert run_session(db, bo, "bo").finished == {first: pytest.approx(93.75)}
    ana = ScriptedTerminal(["s", *"334p44p", ENTER])
    summary = run_session(db, ana, "ana")
    assert summary.skipped == [first] and list(summary.finished) == [second]
    text = "\n".join(ana.shown)
    assert "Sara" not in text.split(f"Ticket #{second}:")[0]  # the blind ticket came first
    assert "Other reviews: hidden (blind review)" in text and "bo " not in text
    assert "1 of 2 assigned ticket(s) reviewed. 1 skipped" in text
    # Unblinded, with --blind off, ticket 2 shows its agent.
    assert "Agent: sara <sara@example.com>" in text.split(f"Ticket #{second}:")[1]
