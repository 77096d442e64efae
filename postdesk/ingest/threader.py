"""Decide which ticket an inbound message belongs to, and record why.

Rules, first match wins:
1. `message-id`: a message with the same Message-ID is already on a ticket (a second
   copy with different content, e.g. re-sent with another footer);
2. `in-reply-to` / `references`: a Message-ID it answers is on a ticket (In-Reply-To
   first, then References from the nearest ancestor back to the root);
3. `referenced-by`: a stored message answers this one (the parent arrived late);
4. `shared-parent`: a stored message answers the same missing message as this one;
5. `subject-tag`: the subject carries `[#N]` (any digits: ASCII, Persian, Arabic-Indic)
   and the sender already takes part in ticket N (requester, earlier sender, or agent),
   so quoting someone else's ticket number does not attach mail to it;
6. otherwise `new`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from postdesk.ingest.parse import ParsedMessage
from postdesk.models import Contact, Message, MessageRef, Ticket
from postdesk.models.tickets import AGENT

NEW = "new"
_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_TAG = re.compile(r"\[#\s*([0-9۰-۹٠-٩]{1,12})\s*\]")


@dataclass(frozen=True)
class ThreadMatch:
    """The threading decision for one message: the ticket (None = new) and why."""

    ticket_id: int | None
    rule: str
    reason: str


def subject_tags(subject: str) -> list[int]:
    """Ticket numbers tagged in a subject, in order; `[#۱۲]` reads as 12."""
    return [int(m.group(1).translate(_DIGITS)) for m in _TAG.finditer(subject)]


def _ancestors(parsed: ParsedMessage) -> list[tuple[str, str]]:
    """The Message-IDs this message answers, nearest first, each with the header it came from."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for mid in parsed.in_reply_to:
        if mid not in seen:
            seen.add(mid)
            out.append((mid, "in-reply-to"))
    for mid in reversed(parsed.references):
        if mid not in seen:
            seen.add(mid)
            out.append((mid, "references"))
    if parsed.message_id:
        # A message never threads onto itself through its own references.
        out = [(mid, how) for mid, how in out if mid != parsed.message_id]
    return out


def _first_ticket(found: dict[str, int], order: Sequence[str]) -> tuple[str, int] | None:
    for mid in order:
        if mid in found:
            return mid, found[mid]
    return None


def find_ticket(session: Session, parsed: ParsedMessage, sender: Contact) -> ThreadMatch:
    """Apply the rules above to `parsed`, sent by `sender`."""
    own = parsed.message_id
    if own:
        same = session.execute(
            select(Message.ticket_id).where(Message.message_id == own).order_by(Message.id)
        ).first()
        if same is not None:
            return ThreadMatch(
                same[0], "message-id", f"Message-ID <{own}> is already on ticket {same[0]}"
            )

    ancestors = _ancestors(parsed)
    if ancestors:
        ids = [mid for mid, _ in ancestors]
        rows = session.execute(
            select(Message.message_id, Message.ticket_id)
            .where(Message.message_id.in_(ids))
            .order_by(Message.id)
        ).all()
        stored: dict[str, int] = {}
        for mid, ticket_id in rows:
            if mid is not None:
                stored.setdefault(mid, ticket_id)
        hit = _first_ticket(stored, ids)
        if hit is not None:
            mid, ticket_id = hit
            how = dict(ancestors)[mid]
            header = "In-Reply-To" if how == "in-reply-to" else "References"
            return ThreadMatch(
                ticket_id, how, f"{header} <{mid}> is a message of ticket {ticket_id}"
            )

    if own:
        child = session.execute(
            select(Message.ticket_id, Message.message_id)
            .join(MessageRef, MessageRef.message_pk == Message.id)
            .where(MessageRef.ref_message_id == own)
            .order_by(Message.id)
        ).first()
        if child is not None:
            return ThreadMatch(
                child[0],
                "referenced-by",
                f"message <{child[1]}> of ticket {child[0]} answers this one",
            )

    if ancestors:
        ids = [mid for mid, _ in ancestors]
        rows = session.execute(
            select(MessageRef.ref_message_id, Message.ticket_id)
            .join(Message, MessageRef.message_pk == Message.id)
            .where(MessageRef.ref_message_id.in_(ids))
            .order_by(Message.id)
        ).all()
        sharing: dict[str, int] = {}
        for mid, ticket_id in rows:
            sharing.setdefault(mid, ticket_id)
        hit = _first_ticket(sharing, ids)
        if hit is not None:
            mid, ticket_id = hit
            return ThreadMatch(
                ticket_id,
                "shared-parent",
                f"ticket {ticket_id} already has a reply to <{mid}>, which is not stored",
            )

    for number in subject_tags(parsed.subject):
        ticket = session.get(Ticket, number)
        if ticket is None:
            continue
        if _takes_part(session, ticket, sender):
            return ThreadMatch(
                ticket.id, "subject-tag", f"subject tag [#{number}] and the sender is on it"
            )
    return ThreadMatch(None, NEW, "no rule matched")


def _takes_part(session: Session, ticket: Ticket, sender: Contact) -> bool:
    if sender.role == AGENT or ticket.requester_id == sender.id:
        return True
    wrote = session.execute(
        select(Message.id).where(Message.ticket_id == ticket.id, Message.contact_id == sender.id)
    ).first()
    return wrote is not None
