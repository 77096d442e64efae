"""The IMAP side of fetching: connect, select, list new UIDs, fetch, flag and move.

This is the only module that talks IMAP. Every failure becomes a MailboxError whose
message names the mailbox and says what went wrong in one line; credentials never
appear in messages or logs.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from postdesk.config import MailboxSettings
from postdesk.errors import ConfigError, MailboxError, MailboxLoginError
from postdesk.oauth import TokenError, TokenSource, token_source

log = logging.getLogger(__name__)

SEEN = b"\\Seen"
# Commands that list or touch many UIDs are split so no command line gets absurdly long.
_UID_CHUNK = 2000


@dataclass(frozen=True)
class FolderState:
    """What SELECT told us about a folder."""

    uidvalidity: int
    uidnext: int | None
    exists: int


def _tls_context(settings: MailboxSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); set ca_file or fix the server"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    if isinstance(text, str) and text.startswith("b'") and text.endswith("'"):
        text = text[2:-1]
    return text.splitlines()[0] if text else type(exc).__name__


def _token_failure(exc: TokenError) -> MailboxError:
    """A token that could not be had: a refused login when retrying cannot help."""
    return MailboxLoginError(str(exc)) if exc.permanent else MailboxError(str(exc))


def _chunks(uids: Sequence[int], size: int = _UID_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def _set_size(sequence_set: str) -> int:
    """How many UIDs a sequence set from `sequence_sets` names."""
    total = 0
    for part in sequence_set.split(","):
        first, _, last = part.partition(":")
        total += int(last or first) - int(first) + 1
    return total


# The longest UID sequence set put in one command (RFC 9051's sequence-set; servers
# refuse very long lines: Dovecot answers "Too long argument" past 64 KB).
_SET_CHARS = 8000


def sequence_sets(uids: Iterable[int], max_chars: int = _SET_CHARS) -> Iterator[str]:
    """`uids` as IMAP sequence sets, runs of consecutive UIDs written `first:last`
    ("5:7,9,12:40"), each at most about `max_chars` long. A run names exactly the UIDs
    in it, so no message outside `uids` is touched. Short commands let a caller flag many
    messages at once, and a server pays per command: on a 50,000-message Dovecot folder,
    250 STOREs of 200 listed UIDs took 1.9 s, one STORE of the 50,000 as a run 0.84 s
    (see FINISH_EVERY in ingest/fetch.py)."""
    parts: list[str] = []
    length = 0
    ordered = sorted(set(uids))
    index = 0
    while index < len(ordered):
        first = last = ordered[index]
        index += 1
        while index < len(ordered) and ordered[index] == last + 1:
            last = ordered[index]
            index += 1
        part = str(first) if first == last else f"{first}:{last}"
        if parts and length + len(part) + 1 > max_chars:
            yield ",".join(parts)
            parts, length = [], 0
        parts.append(part)
        length += len(part) + 1
    if parts:
        yield ",".join(parts)


class ImapSource:
    """A connection to one support mailbox, opened by `connect()` and closed by `close()`."""

    def __init__(self, settings: MailboxSettings, *, credential: str | None = None) -> None:
        """`credential`: the password or access token to log in with, instead of reading
        it from the settings (a read-ahead session, postdesk/ingest/readahead.py, logs
        in with what its pass logged in with: a token command is not run twice and a
        rotated refresh token is not refreshed by two processes)."""
        self.settings = settings
        self._given = credential
        self.credential: str | None = None  # what the last login used
        self._client: Any = None
        self._selected: str | None = None
        # Messages in the selected folder as far as this session knows (SELECT's EXISTS,
        # then EXISTS and EXPUNGE announcements): see mail_announced.
        self._known_count: int | None = None

    def __enter__(self) -> ImapSource:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _fail(self, doing: str, exc: BaseException) -> MailboxError:
        s = self.settings
        return MailboxError(
            f"mailbox {s.name!r} ({s.host}:{s.port}): {doing} failed: {_describe(exc)}"
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            raise MailboxError(f"mailbox {self.settings.name!r}: not connected")
        return self._client

    def connect(self) -> None:
        """Open the connection, secure it as configured, and log in.

        Calling it on a source that is already connected does nothing, so a caller that
        both enters the context manager and calls connect() holds one session, not two.
        """
        if self._client is not None:
            return
        s = self.settings
        oauth = s.auth == "xoauth2"
        tokens = None
        if self._given is not None:
            password = self._given
        else:
            tokens = token_source(s.oauth, f"mailbox {s.name!r}") if oauth else None
            try:
                # The token is had before connecting: a failing token command or refresh
                # is its own one-line error, not a refused login.
                password = tokens.token() if tokens else s.password.reveal()
            except ConfigError as exc:
                raise MailboxError(f"mailbox {s.name!r}: {exc}") from None
            except TokenError as exc:
                raise _token_failure(exc) from None
        try:
            client = IMAPClient(
                s.host,
                port=s.port,
                ssl=s.security == "ssl",
                ssl_context=_tls_context(s) if s.security == "ssl" else None,
                timeout=s.timeout,
            )
        except (OSError, IMAPClientError) as exc:
            raise self._fail("connecting", exc) from None
        self._client = client
        doing = "logging in"
        try:
            if s.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise MailboxError(
                        f"mailbox {s.name!r} ({s.host}:{s.port}): the server does not offer "
                        'STARTTLS; use security = "ssl" or check the port'
                    )
                doing = "starting TLS"
                client.starttls(_tls_context(s))
                doing = "logging in"
            if tokens:
                password = self._oauth2_login(client, tokens, password)
            elif oauth:
                client.oauth2_login(s.username, password)
            else:
                self._login(client, s.username, password)
            self.credential = password
        except LoginError:
            self.close()
            what = "the access token" if oauth else "username and password"
            raise MailboxLoginError(
                f"mailbox {s.name!r} ({s.host}:{s.port}): login as {s.username!r} was refused; "
                f"check {what}"
            ) from None
        except TokenError as exc:
            self.close()
            raise _token_failure(exc) from None
        except (OSError, IMAPClientError) as exc:
            self.close()
            raise self._fail(doing, exc) from None
        except MailboxError:
            self.close()
            raise

    def _login(self, client: Any, username: str, password: str) -> None:
        """LOGIN, or AUTHENTICATE PLAIN when the credentials are not ASCII.

        IMAP's LOGIN command carries only ASCII (imaplib refuses anything else with a
        UnicodeEncodeError); SASL PLAIN carries UTF-8, which is how servers such as
        Dovecot expect a non-ASCII password.
        """
        if username.isascii() and password.isascii():
            client.login(username, password)
            return
        if not client.has_capability("AUTH=PLAIN"):
            s = self.settings
            raise MailboxError(
                f"mailbox {s.name!r} ({s.host}:{s.port}): the username or password is not "
                "ASCII and the server does not offer AUTH=PLAIN to send it as UTF-8"
            )
        client.plain_login(username, password)

    def _oauth2_login(self, client: Any, tokens: TokenSource, token: str) -> str:
        """AUTHENTICATE XOAUTH2; a cached token the server refuses (revoked, or expired
        early) is replaced by a freshly refreshed one, once, on the same connection.
        Returns the token that was accepted."""
        try:
            client.oauth2_login(self.settings.username, token)
        except LoginError:
            if not tokens.last_was_cached:
                raise
            log.info("mailbox %s: cached access token refused; refreshing", self.settings.name)
            tokens.forget()
            token = tokens.token(fresh=True)
            client.oauth2_login(self.settings.username, token)
        return token

    def close(self) -> None:
        """Log out and drop the connection; never raises."""
        client, self._client, self._selected = self._client, None, None
        self._known_count = None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            try:
                client.shutdown()
            except Exception:
                log.debug("mailbox %s: socket shutdown failed", self.settings.name)

    def has_capability(self, name: str) -> bool:
        """Whether the server advertises capability `name` (e.g. MOVE, IDLE, UIDPLUS)."""
        try:
            return bool(self.client.has_capability(name))
        except (OSError, IMAPClientError) as exc:
            raise self._fail("reading capabilities", exc) from None

    def select(self, folder: str) -> FolderState:
        """Select `folder` read-write and report its UIDVALIDITY."""
        try:
            info = self.client.select_folder(folder)
        except (OSError, IMAPClientError) as exc:
            raise self._fail(f"selecting folder {folder!r}", exc) from None
        self._selected = folder
        # The SELECT's own EXISTS is the starting count, not news (imaplib flushed what
        # came before the SELECT).
        self._take_announcements()
        self._known_count = int(info.get(b"EXISTS", 0))
        uidvalidity = info.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise MailboxError(
                f"mailbox {self.settings.name!r}: folder {folder!r} has no UIDVALIDITY; "
                "postdesk needs an IMAP4rev1 server with persistent UIDs"
            )
        uidnext = info.get(b"UIDNEXT")
        return FolderState(
            uidvalidity=int(uidvalidity),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def examine(self, folder: str) -> int:
        """Select `folder` read-only (EXAMINE: nothing done in it changes a flag); its
        UIDVALIDITY."""
        try:
            info = self.client.select_folder(folder, readonly=True)
        except (OSError, IMAPClientError) as exc:
            raise self._fail(f"examining folder {folder!r}", exc) from None
        self._selected = folder
        uidvalidity = info.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise MailboxError(
                f"mailbox {self.settings.name!r}: folder {folder!r} has no UIDVALIDITY"
            )
        return int(uidvalidity)

    def uids_above(self, last_uid: int) -> list[int]:
        """Every UID in the selected folder greater than `last_uid`, ascending."""
        try:
            found = self.client.search(["UID", f"{last_uid + 1}:*"])
        except (OSError, IMAPClientError) as exc:
            raise self._fail("searching for new messages", exc) from None
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(int(uid) for uid in found if int(uid) > last_uid)

    def existing(self, uids: Sequence[int]) -> set[int]:
        """Which of `uids` the selected folder still holds."""
        found: set[int] = set()
        for chunk in _chunks(sorted(uids)):
            try:
                answer = self.client.search(["UID", ",".join(str(uid) for uid in chunk)])
            except (OSError, IMAPClientError) as exc:
                raise self._fail("checking which messages exist", exc) from None
            found.update(int(uid) for uid in answer)
        return found & set(uids)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID that still exists."""
        sizes: dict[int, int] = {}
        wanted = set(uids)
        for chunk in _chunks(uids):
            try:
                data = self.client.fetch(chunk, ["RFC822.SIZE"])
            except (OSError, IMAPClientError) as exc:
                raise self._fail("reading message sizes", exc) from None
            for uid, item in data.items():
                size = item.get(b"RFC822.SIZE")
                if size is not None and int(uid) in wanted:
                    sizes[int(uid)] = int(size)
        return sizes

    def sizes_over(self, uids: Sequence[int], over: int) -> dict[int, int]:
        """RFC822.SIZE of each of `uids` larger than `over` bytes that still exists.

        One UID SEARCH ... LARGER (IMAP4rev1's own search key) finds them and only those
        are asked for their size: asking for every message's size cost a response line
        per message parsed in Python (Dovecot, 10,000 messages: 200 ms against 4 ms for
        the search, which found none over 256 KiB)."""
        large: list[int] = []
        for sequence_set in sequence_sets(uids):
            try:
                found = self.client.search(["UID", sequence_set, "LARGER", str(max(over, 0))])
            except (OSError, IMAPClientError) as exc:
                raise self._fail("searching for large messages", exc) from None
            large.extend(int(uid) for uid in found)
        return self.sizes(sorted(set(large)))  # the sets name only `uids`

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The full raw bytes of each UID, without setting \\Seen (BODY.PEEK[])."""
        if not uids:
            return {}
        try:
            data = self.client.fetch(list(uids), ["BODY.PEEK[]"])
        except (OSError, IMAPClientError) as exc:
            raise self._fail(f"fetching {len(uids)} messages", exc) from None
        wanted = set(uids)
        out: dict[int, bytes] = {}
        for uid, item in data.items():
            body = item.get(b"BODY[]")
            if body is not None and int(uid) in wanted:
                out[int(uid)] = bytes(body)
        return out

    def message_ids(self, uids: Sequence[int]) -> dict[int, tuple[bytes, int | None]]:
        """The raw Message-ID header block and RFC822.SIZE of each UID that still exists.

        Used to resync after a UIDVALIDITY change without downloading whole messages.
        """
        out: dict[int, tuple[bytes, int | None]] = {}
        wanted = set(uids)
        key = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
        for chunk in _chunks(uids):
            try:
                data = self.client.fetch(
                    chunk, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]", "RFC822.SIZE"]
                )
            except (OSError, IMAPClientError) as exc:
                raise self._fail("reading Message-IDs", exc) from None
            for uid, item in data.items():
                # An unsolicited FETCH (a flag change by another client) may be merged in
                # under a sequence number; only answers for asked-for UIDs count.
                if int(uid) not in wanted:
                    continue
                size = item.get(b"RFC822.SIZE")
                out[int(uid)] = (bytes(item.get(key) or b""), int(size) if size else None)
        return out

    def ensure_folder(self, folder: str) -> None:
        """Create `folder` unless it exists."""
        try:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
                log.info("mailbox %s: created folder %r", self.settings.name, folder)
        except (OSError, IMAPClientError) as exc:
            raise self._fail(f"creating folder {folder!r}", exc) from None

    def mark_seen(self, uids: Iterable[int]) -> None:
        """Set \\Seen on `uids` in the selected folder (UIDs that vanished are ignored)."""
        for chunk in sequence_sets(uids):
            try:
                self.client.add_flags(chunk, [SEEN], silent=True)
            except (OSError, IMAPClientError) as exc:
                raise self._fail("setting \\Seen", exc) from None

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move `uids` from the selected folder to `folder`, with MOVE or COPY+EXPUNGE."""
        use_move = self.has_capability("MOVE")
        use_uidplus = self.has_capability("UIDPLUS")
        for chunk in sequence_sets(uids):
            count = _set_size(chunk)
            try:
                if use_move:
                    self.client.move(chunk, folder)
                    continue
                self.client.copy(chunk, folder)
                self.client.add_flags(chunk, [SEEN, b"\\Deleted"], silent=True)
                if use_uidplus:
                    self.client.uid_expunge(chunk)
                else:
                    # Without UIDPLUS an EXPUNGE could remove messages someone else marked
                    # deleted; leave them flagged and let the server's own policy expunge.
                    log.warning(
                        "mailbox %s: server lacks MOVE and UIDPLUS; %d messages left "
                        "flagged \\Deleted in %s",
                        self.settings.name,
                        count,
                        self._selected,
                    )
            except (OSError, IMAPClientError) as exc:
                raise self._fail(f"moving messages to {folder!r}", exc) from None

    # IDLE (RFC 2177) and NOOP: waiting for new mail on the selected folder.

    def idle_wait(
        self, seconds: float, should_stop: Callable[[], bool], slice_: float = 0.2
    ) -> bool:
        """IDLE on the selected folder for up to `seconds`, or until the server reports
        new mail (EXISTS/RECENT) or `should_stop()`; True when new mail was announced.

        The wait is checked in `slice_`-second steps so that a stop request ends it
        quickly; IDLE is always ended with DONE before returning, so the connection is
        usable (and can log out) afterwards.
        """
        end = time.monotonic() + seconds
        news = False
        try:
            self.client.idle()
            try:
                while not news and not should_stop():
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    news = _announces_mail(self.client.idle_check(timeout=min(left, slice_)))
            finally:
                news = _announces_mail(self.client.idle_done()[1]) or news
        except (OSError, IMAPClientError) as exc:
            raise self._fail("waiting for new mail (IDLE)", exc) from None
        return news

    def mail_announced(self) -> bool:
        """Whether the server has announced mail since the folder was selected: a NOOP,
        then every EXISTS it sent, in answer to that NOOP or to any command before it.

        Why: a server announces new mail in the answer to whatever command comes next,
        and that command does not necessarily see it. Dovecot, measured: a message
        appended by another session after our last command is missing from our next
        UID SEARCH's result and announced (EXISTS) in that SEARCH's answer instead; an
        IDLE begun after that never mentions it again (45 s waited, it came only with
        DONE). So a watcher asks this just before IDLE and fetches again when it says
        yes; what is then left is the round trip between this NOOP's answer and the
        IDLE command, and mail arriving there waits for the IDLE to end (at most
        `run.poll_interval`).

        An EXISTS equal to the count this session already knows (SELECT's, less the
        EXPUNGEs since) is not news: servers may repeat it. Not selected: False.
        """
        if self._known_count is None:
            return False
        try:
            _text, responses = self.client.noop()
        except (OSError, IMAPClientError) as exc:
            raise self._fail("NOOP", exc) from None
        counts, expunged = self._take_announcements()
        # The NOOP's own answer as imapclient returns it (also in the store above while
        # imaplib keeps one; a repeat changes nothing below).
        counts += [
            int(item[0])
            for item in responses or ()
            if isinstance(item, tuple) and len(item) >= 2 and item[1] == b"EXISTS"
        ]
        known = self._known_count - expunged
        news = any(count != known for count in counts)
        self._known_count = counts[-1] if counts else known
        return news

    def _take_announcements(self) -> tuple[list[int], int]:
        """The EXISTS counts and the number of EXPUNGEs the server sent since the last
        call, removed from imaplib's store of unclaimed answers (which would otherwise
        grow with every announcement for as long as the folder stays selected).

        imapclient leaves the answers to commands other than NOOP and IDLE in its
        imaplib object's `untagged_responses` (and imaplib keeps those to NOOP there
        too), where a new version may not keep them: then only the NOOP's own answer
        counts (mail_announced reads it as returned), and mail announced to an earlier
        command waits for the IDLE to end.
        """
        pending = getattr(getattr(self._client, "_imap", None), "untagged_responses", None)
        if not isinstance(pending, dict):
            return [], 0
        counts: list[int] = []
        for value in pending.pop("EXISTS", None) or ():
            try:
                counts.append(int(value))
            except (TypeError, ValueError):
                continue
        pending.pop("RECENT", None)
        return counts, len(pending.pop("EXPUNGE", None) or ())

    def noop(self) -> bool:
        """NOOP: keeps the connection alive; True when the server announced new mail."""
        try:
            _text, responses = self.client.noop()
        except (OSError, IMAPClientError) as exc:
            raise self._fail("NOOP", exc) from None
        return _announces_mail(responses)


def _announces_mail(responses: Iterable[Any]) -> bool:
    """Whether untagged responses include EXISTS or RECENT (new mail in the folder)."""
    for item in responses or ():
        if isinstance(item, tuple) and len(item) >= 2 and item[1] in (b"EXISTS", b"RECENT"):
            return True
    return False
