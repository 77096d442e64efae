"""The processing pipeline: every step a stored message goes through, in order.

A step is a small class with a `name` (quarantine reasons read "name: reason"), a one-line
docstring saying its one job, and `__call__(item)` that changes the work item
(postdesk/ingest/process.py) or raises. The Processor runs the list below for each
message inside that message's savepoint, so whatever the steps write is kept or undone
together. To add a step, write the class beside the feature it belongs to (a step that
changes a ticket calls postdesk/tickets/lifecycle.py) and add one entry to `steps()`
where it belongs in the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from postdesk.classify.step import TriageStep
from postdesk.config import Settings
from postdesk.ingest.attachments import AttachmentStore
from postdesk.ingest.author import AuthorStep
from postdesk.ingest.process import Step
from postdesk.ingest.steps import (
    BounceStep,
    FileStep,
    KindStep,
    ParseStep,
    SenderStep,
    ThreadStep,
    TicketStep,
    VisibleTextStep,
)
from postdesk.ingest.threader import ThreadOptions
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.ingest.worker import Budget
from postdesk.notify.acknowledge import AcknowledgeStep, AutoReplyLimit
from postdesk.notify.notification import Agent, NotifyAgentsStep
from postdesk.notify.relay import RelayStep
from postdesk.notify.survey import SurveyAnswerStep
from postdesk.notify.templates import Templates


def team_addresses(settings: Settings) -> set[str]:
    """Our agents' and our mailboxes' addresses, lower-case: mail from them is not a
    customer's."""
    emails = {a.email.lower() for a in settings.agents}
    emails.update(box.address.lower() for box in settings.mailboxes)
    return emails


def parse_budget(settings: Settings) -> Budget | None:
    """The per-message parse budget the settings ask for; None to parse in-process."""
    processing = settings.processing
    if not processing.parse_worker:
        return None
    return Budget(
        seconds=processing.parse_seconds,
        memory_mb=processing.parse_memory_mb,
        limits=settings.limits,
    )


def steps(
    settings: Settings,
    *,
    triage: TriageStep | None = None,
    notify: Sequence[Step] | None = None,
    budget: Budget | None = None,
) -> list[Step]:
    """The steps every inbound message goes through, in processing order.

    `triage` and `notify` (from `notify_steps`) are kept by the service from pass to
    pass, so that models are loaded and templates read and checked once. `budget`
    (default: `parse_budget(settings)`) is what parsing one message may cost; the worker
    for it is shared by the whole process.
    """
    threading = settings.threading
    tokens = ReplyTokens(load_key(settings))
    budget = budget or parse_budget(settings)
    pipeline: list[Step | None] = [
        ParseStep(budget, settings.limits),
        KindStep([box.address for box in settings.mailboxes]),
        SenderStep(team_addresses(settings)),
        AuthorStep(tokens, settings.authentication.authserv_id),
        ThreadStep(
            ThreadOptions(
                tokens=tokens,
                subject_window=timedelta(days=threading.subject_window_days),
                own_addresses=frozenset(team_addresses(settings) if settings.mailboxes else ()),
            )
        ),
        VisibleTextStep(settings.limits.max_text_chars),
        SurveyAnswerStep(),
        TicketStep(
            closed_after=timedelta(days=threading.new_ticket_after_closed_days),
            team_addresses=team_addresses(settings),
        ),
        FileStep(
            AttachmentStore(settings.data_dir / "attachments", defer_sync=True),
            settings.authentication.authserv_id,
        ),
        BounceStep(),
        triage,
        *(notify_steps(settings) if notify is None else notify),
    ]
    return [step for step in pipeline if step is not None]


def notify_steps(settings: Settings) -> list[Step]:
    """The steps that act on agents' replies and write mail (relay, acknowledgement, agent
    notifications), when there is an SMTP relay to send it through."""
    if settings.smtp is None:
        return []
    notify = settings.notify
    templates = Templates(notify.templates_dir)
    templates.check()  # a broken override stops the service with one line, not a mail later
    tokens = ReplyTokens(load_key(settings))
    teams = {box.name: box.team for box in settings.mailboxes}
    agents = [Agent(a.email, a.name, a.queues, a.language) for a in settings.agents]
    return [
        RelayStep(settings, templates, tokens),
        AcknowledgeStep(
            templates,
            tokens,
            {box.name: box.team for box in settings.mailboxes if box.acknowledge},
            limit=AutoReplyLimit(
                count=notify.auto_reply_limit,
                window=timedelta(hours=notify.auto_reply_window_hours),
            ),
        ),
        NotifyAgentsStep(templates, tokens, agents, teams),
    ]
