"""Quarantined inbound mail: look at it, give it a sender, retry it or set it aside.

What `postdesk inbound list|show|retry|discard` work on. A quarantined message is one
whose processing failed (process.py keeps its bytes and a one-line reason); a person
decides what becomes of it:

- **retry** puts it back to pending and processes it again (after the cause is fixed);
- **retry --sender EMAIL** first gives a message that has no usable From, Sender or
  Reply-To the sender a person vouches for; the mail itself is not changed, the address
  is kept beside it (`raw_messages.given_sender`) and the sender step uses it only when
  the mail has none of its own;
- **discard** marks it discarded. The bytes and the reason stay in the database: a
  discarded message is part of the record of what reached the team (an auditor, or the
  person who discarded it by mistake, can still read it with `inbound show`, and
  `inbound retry` brings it back), and its dedupe key keeps a copy fetched or imported
  again from being processed. Deleting would lose both.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from postdesk.errors import ParseError, PostdeskError
from postdesk.ingest.parse import parse_message
from postdesk.ingest.sender import sender_address
from postdesk.models import RawMessage, RawStatus, utcnow
from postdesk.models.db import Database

# The header block is all a list needs; hostile mail may have a huge one.
_HEAD_BYTES = 64 * 1024
_EMAIL_MAX = 320  # RFC 5321: 64 + @ + 255


class InboundNotFound(PostdeskError):
    """No stored inbound message has this id."""


@dataclass(frozen=True)
class HeaderView:
    """The few headers a person needs to recognise a message, decoded."""

    sender: str
    subject: str
    to: str
    date: str


def header_view(content: bytes) -> HeaderView:
    """From, Subject, To and Date of raw mail, decoded; "" for what is missing or broken.

    Reads only the header block (at most 64 KiB) and never raises: it is for showing
    mail that processing already failed on.
    """
    head = content[:_HEAD_BYTES]
    cut = head.find(b"\n\n")
    cut_crlf = head.find(b"\r\n\r\n")
    ends = [i for i in (cut, cut_crlf) if i >= 0]
    if ends:
        head = head[: min(ends)]
    try:
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            head, headersonly=True
        )
    except Exception:  # the stdlib parser on hostile bytes: show nothing rather than fail
        return HeaderView("", "", "", "")

    def field(name: str) -> str:
        try:
            value = message.get(name)
            return " ".join(str(value).split()) if value is not None else ""
        except Exception:  # a header the stdlib cannot decode
            return ""

    return HeaderView(field("from"), field("subject"), field("to"), field("date"))


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def list_inbound(
    db: Database, statuses: Sequence[str] | None = None, *, limit: int | None, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Stored inbound messages, newest first, with sender and subject; and how many
    match in all (for "N more")."""
    with db.read_session() as session:
        query = select(
            RawMessage.id,
            RawMessage.status,
            RawMessage.source,
            RawMessage.origin,
            RawMessage.message_id,
            RawMessage.size,
            RawMessage.received_at,
            RawMessage.attempts,
            RawMessage.reason,
            RawMessage.given_sender,
            func.substr(RawMessage.content, 1, _HEAD_BYTES).label("head"),
        ).order_by(RawMessage.id.desc())
        count = select(func.count()).select_from(RawMessage)
        if statuses:
            query = query.where(RawMessage.status.in_(list(statuses)))
            count = count.where(RawMessage.status.in_(list(statuses)))
        if limit is not None:
            query = query.limit(limit)
        query = query.offset(offset)
        total = int(session.execute(count).scalar_one())
        rows = []
        for row in session.execute(query):
            view = header_view(bytes(row.head or b""))
            rows.append(
                {
                    "id": row.id,
                    "status": row.status,
                    "source": row.source,
                    "origin": row.origin,
                    "message_id": row.message_id,
                    "size": row.size,
                    "received_at": _iso(row.received_at),
                    "attempts": row.attempts,
                    "reason": row.reason,
                    "from": view.sender,
                    "subject": view.subject,
                    "given_sender": row.given_sender,
                }
            )
        return rows, total


def get_inbound(db: Database, raw_id: int) -> RawMessage:
    """The stored message `raw_id`, content included; InboundNotFound if there is none."""
    with db.read_session() as session:
        row = session.get(RawMessage, raw_id)
        if row is None:
            raise InboundNotFound(f"no inbound message {raw_id} (see `postdesk inbound list`)")
        session.expunge(row)
        return row


def show_inbound(db: Database, raw_id: int) -> dict[str, Any]:
    """Message `raw_id` for a person: where it came from, why it is where it is, its
    headers and its text (as the parser reads it; "" when it cannot be parsed)."""
    row = get_inbound(db, raw_id)
    view = header_view(row.content)
    text = ""
    parse_error = None
    try:
        text = parse_message(row.content).text
    except ParseError as exc:
        parse_error = str(exc)
    except Exception as exc:  # the parser's own bug must not hide the message
        parse_error = f"{type(exc).__name__}: {exc}"
    return {
        "id": row.id,
        "status": row.status,
        "reason": row.reason,
        "attempts": row.attempts,
        "source": row.source,
        "origin": row.origin,
        "received_at": _iso(row.received_at),
        "processed_at": _iso(row.processed_at),
        "message_id": row.message_id,
        "size": row.size,
        "from": view.sender,
        "to": view.to,
        "date": view.date,
        "subject": view.subject,
        "given_sender": row.given_sender,
        "text": text,
        "parse_error": parse_error,
    }


def _statuses(db: Database, raw_ids: Sequence[int]) -> dict[int, str]:
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.id, RawMessage.status).where(RawMessage.id.in_(list(raw_ids)))
        ).all()
    return {row.id: row.status for row in rows}


def check_ids(db: Database, raw_ids: Sequence[int], allowed: Sequence[str], verb: str) -> None:
    """Raise one line naming the first of `raw_ids` that does not exist or whose status
    is not one of `allowed`; nothing has been changed then."""
    found = _statuses(db, raw_ids)
    for raw_id in raw_ids:
        status = found.get(raw_id)
        if status is None:
            raise InboundNotFound(
                f"no inbound message {raw_id} (see `postdesk inbound list`); nothing was {verb}"
            )
        if status not in allowed:
            raise PostdeskError(
                f"inbound message {raw_id} is {status}, not {' or '.join(allowed)}; "
                f"nothing was {verb}"
            )


def requeue_ids(db: Database, raw_ids: Sequence[int]) -> list[int]:
    """Put the named quarantined or discarded messages back to pending (all or none)."""
    allowed = (RawStatus.QUARANTINED.value, RawStatus.DISCARDED.value)
    check_ids(db, raw_ids, allowed, "retried")
    ids = sorted(set(raw_ids))
    with db.transaction() as session:
        session.execute(
            update(RawMessage)
            .where(RawMessage.id.in_(ids), RawMessage.status.in_(allowed))
            .values(status=RawStatus.PENDING)
        )
    return ids


def discard(db: Database, raw_ids: Sequence[int]) -> list[int]:
    """Mark the named quarantined messages discarded (all or none); bytes and reason stay."""
    check_ids(db, raw_ids, (RawStatus.QUARANTINED.value,), "discarded")
    ids = sorted(set(raw_ids))
    with db.transaction() as session:
        session.execute(
            update(RawMessage)
            .where(RawMessage.id.in_(ids), RawMessage.status == RawStatus.QUARANTINED)
            .values(status=RawStatus.DISCARDED, processed_at=utcnow())
        )
    return ids


def valid_address(value: str) -> str:
    """`value` as a lower-case addr-spec (local@domain.tld), or a one-line PostdeskError.

    Deliberately plain: one @, a non-empty local part, a domain with a dot inside, no
    spaces, brackets or control characters, at most 320 characters.
    """
    address = value.strip()
    local, at, domain = address.rpartition("@")
    bad = (
        not at
        or not local
        or len(address) > _EMAIL_MAX
        or "@" in local
        or any(ch.isspace() or ch in '<>()[],;:\\"' or ord(ch) < 32 for ch in address)
        or "." not in domain.strip(".")
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
    )
    if bad:
        raise PostdeskError(f"{value!r} is not an email address (expected name@example.com)")
    return address.lower()


def give_sender(db: Database, raw_id: int, value: str) -> str:
    """Record `value` as the sender of quarantined message `raw_id`, which must have no
    usable sender address of its own; returns the address as stored."""
    address = valid_address(value)
    check_ids(db, [raw_id], (RawStatus.QUARANTINED.value, RawStatus.DISCARDED.value), "changed")
    row = get_inbound(db, raw_id)
    try:
        parsed = parse_message(row.content)
    except ParseError as exc:
        raise PostdeskError(
            f"inbound message {raw_id} cannot be parsed ({exc}); a sender would not help"
        ) from None
    try:
        own = sender_address(parsed)
    except ParseError:
        own = None
    if own is not None:
        raise PostdeskError(
            f"inbound message {raw_id} has a sender of its own ({own.email}); --sender is "
            "only for mail without a usable From, Sender or Reply-To"
        )
    with db.transaction() as session:
        session.execute(
            update(RawMessage).where(RawMessage.id == raw_id).values(given_sender=address)
        )
    return address
