"""One fetch pass over one mailbox folder: new UIDs in, raw store, then the server side.

The order is what makes a crash harmless:
1. every batch's bytes, deliveries and the advanced checkpoint commit in one (durable)
   transaction, so after a crash the next pass starts right after the last stored UID;
2. only then is each message flagged \\Seen or moved to the processed folder (for every
   FINISH_EVERY stored, and at the end of the pass), and the delivery marked done; a
   crash in between is finished at the start of the next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from postdesk.config import LimitSettings, MailboxSettings
from postdesk.errors import MailboxError
from postdesk.ingest import lease, readahead
from postdesk.ingest.imap import ImapSource
from postdesk.ingest.parse import header_summary
from postdesk.ingest.readahead import READ_AHEAD_SKIP
from postdesk.ingest.store import FetchedMessage, SyncRow, record_deliveries, store_imap_batch
from postdesk.models import Delivery, MailboxSync, RawMessage, utcnow
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.pausepoints import pause_point

log = logging.getLogger(__name__)

# The fetch path's statements are Core statements on the tables, not ORM ones: a pass uses
# no ORM at all, so a process does not pay for configuring the mappers (~20 ms) and
# compiling ORM statements on its first pass, nor the ORM's bookkeeping on every batch.
_sync = table_of(MailboxSync)
_delivery = table_of(Delivery)
_raw = table_of(RawMessage)
_SYNC_ROW = select(
    _sync.c.id, _sync.c.folder, _sync.c.uidvalidity, _sync.c.last_uid, _sync.c.resync_until_uid
)


@dataclass
class FetchResult:
    """What one fetch pass did, for logs and the CLI."""

    mailbox: str
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    resynced: int = 0
    finished: int = 0
    read_ahead: int = 0  # of `fetched`, those a read-ahead helper fetched
    skipped_reason: str | None = None


# Stored messages are flagged \\Seen (or moved) on the server once this many are stored,
# and at the end of the pass, not after each batch: a server pays per command as much as
# per message (Dovecot, a 50,000-message Maildir folder: a STORE per batch of 200 cost
# 6.9 s of a 19 s fetch). Until then a crash only leaves them unflagged for the next
# pass, which flags whatever is still to do before it fetches (`_finish`).
FINISH_EVERY = 2_000

# Stored batches are announced (`on_stored`) at once when a read-ahead helper fetches
# them, or once the pass has run this long; before that, together when the pass has
# stored its last batch. The announcement wakes the service's main loop, which then
# files mail in the same process while this thread fetches the rest, and both are
# CPU-bound when the server is near and fast: they took turns at the interpreter lock
# statement by statement. Same-run A/B, 1,000 messages from a local Dovecot on SQLite,
# `postdesk run` until all were filed, eight interleaved runs: median 1,145 msg/s
# announcing each batch, 1,236 holding the announcements to the end (the fetch took
# ~0.3 s). A slow server's backlog, or a large one, is still filed while it is fetched,
# from this many seconds on.
ANNOUNCE_AFTER = 1.0


def _batches(
    uids: Sequence[int], sizes: dict[int, int], max_count: int, max_bytes: int
) -> Iterator[list[int]]:
    """Group UIDs in order so no batch exceeds `max_count` messages or `max_bytes`."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


class _Announcer:
    """Calls `on_stored` for stored batches as ANNOUNCE_AFTER says."""

    def __init__(self, on_stored: Callable[[int], None] | None) -> None:
        self.on_stored = on_stored
        self.since = time.monotonic()
        self.held = 0

    def stored(self, new: int, *, now: bool) -> None:
        self.held += new
        if now or time.monotonic() - self.since >= ANNOUNCE_AFTER:
            self.flush()

    def flush(self) -> None:
        held, self.held = self.held, 0
        if held and self.on_stored is not None:
            self.on_stored(held)


class FolderFetcher:
    """Fetches new mail from one configured mailbox folder into the raw store."""

    def __init__(
        self,
        db: Database,
        settings: MailboxSettings,
        mailbox_id: int,
        *,
        owner: str,
        should_stop: Callable[[], bool] = lambda: False,
        limits: LimitSettings | None = None,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        """`on_stored(n)` is called after the commits of batches that stored `n` > 0 new
        messages: for each batch fetched by a read-ahead helper or after the pass's
        first ANNOUNCE_AFTER seconds, for the rest when the pass has stored its last
        batch (or stops or fails). The service turns them into tickets while the rest
        of a large or slow mailbox is still being fetched."""
        self.on_stored = on_stored
        self.db = db
        self.settings = settings
        self.limits = limits or LimitSettings()
        self.mailbox_id = mailbox_id
        self.owner = owner
        self.should_stop = should_stop

    @property
    def folder(self) -> str:
        return self.settings.folder

    def run(self, source: ImapSource) -> FetchResult:
        """Fetch everything new; `source` must be connected."""
        result = FetchResult(self.settings.name)
        state = source.select(self.folder)
        sync_id = self._sync_row()
        with self.db.transaction() as session:
            holder = lease.acquire(session, sync_id, self.owner)
        if holder is not None:
            result.skipped_reason = f"being polled by {holder}"
            log.info("mailbox %s: skipped, %s", self.settings.name, result.skipped_reason)
            return result
        pause_point("fetch-lease-taken")
        try:
            completed = self._fetch(source, state.uidvalidity, state.uidnext, sync_id, result)
            with self.db.transaction() as session:
                self._record_success(session, sync_id, state.uidvalidity, completed)
        finally:
            with self.db.transaction() as session:
                lease.release(session, sync_id, self.owner)
        return result

    def _sync_row(self) -> int:
        with self.db.transaction() as session:
            return ensure_sync_row(session, self.mailbox_id, self.folder)

    def _record_success(
        self, session: Session, sync_id: int, uidvalidity: int, completed: bool
    ) -> None:
        """The pass worked: forget the last error; a finished resync is over."""
        values: dict[str, object] = {
            "last_error": None,
            "retry_at": None,
            "last_success_at": utcnow(),
        }
        if completed:
            # Every UID that existed when the pass began has been matched or fetched, so
            # whatever arrives later is new mail, whatever resync_until_uid still says
            # (a server without UIDNEXT, or the highest old UIDs expunged meanwhile).
            values["resync_until_uid"] = None
        session.execute(
            update(_sync)
            .where(_sync.c.id == sync_id, _sync.c.uidvalidity == uidvalidity)
            .values(**values)
        )

    def _load_sync(self, session: Session, sync_id: int) -> SyncRow:
        return SyncRow(*session.execute(_SYNC_ROW.where(_sync.c.id == sync_id)).one())

    def _fetch(
        self,
        source: ImapSource,
        uidvalidity: int,
        uidnext: int | None,
        sync_id: int,
        result: FetchResult,
    ) -> bool:
        """Fetch and store everything new; False when asked to stop half-way."""
        with self.db.transaction(durable=True) as session:
            sync = self._load_sync(session, sync_id)
            last_uid, resync_until = sync.last_uid, sync.resync_until_uid
            if sync.uidvalidity is None:
                session.execute(
                    update(_sync).where(_sync.c.id == sync_id).values(uidvalidity=uidvalidity)
                )
            elif sync.uidvalidity != uidvalidity:
                last_uid, resync_until = self._start_resync(session, sync, uidvalidity, uidnext)

        if self.settings.processed_folder:
            source.ensure_folder(self.settings.processed_folder)
        result.finished += self._finish(source, uidvalidity, None)

        uids = source.uids_above(last_uid)
        if not uids:
            return True
        delivered = self._delivered_uids(uidvalidity, last_uid)
        if resync_until:
            matched = self._resync_by_message_id(
                source, uidvalidity, [u for u in uids if u <= resync_until and u not in delivered]
            )
            result.resynced += len(matched)
            delivered |= matched
        wanted = [u for u in uids if u not in delivered]
        # Batches are cut by size (batch_bytes) knowing only the sizes of messages over
        # batch_bytes / batch_size; a smaller one counts as that much, an upper bound, so
        # a batch of batch_size of them still fits.
        small = max(1, self.settings.batch_bytes // self.settings.batch_size)
        large = source.sizes_over(wanted, small)
        sizes = {uid: large.get(uid, small) for uid in wanted}
        batches = list(_batches(uids, sizes, self.settings.batch_size, self.settings.batch_bytes))
        ahead = None
        if len(wanted) >= readahead.READ_AHEAD_MIN:
            later = [[u for u in batch if u in sizes] for batch in batches[READ_AHEAD_SKIP:]]
            ahead = readahead.start(
                self.settings, source.credential, self.folder, uidvalidity, [b for b in later if b]
            )
        announce = _Announcer(self.on_stored)
        try:
            return self._fetch_batches(
                source, uidvalidity, sync_id, batches, sizes, ahead, result, announce
            )
        finally:
            announce.flush()  # what was stored is filed even if the pass fails or stops
            if ahead is not None:
                ahead.close()

    def _fetch_batches(
        self,
        source: ImapSource,
        uidvalidity: int,
        sync_id: int,
        batches: list[list[int]],
        sizes: dict[int, int],
        ahead: readahead.ReadAhead | None,
        result: FetchResult,
        announce: _Announcer,
    ) -> bool:
        """Fetch and store `batches` in order (from `ahead` where it has them), telling
        `announce` what each stored; False when asked to stop half-way."""
        name = self.settings.name
        # The checkpoint may not pass a message the server still has but did not send.
        hold: int | None = None
        unfinished: list[int] = []  # stored; the \\Seen flag (or the move) still to do
        for index, batch in enumerate(batches):
            if self.should_stop():
                log.info("mailbox %s: stopping before UID %d as asked", name, batch[0])
                result.finished += self._finish(source, uidvalidity, unfinished)
                return False
            to_fetch = [u for u in batch if u in sizes]
            fetched: list[FetchedMessage] | None = None
            if ahead is not None and index >= READ_AHEAD_SKIP and to_fetch:
                fetched = ahead.take(to_fetch)
                if fetched is None:
                    log.warning(
                        "mailbox %s: reading ahead stopped (%s); fetching the rest on the "
                        "pass's own session",
                        name,
                        ahead.failure,
                        extra={"mailbox": name},
                    )
                    ahead = None
                else:
                    result.read_ahead += len(fetched)
            if fetched is None:
                raws = source.fetch(to_fetch) if to_fetch else {}
                # Headers are read here, not in the transaction: on SQLite it holds the
                # write lock, which the processing of mail already stored waits for.
                fetched = [
                    FetchedMessage(uid, raws[uid], header_summary(raws[uid]))
                    for uid in to_fetch
                    if uid in raws
                ]
            got = {m.uid for m in fetched}
            hold = self._hold_for_missing(source, [u for u in to_fetch if u not in got], hold)
            with self.db.transaction(durable=True) as session:
                holder = lease.acquire(session, sync_id, self.owner)
                if holder is not None:
                    raise MailboxError(f"mailbox {name!r}: lost the polling lease to {holder}")
                sync = self._load_sync(session, sync_id)
                stored = store_imap_batch(
                    session,
                    mailbox_id=self.mailbox_id,
                    mailbox_name=name,
                    sync=sync,
                    uidvalidity=uidvalidity,
                    messages=fetched,
                    checkpoint=batch[-1] if hold is None else hold,
                    limits=self.limits,
                )
                if sync.resync_until_uid is not None and batch[-1] >= sync.resync_until_uid:
                    session.execute(
                        update(_sync).where(_sync.c.id == sync_id).values(resync_until_uid=None)
                    )
            result.fetched += len(fetched)
            new = sum(1 for s in stored if s.new)
            result.stored += new
            result.duplicates += len(stored) - new
            for fetched_message, outcome in zip(fetched, stored, strict=True):
                log.debug(
                    "mailbox %s: uid %d message-id <%s> %s raw %d",
                    name,
                    fetched_message.uid,
                    outcome.message_id or "",
                    "stored as" if outcome.new else "duplicate of",
                    outcome.raw_id,
                    extra={
                        "mailbox": name,
                        "uid": fetched_message.uid,
                        "message_id": outcome.message_id,
                        "raw_id": outcome.raw_id,
                    },
                )
            pause_point("fetch-committed")
            announce.stored(new, now=ahead is not None)
            unfinished.extend(batch)
            if len(unfinished) >= FINISH_EVERY:
                result.finished += self._finish(source, uidvalidity, unfinished)
                unfinished = []
        # Announced before the last flags are set: filing begins while the server works.
        announce.flush()
        result.finished += self._finish(source, uidvalidity, unfinished)
        return True

    def _hold_for_missing(
        self, source: ImapSource, missing: list[int], hold: int | None
    ) -> int | None:
        """Where the checkpoint must stop because of UIDs FETCH did not return.

        A UID expunged between SEARCH and FETCH is gone and may be passed over. One that
        still exists was skipped by the server (some answer OK and leave out a message
        they cannot read right now): the checkpoint stays below it so the next pass asks
        again. Everything stored beyond it has its delivery row, so nothing is fetched
        twice meanwhile.
        """
        if not missing:
            return hold
        still_there = source.existing(missing)
        if not still_there:
            return hold
        log.warning(
            "mailbox %s: the server did not return UIDs %s of folder %s; trying again "
            "on the next pass",
            self.settings.name,
            ", ".join(str(uid) for uid in sorted(still_there)),
            self.folder,
        )
        below = min(still_there) - 1
        return below if hold is None else min(hold, below)

    def _start_resync(
        self, session: Session, sync: SyncRow, uidvalidity: int, uidnext: int | None
    ) -> tuple[int, int]:
        """Forget the old UIDs: the new (checkpoint, resync_until_uid) of the folder."""
        log.warning(
            "mailbox %s: folder %s UIDVALIDITY changed from %s to %d; resynchronising by "
            "Message-ID",
            self.settings.name,
            self.folder,
            sync.uidvalidity,
            uidvalidity,
        )
        # UIDs of the old validity mean nothing now; their server actions cannot be done.
        session.execute(
            update(_delivery)
            .where(
                _delivery.c.mailbox_id == self.mailbox_id,
                _delivery.c.folder == self.folder,
                _delivery.c.uidvalidity != uidvalidity,
                _delivery.c.server_done.is_(False),
            )
            .values(server_done=True)
        )
        # Without UIDNEXT, resync every UID that exists now; the fetch bounds it anyway.
        resync_until = (uidnext - 1) if uidnext else 2**32 - 1
        session.execute(
            update(_sync)
            .where(_sync.c.id == sync.id)
            .values(uidvalidity=uidvalidity, last_uid=0, resync_until_uid=resync_until)
        )
        return 0, resync_until

    def _delivered_uids(self, uidvalidity: int, above: int) -> set[int]:
        with self.db.read_session() as session:
            return set(
                session.execute(
                    select(_delivery.c.uid).where(
                        _delivery.c.mailbox_id == self.mailbox_id,
                        _delivery.c.folder == self.folder,
                        _delivery.c.uidvalidity == uidvalidity,
                        _delivery.c.uid > above,
                    )
                ).scalars()
            )

    def _resync_by_message_id(
        self, source: ImapSource, uidvalidity: int, uids: list[int]
    ) -> set[int]:
        if not uids:
            return set()
        headers = source.message_ids(uids)
        with self.db.read_session() as session:
            rows = session.execute(
                select(_raw.c.message_id, _raw.c.id, _raw.c.size)
                .join(_delivery, _delivery.c.raw_message_id == _raw.c.id)
                .where(
                    _delivery.c.mailbox_id == self.mailbox_id,
                    _delivery.c.folder == self.folder,
                    _delivery.c.uidvalidity != uidvalidity,
                    _raw.c.message_id.is_not(None),
                )
                .distinct()
            ).all()
        known: dict[str, tuple[int, int] | None] = {}
        for message_id, raw_id, stored_size in rows:
            if message_id is None:
                continue
            # A Message-ID shared by two different stored messages is ambiguous: fetch it.
            known[message_id] = None if message_id in known else (raw_id, stored_size)
        matched: dict[int, int] = {}
        for uid, (header, size) in headers.items():
            message_id = header_summary(header + b"\r\n").message_id if header else None
            found = known.get(message_id) if message_id else None
            # The same Message-ID with a different size is different content (a reused or
            # broken Message-ID, or a copy rewritten on the way): fetch it and let the
            # store's content-based dedupe decide, so nothing distinct is ever skipped.
            if found is not None and found[1] == size:
                matched[uid] = found[0]
        if matched:
            with self.db.transaction(durable=True) as session:
                record_deliveries(
                    session, self.mailbox_id, self.folder, uidvalidity, list(matched.items())
                )
        log.info(
            "mailbox %s: resync matched %d of %d messages by Message-ID; fetching the rest",
            self.settings.name,
            len(matched),
            len(uids),
        )
        return set(matched)

    def _finish(self, source: ImapSource, uidvalidity: int, uids: list[int] | None) -> int:
        """Flag or move delivered messages whose server action is still to do: those
        among `uids` (their range: any other delivery in it that is still to do is due
        too), or all of the folder's with None."""
        if uids is not None and not uids:
            return 0
        with self.db.read_session() as session:
            query = select(_delivery.c.id, _delivery.c.uid).where(
                _delivery.c.mailbox_id == self.mailbox_id,
                _delivery.c.folder == self.folder,
                _delivery.c.uidvalidity == uidvalidity,
                _delivery.c.server_done.is_(False),
            )
            if uids is not None:
                query = query.where(_delivery.c.uid.between(min(uids), max(uids)))
            pending = session.execute(query).all()
        if not pending:
            return 0
        todo = sorted(uid for _, uid in pending)
        if self.settings.processed_folder:
            source.move(todo, self.settings.processed_folder)
        else:
            source.mark_seen(todo)
        pause_point("fetch-flagged")
        with self.db.transaction() as session:
            session.execute(
                update(_delivery)
                .where(_delivery.c.id.in_([delivery_id for delivery_id, _ in pending]))
                .values(server_done=True)
            )
        return len(pending)


def ensure_sync_row(session: Session, mailbox_id: int, folder: str) -> int:
    """The id of the folder's sync row, created if missing (safe against a racing creator)."""
    values = {"mailbox_id": mailbox_id, "folder": folder, "last_uid": 0}
    elements = ["mailbox_id", "folder"]
    if session.get_bind().dialect.name == "postgresql":
        pg_stmt = postgresql.insert(_sync).values(**values)
        session.execute(pg_stmt.on_conflict_do_nothing(index_elements=elements))
    else:
        lite_stmt = sqlite.insert(_sync).values(**values)
        session.execute(lite_stmt.on_conflict_do_nothing(index_elements=elements))
    sync_id: int = session.execute(
        select(_sync.c.id).where(_sync.c.mailbox_id == mailbox_id, _sync.c.folder == folder)
    ).scalar_one()
    return sync_id


def record_failure(
    db: Database, mailbox_id: int, folder: str, error: str, *, retry_at: datetime | None = None
) -> None:
    """Remember the last error of a folder, and when it is tried again, for `postdesk status`.

    The folder's sync row is created if need be: a mailbox whose very first pass fails
    (a wrong password, say) has none yet, and its error must be recorded all the same.
    """
    with db.transaction() as session:
        sync_id = ensure_sync_row(session, mailbox_id, folder)
        session.execute(
            update(_sync)
            .where(_sync.c.id == sync_id)
            .values(last_error=" ".join(error.split()), last_error_at=utcnow(), retry_at=retry_at)
        )
