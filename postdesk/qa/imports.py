"""`postdesk qa import-reviews`: reviews made elsewhere (a spreadsheet, another tool).

The CSV file has a header row naming the columns `ticket,reviewer,criterion,rating` and
optionally `comment`, in any order; one row per answer. `rating` is a number on the
criterion's scale (pass-fail: 1 pass, 0 fail; Persian digits are read too) or `NA` where
the scorecard allows it. The rows of one (ticket, reviewer) make one review; a criterion
without a row is left unanswered and, like N/A, does not count in the review's score.

Every row is checked before anything is written: one bad row, and nothing is imported;
the error names each bad row's line and why (up to ten of them). A review of a ticket
that `qa sample` assigned to that reviewer (for a scorecard of the same name) is linked
to the assignment, so it carries the ticket's inclusion probability into the IQS: sample
in postdesk, score in a spreadsheet, import. Other imported reviews have none.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, select

from postdesk.errors import PostdeskError
from postdesk.models import (
    QaAssignment,
    QaReview,
    QaSample,
    QaSampledTicket,
    QaScorecard,
    Ticket,
)
from postdesk.qa.scorecard import Scorecard
from postdesk.qa.scoring import Rating
from postdesk.qa.store import (
    StoredScorecard,
    check_answer,
    finish_review,
    save_answer,
    start_review,
)

REQUIRED = ("ticket", "reviewer", "criterion", "rating")
OPTIONAL = ("comment",)
NA_WORDS = {"na", "n/a"}
PASS_FAIL_WORDS = {"pass": 1, "fail": 0}
SHOWN = 10  # bad rows named in the error; the rest are counted


class ReviewsFileError(PostdeskError):
    """A reviews file that cannot be imported as a whole; names the bad lines."""


@dataclass
class Answer:
    line: int
    rating: Rating
    comment: str


@dataclass
class ImportedReview:
    """The answers of one reviewer on one ticket, by criterion key."""

    ticket: int
    reviewer: str
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def first_line(self) -> int:
        return min(a.line for a in self.answers.values())


@dataclass(frozen=True)
class ImportResult:
    reviews: int
    ratings: int
    reviewers: int
    tickets: int
    incomplete: int  # reviews without an answer for every criterion


def _rating(raw: str, scorecard: Scorecard, criterion: str) -> Rating:
    text = raw.strip()
    if text.lower() in NA_WORDS:
        return None
    c = scorecard.criterion(criterion)
    if c is not None and c.scale == "pass-fail" and text.lower() in PASS_FAIL_WORDS:
        return PASS_FAIL_WORDS[text.lower()]
    try:
        return int(text)  # int() reads Persian and Arabic-Indic digits too
    except ValueError:
        raise ValueError(f"rating {raw!r} is not a whole number or NA") from None


def read_reviews(path: Path, scorecard: Scorecard) -> list[ImportedReview]:
    """The reviews in the CSV file at `path`, each answer checked against `scorecard`."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise PostdeskError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PostdeskError(f"{path}: is not UTF-8 text; save the CSV as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PostdeskError(
            f"{path}:1: the header row lacks {', '.join(missing)}; expected the columns "
            "ticket,reviewer,criterion,rating[,comment]"
        )
    unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
    if unknown:
        raise PostdeskError(
            f"{path}:1: unknown column {unknown[0]!r}; expected ticket,reviewer,criterion,"
            "rating[,comment]"
        )
    reader.fieldnames = header
    bad: list[tuple[int, str]] = []
    reviews: dict[tuple[int, str], ImportedReview] = {}
    keys = [c.key for c in scorecard.criteria]
    for row in reader:
        line = reader.line_num
        extra = row.pop(None, None)  # more fields than the header has
        if extra:
            fields = len(header) + len(extra)
            bad.append((line, f"{fields} fields, the header names {len(header)}"))
            continue
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue
        ticket_text = values["ticket"].lstrip("#")
        try:
            ticket = int(ticket_text)
        except ValueError:
            bad.append((line, f"ticket {values['ticket']!r} is not a ticket number"))
            continue
        reviewer = values["reviewer"].lower()
        if not reviewer:
            bad.append((line, "the reviewer is empty"))
            continue
        criterion = values["criterion"]
        if scorecard.criterion(criterion) is None:
            close = difflib.get_close_matches(criterion, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (it has: {', '.join(keys)})"
            bad.append((line, f"scorecard {scorecard.name!r} has no criterion {criterion!r}{hint}"))
            continue
        try:
            rating = _rating(values["rating"], scorecard, criterion)
        except ValueError as exc:
            bad.append((line, str(exc)))
            continue
        problem = check_answer(scorecard, criterion, rating)
        if problem:
            bad.append((line, problem))
            continue
        review = reviews.setdefault((ticket, reviewer), ImportedReview(ticket, reviewer))
        if criterion in review.answers:
            first = review.answers[criterion].line
            bad.append((line, f"repeats line {first} (ticket {ticket}, {reviewer}, {criterion})"))
            continue
        review.answers[criterion] = Answer(line, rating, values.get("comment", ""))
    if bad:
        raise _bad_rows(path, bad)
    if not reviews:
        raise PostdeskError(f"{path}: no reviews in it (only a header row)")
    return list(reviews.values())


def _bad_rows(path: Path, bad: list[tuple[int, str]]) -> ReviewsFileError:
    shown = "; ".join(f"line {line}: {why}" for line, why in sorted(bad)[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return ReviewsFileError(f"{path}: {len(bad)} bad row(s), nothing imported: {shown}{more}")


def import_reviews(
    conn: Connection, path: Path, scorecard: StoredScorecard, reviews: list[ImportedReview]
) -> ImportResult:
    """Write `reviews` as finished reviews with `scorecard`, all or nothing (the caller's
    transaction): a review of a ticket that does not exist, or one that the reviewer
    already made with this scorecard version, is a bad row."""
    numbers = sorted({r.ticket for r in reviews})
    existing: set[int] = set()
    for start in range(0, len(numbers), 500):
        chunk = numbers[start : start + 500]
        existing.update(conn.execute(select(Ticket.id).where(Ticket.id.in_(chunk))).scalars())
    done = {
        (row.ticket_id, row.reviewer)
        for row in conn.execute(
            select(QaReview.ticket_id, QaReview.reviewer)
            .join(QaScorecard, QaScorecard.id == QaReview.scorecard_id)
            .where(QaScorecard.id == scorecard.id)
        )
    }
    bad: list[tuple[int, str]] = []
    for r in reviews:
        if r.ticket not in existing:
            for a in r.answers.values():
                bad.append((a.line, f"there is no ticket #{r.ticket}"))
        elif (r.ticket, r.reviewer) in done:
            bad.append(
                (
                    r.first_line,
                    f"{r.reviewer} already reviewed ticket #{r.ticket} with scorecard "
                    f"{scorecard.label}",
                )
            )
    if bad:
        raise _bad_rows(path, bad)
    assigned = _assignments(conn, scorecard.scorecard.name, numbers)
    incomplete = 0
    for r in reviews:
        review_id = start_review(
            conn,
            r.ticket,
            r.reviewer,
            scorecard,
            assignment_id=assigned.get((r.ticket, r.reviewer.lower())),
            source="import",
        )
        for key, a in r.answers.items():
            save_answer(conn, review_id, scorecard.scorecard, key, a.rating, comment=a.comment)
        if len(r.answers) < len(scorecard.scorecard.criteria):
            incomplete += 1
        finish_review(conn, review_id, scorecard.scorecard, require_all=False)
    return ImportResult(
        reviews=len(reviews),
        ratings=sum(len(r.answers) for r in reviews),
        reviewers=len({r.reviewer for r in reviews}),
        tickets=len({r.ticket for r in reviews}),
        incomplete=incomplete,
    )


def _assignments(conn: Connection, name: str, numbers: list[int]) -> dict[tuple[int, str], int]:
    """(ticket, reviewer) -> the assignment of that ticket to that reviewer in a sample
    for scorecard `name` (the latest, if several): a review scored elsewhere for a drawn
    ticket keeps the ticket's inclusion probability, so it counts in the IQS."""
    found: dict[tuple[int, str], int] = {}
    for start in range(0, len(numbers), 500):
        rows = conn.execute(
            select(QaAssignment.id, QaSampledTicket.ticket_id, QaAssignment.reviewer)
            .join(QaSampledTicket, QaSampledTicket.id == QaAssignment.sampled_ticket_id)
            .join(QaSample, QaSample.id == QaSampledTicket.sample_id)
            .join(QaScorecard, QaScorecard.id == QaSample.scorecard_id)
            .where(
                QaScorecard.name == name,
                QaSampledTicket.ticket_id.in_(numbers[start : start + 500]),
            )
            .order_by(QaAssignment.id)
        )
        for assignment, ticket, reviewer in rows:
            found[(ticket, reviewer.lower())] = assignment
    return found
