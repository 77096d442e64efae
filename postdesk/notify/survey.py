"""The satisfaction survey: asked when a ticket is solved, answered with one digit.

`queue_survey` mails the customer the one-question survey (1-5) when an agent solves
the ticket (`#solve`, `postdesk tickets set --status solved`). `SurveyAnswerStep` reads
the answers: a customer's reply to a solved ticket that was sent a survey, whose visible
text starts with a digit 1-5 (ASCII, Persian ۱-۵ or Arabic-Indic ١-٥) standing alone,
records the ticket's CSAT score and the rest of the text as the comment. Such an answer
does not reopen the ticket and notifies nobody: it is not a new question. Any other
reply to a solved ticket reopens it as before.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, exists, select

from postdesk.config import Settings
from postdesk.ingest.process import WorkItem
from postdesk.ingest.tokens import ReplyTokens, load_key, new_message_id
from postdesk.models import MailKind, OutboxMail, Ticket, TicketStatus, UTCDateTime, utcnow
from postdesk.models.base import table_of
from postdesk.models.tickets import AGENT
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.reply import ReplyError, sender_of, ticket_thread
from postdesk.notify.templates import Templates
from postdesk.tickets.lifecycle import record_csat

_DIGITS = str.maketrans("۱۲۳۴۵١٢٣٤٥", "1234512345")
# The digit, alone (not the start of "12" or "3.5"), then whatever the customer added.
_ANSWER = re.compile(
    r"\A\s{0,20}([1-5۱-۵١-٥])(?![0-9۰-۹٠-٩]|[.,/][0-9۰-۹٠-٩])[ \t.:)\-–]{0,5}(.*)\Z", re.S
)
_MAX_COMMENT = 2000

_tickets = table_of(Ticket)
_outbox = table_of(OutboxMail)
_SOLVED_WITH_SURVEY = select(
    exists().where(
        _tickets.c.id == bindparam("ticket_id"),
        _tickets.c.status == TicketStatus.SOLVED,
        exists().where(_outbox.c.ticket_id == _tickets.c.id, _outbox.c.kind == "survey"),
    )
)


_ASK_AGAIN_AFTER = timedelta(days=1)
_RECENT_SURVEY = select(
    exists().where(
        _outbox.c.ticket_id == bindparam("ticket_id"),
        _outbox.c.kind == "survey",
        _outbox.c.created_at >= bindparam("since", type_=UTCDateTime()),
    )
)


def survey_answer(text: str) -> tuple[int, str] | None:
    """(score, comment) when `text` is an answer to the survey, else None."""
    match = _ANSWER.match(text[:_MAX_COMMENT])
    if match is None:
        return None
    return int(match.group(1).translate(_DIGITS)), " ".join(match.group(2).split())


def queue_survey(
    conn: Connection,
    settings: Settings,
    ticket_id: int,
    *,
    templates: Templates | None = None,
    at: datetime | None = None,
) -> int | None:
    """Queue the survey to the ticket's customer; the outbox row, or None when it has
    no mailbox to send from (the survey is a courtesy, never a reason to fail) or was
    asked within the last day (a ticket solved, reopened and solved again asks once)."""
    when = at or utcnow()
    if conn.execute(
        _RECENT_SURVEY, {"ticket_id": ticket_id, "since": when - _ASK_AGAIN_AFTER}
    ).scalar():
        return None
    thread = ticket_thread(conn, ticket_id)
    try:
        mailbox_address, team = sender_of(settings, ticket_id, thread)
    except ReplyError:
        return None
    rendered = (templates or Templates(settings.notify.templates_dir)).render(
        "survey",
        thread.language,
        ticket_number=ticket_id,
        subject=thread.subject,
        team=team,
        customer_name=thread.requester_name,
    )
    envelope = Envelope(
        from_name=team,
        from_address=mailbox_address,
        to=thread.requester_email,
        to_name=thread.requester_name,
        reply_to=ReplyTokens(load_key(settings)).address(mailbox_address, ticket_id),
        message_id=new_message_id(mailbox_address.rpartition("@")[2] or "localhost"),
        in_reply_to=thread.in_reply_to,
        references=thread.references,
    )
    return queue_mail(
        conn,
        rendered,
        envelope,
        kind="survey",
        ticket_id=ticket_id,
        language=thread.language,
        at=when,
        automatic=True,
    )


class SurveyAnswerStep:
    """Record a customer's answer to the survey (a digit 1-5) without reopening."""

    name = "survey"

    def __call__(self, item: WorkItem) -> None:
        match, sender, found = item.match, item.sender, item.kind
        if match is None or match.ticket_id is None or sender is None:
            return
        if sender.role == AGENT or (found is not None and found.kind != MailKind.HUMAN):
            return
        answer = survey_answer(item.visible or "")
        if answer is None:
            return
        conn = item.conn
        if not conn.execute(_SOLVED_WITH_SURVEY, {"ticket_id": match.ticket_id}).scalar():
            return
        record_csat(
            conn, match.ticket_id, answer[0], answer[1], actor=sender.email, at=item.need_arrived()
        )
        item.survey_answer = True
