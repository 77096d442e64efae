"""The raw store: put inbound bytes into the database before anything else happens.

A message is stored once per distinct content: its dedupe key is the Message-ID plus a
digest of the fields its author wrote (see `parse.header_summary`), so the same mail
delivered to two of our addresses, fetched again after a UIDVALIDITY change or imported
twice, is one raw message with several deliveries. Inserts use the database's
`ON CONFLICT DO NOTHING`, so two processes storing the same message at once cannot both
win.

A message over the size limits ([limits] max_message_bytes, max_header_bytes) is stored
as it came but quarantined at once, "too large" with its size and the limit, so it is
never parsed: like a mail server refusing it, except that nothing is lost and an operator
who raises the limit can replay it with `postdesk inbound retry`.

A batch is stored with one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` (and
one more query for the keys that were stored already), not a statement per message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from postdesk.config import LimitSettings
from postdesk.ingest.parse import DEFAULT_LIMITS, HeaderSummary, header_summary, too_large
from postdesk.models import Delivery, MailboxSync, RawMessage, RawStatus, utcnow
from postdesk.models.base import table_of

IMAP = "imap"
IMPORT = "import"

# The width of raw_messages.message_id. The dedupe key hashes the whole Message-ID, so
# cutting a longer (broken or hostile) one down to fit keeps every message storable on
# PostgreSQL, which would otherwise refuse the batch on every pass and block the mailbox.
MESSAGE_ID_WIDTH = 998


class InsertIgnoringConflicts:
    """`INSERT INTO table … ON CONFLICT (columns) DO NOTHING`, built once per dialect.

    Execute `on(conn)` with one dict of values per row; a list of several dicts becomes
    one multi-row INSERT.
    """

    def __init__(self, table: Table, *columns: str, returning: Sequence[str] = ()) -> None:
        wanted = [table.c[name] for name in returning]
        pg = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(columns))
        lite = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(columns))
        self._by_dialect: dict[str, Insert] = {
            "postgresql": pg.returning(*wanted) if wanted else pg,
            "sqlite": lite.returning(*wanted) if wanted else lite,
        }

    @property
    def by_dialect(self) -> Mapping[str, Insert]:
        """The statement for each dialect name (for `postdesk.models.lean.Lean`)."""
        return self._by_dialect

    def on(self, conn: Connection) -> Insert:
        try:
            return self._by_dialect[conn.dialect.name]
        except KeyError:  # pragma: no cover - config validation admits only these two
            raise RuntimeError(f"unsupported database dialect {conn.dialect.name}") from None


_raw = table_of(RawMessage)
_deliveries = table_of(Delivery)
_sync = table_of(MailboxSync)
_INSERT_RAW = InsertIgnoringConflicts(_raw, "dedupe_key", returning=("id", "dedupe_key"))
_STORED_IDS = select(_raw.c.dedupe_key, _raw.c.id).where(
    _raw.c.dedupe_key.in_(bindparam("keys", expanding=True))
)
_INSERT_DELIVERY = InsertIgnoringConflicts(
    _deliveries, "mailbox_id", "folder", "uidvalidity", "uid"
)


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
    too_large: str | None = None  # the quarantine reason of a new message over the limits


@dataclass(frozen=True)
class Incoming:
    """One message to store and where it came from."""

    raw: bytes
    origin: str
    received_at: datetime | None = None
    # `header_summary(raw)`, when the caller has it already (read before the transaction
    # began, so that the write lock is not held while headers are scanned).
    summary: HeaderSummary | None = None


def store_many(
    session: Session,
    messages: Sequence[Incoming],
    *,
    source: str,
    mailbox_id: int | None,
    limits: LimitSettings = DEFAULT_LIMITS,
) -> list[Stored]:
    """Insert each message unless an identical one is stored already; never commits.

    Returns one outcome per message, in order. A message repeated within `messages` is
    stored once; its later copies are reported as duplicates of the first. A message
    over `limits` is stored quarantined (see the module's docstring).
    """
    if not messages:
        return []
    conn = session.connection()
    now = utcnow()
    keys: list[str] = []
    message_ids: list[str | None] = []
    reasons: dict[str, str] = {}
    rows: dict[str, dict[str, object]] = {}
    for message in messages:
        summary = message.summary or header_summary(message.raw)
        key = dedupe_key(summary)
        keys.append(key)
        message_ids.append(summary.message_id)
        if key in rows:
            continue
        reason = too_large(len(message.raw), summary.header_bytes, limits)
        if reason is not None:
            reasons[key] = reason
        rows[key] = {
            "dedupe_key": key,
            "message_id": summary.message_id[:MESSAGE_ID_WIDTH] if summary.message_id else None,
            "digest": summary.digest,
            "size": len(message.raw),
            "content": message.raw,
            "header_date": summary.date,
            "mailbox_id": mailbox_id,
            "source": source,
            "origin": message.origin,
            "received_at": message.received_at or now,
            "status": RawStatus.PENDING if reason is None else RawStatus.QUARANTINED,
            "reason": reason,
            "processed_at": None if reason is None else now,
            "attempts": 0,
        }
    inserted = conn.execute(_INSERT_RAW.on(conn), list(rows.values()))
    new_ids: dict[str, int] = {key: raw_id for raw_id, key in inserted}
    known = [key for key in rows if key not in new_ids]
    old_ids: dict[str, int] = {}
    if known:
        old_ids.update((key, raw_id) for key, raw_id in conn.execute(_STORED_IDS, {"keys": known}))
    results: list[Stored] = []
    first_seen: set[str] = set()
    for key, message_id in zip(keys, message_ids, strict=True):
        new = key in new_ids and key not in first_seen
        first_seen.add(key)
        raw_id = new_ids[key] if key in new_ids else old_ids[key]
        results.append(Stored(raw_id, new, message_id, reasons.get(key) if new else None))
    return results


@dataclass(frozen=True)
class SyncRow:
    """A folder's sync row as a fetch pass reads it (a plain row: the fetch path uses no
    ORM, see ingest/fetch.py)."""

    id: int
    folder: str
    uidvalidity: int | None
    last_uid: int
    resync_until_uid: int | None


@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched from an IMAP folder, and its `header_summary` if read."""

    uid: int
    raw: bytes
    summary: HeaderSummary | None = None


def store_imap_batch(
    session: Session,
    *,
    mailbox_id: int,
    mailbox_name: str,
    sync: SyncRow,
    uidvalidity: int,
    messages: Sequence[FetchedMessage],
    checkpoint: int,
    limits: LimitSettings = DEFAULT_LIMITS,
) -> list[Stored]:
    """Store a fetched batch, its deliveries and the new checkpoint, in the caller's transaction.

    `checkpoint` is the highest UID the batch covers (some UIDs in the range may have
    vanished between SEARCH and FETCH; they are covered all the same).
    """
    where = f"{mailbox_name}/{sync.folder}"
    results = store_many(
        session,
        [
            Incoming(m.raw, f"{where} uid {m.uid} (uidvalidity {uidvalidity})", summary=m.summary)
            for m in messages
        ],
        source=IMAP,
        mailbox_id=mailbox_id,
        limits=limits,
    )
    record_deliveries(
        session,
        mailbox_id,
        sync.folder,
        uidvalidity,
        [(m.uid, stored.raw_id) for m, stored in zip(messages, results, strict=True)],
    )
    advance_checkpoint(session, sync, uidvalidity, checkpoint)
    return results


def record_deliveries(
    session: Session,
    mailbox_id: int,
    folder: str,
    uidvalidity: int,
    found: Sequence[tuple[int, int]],
) -> None:
    """Note that each (uid, raw_id) sits in `folder` under `uidvalidity`; repeats are ignored."""
    if not found:
        return
    conn = session.connection()
    now = utcnow()
    conn.execute(
        _INSERT_DELIVERY.on(conn),
        [
            {
                "mailbox_id": mailbox_id,
                "folder": folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "raw_message_id": raw_id,
                "seen_at": now,
                "server_done": False,
            }
            for uid, raw_id in found
        ],
    )


def advance_checkpoint(session: Session, sync: SyncRow, uidvalidity: int, uid: int) -> None:
    """Move the folder's checkpoint forward to `uid`; it never moves back."""
    session.execute(
        update(_sync)
        .where(_sync.c.id == sync.id, _sync.c.uidvalidity == uidvalidity)
        .where(_sync.c.last_uid < uid)
        .values(last_uid=uid, last_success_at=utcnow(), last_error=None)
    )
