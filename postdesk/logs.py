"""Log line formats for `postdesk run`: text for people, JSON for log shippers.

Events about one message carry structured fields through `extra=`: `mailbox`, `uid`,
`message_id`, `ticket`, `raw_id`, and a pass summary its counts. The text format shows
them in its message already; the JSON format (one object per line) adds every such
field as a key next to `time`, `level`, `logger` and `message`, so a shipper can index
them without parsing the message.

Secrets never reach a log line on purpose (database URLs are shown through
`Database.display_url`, passwords are never formatted). As a second guard, the
formatters replace every configured secret (mailbox and SMTP passwords, OAuth client
secrets and refresh tokens, the reply-token secret, the database password) by `***`
wherever it would appear, e.g. inside a server's error message that quotes what it was
sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from postdesk.config import Secret, Settings
from postdesk.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Shorter secrets are not searched for: replacing every "abc" in the logs would mangle
# them and tell a reader what the password is.
MIN_SECRET = 4
MASK = "***"

# What every LogRecord has; anything else on a record came through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def secrets_of(settings: Settings) -> set[str]:
    """The secrets `settings` refers to, read now (one that cannot be read is skipped:
    it cannot be logged either)."""
    found: set[str] = set()
    holders: list[Secret] = [box.password for box in settings.mailboxes]
    if settings.smtp is not None:
        holders.append(settings.smtp.password)
    holders.append(settings.threading.secret)
    # XOAUTH2: client secrets and refresh tokens (a rotated one is added when saved).
    oauths = [box.oauth for box in settings.mailboxes]
    oauths.append(settings.smtp.oauth if settings.smtp is not None else None)
    for oauth in oauths:
        if oauth is None:
            continue
        holders.append(oauth.client_secret)
        if oauth.refresh_token_file is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                found.add(oauth.refresh_token_file.read_text(encoding="utf-8").strip())
    for secret in holders:
        try:
            found.add(secret.reveal())
        except ConfigError:
            continue
    try:
        from sqlalchemy.engine import make_url

        password = make_url(settings.database.url).password
    except Exception:  # an unparsable URL has no password to hide
        password = None
    if password:
        found.add(str(password))
    return {s for s in found if len(s) >= MIN_SECRET}


class _Redacting:
    """Replaces the known secrets in text (longest first, so one that contains another
    is masked whole)."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET}
        self._secrets = tuple(sorted(kept, key=len, reverse=True))

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.set_secrets({*self._secrets, *secrets})

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class TextFormatter(logging.Formatter, _Redacting):
    """`time LEVEL logger: message`, the format of every postdesk command."""

    def __init__(self) -> None:
        logging.Formatter.__init__(self, TEXT_FORMAT)
        _Redacting.__init__(self)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter, _Redacting):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    structured fields of the event, and `exception` when a traceback was logged."""

    def __init__(self) -> None:
        logging.Formatter.__init__(self)
        _Redacting.__init__(self)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in entry:
                continue
            entry[key] = self._field(value)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)

    def _field(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(k): self._field(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._field(v) for v in value]
        return self.redact(str(value))


def use_format(name: str, secrets: Iterable[str] = ()) -> None:
    """Give every handler of the root logger the format `name` ("text" or "json"),
    masking `secrets`."""
    wanted = set(secrets)
    for handler in logging.getLogger().handlers:
        formatter: TextFormatter | JsonFormatter = (
            JsonFormatter() if name == "json" else TextFormatter()
        )
        formatter.set_secrets(wanted)
        handler.setFormatter(formatter)


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask `secrets` too from now on (after the config was reloaded; the previous
    ones stay masked, a late error message may still quote one)."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, _Redacting):
            formatter.add_secrets(secrets)
