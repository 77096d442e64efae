"""Signed reply tokens: the surest way to know which ticket a reply belongs to.

Every mail postdesk sends about ticket N carries a Reply-To of the form
``support+t<N>-<signature>@example.com`` (to an agent: ``support+t<N>a<A>-<signature>``,
bound to agent A as well). Whatever the customer's client does to the
threading headers, the reply comes back to that address, and the token names the
ticket. The signature is an HMAC-SHA256 of the ticket number under a secret key, cut
to 12 base32 characters (60 bits): a token cannot be guessed or edited into another
ticket's. Lower-case only, because some mail servers lower-case local parts.

The key comes from ``[threading] secret`` (or ``secret_file`` / ``secret_env``); without
one, postdesk keeps a random key in ``data_dir/reply-token.key``. Changing the key
invalidates the tokens already sent: replies to them are then threaded by headers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from postdesk.config import Settings
from postdesk.errors import ConfigError

KEY_FILE = "reply-token.key"
_SIGNATURE_CHARS = 12
# ASCII only: with IGNORECASE alone, "\u017f" (long s) matches "s" and "\u212a" (Kelvin)
# matches "k", and a look-alike signature reached the comparison as non-ASCII text.
_TOKEN = re.compile(r"\+t(\d{1,12})-([a-z2-7]{12})@", re.IGNORECASE | re.ASCII)
# An agent's token names the ticket and the agent (their contact id): only that agent's
# reply, from one of that agent's addresses, may act on the ticket (the relay checks).
_AGENT_TOKEN = re.compile(r"\+t(\d{1,12})a(\d{1,12})-([a-z2-7]{12})@", re.IGNORECASE | re.ASCII)


class ReplyTokens:
    """Makes and checks reply tokens under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a reply-token key needs at least 16 bytes")
        self._key = key

    def _signature(self, number: int, agent: int | None = None) -> str:
        what = f"ticket:{number}" if agent is None else f"ticket:{number}:agent:{agent}"
        mac = hmac.new(self._key, what.encode(), hashlib.sha256).digest()
        return base64.b32encode(mac).decode("ascii").lower()[:_SIGNATURE_CHARS]

    def token(self, number: int) -> str:
        """The token for ticket `number`, e.g. ``t1234-abcdefghijkl``."""
        return f"t{number}-{self._signature(number)}"

    def address(self, mailbox_address: str, number: int) -> str:
        """`mailbox_address` with the token of ticket `number` as its +detail."""
        local, _, domain = mailbox_address.partition("@")
        local = local.split("+", 1)[0]
        return f"{local}+{self.token(number)}@{domain}"

    def agent_address(self, mailbox_address: str, number: int, agent: int) -> str:
        """`mailbox_address` with a token of ticket `number` for agent `agent` (contact id),
        e.g. ``support+t1234a7-abcdefghijkl@example.com``: the Reply-To of notifications."""
        local, _, domain = mailbox_address.partition("@")
        local = local.split("+", 1)[0]
        return f"{local}+t{number}a{agent}-{self._signature(number, agent)}@{domain}"

    def find_agent(self, addresses: Iterable[str]) -> tuple[int, int] | None:
        """(ticket, agent contact id) of the first validly signed agent token in `addresses`."""
        for address in addresses:
            match = _AGENT_TOKEN.search(address)
            if match is None:
                continue
            number, agent = int(match.group(1)), int(match.group(2))
            if hmac.compare_digest(self._signature(number, agent), match.group(3).lower()):
                return number, agent
        return None

    def find(self, addresses: Iterable[str]) -> int | None:
        """The ticket named by the first validly signed token among `addresses`."""
        for address in addresses:
            match = _TOKEN.search(address)
            if match is None:
                continue
            number = int(match.group(1))
            if hmac.compare_digest(self._signature(number), match.group(2).lower()):
                return number
        return None


# Every Message-ID postdesk gives a mail it sends starts with this, so that an inbound
# message's own Message-ID is looked up among the ones we sent (mail of ours coming back)
# only when it could be one: customers' ids never cost that query.
MESSAGE_ID_PREFIX = "postdesk."


def new_message_id(domain: str) -> str:
    """A fresh Message-ID (bare, without angle brackets) for a mail postdesk sends.

    Random (96 bits) plus the time, so ids never repeat across restarts or machines.
    """
    return f"{MESSAGE_ID_PREFIX}{int(time.time()):x}.{secrets.token_hex(12)}@{domain}"


def may_be_ours(message_id: str) -> bool:
    """Whether `message_id` has the shape of the ones `new_message_id` makes."""
    return message_id.startswith(MESSAGE_ID_PREFIX)


def load_key(settings: Settings) -> bytes:
    """The configured secret, or the key file in data_dir (created when missing)."""
    secret = settings.threading.secret
    if secret.source != "none":
        value = secret.reveal()
        if len(value) < 16:
            raise ConfigError(
                str(settings.path),
                "threading.secret",
                "is too short; use at least 16 random characters",
            )
        return hashlib.sha256(value.encode("utf-8")).digest()
    return _key_file(settings.data_dir / KEY_FILE)


def _key_file(path: Path) -> bytes:
    """Read the key file, creating it first if absent.

    The new key is written whole to a private temporary file and then hard-linked into
    place, which fails if the file exists: two processes starting at once end up with
    the same, complete key.
    """
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(32) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(scratch, path)
            finally:
                scratch.unlink(missing_ok=True)
        text = path.read_text(encoding="ascii").strip()
        return bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            str(path),
            "data_dir",
            f"cannot use the reply-token key file ({exc}); delete it to make a new one",
        ) from None
