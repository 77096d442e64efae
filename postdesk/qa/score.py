"""`postdesk qa score`: the reviewer's queue, ticket after ticket, through any `Terminal`.

The loop here knows the database (reviews saved one answer at a time, in their own
transactions) and the order of things; it draws nothing itself. `postdesk/qa/terminal.py`
is the prompt_toolkit terminal; tests drive the same loop with a scripted one.

Order: a review begun and not finished comes first (a session resumes where the last one
stopped, at its first unanswered criterion), then the reviewer's assignments in queue
order. Skipped tickets wait for the next session. A blind assignment (a ticket given to
two reviewers for calibration), or `--blind`, hides the agent and other reviewers' scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection

from postdesk.models.db import Database
from postdesk.qa.session import Answer, Outcome, TicketReview, score_text
from postdesk.qa.store import (
    QueuedTicket,
    StoredScorecard,
    answers_in_full,
    finish_review,
    other_reviews,
    reviewer_queue,
    save_answer,
    scorecard_by_id,
    set_time_spent,
    start_review,
)
from postdesk.qa.transcript import Line, OtherReview, render_transcript, ticket_language
from postdesk.tickets import show_ticket


class Terminal(Protocol):
    """What the session needs from a screen and keyboard."""

    width: int

    def show(self, lines: list[Line]) -> None:
        """Print lines (they scroll up like any output)."""

    def ask(self, screen: Callable[[], list[Line]]) -> str:
        """Show `screen()` (redrawn while waiting, for the clock) and read one key:
        a character, "enter", "escape" or "c-c"."""

    def read_line(self, prompt: str) -> str | None:
        """A line of text (None: cancelled with Ctrl-C)."""


class DatabaseSaver:
    """Writes each answer of one review as it is given, each in its own transaction."""

    def __init__(
        self, db: Database, item: QueuedTicket, reviewer: str, scorecard: StoredScorecard
    ) -> None:
        self.db, self.item, self.reviewer, self.scorecard = db, item, reviewer, scorecard
        self.review_id = item.review_id

    def _review(self, conn: Connection) -> int:
        if self.review_id is None:
            self.review_id = start_review(
                conn,
                self.item.ticket,
                self.reviewer,
                self.scorecard,
                assignment_id=self.item.assignment_id,
            )
        return self.review_id

    def save(self, criterion: str, answer: Answer, time_spent_s: float) -> None:
        with self.db.transaction() as session:
            conn = session.connection()
            review = self._review(conn)
            save_answer(
                conn,
                review,
                self.scorecard.scorecard,
                criterion,
                answer.rating,
                comment=answer.comment,
                root_causes=answer.root_causes,
            )
            set_time_spent(conn, review, time_spent_s)

    def finish(self, time_spent_s: float) -> float | None:
        with self.db.transaction() as session:
            conn = session.connection()
            return finish_review(
                conn, self._review(conn), self.scorecard.scorecard, time_spent_s=time_spent_s
            )


@dataclass
class SessionSummary:
    """What a session did: tickets finished (number -> score), skipped, and whether the
    queue is empty now."""

    finished: dict[int, float | None] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    quit: bool = False
    queue_done: bool = False


def _next(queue: list[QueuedTicket], skipped: set[int]) -> QueuedTicket | None:
    waiting = [q for q in queue if not q.finished and q.assignment_id not in skipped]
    begun = [q for q in waiting if q.review_id is not None]
    first = begun or waiting
    return first[0] if first else None


def run_session(
    db: Database,
    terminal: Terminal,
    reviewer: str,
    *,
    scorecard_name: str | None = None,
    blind: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> SessionSummary:
    """Score the reviewer's queue until it is empty or the reviewer quits."""
    summary = SessionSummary()
    skipped: set[int] = set()
    while True:
        with db.read_session() as session:
            queue = reviewer_queue(session.connection(), reviewer, scorecard_name)
        item = _next(queue, skipped)
        if item is None:
            summary.queue_done = not any(not q.finished for q in queue)
            terminal.show([Line("message", _end_text(reviewer, queue, skipped))])
            return summary
        with db.read_session() as session:
            conn = session.connection()
            stored = scorecard_by_id(conn, item.scorecard_id)
            given = answers_in_full(conn, item.review_id) if item.review_id else {}
            others = [
                OtherReview(o.reviewer, o.score, o.finished)
                for o in other_reviews(conn, item.ticket, reviewer)
            ]
        ticket = show_ticket(db, item.ticket)
        hidden = blind or item.blind
        review = TicketReview(
            scorecard=stored.scorecard,
            saver=DatabaseSaver(db, item, reviewer, stored),
            answers={k: Answer(a.rating, a.comment, a.root_causes) for k, a in given.items()},
            spent_before=item.time_spent_s,
            language=ticket_language(ticket),
            clock=clock,
        )
        position = sum(q.finished for q in queue) + 1
        heading = f"Review {position} of {len(queue)} \u00b7 scorecard {stored.label}"
        if hidden:
            heading += " \u00b7 blind"
        if given:
            heading += f" \u00b7 resumed ({len(given)} answered)"
        terminal.show(
            [
                Line("progress", heading),
                *render_transcript(ticket, blind=hidden, width=terminal.width, others=others),
                Line("text", ""),
            ]
        )
        outcome = _score_ticket(terminal, review, position, len(queue))
        if outcome is Outcome.FINISHED:
            summary.finished[item.ticket] = review.score
            ratings = {k: a.rating for k, a in review.answers.items()}
            terminal.show(
                [
                    Line(
                        "score",
                        f"Ticket #{item.ticket} reviewed: score "
                        f"{score_text(stored.scorecard, ratings)} "
                        f"(time {_clock_text(review.spent())})",
                    ),
                    Line("text", ""),
                ]
            )
        elif outcome is Outcome.SKIP:
            skipped.add(item.assignment_id)
            summary.skipped.append(item.ticket)
            skip_text = f"Skipped ticket #{item.ticket} for now."
            terminal.show([Line("message", skip_text), Line("text", "")])
        else:
            summary.quit = True
            terminal.show(
                [
                    Line(
                        "message",
                        f"Stopped. Every answer is saved; `postdesk qa score` resumes at "
                        f"ticket #{item.ticket}.",
                    )
                ]
            )
            return summary


def _score_ticket(terminal: Terminal, review: TicketReview, position: int, total: int) -> Outcome:
    while True:
        key = terminal.ask(lambda: review.screen(position, total))
        outcome = review.handle(key)
        if saved := review.take_log():
            terminal.show(saved)
        if outcome is Outcome.COMMENT:
            text = terminal.read_line(f"Comment on {review.criterion.key}: ")
            if text is None:
                return Outcome.QUIT
            review.comment(text)
            if saved := review.take_log():
                terminal.show(saved)
        elif outcome is not Outcome.AGAIN:
            return outcome


def _clock_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def _end_text(reviewer: str, queue: list[QueuedTicket], skipped: set[int]) -> str:
    if not queue:
        return f"No tickets are assigned to {reviewer} (`qa sample --reviewer` assigns them)."
    done = sum(q.finished for q in queue)
    text = f"{done} of {len(queue)} assigned ticket(s) reviewed."
    if skipped:
        text += f" {len(skipped)} skipped: they come back in the next `postdesk qa score`."
    else:
        text += " Nothing left to review."
    return text
