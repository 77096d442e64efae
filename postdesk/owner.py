"""Names for the process that holds something (a mailbox lease, an outbox row being sent).

An owner name is ``host:pid:instance:suffix``. The instance is a random id made once per
process; host and pid are there for people reading `being polled by ...`, never to
decide anything: two machines may well share a host name (containers, cloned VMs), and a
pid on one says nothing about a process on the other.

Whether a holder is gone is decided by its instance alone. Each process keeps a lock
file named after its instance in a directory of this machine (`instance_directory`:
/dev/shm, else the temporary directory, in ``postdesk-<uid>``) and holds an exclusive
flock on it while it lives; the kernel drops the lock when the process ends, however it
ends. So on the machine where the holder ran, a lock file that nobody locks is a dead
holder's (taken over at once: `postdesk run --once` started again right after a crash
does not wait); a locked one is a live holder's; and no file at all means the holder is
on another machine (or its file was cleaned away), which only the lease's expiry can
settle. A restarted service that got the same pid (pid 1 in a container) has a new
instance, so it is never mistaken for the one that died, nor the other way round.
Owner names of older versions (without an instance) also wait for the expiry. A lock
file stays for a day after its process ended (then the next process to start removes
it): long after any lease or claim of that process has expired.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

from postdesk.files import private_directory

_INSTANCE = re.compile(r"[0-9a-f]{32}")
_lock = threading.Lock()
# (instance id, the fd holding its lock or None, the pid it was made in)
_current: tuple[str, int | None, int] | None = None


def instance_directory() -> Path:
    """Where this machine's instance lock files are (the same for every postdesk process
    of this user on it)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"postdesk-{os.getuid()}"


def instance_id() -> str:
    """This process's random instance id, made (with its held lock file) on first use."""
    global _current
    with _lock:
        pid = os.getpid()
        if _current is not None and _current[2] == pid:
            return _current[0]
        # First use, or a forked child: a child is an instance of its own.
        instance = secrets.token_hex(16)
        fd: int | None = None
        try:
            directory = instance_directory()
            private_directory(directory)
            fd = os.open(directory / f"{instance}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # Nowhere to keep the lock: others cannot tell when this process dies and
            # wait for its leases to expire instead.
            if fd is not None:
                os.close(fd)
            fd = None
        _current = (instance, fd, pid)
        if fd is not None:
            _sweep(directory, instance)
        return instance


# A lock file stays after its process ends (that is how others learn it ended) until a
# process checking its owner finds it free, or until it is this old: by then every lease
# and outbox claim of that process has expired anyway.
_KEEP_SECONDS = 86400


def _sweep(directory: Path, ours: str, limit: int = 1000) -> None:
    """Remove day-old lock files of ended processes, a bounded number per start, so the
    directory does not fill up under `postdesk run --once` from cron."""
    cutoff = time.time() - _KEEP_SECONDS
    with contextlib.suppress(OSError):
        for n, entry in enumerate(os.scandir(directory)):
            if n >= limit:
                break
            name = entry.name
            if (
                name.endswith(".lock")
                and name[:-5] != ours
                and _INSTANCE.fullmatch(name[:-5])
                and entry.stat().st_mtime < cutoff
            ):
                _is_free(Path(entry.path), remove=True)


def _is_free(path: Path, *, remove: bool = False) -> bool:
    """Whether `path` exists and no process holds its lock (then removed, with `remove`)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held (BlockingIOError): its process is alive
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()
        return True
    finally:
        os.close(fd)


def make_owner() -> str:
    """An owner name unique to this call: host, pid, this process's instance, a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{instance_id()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """Whether the process `owner` names is known to be gone: its instance's lock file is
    on this machine and nobody holds it. Unknown (another machine, an older owner name)
    is not dead."""
    parts = owner.split(":")
    if len(parts) != 4 or not _INSTANCE.fullmatch(parts[2]):
        return False
    instance = parts[2]
    if instance == instance_id():
        return False
    # The file stays: the same holder may hold more (rows of the outbox, other leases),
    # and each check must find it; the sweep removes it a day later.
    return _is_free(instance_directory() / f"{instance}.lock")
