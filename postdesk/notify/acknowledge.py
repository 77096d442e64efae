"""The acknowledgement: a customer who opens a ticket learns its number at once.

ISO 10002 asks that every complaint is acknowledged; a number to quote also spares the
team the "did you get my mail?" follow-ups. The step queues it in the outbox inside the
message's own transaction, so it exists exactly when the ticket does.

Who gets none: mail that opened no ticket or a ticket nobody must answer (automatic
mail, bounces, our own: those never set `opened`), imported history, agents and our
own addresses, contacts whose mail bounces, mailboxes with `acknowledge = false`, and a
recipient who already got `[notify] auto_reply_limit` automatic mails within
`auto_reply_window_hours` (two auto-responders facing each other stop there).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select

from postdesk.ingest.process import WorkItem
from postdesk.ingest.store import IMPORT
from postdesk.ingest.tokens import ReplyTokens, new_message_id
from postdesk.models import Mailbox
from postdesk.models.base import table_of
from postdesk.models.tickets import AGENT
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.language import language_of
from postdesk.notify.outbox import automatic_mail_since
from postdesk.notify.templates import Templates

log = logging.getLogger(__name__)

_mailboxes = table_of(Mailbox)
_MAILBOX = select(_mailboxes.c.name, _mailboxes.c.address).where(
    _mailboxes.c.id == bindparam("mailbox_id")
)


@dataclass(frozen=True)
class AutoReplyLimit:
    """At most `count` automatic mails to one recipient within `window`."""

    count: int = 10
    window: timedelta = timedelta(hours=3)


class AcknowledgeStep:
    """Queue the acknowledgement, with its number, for a ticket a customer just opened."""

    name = "acknowledge"

    def __init__(
        self,
        templates: Templates,
        tokens: ReplyTokens,
        teams: Mapping[str, str],
        *,
        limit: AutoReplyLimit = AutoReplyLimit(),
    ) -> None:
        self.templates = templates
        self.tokens = tokens
        # Mailbox name -> the team name that signs its mail, for the mailboxes that
        # acknowledge (a mailbox not in it sends none).
        self.teams = dict(teams)
        self.limit = limit

    def __call__(self, item: WorkItem) -> None:
        opened, sender = item.opened, item.sender
        if opened is None or sender is None or item.raw.source == IMPORT:
            return
        if sender.role == AGENT or sender.unproven_agent or sender.bouncing:
            return
        if item.raw.mailbox_id is None:
            return
        conn = item.conn
        mailbox = conn.execute(_MAILBOX, {"mailbox_id": item.raw.mailbox_id}).first()
        if mailbox is None or mailbox.name not in self.teams:
            return
        if automatic_mail_since(conn, sender.email, opened.at - self.limit.window) >= (
            self.limit.count
        ):
            log.info(
                "ticket %d: no acknowledgement to %s: %d automatic mails within %s",
                opened.ticket_id,
                sender.email,
                self.limit.count,
                self.limit.window,
            )
            return
        parsed = item.need_parsed()
        team = self.teams[mailbox.name]
        language = language_of(f"{opened.subject}\n{opened.text}")
        customer_name = parsed.from_.name if parsed.from_ else ""
        rendered = self.templates.render(
            "acknowledgement",
            language,
            ticket_number=opened.ticket_id,
            subject=opened.subject,
            team=team,
            customer_name=customer_name,
        )
        domain = mailbox.address.rpartition("@")[2] or "localhost"
        envelope = Envelope(
            from_name=team,
            from_address=mailbox.address,
            to=sender.email,
            to_name=customer_name,
            reply_to=self.tokens.address(mailbox.address, opened.ticket_id),
            message_id=new_message_id(domain),
            in_reply_to=parsed.message_id or None,
            references=parsed.references,
        )
        queue_mail(
            conn,
            rendered,
            envelope,
            kind="acknowledgement",
            ticket_id=opened.ticket_id,
            language=language,
            at=opened.at,
            automatic=True,
        )
