"""Mailbox watchers: one thread per mailbox, so that mailboxes never wait for each other.

`postdesk run` (not `--once`) starts a `MailboxWatcher` per configured mailbox. Each one
loops on its own connection:

1. connect and log in, select the folder;
2. fetch everything new into the raw store (FolderFetcher: the same checkpoint, lease
   and crash order as a `--once` pass), waking the main loop when batches are stored
   (`on_stored`): at the end of a quick fetch, after each batch of a large or slow one
   (ingest/fetch.py ANNOUNCE_AFTER), so that it turns mail into tickets while a large
   backlog is still being fetched;
3. wait for more mail (unless the server announced some since the folder was selected,
   in an answer to one of the fetch's commands or to a NOOP sent just before idling:
   `ImapSource.mail_announced`; Dovecot does not repeat such news to the IDLE that
   follows): IMAP IDLE where the server offers it, ended and re-issued every
   IDLE_SECONDS (25 minutes, inside RFC 2177's 29), or at once when the server announces
   EXISTS, and also after `run.poll_interval` at the latest (mail arriving between that
   NOOP's answer and the IDLE command is then still fetched within one interval, as
   with polling); where it does not (or `idle = false` in the mailbox's config), wait
   `run.poll_interval` and send NOOP (which keeps the session alive) before fetching
   again;
4. back to 2.

A failure anywhere (refused connection, TLS error, wrong password, a server that stops
answering: every IMAP read has the mailbox's `timeout`) closes the connection and waits
before reconnecting: exponential back-off with full jitter (`backoff_delay`), from one
second doubling up to MAX_BACKOFF, reset by a successful fetch. Jitter keeps many
mailboxes of one provider from reconnecting in lockstep after an outage.

A refused login is reported once per mailbox until it recovers (`on_failure` gets
`first_auth=True` for it only), because retrying will not fix a password; every other
failure is logged at each attempt with its next try. The first success after failures
logs a "recovered" line (postdesk/daemon.py owns the logging, the outbox mail and the
failure record: `on_failure` and `on_fetched` are its callbacks).

The lease of the folder (postdesk/ingest/lease.py) is taken by each fetch and released
after it, exactly as in a `--once` pass: between fetches the watcher only idles, and two
instances watching the same folder never fetch it at the same time.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from postdesk.config import LimitSettings, MailboxSettings
from postdesk.errors import MailboxError, MailboxLoginError
from postdesk.ingest.fetch import FetchResult, FolderFetcher
from postdesk.ingest.imap import ImapSource
from postdesk.models.db import Database

log = logging.getLogger(__name__)

# Re-issue IDLE this often: RFC 2177 lets servers drop an IDLE after 29 minutes.
IDLE_SECONDS = 25 * 60.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 900.0


def backoff_delay(
    failures: int,
    *,
    first: float = FIRST_BACKOFF,
    cap: float = MAX_BACKOFF,
    rng: random.Random | None = None,
) -> float:
    """The wait before attempt number `failures` + 1: "full jitter", a uniformly random
    time between 0 and min(cap, first * 2**(failures - 1)), never below `first` / 2 so
    that a server refusing connections at once is not hammered."""
    if failures < 1:
        return 0.0
    ceiling = min(cap, first * (2.0 ** min(failures - 1, 40)))
    draw = (rng or random).uniform(0.0, ceiling)
    return max(draw, min(first / 2, ceiling))


@dataclass
class Outcome:
    """What one watcher attempt ended with, for the main loop's summary and state."""

    mailbox: str
    fetch: FetchResult | None = None
    error: str | None = None
    retry_in: float | None = None


class MailboxWatcher:
    """Serves one mailbox on its own thread until `stop` is set."""

    def __init__(
        self,
        db: Database,
        box: MailboxSettings,
        mailbox_id: int,
        *,
        owner: str,
        poll_interval: float,
        limits: LimitSettings,
        stop: threading.Event,
        on_fetched: Callable[[FetchResult], None],
        on_failure: Callable[[MailboxSettings, int, str, float, bool], None],
        on_stored: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.db = db
        self.box = box
        self.mailbox_id = mailbox_id
        self.owner = owner
        self.poll_interval = poll_interval
        self.limits = limits
        self.stop_event = stop
        self.on_fetched = on_fetched
        self.on_failure = on_failure
        self.on_stored = on_stored
        self.rng = rng or random.Random()
        self.idle_seconds = idle_seconds
        self.failures = 0
        self.thread = threading.Thread(
            target=self.run, name=f"postdesk-mailbox-{box.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the thread; whether it ended."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def run(self) -> None:
        while not self.stopping():
            try:
                self._serve()
            except MailboxError as exc:
                self._failed(str(exc), auth=isinstance(exc, MailboxLoginError))
            except Exception as exc:  # a bug or a database error: report, retry later
                log.debug("mailbox %s: traceback", self.box.name, exc_info=True)
                detail = " ".join(str(exc).split())[:500]
                self._failed(
                    f"mailbox {self.box.name!r}: unexpected {type(exc).__name__}: {detail}",
                    auth=False,
                )

    def _failed(self, message: str, *, auth: bool) -> None:
        self.failures += 1
        wait = backoff_delay(self.failures, rng=self.rng)
        self.on_failure(self.box, self.mailbox_id, message, wait, auth)
        self.stop_event.wait(wait)

    def _serve(self) -> None:
        """One connection's life: fetch, wait for news, fetch again, until an error."""
        with ImapSource(self.box) as source:
            idle = self.box.idle and source.has_capability("IDLE")
            rechecked = False
            while not self.stopping():
                fetcher = FolderFetcher(
                    self.db,
                    self.box,
                    self.mailbox_id,
                    owner=self.owner,
                    should_stop=self.stopping,
                    limits=self.limits,
                    on_stored=self.on_stored,
                )
                result = fetcher.run(source)
                self.failures = 0  # the back-off starts again from the bottom
                self.on_fetched(result)
                # Mail that came during the pass, or since its last command, may have
                # been announced in an answer to one of its commands, and an IDLE would
                # not mention it again (ImapSource.mail_announced). A pass that stored
                # nothing after such news does not earn another at once (a server
                # repeating a stale count), so this cannot spin.
                if idle and source.mail_announced() and (result.stored or not rechecked):
                    rechecked = True
                    continue
                rechecked = False
                if idle:
                    # Also bounded by poll_interval: mail arriving between the NOOP's
                    # answer and the IDLE command is then still fetched within one
                    # interval, as with polling.
                    wait = min(self.idle_seconds, max(self.poll_interval, 1.0))
                    source.idle_wait(wait, self.stopping)
                else:
                    if self.stop_event.wait(self.poll_interval):
                        return
                    source.noop()
