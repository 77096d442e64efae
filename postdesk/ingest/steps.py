"""The ingest steps of the pipeline: from raw bytes to a message filed on its ticket.

Each step does one thing to the work item (postdesk/ingest/process.py) and either
returns or raises; `postdesk/pipeline.py` lists them in order. They read and write
through the item's connection, with Core statements built once (this path runs for every
message), and change tickets only through the lifecycle (postdesk/tickets/lifecycle.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import Connection, bindparam, exists, insert, select, update

from postdesk.config import LimitSettings
from postdesk.errors import ParseError, PostdeskError
from postdesk.ingest.attachments import AttachmentStore
from postdesk.ingest.authres import HEADER as AUTH_HEADER
from postdesk.ingest.authres import trusted_header
from postdesk.ingest.automatic import kind_of_mail
from postdesk.ingest.parse import DEFAULT_LIMITS, Address, ParsedMessage, parse_message
from postdesk.ingest.process import RawInput, WorkItem
from postdesk.ingest.sender import Sender, get_or_create_contact, sender_address
from postdesk.ingest.store import IMPORT, MESSAGE_ID_WIDTH
from postdesk.ingest.threader import (
    DEFAULT_OPTIONS,
    NEW,
    ThreadMatch,
    ThreadOptions,
    find_ticket,
    ticket_subject_key,
)
from postdesk.ingest.tokens import may_be_ours
from postdesk.ingest.worker import Budget, capped_visible, shared_worker
from postdesk.models import (
    Attachment,
    Contact,
    MailKind,
    Message,
    MessageRef,
    OutboxMail,
    RawMessage,
    UTCDateTime,
)
from postdesk.models.base import table_of
from postdesk.models.lean import Lean
from postdesk.models.tickets import AGENT, TicketStatus
from postdesk.tickets.lifecycle import (
    REOPENABLE,
    NewTicket,
    message_arrived,
    open_ticket,
    reopen,
    resolve_merged,
    responded,
    set_status,
)
from postdesk.tickets.views import ticket_exists

log = logging.getLogger(__name__)

NO_SUBJECT = "(no subject)"


@overload
def _fit(identifier: str) -> str: ...
@overload
def _fit(identifier: None) -> None: ...
def _fit(identifier: str | None) -> str | None:
    """Cut a Message-ID/Content-ID to the column width (RFC 5322's line limit, 998).

    Longer ones exist only in broken or hostile mail; the cut copy still matches itself.
    """
    return identifier[:MESSAGE_ID_WIDTH] if identifier is not None else None


def arrival_time(raw: RawInput, parsed: ParsedMessage) -> datetime:
    """When the message reached the team, the clock tickets and SLAs run on.

    Fetched mail arrived when postdesk stored it. Imported mail is history: its Date
    header is used, unless missing or in the future (then the import time).
    """
    if raw.source == IMPORT and parsed.date is not None and parsed.date <= raw.received_at:
        return parsed.date
    return raw.received_at


class ParseStep:
    """Decode the raw bytes into headers, text and attachments.

    With a `budget` (ingest/worker.py) this runs in a worker process under that time and
    memory budget, which finds the visible text too; without one, parsing runs here.
    """

    name = "parse"

    def __init__(
        self, budget: Budget | None = None, limits: LimitSettings = DEFAULT_LIMITS
    ) -> None:
        self.budget = budget
        self.limits = limits

    def prefetch(self, contents: Sequence[bytes]) -> None:
        """Hand a batch's messages to the worker ahead of their turn (see Processor)."""
        if self.budget is not None:
            shared_worker(self.budget).prefetch(contents)

    def __call__(self, item: WorkItem) -> None:
        if self.budget is None:
            item.parsed = parse_message(item.raw.content, self.limits)
        else:
            read = shared_worker(self.budget).read(item.raw.content)
            item.parsed, item.visible = read.parsed, read.visible
        item.arrived = arrival_time(item.raw, item.parsed)


_OUR_MESSAGE = select(
    exists().where(
        table_of(Message).c.message_id == bindparam("message_id"),
        table_of(Message).c.direction == "out",
    )
)


class KindStep:
    """Tell human mail from automatic replies, bounces and our own mail coming back."""

    name = "kind"

    def __init__(self, own_addresses: Collection[str]) -> None:
        self.own_addresses = frozenset(a.lower() for a in own_addresses)

    def __call__(self, item: WorkItem) -> None:
        conn = item.conn

        def ours(message_id: str) -> bool:
            if not may_be_ours(message_id):
                return False  # not an id we make: no query (see tokens.new_message_id)
            return bool(conn.execute(_OUR_MESSAGE, {"message_id": _fit(message_id)}).scalar())

        item.kind = kind_of_mail(
            item.need_parsed(), own_message_ids=ours, own_addresses=self.own_addresses
        )


_GIVEN_SENDER = select(table_of(RawMessage).c.given_sender).where(
    table_of(RawMessage).c.id == bindparam("raw_id")
)


class SenderStep:
    """Find or create the contact who wrote the message."""

    name = "sender"

    def __init__(self, team_addresses: Collection[str]) -> None:
        self.team_addresses = frozenset(e.lower() for e in team_addresses)

    def __call__(self, item: WorkItem) -> None:
        found = item.kind  # the kind step runs first: a bounce needs no sender address
        bounce = found is not None and found.kind == MailKind.BOUNCE
        try:
            address = sender_address(item.need_parsed(), bounce=bounce)
        except ParseError:
            # No usable address in the mail: the one a person gave it, if any (a query
            # only on this rare path; see `postdesk inbound retry --sender`).
            given = item.conn.execute(_GIVEN_SENDER, {"raw_id": item.raw.id}).scalar()
            if not given:
                raise
            address = Address(given, "")
        item.sender = get_or_create_contact(item.conn, address, team_addresses=self.team_addresses)


class ThreadStep:
    """Decide whether the message opens a ticket or continues one, and why."""

    name = "thread"

    def __init__(self, options: ThreadOptions = DEFAULT_OPTIONS) -> None:
        self.options = options

    def __call__(self, item: WorkItem) -> None:
        found = item.kind
        if item.agent_token is not None:
            # The agent's proven reply (ingest/author.py) joins the ticket of its token.
            number = item.agent_token[0]
            if ticket_exists(item.conn, number):
                ticket_id = resolve_merged(item.conn, number)
                reason = f"the agent's signed reply token of ticket {number}"
                if ticket_id != number:
                    reason += f"; ticket {number} was merged into {ticket_id}"
                item.match = ThreadMatch(ticket_id, "agent-token", reason)
                return
        item.match = find_ticket(
            item.conn,
            item.need_parsed(),
            item.need_sender(),
            kind=found.kind if found else MailKind.HUMAN,
            bounced_id=found.original_message_id if found else None,
            arrived=item.arrived,
            options=self.options,
        )


class VisibleTextStep:
    """Find what the sender wrote: the text without quoted history and signature."""

    name = "visible"

    def __init__(self, max_chars: int = DEFAULT_LIMITS.max_text_chars) -> None:
        self.max_chars = max_chars

    def __call__(self, item: WorkItem) -> None:
        if item.visible is not None:
            return  # found with the parse, under its budget (ParseStep)
        item.parsed, item.visible = capped_visible(item.need_parsed(), self.max_chars)


class AgentMailWithoutTicket(PostdeskError):
    """Mail from an agent's address that belongs to no ticket and opens none."""


AGENT_MAIL_NO_TICKET = "agent mail that belongs to no ticket"


class TicketStep:
    """Open the message's ticket, or add to it: reopen it, or follow up a long-closed one.

    The threader says which ticket a message belongs to; whether a human reply to a
    ticket closed longer than `closed_after` ago continues it is decided here, because
    only the write that moves the ticket's clocks learns its status without another query.

    Mail from an agent's address that threads to no ticket (or to one closed too long
    ago) never makes the agent a requester. When the agent is proven (ingest/author.py:
    the receiving server's Authentication-Results, or imported history) and writes to a
    customer, it opens a ticket for that customer: the requester is the first To/Cc
    address that is not the team's (`team_addresses`: agents, our mailboxes, their reply
    tokens); the agent's mail is the ticket's first response and the ticket waits for the
    customer (pending); nobody is acknowledged or notified. Anything else (unproven, no
    customer among To and Cc, an agent's automatic reply) is quarantined with the reason
    AGENT_MAIL_NO_TICKET and why: kept, visible in `inbound list --quarantined`, and
    filed by `inbound retry` once its ticket exists.
    """

    name = "ticket"

    def __init__(
        self, closed_after: timedelta = timedelta(days=30), team_addresses: Collection[str] = ()
    ) -> None:
        self.closed_after = closed_after
        self.team_addresses = frozenset(e.lower() for e in team_addresses)

    def _ours(self, email: str) -> bool:
        """An address of the team: an agent's, a mailbox's, or one with a +tag of them."""
        local, _, domain = email.lower().partition("@")
        return email.lower() in self.team_addresses or (
            f"{local.split('+', 1)[0]}@{domain}" in self.team_addresses
        )

    def _customer_written_to(self, item: WorkItem, human: bool) -> Sender:
        """The customer an agent's mail that opens a ticket was written to, or raise."""
        sender = item.need_sender()
        if not human:
            kind = item.kind.kind if item.kind else MailKind.HUMAN
            why = f"{kind} mail from the agent address {sender.email}"
        elif sender.unproven_agent:
            why = f"from the agent address {sender.email}, and nothing proves the agent sent it"
        else:
            parsed = item.need_parsed()
            for address in [*parsed.to, *parsed.cc]:
                if self._ours(address.email):
                    continue
                contact = get_or_create_contact(
                    item.conn, address, team_addresses=self.team_addresses
                )
                if contact.role != AGENT:
                    return contact
            why = f"the agent {sender.email} wrote to nobody outside the team (To and Cc)"
        raise AgentMailWithoutTicket(f"{AGENT_MAIL_NO_TICKET}: {why}")

    def __call__(self, item: WorkItem) -> None:
        parsed = item.need_parsed()
        sender = item.need_sender()
        match = item.match or ThreadMatch(None, NEW, "no rule ran")
        found = item.kind
        kind = found.kind if found else MailKind.HUMAN
        human = kind == MailKind.HUMAN
        conn = item.conn
        now = item.need_arrived()
        follow_up_of: int | None = None
        closed_at: datetime | None = None
        if match.ticket_id is not None:
            was = message_arrived(conn, match.ticket_id, now)
            if human and sender.role == AGENT and item.agent_token is None:
                # An agent's own mail (imported history, or proven by the receiving
                # server) answers the customer; a token reply counts when it is relayed.
                responded(conn, match.ticket_id, at=now)
            closed_at = was.closed_at
            long_closed = (
                was.status == TicketStatus.CLOSED
                and closed_at is not None
                and now - closed_at > self.closed_after
            )
            if not (human and long_closed):
                # Unproven mail from an agent's address (ingest/author.py) changes nothing.
                reopens = (
                    human
                    and sender.role != AGENT
                    and not sender.unproven_agent
                    and not item.survey_answer
                )
                if reopens and was.status in REOPENABLE:
                    reopen(
                        conn,
                        match.ticket_id,
                        was=was.status,
                        actor=sender.email,
                        why="reply",
                        at=now,
                    )
                item.ticket_id = match.ticket_id
                return
            follow_up_of = match.ticket_id
        subject = parsed.subject.strip() or NO_SUBJECT
        customer: Sender | None = None
        if sender.role == AGENT or sender.unproven_agent:
            customer = self._customer_written_to(item, human)
        ticket_id = open_ticket(
            conn,
            subject=subject,
            requester_id=sender.id if customer is None else customer.id,
            mailbox_id=item.raw.mailbox_id,
            at=now,
            actor=sender.email,
            subject_key=ticket_subject_key(subject),
            closed_why=None if human else f"{kind} mail: {found.reason if found else ''}",
            follow_up_of=follow_up_of,
            related_to=match.related,
        )
        item.ticket_id = ticket_id
        item.created_ticket = True
        if customer is not None:
            responded(conn, ticket_id, at=now)
            set_status(
                conn,
                ticket_id,
                TicketStatus.PENDING,
                actor=sender.email,
                why="the agent wrote to the customer first",
                at=now,
            )
            item.match = ThreadMatch(
                None,
                match.rule,
                f"{item.match.reason if item.match else match.reason}; the agent "
                f"{sender.email} wrote first to {customer.email}, who is the requester",
            )
            return
        if follow_up_of is not None and closed_at is not None:
            item.match = ThreadMatch(
                None,
                match.rule,
                f"{match.reason}; ticket {follow_up_of} was closed on "
                f"{closed_at:%Y-%m-%d}, so this opens follow-up ticket {ticket_id}",
            )
        if human:
            item.opened = NewTicket(ticket_id, subject, item.visible or "", sender.email, now)


def _addresses(addresses: Sequence[Address]) -> list[dict[str, str]]:
    return [{"email": a.email, "name": a.name} for a in addresses]


_messages = table_of(Message)
_ADD_MESSAGE = Lean(
    insert(_messages).returning(_messages.c.id),
    keys=(
        *("raw_message_id", "ticket_id", "contact_id", "direction", "message_id"),
        *("in_reply_to", "references", "subject", "from_email", "from_name", "to", "cc"),
        *("sent_at", "received_at", "text", "thread_rule", "thread_reason", "defects"),
        *("kind", "kind_reason", "visible_text", "agent_check", "auth_results"),
    ),
)
_ADD_REFS = Lean(insert(table_of(MessageRef)), keys=("message_pk", "ref_message_id"))
_ADD_ATTACHMENTS = insert(table_of(Attachment))


class FileStep:
    """File the message on its ticket: the message row, its references and attachments."""

    name = "file"

    def __init__(self, attachments: AttachmentStore, authserv_ids: Collection[str] = ()) -> None:
        self.attachments = attachments
        # The receiving server's id(s): its topmost Authentication-Results is recorded.
        self.authserv_ids = frozenset(a.lower() for a in authserv_ids)

    def before_commit(self) -> None:
        """Flush the attachments written in this transaction to disk before its commit
        (the processor calls this): rows never point to a file a power cut could lose.
        Raises DiskFull, which quarantines the message(s) as `save` does."""
        self.attachments.flush()

    def __call__(self, item: WorkItem) -> None:
        parsed = item.need_parsed()
        sender = item.need_sender()
        match = item.match or ThreadMatch(None, NEW, "no rule ran")
        found = item.kind
        assert item.ticket_id is not None, "the ticket step runs before this one"
        conn = item.conn
        message_pk: int = _ADD_MESSAGE.scalar(
            conn,
            {
                "raw_message_id": item.raw.id,
                "ticket_id": item.ticket_id,
                "contact_id": sender.id,
                "direction": "in",
                "message_id": _fit(parsed.message_id),
                "in_reply_to": " ".join(parsed.in_reply_to) or None,
                "references": " ".join(parsed.references) or None,
                "subject": parsed.subject,
                "from_email": sender.email,
                "from_name": (parsed.from_.name if parsed.from_ else "") or sender.name,
                "to": _addresses(parsed.to),
                "cc": _addresses(parsed.cc),
                "sent_at": parsed.date,
                "received_at": item.raw.received_at,
                "text": parsed.text,
                "thread_rule": match.rule,
                "thread_reason": match.reason,
                "defects": list(parsed.defects),
                "kind": found.kind if found else MailKind.HUMAN,
                "kind_reason": found.reason if found else "",
                "visible_text": item.visible,
                "agent_check": item.agent_check,
                "auth_results": trusted_header(
                    parsed.headers.get(AUTH_HEADER, ()), self.authserv_ids
                )
                if self.authserv_ids
                else None,
            },
        )
        item.message_pk = message_pk
        refs = dict.fromkeys(_fit(r) for r in [*parsed.in_reply_to, *parsed.references])
        if refs:
            _ADD_REFS.many(
                conn, [{"message_pk": message_pk, "ref_message_id": ref} for ref in refs]
            )
        if parsed.attachments:
            rows: list[dict[str, Any]] = []
            for attachment in parsed.attachments:
                stored = self.attachments.save(attachment.data)
                rows.append(
                    {
                        "message_pk": message_pk,
                        "filename": attachment.filename,
                        "content_type": attachment.content_type,
                        "size": stored.size,
                        "sha256": stored.sha256,
                        "relpath": stored.relpath,
                        "inline": attachment.inline,
                        "content_id": _fit(attachment.content_id),
                    }
                )
            conn.execute(_ADD_ATTACHMENTS, rows)


_contacts = table_of(Contact)
_now = bindparam("now", type_=UTCDateTime())
_MARK_BOUNCING = (
    update(_contacts)
    .where(_contacts.c.email.in_(bindparam("emails", expanding=True)))
    .values(bouncing_since=_now, bounce_reason=bindparam("reason"))
)
_outbox = table_of(OutboxMail)
_OUTBOX_RECIPIENTS = select(_outbox.c.recipients).where(
    _outbox.c.message_id == bindparam("message_id")
)
_SENT_ADDRESSEES = select(_messages.c.to, _messages.c.cc).where(
    _messages.c.message_id == bindparam("message_id"), _messages.c.direction == "out"
)


def _sent_to(conn: Connection, message_id: str | None) -> set[str]:
    """The addresses we sent the message `message_id` to (lower-case); empty when it is
    not one of ours."""
    if not message_id:
        return set()
    params = {"message_id": _fit(message_id)}
    found: set[str] = set()
    for (recipients,) in conn.execute(_OUTBOX_RECIPIENTS, params):
        found.update(str(r).lower() for r in recipients or ())
    for to, cc in conn.execute(_SENT_ADDRESSEES, params):
        for entry in (*(to or ()), *(cc or ())):
            if isinstance(entry, dict):
                found.add(str(entry.get("email", "")).lower())
    return found


_CLEAR_BOUNCING = (
    update(_contacts)
    .where(_contacts.c.id == bindparam("contact_id"), _contacts.c.bouncing_since.is_not(None))
    .values(bouncing_since=None, bounce_reason=None)
)


class BounceStep:
    """Mark the failed recipients of a bounce as bouncing; clear it when they write again.

    Only recipients of the message the bounce reports on, when that is a message we sent
    (its Message-ID is an outbox row's or an outbound message's): a report about mail we
    never sent, or naming someone else, marks nobody.
    """

    name = "bounce"

    def __call__(self, item: WorkItem) -> None:
        found = item.kind
        sender = item.need_sender()
        if found is not None and found.kind == MailKind.BOUNCE and found.failed_recipients:
            sent_to = _sent_to(item.conn, found.original_message_id)
            named = [email for email in found.failed_recipients if email in sent_to]
            if len(named) < len(found.failed_recipients):
                log.info(
                    "raw %s: bounce names %d address(es) not sent message <%s>: not marked",
                    item.raw.id,
                    len(found.failed_recipients) - len(named),
                    found.original_message_id or "?",
                )
            if named:
                item.conn.execute(
                    _MARK_BOUNCING,
                    {
                        "emails": named,
                        "now": item.need_arrived(),
                        "reason": found.reason[:500],
                    },
                )
        elif (found is None or found.kind == MailKind.HUMAN) and sender.bouncing:
            item.conn.execute(_CLEAR_BOUNCING, {"contact_id": sender.id})
