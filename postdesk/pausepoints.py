"""Named points where a crash test can freeze the process, to kill it exactly there.

With $POSTDESK_PAUSE_AT set to `NAME` or `NAME@N`, the N-th time (default: the first)
the process reaches the point called NAME, it writes one line,
`postdesk: paused at NAME (N)`, to stderr and sleeps until it is killed. The crash tests
(tests/test_crash.py) wait for that line and SIGKILL the process, so every window they
plan is hit on every run instead of by timing. The points are listed in POINTS.

With $POSTDESK_PAUSE_RESUME also set to a file's path, the pause ends when that file
exists (the process writes `postdesk: resumed at NAME` and carries on): the fault tests
(tests/test_faults.py) restart a server while the process stands still at the point.

Unset, which is always the case outside those tests, `pause_point` is one comparison.
The variable is read once, when this module is first imported.
"""

from __future__ import annotations

import os
import sys
import threading
import time

ENV = "POSTDESK_PAUSE_AT"
RESUME_ENV = "POSTDESK_PAUSE_RESUME"

POINTS = {
    "fetch-lease-taken": "a fetch pass holds the mailbox's lease, nothing fetched yet",
    "fetch-committed": "a fetch batch's messages are committed, not yet flagged \\Seen",
    "fetch-flagged": "messages are flagged \\Seen on the server, not yet recorded as such",
    "fetched": "every mailbox is fetched, processing has not begun",
    "process-filed": "a message is filed inside its batch's transaction, not committed",
}


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition("@")
    if name not in POINTS:
        raise SystemExit(f"{ENV}: unknown point {name!r}; known: {', '.join(sorted(POINTS))}")
    try:
        nth = int(count) if count else 1
    except ValueError:
        raise SystemExit(f"{ENV}: {value!r} is not NAME or NAME@N") from None
    return name, nth


_WANTED = _parse(os.environ.get(ENV))
_RESUME = os.environ.get(RESUME_ENV) or None
_seen = 0
_lock = threading.Lock()


def pause_point(name: str) -> None:
    """Freeze here if $POSTDESK_PAUSE_AT names this point (and this is its N-th visit)."""
    if _WANTED is None or _WANTED[0] != name:
        return
    global _seen
    with _lock:
        _seen += 1
        if _seen != _WANTED[1]:
            return
    sys.stderr.write(f"postdesk: paused at {name} ({_seen})\n")
    sys.stderr.flush()
    if _RESUME is None:
        while True:
            time.sleep(3600)
    while not os.path.exists(_RESUME):
        time.sleep(0.05)
    sys.stderr.write(f"postdesk: resumed at {name}\n")
    sys.stderr.flush()
