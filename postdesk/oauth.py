"""OAuth 2.0 access tokens for XOAUTH2 logins (Gmail, Microsoft 365).

A mailbox or the [smtp] relay with `auth = "xoauth2"` gets its access token one of two ways:

- `token_command`: a program run at each login (with a timeout) whose standard output is
  the token. Tools that do this (oama, `gcloud auth print-access-token`, a script around
  msal) keep their own cache, so postdesk does not cache what they print.
- the refresh grant: postdesk POSTs the refresh token kept in `refresh_token_file` to the
  provider's token endpoint and caches the access token in memory until a minute before
  it expires. When the provider rotates the refresh token (Microsoft does, Google may),
  the new one replaces the file atomically, owner-only (0600), before the access token is
  used, so a crash can never leave postdesk holding only a spent refresh token. Processes
  on one machine sharing the file (`postdesk run`, `postdesk doctor`) refresh one at a
  time, under a lock on its directory.

The XOAUTH2 SASL string itself (`user=...^Aauth=Bearer ...^A^A`) is built by imapclient's
`oauth2_login` and aiosmtplib's `auth_xoauth2`.

The refresh grant is one form POST answered with JSON, so it uses urllib rather than an
OAuth library: authlib or requests-oauthlib would add requests and a dozen modules to do
the same request, and neither handles the part that matters here (saving a rotated token
atomically and privately).

Errors are TokenError, one line naming where the token was wanted ("mailbox 'support'",
"[smtp]") and what to do; no token, secret or response body that could hold one is ever
put in a message or a log line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postdesk.config import OAuthSettings
from postdesk.errors import ConfigError, PostdeskError
from postdesk.files import write_atomically
from postdesk.logs import add_secrets

log = logging.getLogger(__name__)

# An access token is renewed this long before the expiry the provider announced, so a
# login that starts just before expiry is not refused half-way.
EXPIRY_MARGIN = 60.0
# What a token endpoint may answer; a bigger body is not a token response.
MAX_RESPONSE = 64 * 1024
# What a token command may print.
MAX_TOKEN = 16 * 1024


class TokenError(PostdeskError):
    """No access token could be had; the message is one line naming the mailbox.

    `permanent`: retrying cannot help until someone acts (a refused refresh token or
    client, a missing file or program), unlike an unreachable endpoint or a command
    that failed this time.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class _Cached:
    token: str
    expires_at: float  # time.monotonic()


_cache: dict[OAuthSettings, _Cached] = {}
_locks: dict[OAuthSettings, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(settings: OAuthSettings) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(settings, threading.Lock())


class TokenSource:
    """Access tokens for one mailbox or relay (`who` names it in errors).

    Sources built from equal settings share one cache, so the mailboxes and passes of a
    long-running service refresh once per token lifetime, not once per connection.
    """

    def __init__(self, settings: OAuthSettings, who: str, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.who = who
        self.timeout = timeout
        self.last_was_cached = False

    def token(self, *, fresh: bool = False) -> str:
        """An access token; `fresh` skips the cache (after a server refused the last one)."""
        s = self.settings
        if s.token_command:
            self.last_was_cached = False
            return self._run_command()
        with _lock(s):
            cached = _cache.get(s)
            if cached is not None and not fresh and time.monotonic() < cached.expires_at:
                self.last_was_cached = True
                return cached.token
            self.last_was_cached = False
            assert s.refresh_token_file is not None  # the config demands one without a command
            with _file_lock(s.refresh_token_file.parent):
                token, lifetime = self._refresh()
            _cache[s] = _Cached(token, time.monotonic() + max(0.0, lifetime - EXPIRY_MARGIN))
            return token

    def forget(self) -> None:
        """Drop the cached access token (the server refused it)."""
        with _lock(self.settings):
            _cache.pop(self.settings, None)

    # -- token_command --------------------------------------------------------------------

    def _run_command(self) -> str:
        argv = list(self.settings.token_command)
        name = Path(argv[0]).name
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.settings.command_timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise TokenError(
                f"{self.who}: token_command {argv[0]!r} not found; give its full path",
                permanent=True,
            ) from None
        except PermissionError:
            raise TokenError(
                f"{self.who}: token_command {argv[0]!r} is not executable", permanent=True
            ) from None
        except subprocess.TimeoutExpired:
            raise TokenError(
                f"{self.who}: token_command {name!r} did not finish within "
                f"{self.settings.command_timeout:g} s"
            ) from None
        except OSError as exc:
            raise TokenError(
                f"{self.who}: token_command {name!r} cannot run ({exc.strerror or exc})"
            ) from None
        if done.returncode != 0:
            said = _last_line(done.stderr)
            raise TokenError(
                f"{self.who}: token_command {name!r} failed with exit status "
                f"{done.returncode}" + (f": {said}" if said else "")
            )
        token = done.stdout[:MAX_TOKEN].decode("ascii", "replace").strip()
        if not token or len(done.stdout) > MAX_TOKEN or any(c.isspace() for c in token):
            raise TokenError(
                f"{self.who}: token_command {name!r} printed no access token "
                "(expected the token alone on standard output)"
            )
        return token

    # -- the refresh grant ----------------------------------------------------------------

    def _refresh(self) -> tuple[str, float]:
        """POST the refresh grant; save a rotated refresh token; (access token, lifetime)."""
        s = self.settings
        assert s.refresh_token_file is not None
        refresh_token = self._read_refresh_token(s.refresh_token_file)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": s.client_id,
        }
        try:
            secret = s.client_secret.reveal()
        except ConfigError as exc:
            raise TokenError(f"{self.who}: {exc}", permanent=True) from None
        if secret:
            form["client_secret"] = secret
        if s.scope:
            form["scope"] = s.scope
        request = urllib.request.Request(
            s.token_url,
            data=urllib.parse.urlencode(form).encode("ascii"),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        host = urllib.parse.urlsplit(s.token_url).netloc
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            # 4xx: the request itself is wrong (refused token or client, bad scope); a
            # 5xx or 429 may pass.
            permanent = 400 <= exc.code < 500 and exc.code != 429
            raise TokenError(f"{self.who}: {self._refused(exc)}", permanent=permanent) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TokenError(
                f"{self.who}: cannot reach the token endpoint {host} ({reason}); "
                "check token_url and the network"
            ) from None
        answer = _json_object(body)
        token = answer.get("access_token") if answer else None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise TokenError(
                f"{self.who}: the token endpoint {host} answered without an access token"
            )
        lifetime = answer.get("expires_in", 3600) if answer else 3600
        try:
            seconds = float(lifetime)
        except (TypeError, ValueError):
            seconds = 3600.0
        rotated = answer.get("refresh_token") if answer else None
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            try:
                write_atomically(s.refresh_token_file, rotated.encode("utf-8") + b"\n")
            except OSError as exc:
                # The old refresh token may already be spent: say so loudly, and do not
                # use a token whose successor is lost.
                raise TokenError(
                    f"{self.who}: the provider rotated the refresh token but "
                    f"{s.refresh_token_file} cannot be written ({exc.strerror or exc}); "
                    "make it writable by postdesk's user and get a new refresh token",
                    permanent=True,
                ) from None
            add_secrets([rotated])
            log.info("%s: the provider rotated the refresh token; saved it", self.who)
        return token, seconds

    def _read_refresh_token(self, path: Path) -> str:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(
                f"{self.who}: cannot read refresh_token_file {str(path)!r} "
                f"({exc.strerror or exc}); write the refresh token into it (mode 0600)",
                permanent=True,
            ) from None
        if not text:
            raise TokenError(
                f"{self.who}: refresh_token_file {str(path)!r} is empty; "
                "write the refresh token into it",
                permanent=True,
            )
        return text

    def _refused(self, exc: urllib.error.HTTPError) -> str:
        """One line for an HTTP error from the token endpoint, from its OAuth error code."""
        try:
            body = exc.read(MAX_RESPONSE + 1)
        except OSError:
            body = b""
        answer = _json_object(body) or {}
        code = answer.get("error")
        code = code if isinstance(code, str) and code.isascii() and len(code) < 64 else ""
        path = self.settings.refresh_token_file
        if code == "invalid_grant":
            return (
                f"the refresh token in {path} was refused (invalid_grant: expired, revoked "
                "or already used); get a new one and write it into that file"
            )
        if code in ("invalid_client", "unauthorized_client"):
            return (
                f"the token endpoint refused the client ({code}); check client_id and client_secret"
            )
        what = f" ({code})" if code else ""
        return f"the token endpoint answered HTTP {exc.code}{what}; check token_url and client_id"


@contextlib.contextmanager
def _file_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (the refresh token file's), so that processes
    on this machine sharing a refresh token (`run`, `doctor`) refresh one at a time and
    each reads the token the previous one saved. The file itself cannot carry the lock:
    saving replaces it. Where the directory cannot be opened or locked, go on unlocked."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _json_object(body: bytes) -> dict[str, Any] | None:
    if len(body) > MAX_RESPONSE:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _last_line(stderr: bytes) -> str:
    """The last non-empty line a failing command wrote, printable and short."""
    lines = [line.strip() for line in stderr[-4096:].decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return text[:200]


def token_source(settings: OAuthSettings | None, who: str) -> TokenSource:
    """The token source of an `auth = "xoauth2"` section (the config ensures `oauth`)."""
    if settings is None:
        raise TokenError(f"{who}: auth is xoauth2 but no [oauth] settings are given")
    return TokenSource(settings, who)
