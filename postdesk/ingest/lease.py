"""Leases that let one postdesk process at a time poll a mailbox folder.

A lease is a row update (owner + expiry) on the folder's sync row, so it works the same
on SQLite and on PostgreSQL shared by several machines. A holder renews it with every
batch; a crashed holder's lease expires. A holder known to be gone is taken over at
once, so `postdesk run --once` started again right after a crash does not wait for the
expiry: known by the random instance id in the owner name, whose lock file on the
holder's machine nobody holds any more (postdesk/owner.py). Host name and pid decide
nothing: a live holder on another machine with the same name is never taken over.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from postdesk.models import MailboxSync, utcnow
from postdesk.models.base import table_of
from postdesk.owner import make_owner, owner_is_dead

__all__ = ["LEASE_SECONDS", "acquire", "make_owner", "release"]

LEASE_SECONDS = 300
# Core statements on the table (the fetch path uses no ORM: see ingest/fetch.py).
_sync = table_of(MailboxSync)


def acquire(session: Session, sync_id: int, owner: str, seconds: int = LEASE_SECONDS) -> str | None:
    """Take or renew the lease; return None on success, else the current holder's name."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    result = session.execute(
        update(_sync)
        .where(_sync.c.id == sync_id)
        .where(
            or_(
                _sync.c.lease_owner.is_(None),
                _sync.c.lease_owner == owner,
                _sync.c.lease_expires < now,
            )
        )
        .values(lease_owner=owner, lease_expires=expires)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return None
    holder = session.execute(
        select(_sync.c.lease_owner).where(_sync.c.id == sync_id)
    ).scalar_one_or_none()
    if holder and owner_is_dead(holder):
        taken = session.execute(
            update(_sync)
            .where(_sync.c.id == sync_id, _sync.c.lease_owner == holder)
            .values(lease_owner=owner, lease_expires=expires)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return None
    return holder or "another process"


def release(session: Session, sync_id: int, owner: str) -> None:
    """Give the lease up if we hold it."""
    session.execute(
        update(_sync)
        .where(_sync.c.id == sync_id, _sync.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires=None)
    )
