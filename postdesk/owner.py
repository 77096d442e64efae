"""Names for the process that holds something (a mailbox lease, an outbox row being sent).

The name records host, pid and the process's start time, so that on the same host a
holder that died is recognised at once (a restarted `postdesk run --once` need not wait
for an expiry), and a restarted service that got the same pid (pid 1 in a container) is
not mistaken for the one that died.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


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


def owner_is_dead(owner: str) -> bool:
    """Whether the process `owner` names is known to be gone (only decidable on its host)."""
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
