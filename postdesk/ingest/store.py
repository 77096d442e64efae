"""The raw store: put inbound bytes into the database before anything else happens.

A message is stored once per distinct content: its dedupe key is the Message-ID plus a
digest of the fields its author wrote (see `parse.header_summary`), so the same mail
delivered to two of our addresses, fetched again after a UIDVALIDITY change or imported
twice, is one raw message with several deliveries. Inserts use the database's
`ON CONFLICT DO NOTHING`, so two processes storing the same message at once cannot both
win.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from postdesk.ingest.parse import HeaderSummary, header_summary
from postdesk.models import Delivery, MailboxSync, RawMessage, utcnow

IMAP = "imap"
IMPORT = "import"

# The width of raw_messages.message_id. The dedupe key hashes the whole Message-ID, so
# cutting a longer (broken or hostile) one down to fit keeps every message storable on
# PostgreSQL, which would otherwise refuse the batch on every pass and block the mailbox.
MESSAGE_ID_WIDTH = 998


def dedupe_key(summary: HeaderSummary) -> str:
    """The key two copies of the same message share, and two different messages don't."""
    basis = f"{summary.message_id or ''}\x00{summary.digest}"
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Stored:
    """The outcome of storing one message: its raw row and whether it was new."""

    raw_id: int
    new: bool
    message_id: str | None


def _insert_ignoring_conflict(session: Session, values: dict[str, object]) -> int | None:
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = (
            postgresql.insert(RawMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
    elif dialect == "sqlite":
        stmt = (
            sqlite.insert(RawMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
    else:  # pragma: no cover - config validation admits only SQLite and PostgreSQL
        raise RuntimeError(f"unsupported database dialect {dialect}")
    return session.execute(stmt.returning(RawMessage.id)).scalar_one_or_none()


def store_raw(
    session: Session,
    raw: bytes,
    *,
    source: str,
    origin: str,
    mailbox_id: int | None,
    received_at: datetime | None = None,
) -> Stored:
    """Insert `raw` unless an identical message is stored already; never commits."""
    summary = header_summary(raw)
    key = dedupe_key(summary)
    new_id = _insert_ignoring_conflict(
        session,
        {
            "dedupe_key": key,
            "message_id": summary.message_id[:MESSAGE_ID_WIDTH] if summary.message_id else None,
            "digest": summary.digest,
            "size": len(raw),
            "content": raw,
            "header_date": summary.date,
            "mailbox_id": mailbox_id,
            "source": source,
            "origin": origin,
            "received_at": received_at or utcnow(),
            "status": "pending",
            "attempts": 0,
        },
    )
    if new_id is not None:
        return Stored(new_id, True, summary.message_id)
    existing = session.execute(
        select(RawMessage.id).where(RawMessage.dedupe_key == key)
    ).scalar_one()
    return Stored(existing, False, summary.message_id)


@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched from an IMAP folder."""

    uid: int
    raw: bytes


def store_imap_batch(
    session: Session,
    *,
    mailbox_id: int,
    mailbox_name: str,
    sync: MailboxSync,
    uidvalidity: int,
    messages: Sequence[FetchedMessage],
    checkpoint: int,
) -> list[Stored]:
    """Store a fetched batch, its deliveries and the new checkpoint, in the caller's transaction.

    `checkpoint` is the highest UID the batch covers (some UIDs in the range may have
    vanished between SEARCH and FETCH; they are covered all the same).
    """
    results: list[Stored] = []
    for fetched in messages:
        stored = store_raw(
            session,
            fetched.raw,
            source=IMAP,
            origin=f"{mailbox_name}/{sync.folder} uid {fetched.uid} (uidvalidity {uidvalidity})",
            mailbox_id=mailbox_id,
        )
        record_delivery(session, mailbox_id, sync.folder, uidvalidity, fetched.uid, stored.raw_id)
        results.append(stored)
    advance_checkpoint(session, sync, uidvalidity, checkpoint)
    return results


def record_delivery(
    session: Session, mailbox_id: int, folder: str, uidvalidity: int, uid: int, raw_id: int
) -> None:
    """Note that `raw_id` sits in `folder` under (uidvalidity, uid); a repeat is ignored."""
    values = {
        "mailbox_id": mailbox_id,
        "folder": folder,
        "uidvalidity": uidvalidity,
        "uid": uid,
        "raw_message_id": raw_id,
        "seen_at": utcnow(),
        "server_done": False,
    }
    elements = ["mailbox_id", "folder", "uidvalidity", "uid"]
    if session.get_bind().dialect.name == "postgresql":
        pg_stmt = postgresql.insert(Delivery).values(**values)
        session.execute(pg_stmt.on_conflict_do_nothing(index_elements=elements))
    else:
        lite_stmt = sqlite.insert(Delivery).values(**values)
        session.execute(lite_stmt.on_conflict_do_nothing(index_elements=elements))


def advance_checkpoint(session: Session, sync: MailboxSync, uidvalidity: int, uid: int) -> None:
    """Move the folder's checkpoint forward to `uid`; it never moves back."""
    session.execute(
        update(MailboxSync)
        .where(MailboxSync.id == sync.id, MailboxSync.uidvalidity == uidvalidity)
        .where(MailboxSync.last_uid < uid)
        .values(last_uid=uid, last_success_at=utcnow(), last_error=None)
    )
