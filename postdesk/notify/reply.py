"""An agent's reply to the customer: rendered, composed and queued in the ticket's thread.

One function, `queue_reply`, for every way an agent answers: `postdesk tickets reply`
today, the relay of replies agents write in their own mail client next. It works inside
the caller's transaction, like the lifecycle, so the outbox row, the outgoing message on
the ticket and the status change exist together or not at all.

What the customer sees: the `reply` template in the ticket's language (the language of
the customer's first message, as the acknowledgement chose it), from the ticket's
mailbox address as "<Agent> via <team>", in the thread of the customer's latest message,
with the ticket's signed reply token as Reply-To. The agent's own address is never in
the mail: customers answer the team, and an agent's private address stays private.

The first reply on a ticket is its first response (`first_response_at`, an SLA clock's
end). Status: an answered ticket waits for the customer, so a reply moves `new` and `open` to
`pending` unless the caller names another status; `pending`, `solved` and `closed`
tickets keep theirs (a last word on a solved ticket does not unsolve it).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from postdesk.config import Settings
from postdesk.errors import PostdeskError
from postdesk.ingest.tokens import ReplyTokens, load_key, new_message_id
from postdesk.models import Contact, Mailbox, Message, Ticket, TicketStatus, utcnow
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.language import language_of
from postdesk.notify.templates import Templates
from postdesk.tickets.lifecycle import TicketNotFound, check_status, responded, set_status
from postdesk.tickets.views import Agent

# A reply hands the ticket to the customer: these statuses become pending.
AWAITING_AGENT = (TicketStatus.NEW, TicketStatus.OPEN)


class ReplyError(PostdeskError):
    """A reply cannot be sent: empty, to a ticket with nobody or nowhere to send from."""


@dataclass(frozen=True)
class TicketThread:
    """What a reply on one ticket needs to know of it."""

    subject: str
    status: str
    merged_into: int | None
    requester_email: str
    requester_name: str
    mailbox_name: str | None
    mailbox_address: str | None
    language: str
    in_reply_to: str | None
    references: tuple[str, ...]


def ticket_thread(conn: Connection, ticket_id: int) -> TicketThread:
    ticket = conn.execute(
        select(
            Ticket.subject,
            Ticket.status,
            Ticket.merged_into_id,
            Ticket.requester_id,
            Contact.email,
            Contact.name,
            Mailbox.name.label("mailbox_name"),
            Mailbox.address.label("mailbox_address"),
        )
        .join(Contact, Contact.id == Ticket.requester_id)
        .outerjoin(Mailbox, Mailbox.id == Ticket.mailbox_id)
        .where(Ticket.id == ticket_id)
    ).one_or_none()
    if ticket is None:
        raise TicketNotFound(f"no ticket #{ticket_id}")
    # The customer's own messages: the first decides the language, the latest is the one
    # the reply answers (mail clients thread on it).
    theirs = (
        select(Message.message_id, Message.references, Message.from_name, Message.visible_text)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == "in",
            Message.contact_id == ticket.requester_id,
        )
        .limit(1)
    )
    when = func.coalesce(Message.sent_at, Message.received_at)
    first = conn.execute(theirs.order_by(when, Message.id)).one_or_none()
    latest = conn.execute(
        theirs.where(Message.message_id.is_not(None)).order_by(when.desc(), Message.id.desc())
    ).one_or_none()
    # Same text as the acknowledgement looked at, so both mails speak the same language.
    first_text = f"{ticket.subject}\n{first.visible_text or ''}" if first else ticket.subject
    return TicketThread(
        subject=ticket.subject,
        status=ticket.status,
        merged_into=ticket.merged_into_id,
        requester_email=ticket.email,
        requester_name=ticket.name or (first.from_name if first else ""),
        mailbox_name=ticket.mailbox_name,
        mailbox_address=ticket.mailbox_address,
        language=language_of(first_text),
        in_reply_to=latest.message_id if latest else None,
        references=tuple((latest.references or "").split()) if latest else (),
    )


_SIGN_OFF_CHARS = 80  # a line longer than this is a sentence, not a sign-off


def signed_by(text: str, name: str) -> bool:
    """Whether `text` already ends signed with `name`: one of its last two lines, short
    as a sign-off is, ends with the whole name or its first word ("Thanks,\nSam" from
    Sam Agent; "با احترام، سارا"). Then the reply's signature does not repeat the name."""
    words = name.split()
    if not words:
        return False
    names = {_fold(name), _fold(words[0])}
    lines = [line for line in text.splitlines() if line.strip()][-2:]
    for line in lines:
        folded = _fold(line).rstrip(" \t.,!;:-\u2013\u2014\u060c\u061b")
        if len(folded) > _SIGN_OFF_CHARS:
            continue
        for candidate in names:
            if folded == candidate:
                return True
            before = folded[: -len(candidate)] if folded.endswith(candidate) else None
            if before and not before[-1].isalnum() and before[-1] != "\u200c":
                return True
    return False


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def agent_display_name(agent: Agent) -> str:
    """The name a reply is signed with: the agent's name, else their address's local part
    (never the whole address, which must not reach the customer)."""
    return agent.name or agent.email.partition("@")[0]


def queue_reply(
    conn: Connection,
    settings: Settings,
    ticket_id: int,
    text: str,
    agent: Agent,
    *,
    status: str | None = None,
    templates: Templates | None = None,
    at: datetime | None = None,
) -> int:
    """Queue `agent`'s reply `text` to ticket `ticket_id`'s customer; the outbox row's id.

    In the caller's transaction: the mail is queued and kept on the ticket as an
    outgoing message, and the ticket's status is changed (to `status`, by default
    pending for a new or open ticket; see the module docstring) through the lifecycle.
    Raises ReplyError (nothing written) for empty text, a merged ticket or a ticket
    whose mailbox is not configured.
    """
    body = text.strip()
    if not body:
        raise ReplyError(f"ticket #{ticket_id}: the reply is empty; nothing was queued")
    check_status(status)
    thread = ticket_thread(conn, ticket_id)
    if thread.merged_into is not None:
        raise ReplyError(
            f"ticket #{ticket_id} was merged into #{thread.merged_into}; "
            f"reply on #{thread.merged_into}"
        )
    mailbox_address, team = sender_of(settings, ticket_id, thread)
    now = at or utcnow()
    agent_name = agent_display_name(agent)
    rendered = (templates or Templates(settings.notify.templates_dir)).render(
        "reply",
        thread.language,
        ticket_number=ticket_id,
        subject=thread.subject,
        team=team,
        customer_name=thread.requester_name,
        agent_name=agent_name,
        text=body,
        signed=signed_by(body, agent_name),
    )
    domain = mailbox_address.rpartition("@")[2] or "localhost"
    envelope = Envelope(
        from_name=f"{agent_name} via {team}",
        from_address=mailbox_address,
        to=thread.requester_email,
        to_name=thread.requester_name,
        reply_to=ReplyTokens(load_key(settings)).address(mailbox_address, ticket_id),
        message_id=new_message_id(domain),
        in_reply_to=thread.in_reply_to,
        references=thread.references,
    )
    row_id = queue_mail(
        conn,
        rendered,
        envelope,
        kind="reply",
        ticket_id=ticket_id,
        language=thread.language,
        at=now,
        automatic=False,
    )
    responded(conn, ticket_id, at=now)
    target = status or (TicketStatus.PENDING if thread.status in AWAITING_AGENT else None)
    if target is not None:
        set_status(conn, ticket_id, target, actor=agent.email, why="replied", at=now)
    return row_id


def sender_of(settings: Settings, ticket_id: int, thread: TicketThread) -> tuple[str, str]:
    """The address a reply goes out from, and the team that signs it.

    The ticket's own mailbox; a ticket imported without `--mailbox` has none, and then
    the only configured mailbox is the obvious one (with several, guessing could answer
    a customer from the wrong company's address).
    """
    if thread.mailbox_name is not None and thread.mailbox_address is not None:
        for box in settings.mailboxes:
            if box.name == thread.mailbox_name:
                return thread.mailbox_address, box.team
        raise ReplyError(
            f"ticket #{ticket_id} came in through mailbox {thread.mailbox_name!r}, "
            "which is no longer configured; add it back as a [[mailbox]] to reply"
        )
    if len(settings.mailboxes) == 1:
        box = settings.mailboxes[0]
        return box.address, box.team
    raise ReplyError(
        f"ticket #{ticket_id} came in through no mailbox (imported without --mailbox) and "
        f"{len(settings.mailboxes)} mailboxes are configured; there is no address to reply from"
    )
