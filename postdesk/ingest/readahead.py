"""Reading ahead: a helper process with an IMAP session of its own fetches a large
backlog's next batches while the fetch pass stores the ones before.

Why: the process that stores mail is also the one that files it into tickets, and on a
machine with more than one core the IMAP side of a fetch (reading FETCH answers, which
imapclient parses in Python, and each message's header summary for the raw store) is
work it need not do itself. Threads would not help: that work holds Python's global
interpreter lock. Measured with bench/ingest.py, the IMAP side and the header scan were
about 0.2 ms of the ~1 ms a message costs end to end (fetch and filing) on SQLite.

What the helper may do is read. It logs in with the credential its pass logged in with
(a token command is not run twice), EXAMINEs the folder (read-only: nothing it does can
set a flag), checks that UIDVALIDITY is the one the pass works under, then FETCHes
BODY.PEEK[] for the batches it was given, in order, and sends each with every message's
`header_summary`. Storing, the checkpoint, flagging and moving stay with the pass and
its own session, in the same order as without a helper (postdesk/ingest/fetch.py), so
the pass's crash guarantees are unchanged: a helper killed at any moment has stored
nothing.

Memory is bounded: the helper writes one batch at a time and blocks until the pass has
read the one before (a batch is at most `batch_bytes`).

A helper is a speed-up, never a condition: when it cannot start, log in or read, or
dies, or does not answer within its mailbox's `timeout` (plus start-up time), the pass
logs one line and fetches the rest on its own session. It is used only for backlogs of
READ_AHEAD_MIN messages or more (a first sync, an outage caught up), where the second
IMAP session is worth its start; the pass fetches the first READ_AHEAD_SKIP batches
itself while the helper starts (about 0.35 s).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from postdesk.config import MailboxSettings
from postdesk.errors import MailboxError
from postdesk.ingest.child import start_child
from postdesk.ingest.imap import ImapSource
from postdesk.ingest.parse import header_summary

if TYPE_CHECKING:
    from postdesk.ingest.store import FetchedMessage

log = logging.getLogger(__name__)

# Backlogs at least this large are fetched with a helper reading ahead. Below it the
# helper's start (a Python process, imports, a login: about 0.35 s of a core, competing
# with the parse worker's own start) costs about what it saves: with 1,000 messages
# bench/ingest.py measured 0.82x of the floor with a helper against 0.9-1.08x without.
READ_AHEAD_MIN = 5_000
# Batches the pass fetches itself while the helper starts and logs in (4 batches of 200
# took the pass about as long as the helper takes to start).
READ_AHEAD_SKIP = 4
# Seconds a helper may take to start (import, connect, log in) beyond the mailbox's
# IMAP timeout, before its first answer is given up on.
START_SECONDS = 30.0
# Seconds a helper that sent every batch is given to log out before it is killed.
LOGOUT_SECONDS = 2.0


class ReadAhead:
    """A helper fetching `batches` (lists of UIDs, in the order the pass will ask for
    them) of `folder` under `uidvalidity`; `take` the next one's messages."""

    def __init__(
        self,
        settings: MailboxSettings,
        credential: str,
        folder: str,
        uidvalidity: int,
        batches: Sequence[Sequence[int]],
    ) -> None:
        self.settings = settings
        self.failure: str | None = None
        self._batches = [list(batch) for batch in batches]
        self._next = 0
        self._first_answer = True
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        job = (settings, credential, folder, uidvalidity, self._batches)
        try:
            self._process, self._conn = start_child(__name__, job)
        except OSError as exc:
            self.failure = f"cannot start it: {exc.strerror or exc}"

    @property
    def pid(self) -> int | None:
        """The helper's pid while it runs (for tests)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def take(self, uids: Sequence[int]) -> list[FetchedMessage] | None:
        """The messages of the next batch, which must be `uids`; None when the helper has
        failed (`failure` says why; it is stopped, and the caller fetches itself)."""
        conn = self._conn
        if conn is None:
            return None
        if self._next >= len(self._batches) or self._batches[self._next] != list(uids):
            return self._fail("asked for a batch out of its order")
        self._next += 1
        wait = self.settings.timeout + (START_SECONDS if self._first_answer else 0.0)
        self._first_answer = False
        try:
            if not conn.poll(wait):
                return self._fail(f"no answer within {wait:g} s")
            kind, value = conn.recv()
        except (EOFError, OSError):
            return self._fail(f"it ended ({self._exit()})")
        if kind != "batch":
            return self._fail(str(value))
        # Not imported with this module: the helper runs it too, and the raw store's
        # imports (SQLAlchemy, the models) cost it 0.55 s and 30 MB before its first FETCH.
        from postdesk.ingest.store import FetchedMessage

        wanted = set(uids)
        return [FetchedMessage(*m) for m in value if m[0] in wanted]

    def _exit(self) -> str:
        process = self._process
        if process is None:
            return "not started"
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
        code = process.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _fail(self, reason: str) -> list[FetchedMessage] | None:
        """Record why the helper is given up, stop it; None (for `take` to return)."""
        self.failure = reason
        self.close()
        return None

    def close(self) -> None:
        """Stop the helper: one that sent every batch is given a moment to log out;
        one stopped half-way (it may be in the middle of a FETCH) is killed."""
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            conn.close()
        if process is None:
            return
        if self.failure is None and self._next == len(self._batches):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=LOGOUT_SECONDS)
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _serve(conn: Connection) -> None:
    settings, credential, folder, uidvalidity, batches = conn.recv()
    try:
        with ImapSource(settings, credential=credential) as source:
            validity = source.examine(folder)
            if validity != uidvalidity:
                conn.send(("error", f"UIDVALIDITY of {folder!r} is {validity}, not {uidvalidity}"))
                return
            for uids in batches:
                raws = source.fetch(uids)
                found = [(u, raws[u], header_summary(raws[u])) for u in uids if u in raws]
                conn.send(("batch", found))
    except MailboxError as exc:
        conn.send(("error", " ".join(str(exc).split())))
    except Exception as exc:  # a bug: one line to the pass, which fetches itself
        conn.send(("error", f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"))


def _child_main() -> None:
    """The helper process: its socket is file descriptor argv[1]."""
    # The service stops it (its socket closes, or it is killed); a signal meant for the
    # service must not print a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.disable(logging.CRITICAL)  # what goes wrong is sent to the pass, which logs
    conn = Connection(int(sys.argv[1]))
    with contextlib.suppress(EOFError, OSError):
        _serve(conn)


def start(
    settings: MailboxSettings,
    credential: str | None,
    folder: str,
    uidvalidity: int,
    batches: Sequence[Sequence[int]],
) -> ReadAhead | None:
    """A helper for `batches`, or None when it cannot run (logged)."""
    if credential is None or not batches:
        return None
    helper = ReadAhead(settings, credential, folder, uidvalidity, batches)
    if helper.failure is not None:
        log.warning(
            "mailbox %s: not reading ahead: %s",
            settings.name,
            helper.failure,
            extra={"mailbox": settings.name},
        )
        return None
    return helper


__all__ = ["READ_AHEAD_MIN", "READ_AHEAD_SKIP", "ReadAhead", "start"]
