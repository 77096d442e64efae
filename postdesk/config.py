"""Load postdesk's one TOML file into typed, validated settings.

Every problem is reported as a ConfigError naming the file, the key and what is expected,
so an operator can fix it without reading a traceback. Secrets (passwords) are referenced
here but only read when a connection needs them, so commands that never connect (such as
`postdesk tickets list`) work on a machine where the secret is not available.

Each section is a frozen dataclass and is read by one generic reader: the allowed keys,
their types and defaults come from the dataclass fields, and unknown keys, wrong types and
missing keys are reported the same way everywhere. What a type cannot say goes in the
field's metadata through `option()`: checks (which may look at the keys read before, as
`siblings`), a TOML key that differs from the field name, a default for a field that
cannot have one in the dataclass. A `Path` is relative to the config file, a `Literal` is
a choice, a `Secret` field `password` also accepts `password_file` and `password_env`, a
`tuple[Section, ...]` is written as `[[key]]`. Adding a section is writing its dataclass
and registering it on Settings:

    @dataclass(frozen=True)
    class SlaSettings:
        \"""How long tickets may wait for an answer.\"""

        first_response_hours: float = field(default=8.0, metadata=option(_positive))
        clock: Literal["24x7", "office-hours"] = "office-hours"

    # on Settings:
    sla: SlaSettings = field(default_factory=SlaSettings)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from postdesk.errors import ConfigError

DEFAULT_CONFIG = "postdesk.toml"
CONFIG_ENV = "POSTDESK_CONFIG"

Security = Literal["ssl", "starttls", "none"]
SECURITY_CHOICES: tuple[Security, ...] = ("ssl", "starttls", "none")

T = TypeVar("T")


@dataclass(frozen=True)
class Secret:
    """Where a password comes from: inline, a file, or an environment variable."""

    source: Literal["inline", "file", "env", "none"]
    value: str = field(default="", repr=False)
    config_path: str = ""
    key: str = ""

    def reveal(self) -> str:
        """Read the secret now; a missing file or variable is a ConfigError."""
        if self.source == "inline":
            return self.value
        if self.source == "file":
            try:
                secret = Path(self.value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    self.config_path,
                    self.key + "_file",
                    f"cannot read {self.value!r} ({exc.strerror or exc}); "
                    "point it at a readable file holding only the password",
                ) from None
            if not secret:
                raise ConfigError(
                    self.config_path,
                    self.key + "_file",
                    f"{self.value!r} is empty; write the password into it",
                )
            return secret
        if self.source == "env":
            found = os.environ.get(self.value)
            if found is None:
                raise ConfigError(
                    self.config_path,
                    self.key + "_env",
                    f"environment variable {self.value} is not set; export it or use "
                    f"{self.key.rsplit('.', 1)[-1]}_file instead",
                )
            return found
        return ""


@dataclass(frozen=True)
class Key:
    """A place in the config file being read: its name in errors, and what sits beside it."""

    file: str
    base: Path  # the config file's directory; relative paths in the file start here
    name: str  # as errors print it: "smtp.port", "mailbox 'support'.port", "agent[0].email"
    siblings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def fail(self, problem: str) -> ConfigError:
        """The error to raise about this key."""
        return ConfigError(self.file, self.name or None, problem)

    def child(self, key: str, siblings: Mapping[str, Any] | None = None) -> Key:
        """The key `key` inside this table (siblings: the values read before it there)."""
        name = f"{self.name}.{key}" if self.name else key
        return self.renamed(name, siblings)

    def item(self, index: int) -> Key:
        """Entry `index` of this array."""
        return self.renamed(f"{self.name}[{index}]")

    def renamed(self, name: str, siblings: Mapping[str, Any] | None = None) -> Key:
        """The same place under another name in errors."""
        return Key(self.file, self.base, name, self.siblings if siblings is None else siblings)

    def path(self, raw: str) -> Path:
        """`raw` as a path, relative to the config file rather than the working directory."""
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.base / p)


# Stands for "no default" in Option: dataclasses.MISSING cannot, as Option is a dataclass.
_UNSET: Any = object()

Check = Callable[[Any, Key], Any]
"""Validates or normalizes a value read for a key; returns the value to keep."""


@dataclass(frozen=True)
class Option:
    """What a section field's type cannot say about reading it (see `option`)."""

    checks: tuple[Check, ...] = ()
    key: str | None = None
    default: Any = _UNSET
    default_from: Callable[[Mapping[str, Any]], Any] | None = None
    read: Check | None = None
    names_entry: bool = False
    in_file: bool = True


_OPTION = "postdesk.config"


def option(
    *checks: Check,
    key: str | None = None,
    default: Any = _UNSET,
    default_from: Callable[[Mapping[str, Any]], Any] | None = None,
    read: Check | None = None,
    names_entry: bool = False,
    in_file: bool = True,
) -> dict[str, Option]:
    """Field metadata for reading a section field from TOML, as `field(metadata=option(...))`.

    checks run in order on the value, the default included. `key` is the TOML key when it
    is not the field name. `default` is what a missing key means, written as in the file,
    for fields that cannot have a dataclass default; `default_from` computes it from the
    section's other values (it runs after them). `read` replaces the reading the type
    implies. `names_entry`: errors about the rest of an [[array]] entry name it by this
    value instead of its index. `in_file=False`: not read from the file at all.
    """
    return {
        _OPTION: Option(checks, key, default, default_from, read, names_entry, in_file),
    }


# --- checks shared by sections ----------------------------------------------------------


def _nonempty(value: str, key: Key) -> str:
    value = value.strip()
    if not value:
        raise key.fail("must not be empty")
    return value


def _lowercase(value: str, key: Key) -> str:
    return value.lower()


def _email_address(value: str, key: Key) -> str:
    if "@" not in value:
        raise key.fail(f"{value!r} is not an email address")
    return value


def _positive(value: float, key: Key) -> float:
    if value <= 0:
        raise key.fail("must be a positive number")
    return value


def _port_number(value: int, key: Key) -> int:
    if not 0 < value < 65536:
        raise key.fail(f"got {value}; expected 1-65535")
    return value


def each(*checks: Check) -> Check:
    """A check that runs `checks` on every item of a tuple, naming the item in errors."""

    def check_items(values: tuple[Any, ...], key: Key) -> tuple[Any, ...]:
        out = []
        for i, value in enumerate(values):
            for check in checks:
                value = check(value, key.item(i))
            out.append(value)
        return tuple(out)

    return check_items


def _default_port(ports: Mapping[Security, int]) -> Callable[[Mapping[str, Any]], int]:
    """The default port: the one that goes with the `security` chosen."""
    return lambda siblings: ports[siblings["security"]]


def _missing_secret(name: str) -> str:
    return f"is missing; set {name}, {name}_file (a path) or {name}_env"


# --- the sections ----------------------------------------------------------------------


def _database_url(url: str, key: Key) -> str:
    url = url.strip()
    if not url:
        raise key.fail('must not be empty, e.g. "sqlite:///postdesk.db"')
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        prefix, _, rest = url.partition(":///")
        if not rest:
            raise key.fail('a SQLite URL looks like "sqlite:///path/to/postdesk.db"')
        if rest.startswith((":memory:", "file:")):
            return url  # in memory, or a URI SQLite resolves (`file:/x.db?mode=ro&uri=true`)
        # A relative SQLite path is relative to the config file, not to the
        # directory the service happened to be started from.
        return f"{prefix}:///{key.path(rest)}"
    if scheme in ("postgresql", "postgres"):
        return _parsable_url("postgresql+psycopg" + url[len(scheme) :], key)
    if scheme.startswith("postgresql+"):
        return _parsable_url(url, key)
    raise key.fail(f"unsupported database {scheme!r}; use sqlite:///FILE or postgresql+psycopg://…")


def _parsable_url(url: str, key: Key) -> str:
    # Caught here so a typo such as a non-numeric port names the key; the URL itself
    # is not echoed because it may hold a password. SQLAlchemy is imported here, not at
    # the top: the parse worker imports this module for its limits, and SQLAlchemy would
    # be 0.2 s of its 0.35 s start, in front of the first message of every pass.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise key.fail(
            f"is not a valid database URL ({exc}); "
            "expected postgresql+psycopg://user:password@host:port/dbname"
        ) from None
    return url


@dataclass(frozen=True)
class DatabaseSettings:
    """Where tickets live: an SQLAlchemy URL (SQLite by default, or PostgreSQL)."""

    url: str = field(metadata=option(_database_url))


def _inbox_if_empty(folder: str, key: Key) -> str:
    return folder or "INBOX"


def _differs_from_folder(processed: str, key: Key) -> str:
    if processed and processed == key.siblings["folder"]:
        raise key.fail("must differ from folder (or be empty to keep mail)")
    return processed


Auth = Literal["password", "xoauth2"]

# Token endpoints and scopes of the providers `provider` names; {tenant} is Microsoft's
# directory ("common", "organizations", a domain or a tenant id).
OAUTH_PROVIDERS: dict[str, tuple[str, str]] = {
    "google": ("https://oauth2.googleapis.com/token", ""),
    "microsoft": (
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All "
        "https://outlook.office.com/SMTP.Send offline_access",
    ),
}


def _provider(value: str, key: Key) -> str:
    if value and value not in OAUTH_PROVIDERS:
        raise key.fail(
            f"got {value!r}; expected one of {', '.join(OAUTH_PROVIDERS)} "
            "(or leave it out and set token_url)"
        )
    return value


def _preset_url(siblings: Mapping[str, Any]) -> str:
    preset = OAUTH_PROVIDERS.get(siblings["provider"])
    return preset[0].format(tenant=siblings["tenant"]) if preset else ""


def _preset_scope(siblings: Mapping[str, Any]) -> str:
    preset = OAUTH_PROVIDERS.get(siblings["provider"])
    return preset[1] if preset else ""


def _token_url(url: str, key: Key) -> str:
    url = url.strip()
    if url and not url.startswith(("https://", "http://")):
        raise key.fail(f"{url!r} is not an http(s) URL")
    if url.startswith("http://") and not re.match(r"http://(127\.|localhost[:/]|\[::1\])", url):
        raise key.fail("must be https:// (plain http only on loopback, for testing)")
    return url


@dataclass(frozen=True)
class OAuthSettings:
    """Where an XOAUTH2 access token comes from (postdesk/oauth.py): a command that prints
    one, or a refresh token kept in a file and exchanged at the provider's token endpoint."""

    token_command: tuple[str, ...] = ()
    command_timeout: float = field(default=30.0, metadata=option(_positive))
    provider: str = field(default="", metadata=option(_provider))
    tenant: str = field(default="common", metadata=option(_nonempty))
    token_url: str = field(default="", metadata=option(_token_url, default_from=_preset_url))
    client_id: str = ""
    client_secret: Secret = field(default_factory=lambda: Secret("none"))
    refresh_token_file: Path | None = None
    scope: str = field(default="", metadata=option(default_from=_preset_scope))


def _oauth_fits(oauth: OAuthSettings | None, key: Key) -> OAuthSettings | None:
    """[oauth] goes with auth = "xoauth2": a token_command, or what the refresh grant needs."""
    auth = key.siblings["auth"]
    if auth != "xoauth2":
        if oauth is not None:
            raise key.fail('is only used with auth = "xoauth2"; set that or remove it')
        return oauth
    if oauth is None:
        raise key.fail(
            'is missing; auth = "xoauth2" needs token_command, or provider, client_id and '
            "refresh_token_file, in this table"
        )
    refresh = {
        "provider": oauth.provider,
        "token_url": oauth.token_url if not oauth.provider else "",
        "client_id": oauth.client_id,
        "refresh_token_file": oauth.refresh_token_file,
        "client_secret": oauth.client_secret.source != "none",
    }
    if oauth.token_command:
        given = [name for name, value in refresh.items() if value]
        if given:
            raise key.child(given[0]).fail("is not used with token_command; give one or the other")
        return oauth
    if not oauth.token_url:
        raise key.child("provider").fail(
            'is missing; set provider = "google" or "microsoft", or token_url, '
            "or give token_command"
        )
    for name in ("client_id", "refresh_token_file"):
        if not refresh[name]:
            raise key.child(name).fail("is missing; the refresh grant needs it")
    return oauth


def _password_unless_xoauth2(password: Secret, key: Key) -> Secret:
    auth = key.siblings["auth"]
    if auth == "xoauth2" and password.source != "none":
        raise key.fail('is not used with auth = "xoauth2"; remove it')
    if auth == "password" and password.source == "none":
        raise key.fail(_missing_secret("password"))
    return password


@dataclass(frozen=True)
class MailboxSettings:
    """One support mailbox polled over IMAP."""

    name: str = field(metadata=option(_nonempty, names_entry=True))
    address: str = field(metadata=option(_nonempty, _email_address, _lowercase))
    host: str = field(metadata=option(_nonempty))
    port: int = field(
        metadata=option(
            _port_number, default_from=_default_port({"ssl": 993, "starttls": 143, "none": 143})
        )
    )
    security: Security = field(metadata=option(default="ssl"))
    username: str = field(metadata=option(_nonempty))
    # "xoauth2": log in with an OAuth 2.0 access token from [mailbox.oauth] (Gmail, M365).
    auth: Auth = "password"
    password: Secret = field(
        default_factory=lambda: Secret("none"), metadata=option(_password_unless_xoauth2)
    )
    folder: str = field(default="INBOX", metadata=option(_inbox_if_empty))
    processed_folder: str = field(default="", metadata=option(_differs_from_folder))
    ca_file: Path | None = None
    tls_verify: bool = True
    batch_size: int = field(default=200, metadata=option(_positive))
    batch_bytes: int = field(default=20 * 1024 * 1024, metadata=option(_positive))
    timeout: float = field(default=60.0, metadata=option(_positive))
    # `postdesk run` waits for new mail with IMAP IDLE where the server offers it;
    # false polls every run.poll_interval instead (for servers whose IDLE misbehaves).
    idle: bool = True
    # Customers who open a ticket here get an acknowledgement with its number (when
    # [smtp] is configured), signed and sent as `team` <address>.
    acknowledge: bool = True
    team: str = field(default="Support", metadata=option(_nonempty))
    # The [calendar.NAME] this mailbox's tickets' SLA clocks count in ("": [sla] calendar).
    calendar: str = ""
    oauth: OAuthSettings | None = field(default=None, metadata=option(_oauth_fits))


def _needed_with_username(password: Secret, key: Key) -> Secret:
    # A relay that takes mail without logging in needs neither; a username needs both.
    if key.siblings["auth"] == "xoauth2":
        if password.source != "none":
            raise key.fail('is not used with auth = "xoauth2"; remove it')
        if not key.siblings["username"]:
            raise key.renamed(key.name.rsplit(".", 1)[0] + ".username").fail(
                'is missing; auth = "xoauth2" logs in as this user'
            )
        return password
    if key.siblings["username"] and password.source == "none":
        raise key.fail(_missing_secret("password"))
    return password


@dataclass(frozen=True)
class SmtpSettings:
    """The SMTP relay postdesk sends through."""

    host: str = field(metadata=option(_nonempty))
    port: int = field(
        metadata=option(
            _port_number, default_from=_default_port({"ssl": 465, "starttls": 587, "none": 25})
        )
    )
    security: Security = field(metadata=option(default="starttls"))
    username: str = ""
    auth: Auth = "password"
    password: Secret = field(
        default_factory=lambda: Secret("none"), metadata=option(_needed_with_username)
    )
    ca_file: Path | None = None
    tls_verify: bool = True
    timeout: float = field(default=60.0, metadata=option(_positive))
    oauth: OAuthSettings | None = field(default=None, metadata=option(_oauth_fits))


@dataclass(frozen=True)
class AgentSettings:
    """A person who answers tickets."""

    email: str = field(metadata=option(_nonempty, _lowercase, _email_address))
    name: str = field(metadata=option(default=""))
    # The mailboxes (by name) whose tickets this agent is told about; empty: all of them.
    queues: tuple[str, ...] = ()
    # The language of the notifications this agent gets.
    language: Literal["en", "fa"] = "en"


def _positive_seconds(value: float, key: Key) -> float:
    if value <= 0:
        raise key.fail("must be a positive number of seconds")
    return value


@dataclass(frozen=True)
class RunSettings:
    """How `postdesk run` paces itself."""

    poll_interval: float = field(default=60.0, metadata=option(_positive_seconds))


def _whole_positive(value: int, key: Key) -> int:
    if value < 1:
        raise key.fail("must be a whole number of at least 1")
    return value


def _memory_budget(value: int, key: Key) -> int:
    if value < 64:
        raise key.fail("must be at least 64 (MB)")
    return value


def _at_least_1024(value: int, key: Key) -> int:
    if value < 1024:
        raise key.fail("must be at least 1024")
    return value


@dataclass(frozen=True)
class ProcessingSettings:
    """How stored mail is processed (postdesk/ingest/process.py, ingest/worker.py).

    `max_attempts`: attempts at a message that never finished (postdesk or its parse
    worker died) before it is quarantined "gave up after N attempts".
    `parse_worker`: parse each message (and find its visible text) in a worker process
    under a budget of `parse_seconds` (wall clock) and `parse_memory_mb` (memory beyond
    the worker's own); a message over budget is quarantined with the reason. False parses
    in the service's own process, without a budget.
    """

    max_attempts: int = field(default=3, metadata=option(_whole_positive))
    parse_worker: bool = True
    parse_seconds: float = field(default=20.0, metadata=option(_positive_seconds))
    parse_memory_mb: int = field(default=512, metadata=option(_memory_budget))


@dataclass(frozen=True)
class LimitSettings:
    """How much of a message postdesk reads: mail is written by strangers.

    A message over `max_message_bytes`, or whose header block is over
    `max_header_bytes`, is stored as it came and quarantined "too large", never parsed
    (the defaults follow the big mail providers' 25 MB and Postfix's header_size_limit).
    The other caps cut what is read from a message that is parsed, and each cut is
    recorded as a defect on the message: the characters of decoded body text
    (`max_text_chars`, also the cap on the derived `text` and `visible_text`), the
    characters of HTML converted to text (`max_html_chars`) and the MIME parts walked
    (`max_parts`; the rest are kept as one attachment). `import_batch_bytes` caps the
    bytes `postdesk import` stores per transaction (the IMAP fetch has `batch_bytes` per
    mailbox).
    """

    max_message_bytes: int = field(default=25 * 1024 * 1024, metadata=option(_at_least_1024))
    max_header_bytes: int = field(default=100 * 1024, metadata=option(_at_least_1024))
    max_text_chars: int = field(default=1_000_000, metadata=option(_at_least_1024))
    max_html_chars: int = field(default=1_000_000, metadata=option(_at_least_1024))
    # Each attachment is its own file, flushed to disk (two fsyncs): 500 parts cost 6 s on
    # a busy disk. Mail with more than 100 parts is a mailing accident or an attack.
    max_parts: int = field(default=100, metadata=option(_positive))
    import_batch_bytes: int = field(default=20 * 1024 * 1024, metadata=option(_at_least_1024))


@dataclass(frozen=True)
class OutboxSettings:
    """How the outbox is sent (postdesk/notify/smtp.py)."""

    # How long a mail the server keeps deferring (4xx, unreachable) is retried, counted
    # from when it was queued; then it is marked failed.
    retry_hours: float = field(default=48.0, metadata=option(_positive))
    batch_size: int = field(default=50, metadata=option(_positive))


_LISTEN = re.compile(r"\[?([0-9A-Za-z.:-]{1,253}?)\]?:(\d{1,5})")


def _listen_address(value: str, key: Key) -> str:
    if value and not _LISTEN.fullmatch(value):
        raise key.fail(f'got {value!r}; expected "host:port", e.g. "127.0.0.1:9108"')
    if value and not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise key.fail(f"got {value!r}; the port must be 1 to 65535")
    return value


def listen_address(value: str) -> tuple[str, int]:
    """The host and port of a checked `[metrics] listen` value ("[::1]:9108" too)."""
    found = _LISTEN.fullmatch(value)
    assert found is not None, value
    return found.group(1), int(found.group(2))


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint of `postdesk run` (postdesk/health/metrics.py).

    Off unless `listen` is set, e.g. "127.0.0.1:9108"; it needs the `metrics` extra
    (`pip install 'postdesk[metrics]'`). The endpoint has no authentication: listen on
    loopback or a private network only.
    """

    listen: str = field(default="", metadata=option(_listen_address))


@dataclass(frozen=True)
class NotifySettings:
    """The mail postdesk writes: its templates, and how much automatic mail anyone gets."""

    # A folder of templates that replace the packaged ones file by file (see the README).
    templates_dir: Path | None = None
    # At most this many automatic mails (acknowledgements, surveys, ...) to one address
    # within the window; two auto-responders facing each other stop here.
    auto_reply_limit: int = field(default=10, metadata=option(_positive))
    auto_reply_window_hours: float = field(default=3.0, metadata=option(_positive))
    # Who is told by mail when `postdesk run` cannot log in to a mailbox (once per
    # mailbox until it recovers); sent through the outbox, so [smtp] is needed too.
    operators: tuple[str, ...] = field(
        default=(), metadata=option(each(_lowercase, _email_address))
    )


def _read_one_or_more(raw: Any, key: Key) -> tuple[str, ...]:
    """A non-empty string, or an array of them; lower-case."""
    if isinstance(raw, str):
        raw = [raw]
    elif not isinstance(raw, list):
        raise key.fail(f"expected a string or an array of strings, got {raw!r}")
    return tuple(value.lower() for value in _read_strings(raw, key))


@dataclass(frozen=True)
class AuthenticationSettings:
    """Which `Authentication-Results` headers (RFC 8601) to believe about agents' mail.

    `authserv_id`: the id (or ids) the receiving mail server writes at the start of the
    header it adds, e.g. "mx.example.com". Only the topmost header with one of these ids
    is read; any other, and every such header when none is configured, could have been
    written by the sender. Unset, nothing proves who sent a mail, so mail from an agent's
    address counts as the agent's only with a valid reply token (postdesk/ingest/author.py).
    """

    authserv_id: tuple[str, ...] = field(default=(), metadata=option(read=_read_one_or_more))


@dataclass(frozen=True)
class ThreadingSettings:
    """How inbound mail is matched to tickets beyond its headers.

    `secret` signs the reply tokens postdesk puts in the Reply-To of what it sends
    (``support+<token>@example.com``); when none is configured, a random key kept in
    ``data_dir/reply-token.key`` is used (created on first use, mode 0600).
    """

    secret: Secret = field(default_factory=lambda: Secret("none"))
    subject_window_days: float = field(default=7.0, metadata=option(_positive))
    new_ticket_after_closed_days: float = field(default=30.0, metadata=option(_positive))


DEFAULT_PRIORITY_LEVELS = ("low", "normal", "high", "urgent")


def _precision(value: float, key: Key) -> float:
    if not 0.5 <= value < 1.0:
        raise key.fail("expected a number from 0.5 to below 1")
    return value


def _stripped_label(value: str, key: Key) -> str:
    if not value.strip():
        raise key.fail("a category cannot be empty")
    return value.strip()


def _share(value: float, key: Key) -> float:
    if not 0.0 <= value <= 1.0:
        raise key.fail("expected a share from 0 to 1")
    return value


def _never_or_positive(value: float, key: Key) -> float:
    if value < 0:
        raise key.fail("must be 0 (never) or positive")
    return value


def _priority_levels(levels: tuple[str, ...], key: Key) -> tuple[str, ...]:
    levels = levels or DEFAULT_PRIORITY_LEVELS  # an empty list means the defaults
    if len(set(levels)) != len(levels):
        raise key.fail("lists a priority twice")
    return levels


def _one_of_priority_levels(value: str, key: Key) -> str:
    levels = key.siblings["priority_levels"]
    if value not in levels:
        raise key.fail(f"got {value!r}; expected one of priority_levels ({', '.join(levels)})")
    return value


def _high_or_highest(siblings: Mapping[str, Any]) -> str:
    levels: tuple[str, ...] = siblings["priority_levels"]
    return "high" if "high" in levels else levels[-1]


def _without_leading_at(domain: str, key: Key) -> str:
    return domain.lstrip("@")


def _read_keywords(raw: Any, key: Key) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`[triage.keywords]`: a table from priority to words, in priority order."""
    levels: tuple[str, ...] = key.siblings["priority_levels"]
    table = _read_table(raw, key, set(levels))
    return tuple(
        (level, _read_strings(table[level], key.child(level))) for level in levels if level in table
    )


def _read_matrix(raw: Any, key: Key) -> tuple[tuple[str, str, str], ...]:
    """`[triage.matrix]`: impact = { urgency = priority, ... }, flattened to triples."""
    matrix: list[tuple[str, str, str]] = []
    for impact, row in _expect(raw, dict, key).items():
        row_key = key.child(impact)
        if not isinstance(row, dict):
            raise row_key.fail("must be a table mapping urgency to a priority")
        for urgency, value in row.items():
            cell = row_key.child(urgency)
            if not isinstance(value, str):
                raise cell.fail("expected a priority name (a string)")
            matrix.append((str(impact), str(urgency), _one_of_priority_levels(value, cell)))
    return tuple(matrix)


@dataclass(frozen=True)
class TriageSettings:
    """How tickets are categorized and prioritized (see postdesk.classify).

    `target_precision` is what a prediction must reach to be applied without a human:
    each model's confidence threshold is chosen at training time so that predictions
    above it were at least this precise on held-out data; below it a ticket is marked
    needs-triage. A newly trained model becomes active by itself only if at least
    `min_coverage` of held-out tickets reach that threshold. `categories` lists the
    categories people may give (`postdesk model label`); empty means the active model's
    and those already given. The priority rules only ever raise a priority: a ticket gets the
    highest of what the rules and a confident model say. `priority_levels` orders the
    priorities from lowest to highest; `keywords` maps a priority to words that raise a
    ticket to it; `matrix` maps (impact, urgency) to a priority and applies when models
    for both targets are active.
    """

    target_precision: float = field(default=0.9, metadata=option(_precision))
    min_coverage: float = field(default=0.3, metadata=option(_share))
    categories: tuple[str, ...] = field(default=(), metadata=option(each(_stripped_label)))
    retrain_interval_hours: float = field(default=0.0, metadata=option(_never_or_positive))
    priority_levels: tuple[str, ...] = field(
        default=DEFAULT_PRIORITY_LEVELS, metadata=option(_priority_levels)
    )
    vip_senders: tuple[str, ...] = field(
        default=(), metadata=option(each(_lowercase, _email_address))
    )
    vip_domains: tuple[str, ...] = field(
        default=(), metadata=option(each(_lowercase, _without_leading_at))
    )
    vip_priority: str = field(
        default="high",
        metadata=option(_one_of_priority_levels, default_from=_high_or_highest),
    )
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = field(
        default=(), metadata=option(read=_read_keywords)
    )
    matrix: tuple[tuple[str, str, str], ...] = field(default=(), metadata=option(read=_read_matrix))


# --- service levels: [sla] and [calendar.NAME] ----------------------------------------

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Python's weekday() order
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_RANGE = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
DURATION_HINT = 'a duration like "30m", "4h" or "1h30m"'


def _duration(raw: Any, key: Key) -> float:
    """A business-time duration such as "30m", "4h", "40h" or "1h30m", in seconds."""
    text = _expect(raw, str, key).strip().replace(" ", "")
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise key.fail(f"got {raw!r}; expected {DURATION_HINT}")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _positive_duration(value: float, key: Key) -> float:
    if value <= 0:
        raise key.fail(f"must be longer than zero; expected {DURATION_HINT}")
    return value


def _time_zone(name: str, key: Key) -> str:
    name = name.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ' (an IANA name, e.g. "Asia/Tehran")'
        raise key.fail(f"unknown time zone {name!r}{hint}") from None
    return name


def _display_zone(name: str, key: Key) -> str:
    """ "" (the default) is the machine's local zone; otherwise an IANA name."""
    return _time_zone(name, key) if name.strip() else ""


def _minutes(hours: str, minutes: str, raw: str, key: Key) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > 24 * 60:
        raise key.fail(f"{raw!r} is not a time of day (00:00 to 24:00)")
    return value


def _day_ranges(raw: Any, key: Key) -> tuple[tuple[int, int], ...]:
    """ "08:00-12:00,13:00-17:00" as minutes of the day, in order and not overlapping."""
    text = _expect(raw, str, key).strip()
    ranges: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RANGE.fullmatch(part.replace(" ", ""))
        if match is None:
            raise key.fail(
                f'got {part!r}; expected ranges like "08:00-16:00" or "08:00-12:00,13:00-17:00"'
            )
        h1, m1, h2, m2 = match.groups()
        start = _minutes(h1, m1, part, key)
        end = _minutes(h2, m2, part, key)
        if end <= start:
            raise key.fail(f"{part!r} ends before it starts (a range cannot pass midnight)")
        if ranges and start < ranges[-1][1]:
            raise key.fail(
                f"{part!r} overlaps or comes before the range before it; list ranges in order"
            )
        ranges.append((start, end))
    return tuple(ranges)


def _read_week(raw: Any, key: Key) -> tuple[tuple[tuple[int, int], ...], ...]:
    """`week = { sat = "08:00-16:00", ... }`: working ranges per weekday, Monday first."""
    table = _read_table(raw, key, set(WEEKDAYS))
    week = tuple(
        _day_ranges(table[day], key.child(day)) if day in table else () for day in WEEKDAYS
    )
    if not any(week):
        raise key.fail('has no working hours; give at least one day, e.g. mon = "09:00-17:00"')
    return week


def _read_dates(raw: Any, key: Key) -> tuple[date, ...]:
    out = []
    for i, text in enumerate(_read_strings(raw, key)):
        try:
            out.append(date.fromisoformat(text))
        except ValueError:
            raise key.item(i).fail(
                f'got {text!r}; expected an ISO date like "2026-12-13"'
            ) from None
    return tuple(sorted(set(out)))


def _holiday_country(code: str, key: Key) -> str:
    code = code.strip().upper()
    if not code:
        return ""
    import holidays  # only when a calendar names a country

    known = holidays.list_supported_countries()
    if code not in known:
        close = difflib.get_close_matches(code, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise key.fail(
            f"{code!r} is not a country the holidays package knows{hint} "
            '(an ISO 3166 code, e.g. "IR" or "DE")'
        )
    return code


@dataclass(frozen=True)
class CalendarSettings:
    """`[calendar.NAME]`: the working hours SLA clocks count in.

    `week` holds, Monday first, each weekday's working ranges as minutes of the day in
    `timezone`; `holiday_country`'s public holidays and the own `holidays` are days off.
    """

    name: str = field(metadata=option(in_file=False))
    timezone: str = field(metadata=option(_time_zone))
    week: tuple[tuple[tuple[int, int], ...], ...] = field(metadata=option(read=_read_week))
    holiday_country: str = field(default="", metadata=option(_holiday_country))
    holidays: tuple[date, ...] = field(default=(), metadata=option(read=_read_dates))


def _read_calendars(raw: Any, key: Key) -> tuple[CalendarSettings, ...]:
    """`[calendar.NAME]` tables, each read as a CalendarSettings called NAME."""
    table = _expect(raw, dict, key)
    return tuple(
        _read_section(entry, CalendarSettings, key.child(name), given={"name": name})
        for name, entry in table.items()
    )


def _mailbox_calendars_known(
    calendars: tuple[CalendarSettings, ...], key: Key
) -> tuple[CalendarSettings, ...]:
    names = [c.name for c in calendars]
    for box in key.siblings.get("mailboxes", ()):
        if box.calendar and box.calendar not in names:
            where = key.renamed(f"mailbox {box.name!r}.calendar")
            raise where.fail(_unknown_calendar(box.calendar, names))
    return calendars


def _unknown_calendar(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(sorted(names)) or "none; add a [calendar.NAME] table"
    return f"no calendar named {name!r}{hint} (calendars: {known})"


@dataclass(frozen=True)
class SlaTarget:
    """Business time allowed for one priority: until the first response, until solved."""

    first_response: float = field(metadata=option(_positive_duration, read=_duration))
    resolution: float = field(metadata=option(_positive_duration, read=_duration))


def _read_targets(raw: Any, key: Key) -> tuple[tuple[str, SlaTarget], ...]:
    """`[sla.targets]`: priority = { first_response = "1h", resolution = "8h" }."""
    table = _expect(raw, dict, key)
    return tuple(
        (str(priority), _read_section(entry, SlaTarget, key.child(priority)))
        for priority, entry in table.items()
    )


@dataclass(frozen=True)
class SlaSettings:
    """`[sla]`: service-level targets per priority, counted in business time.

    `targets` maps each of [triage] priority_levels to its SlaTarget; `default_priority`
    is what a ticket without a priority is held to; `warn_before` (seconds of business
    time) is how long before a due time a ticket is at risk; `calendar` is the calendar
    for mailboxes that name none ("": around the clock, in UTC).
    """

    targets: tuple[tuple[str, SlaTarget], ...] = field(metadata=option(read=_read_targets))
    default_priority: str = "normal"
    warn_before: float = field(default=3600.0, metadata=option(read=_duration))
    calendar: str = ""

    def target(self, priority: str | None) -> tuple[str, SlaTarget]:
        """The priority a ticket is held to (its own, else the default) and its target."""
        targets = dict(self.targets)
        name = priority if priority in targets else self.default_priority
        return name, targets[name]


def _sla_fits(sla: SlaSettings | None, key: Key) -> SlaSettings | None:
    """[sla] against the rest: priorities from [triage], calendars that exist."""
    if sla is None:
        return None
    triage = key.siblings.get("triage")
    levels: tuple[str, ...] = triage.priority_levels if triage else DEFAULT_PRIORITY_LEVELS
    given = [name for name, _ in sla.targets]
    for name in given:
        if name not in levels:
            raise (
                key.child("targets")
                .child(name)
                .fail(
                    "is not a priority; expected one of [triage] priority_levels "
                    f"({', '.join(levels)})"
                )
            )
    missing = [level for level in levels if level not in given]
    if missing:
        raise key.child("targets").fail(
            f"has no target for {', '.join(missing)}; add e.g. "
            f'{missing[0]} = {{ first_response = "8h", resolution = "40h" }}'
        )
    if sla.default_priority not in levels:
        raise key.child("default_priority").fail(
            f"got {sla.default_priority!r}; expected one of [triage] priority_levels "
            f"({', '.join(levels)})"
        )
    names = [c.name for c in key.siblings.get("calendars", ())]
    if sla.calendar and sla.calendar not in names:
        raise key.child("calendar").fail(_unknown_calendar(sla.calendar, names))
    return sla


def _mailbox_names_unique(
    mailboxes: tuple[MailboxSettings, ...], key: Key
) -> tuple[MailboxSettings, ...]:
    names = [m.name for m in mailboxes]
    for name in names:
        if names.count(name) > 1:
            raise key.child("name").fail(f"{name!r} is used twice; mailbox names must be unique")
    return mailboxes


def _queues_known(agents: tuple[AgentSettings, ...], key: Key) -> tuple[AgentSettings, ...]:
    names = {m.name for m in key.siblings.get("mailboxes", ())}
    for index, agent in enumerate(agents):
        for queue in agent.queues:
            if queue not in names:
                close = difflib.get_close_matches(queue, sorted(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(names)) or "none"
                raise (
                    key.item(index)
                    .child("queues")
                    .fail(f"no mailbox named {queue!r}{hint} (mailboxes: {known})")
                )
    return agents


@dataclass(frozen=True)
class Settings:
    """Everything postdesk reads from its configuration file."""

    path: Path = field(metadata=option(in_file=False))
    data_dir: Path = field(metadata=option(default="postdesk-data"))
    database: DatabaseSettings
    # The zone the command line shows times in (`tickets list`, `tickets show`): an IANA
    # name such as "Asia/Tehran"; empty (the default) means the machine's local zone.
    display_timezone: str = field(default="", metadata=option(_display_zone))
    mailboxes: tuple[MailboxSettings, ...] = field(
        default=(), metadata=option(_mailbox_names_unique, key="mailbox")
    )
    smtp: SmtpSettings | None = None
    agents: tuple[AgentSettings, ...] = field(
        default=(), metadata=option(_queues_known, key="agent")
    )
    run: RunSettings = field(default_factory=RunSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    threading: ThreadingSettings = field(default_factory=ThreadingSettings)
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    triage: TriageSettings = field(default_factory=TriageSettings)
    calendars: tuple[CalendarSettings, ...] = field(
        default=(),
        metadata=option(_mailbox_calendars_known, key="calendar", read=_read_calendars),
    )
    sla: SlaSettings | None = field(default=None, metadata=option(_sla_fits))

    def display_zone(self) -> tzinfo:
        """`display_timezone` as a zone: the machine's local zone when it is not set."""
        if self.display_timezone:
            return zoneinfo.ZoneInfo(self.display_timezone)
        return local_zone()

    def mailbox(self, name: str) -> MailboxSettings:
        """Return the mailbox called `name`, or a ConfigError listing the known names."""
        for box in self.mailboxes:
            if box.name == name:
                return box
        known = ", ".join(b.name for b in self.mailboxes) or "none"
        raise ConfigError(str(self.path), "mailbox", f"no mailbox named {name!r} (known: {known})")


def local_zone() -> tzinfo:
    """The machine's zone: $TZ when it names one, else /etc/localtime (with its daylight
    saving rules), else the current offset, else UTC."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        try:
            return zoneinfo.ZoneInfo(target.rsplit("zoneinfo/", 1)[1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return zoneinfo.ZoneInfo.from_file(file)
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """Pick the config file: the option, then $POSTDESK_CONFIG, then ./postdesk.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate the TOML file at `path`."""
    p = Path(path)
    missing = "no such file; write one (see README 'Configuration') or pass --config"
    return parse_settings(read_toml(p, missing=missing), p)


def read_toml(path: Path, *, missing: str = "no such file") -> dict[str, Any]:
    """The TOML document at `path`; a missing, unreadable or invalid file is a ConfigError
    naming it (`missing` says what to do when there is no such file)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), None, missing) from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read it ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"is not valid TOML: {exc}") from None


def parse_settings(data: Mapping[str, Any], path: Path) -> Settings:
    """Validate an already-decoded TOML document (split out so tests can feed dicts)."""
    return parse_document(data, Settings, path, given={"path": path})


def parse_document(
    data: Mapping[str, Any], cls: type[T], path: Path, *, given: Mapping[str, Any] | None = None
) -> T:
    """Read a decoded TOML document as the section dataclass `cls`, with the same reader,
    checks and one-line errors as the config file (other TOML files postdesk reads, such
    as QA scorecards, are described this way too). `given` fills `in_file=False` fields."""
    top = Key(str(path), path.resolve().parent, "")
    return _read_section(data, cls, top, given=given)


# --- the generic reader -------------------------------------------------------------------

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "an array",
}


@dataclass(frozen=True)
class _Field:
    """One field of a section as the reader sees it."""

    name: str
    key: str
    hint: Any
    option: Option
    read: Check  # turns the TOML value into the field's type
    default: Callable[[], Any] | None  # the dataclass default, if there is one

    @property
    def required(self) -> bool:
        """Whether the file must give this key: there is no default of any kind."""
        return (
            self.default is None
            and self.option.default is _UNSET
            and self.option.default_from is None
        )

    def toml_keys(self) -> tuple[str, ...]:
        """The TOML keys this field may be written as."""
        if self.hint is Secret:
            return (self.key, f"{self.key}_file", f"{self.key}_env")
        return (self.key,)


_PLANS: dict[type, tuple[_Field, ...]] = {}


def _fields(cls: type) -> tuple[_Field, ...]:
    """How to read each field of the section `cls` (a TypeError names one it cannot read).

    Planned once per class, and for the sections inside it too, so a field type the
    reader cannot handle fails the first load, not only a file that sets that key.
    """
    if cls not in _PLANS:
        _PLANS[cls] = _plan(cls)
    return _PLANS[cls]


def _plan(cls: type) -> tuple[_Field, ...]:
    """Work out _fields(cls); see there."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        opt: Option = f.metadata.get(_OPTION, Option())
        hint = hints[f.name]
        if not opt.in_file or hint is Secret:
            read: Check = _unreadable
        elif opt.read is not None:
            read = opt.read
        else:
            try:
                read = _reader_for(hint)
            except TypeError as exc:
                raise TypeError(f"{cls.__name__}.{f.name}: {exc}") from None
        out.append(_Field(f.name, opt.key or f.name, hint, opt, read, _dataclass_default(f)))
    return tuple(out)


def _dataclass_default(f: dataclasses.Field[Any]) -> Callable[[], Any] | None:
    """The field's own default as a factory, or None when it has none."""
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


def _unreadable(raw: Any, key: Key) -> Any:
    """Stands in for the reading of fields never read as one value.

    A Secret spans three keys and is read by _read_secret; `in_file=False` fields are given.
    """
    raise AssertionError(f"{key.name} is not read as a single value")


def _reader_for(hint: Any) -> Check:
    """How a TOML value is read as `hint`."""
    origin, args = get_origin(hint), get_args(hint)
    if hint in (str, int, float, bool):
        return lambda raw, key: _expect(raw, hint, key)
    if hint is Path:
        return lambda raw, key: key.path(_expect(raw, str, key))
    if origin is Literal and all(isinstance(a, str) for a in args):
        return lambda raw, key: _choice(_expect(raw, str, key), args, key)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        # TOML has no null: None is what a missing key means, or (for a path) an empty string.
        (inner,) = (a for a in args if a is not type(None))
        read_inner = _reader_for(inner)
        if inner is Path:
            return lambda raw, key: None if raw == "" else read_inner(raw, key)
        return read_inner
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if item is str:
            return _read_strings
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            _fields(item)
            return lambda raw, key: _read_entries(raw, item, key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _fields(hint)
        return lambda raw, key: _read_section(raw, hint, key)
    raise TypeError(f"no TOML reading for {hint!r}; give it option(read=...)")


def _read_section(
    raw: Any,
    cls: type[T],
    key: Key,
    *,
    entry_of: Key | None = None,
    given: Mapping[str, Any] | None = None,
) -> T:
    """Read the table `raw` as the section dataclass `cls`."""
    in_file = [f for f in _fields(cls) if f.option.in_file]
    table = _read_table(raw, key, {k for f in in_file for k in f.toml_keys()})
    values: dict[str, Any] = dict(given or {})
    # A default computed from other fields (a port from `security`) waits for them; the
    # sort is stable, so everything else is read in field order.
    for f in sorted(
        in_file, key=lambda f: f.option.default_from is not None and f.key not in table
    ):
        values[f.name] = _read_field(table, f, key.child(f.key, values))
        if f.option.names_entry and entry_of is not None:
            key = entry_of.renamed(f"{entry_of.name} {values[f.name]!r}")
    result: T = cls(**values)
    return result


def _read_field(table: Mapping[str, Any], f: _Field, key: Key) -> Any:
    """The value of field `f` in `table`: read, or defaulted, then checked."""
    if f.hint is Secret:
        value: Any = _read_secret(table, f.key, key, required=f.required)
    elif f.key in table:
        raw = table[f.key]
        if f.required and dataclasses.is_dataclass(f.hint):
            # A required section written as a plain value gets the wording of any
            # mistyped key ("expected a table, got a string"), not "must be a table".
            _expect(raw, dict, key)
        value = f.read(raw, key)
    elif f.option.default_from is not None:
        value = f.read(f.option.default_from(key.siblings), key)
    elif f.option.default is not _UNSET:
        value = f.read(f.option.default, key)
    elif f.default is not None:
        value = f.default()
    else:
        raise key.fail(f"is missing; expected {_expected(f.hint)}")
    for check in f.option.checks:
        value = check(value, key)
    return value


def _expected(hint: Any) -> str:
    """What a value of type `hint` is written as, for "is missing; expected ..."."""
    if dataclasses.is_dataclass(hint):
        return "a table"
    if get_origin(hint) is tuple:
        return "an array"
    return _TYPE_NAMES.get(hint, "a string")  # paths and choices are strings


def _read_table(raw: Any, key: Key, allowed: set[str]) -> Mapping[str, Any]:
    """`raw` as a table holding only `allowed` keys; an unknown one gets a suggestion."""
    if not isinstance(raw, dict):
        raise key.fail("must be a table")
    for name in raw:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise key.child(name).fail(f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})")
    return raw


def _read_entries(raw: Any, cls: type[T], key: Key) -> tuple[T, ...]:
    """`[[key]]`: an array of tables, each read as the section `cls`."""
    if not isinstance(raw, list):
        raise key.fail(f"must be an array of tables, written [[{key.name}]]")
    return tuple(
        _read_section(entry, cls, key.item(i), entry_of=key) for i, entry in enumerate(raw)
    )


def _read_strings(raw: Any, key: Key) -> tuple[str, ...]:
    """An array of non-empty strings, each stripped."""
    out: list[str] = []
    for i, item in enumerate(_expect(raw, list, key)):
        if not isinstance(item, str) or not item.strip():
            raise key.item(i).fail("expected a non-empty string")
        out.append(item.strip())
    return tuple(out)


def _read_secret(table: Mapping[str, Any], name: str, key: Key, required: bool) -> Secret:
    """A password given as `name`, `name_file` (a path) or `name_env` (a variable)."""
    present = [k for k in (name, f"{name}_file", f"{name}_env") if k in table]
    if len(present) > 1:
        raise key.renamed(key.name + present[1][len(name) :]).fail(
            f"give only one of {name}, {name}_file or {name}_env"
        )
    if not present:
        if required:
            raise key.fail(_missing_secret(name))
        return Secret("none")
    found = present[0]
    value = _expect(table[found], str, key.renamed(key.name + found[len(name) :]))
    if found == name:
        return Secret("inline", value, key.file, key.name)
    if found == f"{name}_file":
        return Secret("file", str(key.path(value)), key.file, key.name)
    return Secret("env", value, key.file, key.name)


def _choice(value: str, choices: tuple[str, ...], key: Key) -> str:
    if value not in choices:
        raise key.fail(f"got {value!r}; expected one of {', '.join(choices)}")
    return value


def _expect(value: Any, kind: type[T], key: Key) -> T:
    """`value` if it is a `kind`, else an error saying what it is instead."""
    # TOML integers are acceptable where a float is expected; bools are not ints here.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool:
        raise key.fail(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got a boolean")
    if not isinstance(value, kind):
        raise key.fail(
            f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, "
            f"got {_TYPE_NAMES.get(type(value), type(value).__name__)}"
        )
    return value
