"""The scoring session's logic, apart from the terminal: one ticket's review as a state
machine fed one key at a time (`TicketReview.handle`), and the question block it shows.

Keys (single keystrokes, no Enter needed):

| key            | does                                                                   |
|----------------|------------------------------------------------------------------------|
| 1-5 (0-5)      | rate the criterion on its scale (Persian digits ۱-۵ too)               |
| p / f          | pass / fail, for pass-fail criteria                                    |
| n              | N/A, where the scorecard allows it                                     |
| c              | a comment on the criterion (a line of text)                            |
| r              | root-cause tags from the criterion's list: their digits toggle, Enter  |
| b              | back to the previous criterion (its answer shown; answer again or Enter)|
| s              | skip the ticket for now (it stays in the queue; answers given are kept)|
| q, Ctrl-C      | quit; everything answered is already saved                             |
| Enter          | keep the shown answer; on the summary, finish the review               |

Every answer goes to the `Saver` the moment it is given (the database, one transaction
per answer), so an interrupted session loses nothing. After an answer the session moves to
the first criterion still unanswered; when none is left it shows a summary, and Enter
finishes the review and computes its score.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from postdesk.qa.scorecard import Criterion, Scorecard
from postdesk.qa.scoring import Rating, critical_failure, review_score
from postdesk.qa.transcript import Line, duration

ENTER = "enter"
CTRL_C = "c-c"


@dataclass(frozen=True)
class Answer:
    """A criterion's answer: a rating (None: N/A), with the reviewer's comment and tags."""

    rating: Rating
    comment: str = ""
    root_causes: tuple[str, ...] = ()


class Saver(Protocol):
    """Where answers go as they are given (the database in `qa score`, a dict in tests)."""

    def save(self, criterion: str, answer: Answer, time_spent_s: float) -> None: ...

    def finish(self, time_spent_s: float) -> float | None: ...


class Outcome(Enum):
    """What the terminal does after a key."""

    AGAIN = "again"  # show the (new) question block and read the next key
    COMMENT = "comment"  # read a line of text, then call `comment(text)`
    FINISHED = "finished"  # the review is finished: `score` holds its score
    SKIP = "skip"  # go on to the next ticket, this one stays in the queue
    QUIT = "quit"  # end the session


def rating_label(criterion: Criterion, rating: Rating) -> str:
    """How an answer reads: "4 of 5", "pass", "fail", "N/A"."""
    if rating is None:
        return "N/A"
    if criterion.scale == "pass-fail":
        return "pass" if rating else "fail"
    return f"{rating} of {criterion.highest}"


def key_hint(criterion: Criterion) -> str:
    """The keys that answer `criterion`, e.g. "1-5", "p pass, f fail", plus "n N/A"."""
    keys = "p pass, f fail" if criterion.scale == "pass-fail" else criterion.scale
    return keys + (", n N/A" if criterion.na_allowed else "")


def _digit(key: str) -> int | None:
    """The value of a digit key, ASCII or Persian/Arabic-Indic (۴ -> 4)."""
    if len(key) != 1:
        return None
    value = unicodedata.digit(key, None)
    return value


@dataclass
class TicketReview:
    """One reviewer's review of one ticket, answered one key at a time."""

    scorecard: Scorecard
    saver: Saver
    answers: dict[str, Answer] = field(default_factory=dict)
    spent_before: float = 0.0  # seconds spent in earlier sessions (resumed)
    language: str = "en"
    clock: Callable[[], float] = time.monotonic
    index: int = 0
    mode: str = "rate"  # "rate", "causes" (picking root-cause tags) or "summary"
    message: str = ""  # one line of feedback for the last key
    score: float | None = None
    notes: dict[str, Answer] = field(default_factory=dict)  # comment/tags before a rating
    log: list[Line] = field(default_factory=list)  # what was saved, to print once (`take_log`)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.index = self._first_unanswered()
        if self.index >= len(self.scorecard.criteria):
            self.mode = "summary"
            self.index = len(self.scorecard.criteria) - 1

    # --- state ----------------------------------------------------------------------------

    @property
    def criterion(self) -> Criterion:
        return self.scorecard.criteria[self.index]

    def spent(self) -> float:
        """Seconds spent on this review, earlier sessions included."""
        return self.spent_before + (self.clock() - self.started)

    def _first_unanswered(self) -> int:
        keys = [c.key for c in self.scorecard.criteria]
        return next((i for i, k in enumerate(keys) if k not in self.answers), len(keys))

    def _notes(self, key: str) -> Answer:
        """The comment and tags of criterion `key` so far (answered or not)."""
        return self.answers.get(key) or self.notes.get(key) or Answer(None)

    def _advance(self) -> None:
        nxt = self._first_unanswered()
        if nxt >= len(self.scorecard.criteria):
            self.mode, self.index = "summary", len(self.scorecard.criteria) - 1  # b: the last
        else:
            self.index, self.mode = nxt, "rate"

    def _store(self, key: str, answer: Answer) -> None:
        self.saver.save(key, answer, self.spent())
        self.answers[key] = answer
        self.notes.pop(key, None)
        c = self.scorecard.criteria[[x.key for x in self.scorecard.criteria].index(key)]
        extra = f"  [{', '.join(answer.root_causes)}]" if answer.root_causes else ""
        extra += f"  \u201c{answer.comment}\u201d" if answer.comment else ""
        self.log.append(Line("answer", f"  \u2713 {key}: {rating_label(c, answer.rating)}{extra}"))

    def take_log(self) -> list[Line]:
        """The answers saved since the last call, one line each (the terminal prints them)."""
        lines, self.log = self.log, []
        return lines

    def _set_notes(self, comment: str | None = None, causes: tuple[str, ...] | None = None) -> None:
        key = self.criterion.key
        current = self._notes(key)
        changed = replace(
            current,
            comment=current.comment if comment is None else comment,
            root_causes=current.root_causes if causes is None else causes,
        )
        if key in self.answers:
            self._store(key, changed)  # an answered criterion: saved at once
        else:
            self.notes[key] = changed  # saved with the rating

    # --- keys -----------------------------------------------------------------------------

    def handle(self, key: str) -> Outcome:
        """Apply one key; what the terminal should do next."""
        self.message = ""
        if key in ("q", CTRL_C):
            return Outcome.QUIT
        if self.mode == "causes":
            return self._handle_cause(key)
        if key == "s":
            return Outcome.SKIP
        if key == "b":
            return self._back()
        if self.mode == "summary":
            if key == ENTER:
                self.score = self.saver.finish(self.spent())
                return Outcome.FINISHED
            self.message = "Enter finishes the review; b goes back, s skips, q quits"
            return Outcome.AGAIN
        return self._handle_rate(key)

    def _back(self) -> Outcome:
        if self.mode == "summary":
            self.mode = "rate"  # back to the last criterion
        elif self.index > 0:
            self.index -= 1
        else:
            self.message = "this is the first criterion"
        return Outcome.AGAIN

    def _handle_rate(self, key: str) -> Outcome:
        c = self.criterion
        if key == "c":
            return Outcome.COMMENT
        if key == "r":
            if not c.root_causes:
                self.message = "this criterion has no root-cause tags"
            else:
                self.mode = "causes"
            return Outcome.AGAIN
        if key == ENTER:
            if c.key in self.answers:
                self._advance()  # keep the answer shown after going back
            else:
                self.message = f"answer with {key_hint(c)}"
            return Outcome.AGAIN
        rating = self._rating(c, key)
        if rating is _NOT_AN_ANSWER:
            self.message = f"{key!r} is not an answer here; {key_hint(c)}"
            return Outcome.AGAIN
        notes = self._notes(c.key)
        self._store(c.key, Answer(rating, notes.comment, notes.root_causes))  # type: ignore[arg-type]
        self._advance()
        return Outcome.AGAIN

    @staticmethod
    def _rating(c: Criterion, key: str) -> object:
        if key == "n":
            return None if c.na_allowed else _NOT_AN_ANSWER
        if c.scale == "pass-fail":
            return {"p": 1, "f": 0}.get(key, _NOT_AN_ANSWER)
        digit = _digit(key)
        return digit if digit is not None and digit in c.ratings else _NOT_AN_ANSWER

    def _handle_cause(self, key: str) -> Outcome:
        c = self.criterion
        if key in (ENTER, "r", "escape"):
            self.mode = "rate"
            return Outcome.AGAIN
        digit = _digit(key)
        if digit is None or not 1 <= digit <= len(c.root_causes):
            self.message = f"press 1-{len(c.root_causes)} to toggle a tag, Enter when done"
            return Outcome.AGAIN
        tag = c.root_causes[digit - 1]
        chosen = list(self._notes(c.key).root_causes)
        chosen.remove(tag) if tag in chosen else chosen.append(tag)
        ordered = tuple(t for t in c.root_causes if t in chosen)
        self._set_notes(causes=ordered)
        return Outcome.AGAIN

    def comment(self, text: str) -> None:
        """The comment typed after `c` (empty: leave the comment as it was)."""
        text = text.strip()
        if text:
            self._set_notes(comment=text)
            answered = self.criterion.key in self.answers
            self.message = "comment saved" if answered else "comment noted; saved with the rating"

    # --- the question block ---------------------------------------------------------------

    def screen(self, position: int, total: int) -> list[Line]:
        """The lines under the transcript: progress, the question (or the summary), keys."""
        criteria = self.scorecard.criteria
        done = len(self.answers)
        head = (
            f"Ticket {position} of {total} \u00b7 "
            + (
                f"criterion {self.index + 1} of {len(criteria)}"
                if self.mode != "summary"
                else f"all {len(criteria)} criteria answered"
            )
            + f" \u00b7 {done} answered \u00b7 time {duration(self.spent())}"
        )
        lines = [Line("progress", head)]
        if self.mode == "summary":
            lines += self._summary()
            lines.append(Line("keys", "Enter finish \u00b7 b back \u00b7 s skip \u00b7 q quit"))
        else:
            lines += self._question()
        if self.message:
            lines.append(Line("message", self.message))
        return lines

    def _label(self, c: Criterion) -> str:
        if self.language == "fa" and c.title_fa:
            return f"{c.title} \u00b7 {c.title_fa}"
        return c.title

    def _question(self) -> list[Line]:
        c = self.criterion
        flags = [f"weight {c.weight:g}"] + (["CRITICAL"] if c.critical else [])
        lines = [Line("question", f"[{c.key}] {self._label(c)}  ({', '.join(flags)})")]
        description = c.description_fa if self.language == "fa" and c.description_fa else ""
        if c.description:
            lines.append(Line("muted", f"  {c.description}"))
        if description:
            lines.append(Line("muted", f"  {description}"))
        notes = self._notes(c.key)
        if c.key in self.answers:
            lines.append(
                Line("answer", f"  answered: {rating_label(c, self.answers[c.key].rating)}")
            )
        if notes.comment:
            lines.append(Line("answer", f"  comment: {notes.comment}"))
        if self.mode == "causes":
            lines.append(Line("question", "  Root causes (digit toggles, Enter done):"))
            for i, tag in enumerate(c.root_causes, 1):
                mark = "x" if tag in notes.root_causes else " "
                lines.append(Line("answer", f"   [{mark}] {i} {tag}"))
            return lines
        if notes.root_causes:
            lines.append(Line("answer", f"  root causes: {', '.join(notes.root_causes)}"))
        keep = " \u00b7 Enter keep" if c.key in self.answers else ""
        lines.append(
            Line(
                "keys",
                f"{key_hint(c)} \u00b7 c comment \u00b7 r root cause \u00b7 b back \u00b7 "
                f"s skip \u00b7 q quit{keep}",
            )
        )
        return lines

    def _summary(self) -> list[Line]:
        lines = []
        for c in self.scorecard.criteria:
            answer = self.answers[c.key]
            extra = f"  \u201c{answer.comment}\u201d" if answer.comment else ""
            tags = f"  [{', '.join(answer.root_causes)}]" if answer.root_causes else ""
            lines.append(
                Line("answer", f"  {c.key:<16} {rating_label(c, answer.rating):<8}{tags}{extra}")
            )
        ratings = {k: a.rating for k, a in self.answers.items()}
        lines.append(Line("score", f"  Score: {score_text(self.scorecard, ratings)}"))
        return lines


def score_text(scorecard: Scorecard, ratings: Mapping[str, Rating]) -> str:
    """A review's score as people read it: "72.5", "0 (critical failure: correct)", "N/A"."""
    score = review_score(scorecard.criteria, ratings)
    if score is None:
        return "N/A (every criterion N/A)"
    failed = critical_failure(scorecard.criteria, ratings)
    if failed:
        return f"0 (critical failure: {', '.join(failed)})"
    return f"{score:.1f}"


_NOT_AN_ANSWER = object()
