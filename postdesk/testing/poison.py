"""Poison messages on cue: a parse task that misbehaves when a message asks it to.

A test gives the parse worker (postdesk/ingest/worker.py) this module's `TASK` instead of
the real one, through `Budget(task=TASK)`. A message whose header block has
``X-Test-Poison: <what>`` then makes the worker:

* ``exit``: end at once (`os._exit`), as a crash in a C library would;
* ``allocate``: allocate 4 GiB, far over any memory budget: the real RLIMIT_AS makes that
  a MemoryError in the worker;
* ``sleep <seconds>``: sleep that long before reading the message as usual;
* ``hang``: create the file named by ``$POSTDESK_TEST_REACHED`` (if set), then wait for
  up to a minute while the process that started the worker lives: the test kills
  postdesk meanwhile (and reaps it).

Every other message is read as usual. `poison()` puts the header on a message.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from postdesk.config import LimitSettings
from postdesk.ingest.parse import DEFAULT_LIMITS
from postdesk.ingest.worker import ReadMessage, read_message

TASK = "postdesk.testing.poison:read_with_triggers"
HEADER = b"X-Test-Poison:"
REACHED_ENV = "POSTDESK_TEST_REACHED"


def poison(raw: bytes, what: str) -> bytes:
    """`raw` with an ``X-Test-Poison: what`` header first."""
    return HEADER + b" " + what.encode("ascii") + b"\r\n" + raw


def _trigger(raw: bytes) -> str | None:
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    for line in head.splitlines():
        if line.startswith(HEADER):
            return line[len(HEADER) :].strip().decode("ascii", "replace")
    return None


def read_with_triggers(raw: bytes, limits: LimitSettings = DEFAULT_LIMITS) -> ReadMessage:
    """`read_message`, unless the message carries a trigger (see the module docstring)."""
    what = _trigger(raw)
    if what == "exit":
        os._exit(3)
    elif what == "allocate":
        hog = bytearray(4 * 1024**3)
        hog[-1] = 1
    elif what is not None and what.startswith("sleep "):
        time.sleep(float(what.split()[1]))
    elif what == "hang":
        reached = os.environ.get(REACHED_ENV)
        if reached:
            Path(reached).touch()
        main = os.getppid()  # the process that started the worker
        stop = time.monotonic() + 60
        # Once it dies, the worker is someone else's child (init's, or a subreaper's).
        while os.getppid() == main and time.monotonic() < stop:
            time.sleep(0.05)
        os._exit(4)
    return read_message(raw, limits)
