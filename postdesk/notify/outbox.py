"""The outbox: queueing mail in the transaction that decides it, and each row's states.

A mail is queued (`enqueue`) inside the transaction of the change that caused it, so it
exists exactly when that change is kept. The sender (notify/smtp.py) then moves a row:

    queued --claim--> sending --end of data next--> completing --250--> sent
       ^                 |                              |
       |   4xx, network  |                              +--5xx--> failed
       +-----------------+  (backoff; after retry_for: failed)
                         +--5xx before the end of data--> failed

What a crash leaves, and what happens to it (`recover`): a row in `sending` whose
sender died is queued again: the server had not received the end of data, so per
RFC 5321 it discarded the transaction, and sending again cannot duplicate it. A row in
`completing` whose sender died becomes `unconfirmed` and is never sent again on its
own: the end of data may have reached the server, which then delivered it. That is the
one at-most-once window, from the durable `completing` mark (written once the data has
left postdesk's buffers) to reading the server's answer: about one round trip, plus
what the kernel still holds of a large mail. `postdesk outbox retry ID` sends such a
mail again when a person knows it did not arrive. Every other path delivers each row exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from postdesk.errors import PostdeskError
from postdesk.models import MailKind, Message, OutboxMail, OutboxState, UTCDateTime, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.owner import owner_is_dead

_outbox = table_of(OutboxMail)
_messages = table_of(Message)
_now = bindparam("now", type_=UTCDateTime())
HISTORY_KEPT = 20  # attempts remembered per row; a mail retried for days keeps the last


class OutboxError(PostdeskError):
    """A request about outbox rows that cannot be carried out."""


def enqueue(
    conn: Connection,
    message: EmailMessage,
    *,
    kind: str,
    ticket_id: int | None = None,
    automatic: bool = False,
    text: str = "",
    at: datetime | None = None,
) -> int:
    """Queue `message` for sending, in the caller's transaction; the row's id.

    The message must be complete: From, To (and Cc/Bcc), Subject and a Message-ID, which
    the row keeps as its identity. Envelope sender and recipients are taken from it; Bcc
    is removed from the stored bytes. `automatic`: no person wrote it (it counts towards
    the limit per recipient). With a `ticket_id` the mail is also kept on the ticket as
    an outgoing message (`text` is what it said), so that replies to it thread there.
    """
    message_id = (message.get("Message-ID") or "").strip().strip("<>")
    if not message_id:
        raise OutboxError("an outgoing mail needs a Message-ID")
    recipients = _addresses(message, "To", "Cc", "Bcc")
    if not recipients:
        raise OutboxError(f"<{message_id}> has no recipients")
    senders = _addresses(message, "From")
    if not senders:
        raise OutboxError(f"<{message_id}> has no From address")
    del message["Bcc"]
    now = at or utcnow()
    row_id: int = conn.execute(
        insert(_outbox).returning(_outbox.c.id),
        {
            "ticket_id": ticket_id,
            "kind": kind,
            "message_id": message_id,
            "mail_from": senders[0],
            "recipients": recipients,
            "recipient": recipients[0].lower(),
            "automatic": automatic,
            "subject": str(message.get("Subject", "")),
            "content": message.as_bytes(),
            "state": OutboxState.QUEUED,
            "created_at": now,
            "next_attempt_at": now,
            "retry_since": now,
            "attempts": 0,
            "history": [],
        },
    ).scalar_one()
    if ticket_id is not None:
        conn.execute(
            insert(_messages),
            {
                "raw_message_id": None,
                "ticket_id": ticket_id,
                "contact_id": None,
                "direction": "out",
                "message_id": message_id,
                "in_reply_to": _bare(message.get("In-Reply-To")),
                "references": _bare(message.get("References")),
                "subject": str(message.get("Subject", "")),
                "from_email": senders[0],
                "from_name": _display_name(message),
                "to": [{"email": r, "name": ""} for r in recipients],
                "cc": [],
                "sent_at": now,
                "received_at": now,
                "text": text,
                "thread_rule": "sent",
                "thread_reason": f"{kind} sent by postdesk",
                "defects": [],
                "kind": MailKind.OWN,
                "kind_reason": kind,
                "visible_text": text,
            },
        )
    return row_id


def _bare(value: object) -> str | None:
    ids = [part.strip("<>") for part in str(value or "").split()]
    return " ".join(i for i in ids if i) or None


def _display_name(message: EmailMessage) -> str:
    value = message.get("From")
    addresses = getattr(value, "addresses", ())
    return str(addresses[0].display_name) if addresses else ""


def automatic_mail_since(conn: Connection, recipient: str, since: datetime) -> int:
    """How many automatic mails to `recipient` were queued since `since` (any state)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(_outbox)
            .where(
                _outbox.c.recipient == recipient.lower(),
                _outbox.c.automatic.is_(True),
                _outbox.c.created_at >= since,
            )
        ).scalar_one()
    )


def _addresses(message: EmailMessage, *headers: str) -> list[str]:
    found: list[str] = []
    for name in headers:
        for value in message.get_all(name, []):
            for address in getattr(value, "addresses", ()):
                if address.addr_spec and address.addr_spec not in found:
                    found.append(address.addr_spec)
    return found


@dataclass(frozen=True)
class Claimed:
    """A row the sender holds now: what it sends and to whom."""

    id: int
    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    attempts: int
    retry_since: datetime  # transient failures give up retry_for after this


_claimable = _outbox.alias("claimable")
# One statement: lock due rows other senders do not hold (SKIP LOCKED on PostgreSQL;
# SQLite's write lock serialises senders) and mark them as this sender's.
_CLAIM = (
    update(_outbox)
    .where(
        _outbox.c.id.in_(
            select(_claimable.c.id)
            .where(
                _claimable.c.state == OutboxState.QUEUED,
                _claimable.c.next_attempt_at <= _now,
            )
            .order_by(_claimable.c.next_attempt_at, _claimable.c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
    )
    .values(
        state=OutboxState.SENDING,
        claimed_by=bindparam("owner"),
        claimed_at=_now,
        attempts=_outbox.c.attempts + 1,
    )
    .returning(
        _outbox.c.id,
        _outbox.c.message_id,
        _outbox.c.mail_from,
        _outbox.c.recipients,
        _outbox.c.content,
        _outbox.c.attempts,
        _outbox.c.retry_since,
    )
)


def claim(db: Database, owner: str, limit: int, *, now: datetime | None = None) -> list[Claimed]:
    """Take up to `limit` due rows for sending (durably marked as `sending` by `owner`)."""
    with db.transaction(durable=True) as session:
        rows = session.connection().execute(
            _CLAIM, {"now": now or utcnow(), "owner": owner, "limit": limit}
        )
        claimed = [
            Claimed(
                r.id,
                r.message_id,
                r.mail_from,
                tuple(r.recipients),
                r.content,
                r.attempts,
                r.retry_since,
            )
            for r in rows
        ]
    return sorted(claimed, key=lambda c: c.id)


def _move(
    db: Database,
    row_id: int,
    owner: str,
    *,
    frm: OutboxState,
    to: OutboxState,
    note: str | None = None,
    values: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Move a row this sender holds from state `frm` to `to`, durably; whether it moved."""
    when = now or utcnow()
    with db.transaction(durable=True) as session:
        conn = session.connection()
        history = conn.execute(
            select(_outbox.c.history).where(
                _outbox.c.id == row_id,
                _outbox.c.state == frm,
                _outbox.c.claimed_by == owner,
            )
        ).scalar_one_or_none()
        if history is None:
            return False
        changes: dict[str, Any] = {"state": to, **(values or {})}
        if to in (OutboxState.QUEUED, OutboxState.SENT, OutboxState.FAILED):
            entry = {"at": when.isoformat(timespec="seconds"), "to": str(to)}
            if note:
                entry["answer"] = note[:500]
            changes["history"] = [*history, entry][-HISTORY_KEPT:]
            changes["claimed_by"] = None
            changes["last_error"] = note if to != OutboxState.SENT else None
        conn.execute(update(_outbox).where(_outbox.c.id == row_id).values(**changes))
        return True


def completing(db: Database, row_id: int, owner: str) -> bool:
    """Durably mark that the end of data is about to be sent (see the module docstring)."""
    return _move(db, row_id, owner, frm=OutboxState.SENDING, to=OutboxState.COMPLETING)


def sent(db: Database, row_id: int, owner: str, answer: str) -> None:
    """The server accepted the mail."""
    now = utcnow()
    _move(
        db,
        row_id,
        owner,
        frm=OutboxState.COMPLETING,
        to=OutboxState.SENT,
        note=answer,
        values={"sent_at": now},
        now=now,
    )


def failed(db: Database, row_id: int, owner: str, answer: str, *, was: OutboxState) -> None:
    """The server refused the mail for good (or it could not be sent in time)."""
    _move(db, row_id, owner, frm=was, to=OutboxState.FAILED, note=answer)


def try_later(
    db: Database, row_id: int, owner: str, answer: str, *, at: datetime, was: OutboxState
) -> None:
    """A transient failure: queue the row again for `at`."""
    _move(
        db,
        row_id,
        owner,
        frm=was,
        to=OutboxState.QUEUED,
        note=answer,
        values={"next_attempt_at": at},
    )


def mark_unconfirmed(db: Database, row_id: int, owner: str, reason: str) -> None:
    """The end of data went out but no answer came: the mail may well be delivered."""
    _move(
        db,
        row_id,
        owner,
        frm=OutboxState.COMPLETING,
        to=OutboxState.UNCONFIRMED,
        note=reason,
        values={"claimed_by": None, "last_error": reason},
    )


def backoff(attempts: int, *, first: float = 60.0, longest: float = 3600.0) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from a minute up to an hour."""
    return timedelta(seconds=min(longest, first * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Recovered:
    """What `recover` found of senders that died: rows queued again, rows left unconfirmed."""

    requeued: list[int]
    unconfirmed: list[int]


def recover(db: Database, *, stale_after: timedelta, now: datetime | None = None) -> Recovered:
    """Rows held by a sender that is gone (dead on this host, or silent for `stale_after`).

    `sending` goes back to `queued` (the server never had the end of data); `completing`
    becomes `unconfirmed` and is not sent again unless a person asks (`outbox retry`).
    """
    when = now or utcnow()
    requeued: list[int] = []
    unconfirmed: list[int] = []
    with db.transaction(durable=True) as session:
        conn = session.connection()
        held = conn.execute(
            select(_outbox.c.id, _outbox.c.state, _outbox.c.claimed_by, _outbox.c.claimed_at)
            .where(_outbox.c.state.in_([OutboxState.SENDING, OutboxState.COMPLETING]))
            .with_for_update(skip_locked=True)
        ).all()
        for row in held:
            gone = row.claimed_by is None or owner_is_dead(row.claimed_by)
            if not gone and (row.claimed_at is None or when - row.claimed_at > stale_after):
                gone = True
            if not gone:
                continue
            if row.state == OutboxState.SENDING:
                requeued.append(row.id)
            else:
                unconfirmed.append(row.id)
        if requeued:
            conn.execute(
                update(_outbox)
                .where(_outbox.c.id.in_(requeued))
                .values(state=OutboxState.QUEUED, claimed_by=None, next_attempt_at=when)
            )
        if unconfirmed:
            conn.execute(
                update(_outbox)
                .where(_outbox.c.id.in_(unconfirmed))
                .values(
                    state=OutboxState.UNCONFIRMED,
                    claimed_by=None,
                    last_error="the sender stopped after sending the end of data; "
                    "the server probably delivered it (postdesk outbox retry sends it again)",
                )
            )
    return Recovered(requeued, unconfirmed)


def retry(db: Database, row_ids: Sequence[int]) -> list[int]:
    """Queue failed or unconfirmed rows again, now; the ids that were queued."""
    with db.transaction() as session:
        conn = session.connection()
        found = dict(
            conn.execute(
                select(_outbox.c.id, _outbox.c.state).where(_outbox.c.id.in_(list(row_ids)))
            ).all()
        )
        now = utcnow()
        missing = [i for i in row_ids if i not in found]
        if missing:
            raise OutboxError(f"no outbox mail {', '.join(f'#{i}' for i in missing)}")
        busy = [i for i in row_ids if found[i] not in (OutboxState.FAILED, OutboxState.UNCONFIRMED)]
        if busy:
            listed = ", ".join(f"#{i} is {found[i]}" for i in busy)
            raise OutboxError(f"only failed or unconfirmed mail can be retried ({listed})")
        conn.execute(
            update(_outbox)
            .where(_outbox.c.id.in_(list(row_ids)))
            .values(
                state=OutboxState.QUEUED,
                next_attempt_at=now,
                retry_since=now,  # a person asked: a fresh retry window
                last_error=None,
            )
        )
    return list(row_ids)


def list_outbox(db: Database, state: str | None = None) -> list[dict[str, Any]]:
    """Outgoing mail (optionally in one state), newest first, as plain dicts."""
    if state is not None and state not in tuple(OutboxState):
        choices = ", ".join(OutboxState)
        raise OutboxError(f"unknown outbox state {state!r}; use one of {choices}")
    query = select(
        _outbox.c.id,
        _outbox.c.ticket_id,
        _outbox.c.kind,
        _outbox.c.state,
        _outbox.c.message_id,
        _outbox.c.recipients,
        _outbox.c.subject,
        _outbox.c.created_at,
        _outbox.c.next_attempt_at,
        _outbox.c.attempts,
        _outbox.c.sent_at,
        _outbox.c.last_error,
    ).order_by(_outbox.c.id.desc())
    if state is not None:
        query = query.where(_outbox.c.state == state)
    with db.read_session() as session:
        rows = session.execute(query).all()
    return [
        {
            "id": r.id,
            "ticket": r.ticket_id,
            "kind": r.kind,
            "state": r.state,
            "message_id": r.message_id,
            "to": list(r.recipients),
            "subject": r.subject,
            "created_at": r.created_at.isoformat(),
            "next_attempt_at": r.next_attempt_at.isoformat()
            if r.state == OutboxState.QUEUED
            else None,
            "attempts": r.attempts,
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
            "last_error": r.last_error,
        }
        for r in rows
    ]


def counts(db: Database) -> dict[str, int]:
    """How many outbox rows are in each state."""
    with db.read_session() as session:
        rows = session.execute(
            select(_outbox.c.state, func.count()).group_by(_outbox.c.state)
        ).all()
    found = {state.value: 0 for state in OutboxState}
    found.update({state: n for state, n in rows})
    return found
