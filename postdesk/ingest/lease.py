"""Leases that let one postdesk process at a time poll a mailbox folder.

A lease is a row update (owner + expiry) on the folder's sync row, so it works the same
on SQLite and on PostgreSQL shared by several machines. A holder renews it with every
batch; a crashed holder's lease expires. On the same host a lease whose owning process
no longer exists is taken over at once, so `postdesk run --once` started again right
after a crash does not wait for the expiry; the owner name records the process start
time too, so a restarted service that got the same pid (pid 1 in a container) is not
mistaken for the crashed one.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from postdesk.models import MailboxSync, utcnow

LEASE_SECONDS = 300


def _start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), if it can be read.

    A pid is reused; the pair (pid, start time) is not. Containers make reuse the rule:
    a service restarted in the same container is pid 1 again, on the same host name.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; what follows the last
    # ")" are fixed fields, starting with field 3, so field 22 (starttime) is index 19.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def make_owner() -> str:
    """An owner name unique to this process: host, pid, process start time, a random part."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '-'}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    parts = owner.split(":")
    if len(parts) < 3:
        return False
    host, pid_text = parts[0], parts[1]
    # Owners written before the start time was recorded have three parts.
    started = parts[2] if len(parts) >= 4 and parts[2] != "-" else None
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if started is not None:
        now = _start_time(pid)
        if now is not None and now != started:
            return True  # the pid belongs to another process now: the owner is gone
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(session: Session, sync_id: int, owner: str, seconds: int = LEASE_SECONDS) -> str | None:
    """Take or renew the lease; return None on success, else the current holder's name."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    result = session.execute(
        update(MailboxSync)
        .where(MailboxSync.id == sync_id)
        .where(
            or_(
                MailboxSync.lease_owner.is_(None),
                MailboxSync.lease_owner == owner,
                MailboxSync.lease_expires < now,
            )
        )
        .values(lease_owner=owner, lease_expires=expires)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return None
    holder = session.execute(
        select(MailboxSync.lease_owner).where(MailboxSync.id == sync_id)
    ).scalar_one_or_none()
    if holder and _owner_is_dead(holder):
        taken = session.execute(
            update(MailboxSync)
            .where(MailboxSync.id == sync_id, MailboxSync.lease_owner == holder)
            .values(lease_owner=owner, lease_expires=expires)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return None
    return holder or "another process"


def release(session: Session, sync_id: int, owner: str) -> None:
    """Give the lease up if we hold it."""
    session.execute(
        update(MailboxSync)
        .where(MailboxSync.id == sync_id, MailboxSync.lease_owner == owner)
        .values(lease_owner=None, lease_expires=None)
        .execution_options(synchronize_session=False)
    )
