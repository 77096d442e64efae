"""Load postdesk's one TOML file into typed, validated settings.

Every problem is reported as a ConfigError naming the file, the key and what is expected,
so an operator can fix it without reading a traceback. Secrets (passwords) are referenced
here but only read when a connection needs them, so commands that never connect (such as
`postdesk tickets list`) work on a machine where the secret is not available.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

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
class DatabaseSettings:
    """Where tickets live: an SQLAlchemy URL (SQLite by default, or PostgreSQL)."""

    url: str


@dataclass(frozen=True)
class MailboxSettings:
    """One support mailbox polled over IMAP."""

    name: str
    address: str
    host: str
    port: int
    security: Security
    username: str
    password: Secret
    folder: str = "INBOX"
    processed_folder: str = ""
    ca_file: Path | None = None
    tls_verify: bool = True
    batch_size: int = 200
    batch_bytes: int = 20 * 1024 * 1024
    timeout: float = 60.0


@dataclass(frozen=True)
class SmtpSettings:
    """The SMTP relay postdesk sends through."""

    host: str
    port: int
    security: Security
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret("none"))
    ca_file: Path | None = None
    tls_verify: bool = True
    timeout: float = 60.0


@dataclass(frozen=True)
class AgentSettings:
    """A person who answers tickets."""

    email: str
    name: str


@dataclass(frozen=True)
class RunSettings:
    """How `postdesk run` paces itself."""

    poll_interval: float = 60.0


@dataclass(frozen=True)
class ThreadingSettings:
    """How inbound mail is matched to tickets beyond its headers.

    `secret` signs the reply tokens postdesk puts in the Reply-To of what it sends
    (``support+<token>@example.com``); when none is configured, a random key kept in
    ``data_dir/reply-token.key`` is used (created on first use, mode 0600).
    """

    secret: Secret = field(default_factory=lambda: Secret("none"))
    subject_window_days: float = 7.0
    new_ticket_after_closed_days: float = 30.0


DEFAULT_PRIORITY_LEVELS = ("low", "normal", "high", "urgent")


@dataclass(frozen=True)
class TriageSettings:
    """How tickets are categorized and prioritized (see postdesk.classify).

    `target_precision` is what a prediction must reach to be applied without a human:
    each model's confidence threshold is chosen at training time so that predictions
    above it were at least this precise on held-out data; below it a ticket is marked
    needs-triage. The priority rules only ever raise a priority: a ticket gets the
    highest of what the rules and a confident model say. `priority_levels` orders the
    priorities from lowest to highest; `keywords` maps a priority to words that raise a
    ticket to it; `matrix` maps (impact, urgency) to a priority and applies when models
    for both targets are active.
    """

    target_precision: float = 0.9
    retrain_interval_hours: float = 0.0
    priority_levels: tuple[str, ...] = DEFAULT_PRIORITY_LEVELS
    vip_senders: tuple[str, ...] = ()
    vip_domains: tuple[str, ...] = ()
    vip_priority: str = "high"
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = ()
    matrix: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything postdesk reads from its configuration file."""

    path: Path
    data_dir: Path
    database: DatabaseSettings
    mailboxes: tuple[MailboxSettings, ...] = ()
    smtp: SmtpSettings | None = None
    agents: tuple[AgentSettings, ...] = ()
    run: RunSettings = field(default_factory=RunSettings)
    threading: ThreadingSettings = field(default_factory=ThreadingSettings)
    triage: TriageSettings = field(default_factory=TriageSettings)

    def mailbox(self, name: str) -> MailboxSettings:
        """Return the mailbox called `name`, or a ConfigError listing the known names."""
        for box in self.mailboxes:
            if box.name == name:
                return box
        known = ", ".join(b.name for b in self.mailboxes) or "none"
        raise ConfigError(str(self.path), "mailbox", f"no mailbox named {name!r} (known: {known})")


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
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(p), None, "no such file; write one (see README 'Configuration') or pass --config"
        ) from None
    except OSError as exc:
        raise ConfigError(str(p), None, f"cannot read it ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), None, f"is not valid TOML: {exc}") from None
    return parse_settings(data, p)


def parse_settings(data: Mapping[str, Any], path: Path) -> Settings:
    """Validate an already-decoded TOML document (split out so tests can feed dicts)."""
    reader = _Reader(str(path), path.resolve().parent)
    top = reader.table(
        data,
        "",
        {"data_dir", "database", "mailbox", "smtp", "agent", "run", "threading", "triage"},
    )

    db_table = reader.table(reader.required(top, "", "database", dict), "database", {"url"})
    url = reader.required(db_table, "database", "url", str)
    database = DatabaseSettings(url=reader.database_url(url))

    data_dir_raw = reader.optional(top, "", "data_dir", str, "postdesk-data")
    data_dir = reader.path(data_dir_raw)

    mailboxes = tuple(
        reader.mailbox(entry, i) for i, entry in enumerate(reader.array(top, "mailbox"))
    )
    names = [m.name for m in mailboxes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                str(path), "mailbox.name", f"{name!r} is used twice; mailbox names must be unique"
            )

    smtp = reader.smtp(top["smtp"]) if "smtp" in top else None
    agents = tuple(reader.agent(entry, i) for i, entry in enumerate(reader.array(top, "agent")))

    run_table = reader.table(top.get("run", {}), "run", {"poll_interval"})
    poll = reader.optional(run_table, "run", "poll_interval", float, 60.0)
    if poll <= 0:
        raise ConfigError(str(path), "run.poll_interval", "must be a positive number of seconds")

    threading_table = reader.table(
        top.get("threading", {}),
        "threading",
        {
            "secret",
            "secret_file",
            "secret_env",
            "subject_window_days",
            "new_ticket_after_closed_days",
        },
    )
    threading = ThreadingSettings(
        secret=reader.secret(threading_table, "threading", "secret", required=False),
        subject_window_days=reader.positive(
            threading_table, "threading", "subject_window_days", float, 7.0
        ),
        new_ticket_after_closed_days=reader.positive(
            threading_table, "threading", "new_ticket_after_closed_days", float, 30.0
        ),
    )

    return Settings(
        path=path,
        data_dir=data_dir,
        database=database,
        mailboxes=mailboxes,
        smtp=smtp,
        agents=agents,
        run=RunSettings(poll_interval=poll),
        threading=threading,
        triage=reader.triage(top.get("triage", {})),
    )


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "an array",
}


class _Reader:
    """Typed access to the decoded TOML with errors that name the file and key."""

    def __init__(self, path: str, base: Path) -> None:
        self.file = path
        self.base = base

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key or None, problem)

    def table(self, value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                full = f"{where}.{key}" if where else key
                raise self.fail(full, f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})")
        return value

    def array(self, top: Mapping[str, Any], key: str) -> list[Any]:
        value = top.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of tables, written [[{key}]]")
        return value

    def required(self, table: Mapping[str, Any], where: str, key: str, kind: type[T]) -> T:
        full = f"{where}.{key}" if where else key
        if key not in table:
            raise self.fail(full, f"is missing; expected {_TYPE_NAMES.get(kind, kind.__name__)}")
        return self._check(table[key], full, kind)

    def optional(
        self, table: Mapping[str, Any], where: str, key: str, kind: type[T], default: T
    ) -> T:
        full = f"{where}.{key}" if where else key
        if key not in table:
            return default
        return self._check(table[key], full, kind)

    def _check(self, value: Any, full: str, kind: type[T]) -> T:
        # TOML integers are acceptable where a float is expected; bools are not ints here.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(full, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(
                full,
                f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {_TYPE_NAMES.get(type(value), type(value).__name__)}",
            )
        return value

    def nonempty(self, table: Mapping[str, Any], where: str, key: str) -> str:
        value = self.required(table, where, key, str).strip()
        if not value:
            raise self.fail(f"{where}.{key}", "must not be empty")
        return value

    def path(self, raw: str) -> Path:
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def database_url(self, url: str) -> str:
        url = url.strip()
        if not url:
            raise self.fail("database.url", 'must not be empty, e.g. "sqlite:///postdesk.db"')
        scheme = url.split(":", 1)[0]
        if scheme == "sqlite" or scheme.startswith("sqlite+"):
            prefix, _, rest = url.partition(":///")
            if not rest:
                raise self.fail(
                    "database.url", 'a SQLite URL looks like "sqlite:///path/to/postdesk.db"'
                )
            if rest.startswith(":memory:"):
                return url
            # A relative SQLite path is relative to the config file, not to the
            # directory the service happened to be started from.
            return f"{prefix}:///{self.path(rest)}"
        if scheme in ("postgresql", "postgres"):
            return self._parsable("postgresql+psycopg" + url[len(scheme) :])
        if scheme.startswith("postgresql+"):
            return self._parsable(url)
        raise self.fail(
            "database.url",
            f"unsupported database {scheme!r}; use sqlite:///FILE or postgresql+psycopg://…",
        )

    def _parsable(self, url: str) -> str:
        # Caught here so a typo such as a non-numeric port names the key; the URL itself
        # is not echoed because it may hold a password.
        try:
            make_url(url)
        except (ArgumentError, ValueError) as exc:
            raise self.fail(
                "database.url",
                f"is not a valid database URL ({exc}); "
                "expected postgresql+psycopg://user:password@host:port/dbname",
            ) from None
        return url

    def secret(self, table: Mapping[str, Any], where: str, key: str, required: bool) -> Secret:
        present = [k for k in (key, f"{key}_file", f"{key}_env") if k in table]
        if len(present) > 1:
            raise self.fail(
                f"{where}.{present[1]}", f"give only one of {key}, {key}_file or {key}_env"
            )
        if not present:
            if required:
                raise self.fail(
                    f"{where}.{key}", f"is missing; set {key}, {key}_file (a path) or {key}_env"
                )
            return Secret("none")
        found = present[0]
        value = self.required(table, where, found, str)
        full = f"{where}.{key}"
        if found == key:
            return Secret("inline", value, self.file, full)
        if found == f"{key}_file":
            return Secret("file", str(self.path(value)), self.file, full)
        return Secret("env", value, self.file, full)

    def security(self, table: Mapping[str, Any], where: str, default: Security) -> Security:
        value = self.optional(table, where, "security", str, default)
        for choice in SECURITY_CHOICES:
            if value == choice:
                return choice
        raise self.fail(f"{where}.security", f"got {value!r}; expected one of ssl, starttls, none")

    def port(self, table: Mapping[str, Any], where: str, default: int) -> int:
        value = self.optional(table, where, "port", int, default)
        if not 0 < value < 65536:
            raise self.fail(f"{where}.port", f"got {value}; expected 1-65535")
        return value

    def optional_path(self, table: Mapping[str, Any], where: str, key: str) -> Path | None:
        value = self.optional(table, where, key, str, "")
        return self.path(value) if value else None

    def positive(self, table: Mapping[str, Any], where: str, key: str, kind: type[T], dflt: T) -> T:
        value = self.optional(table, where, key, kind, dflt)
        if not isinstance(value, int | float) or value <= 0:
            raise self.fail(f"{where}.{key}", "must be a positive number")
        return value

    def mailbox(self, entry: Any, index: int) -> MailboxSettings:
        allowed = {
            "name",
            "address",
            "host",
            "port",
            "security",
            "username",
            "password",
            "password_file",
            "password_env",
            "folder",
            "processed_folder",
            "ca_file",
            "tls_verify",
            "batch_size",
            "batch_bytes",
            "timeout",
        }
        raw = self.table(entry, f"mailbox[{index}]", allowed)
        name = self.nonempty(raw, f"mailbox[{index}]", "name")
        where = f"mailbox {name!r}"
        security = self.security(raw, where, "ssl")
        default_port = {"ssl": 993, "starttls": 143, "none": 143}[security]
        address = self.nonempty(raw, where, "address")
        if "@" not in address:
            raise self.fail(f"{where}.address", f"{address!r} is not an email address")
        folder = self.optional(raw, where, "folder", str, "INBOX") or "INBOX"
        processed = self.optional(raw, where, "processed_folder", str, "")
        if processed and processed == folder:
            raise self.fail(
                f"{where}.processed_folder", "must differ from folder (or be empty to keep mail)"
            )
        return MailboxSettings(
            name=name,
            address=address.lower(),
            host=self.nonempty(raw, where, "host"),
            port=self.port(raw, where, default_port),
            security=security,
            username=self.nonempty(raw, where, "username"),
            password=self.secret(raw, where, "password", required=True),
            folder=folder,
            processed_folder=processed,
            ca_file=self.optional_path(raw, where, "ca_file"),
            tls_verify=self.optional(raw, where, "tls_verify", bool, True),
            batch_size=self.positive(raw, where, "batch_size", int, 200),
            batch_bytes=self.positive(raw, where, "batch_bytes", int, 20 * 1024 * 1024),
            timeout=self.positive(raw, where, "timeout", float, 60.0),
        )

    def smtp(self, entry: Any) -> SmtpSettings:
        allowed = {
            "host",
            "port",
            "security",
            "username",
            "password",
            "password_file",
            "password_env",
            "ca_file",
            "tls_verify",
            "timeout",
        }
        raw = self.table(entry, "smtp", allowed)
        security = self.security(raw, "smtp", "starttls")
        default_port = {"ssl": 465, "starttls": 587, "none": 25}[security]
        username = self.optional(raw, "smtp", "username", str, "")
        return SmtpSettings(
            host=self.nonempty(raw, "smtp", "host"),
            port=self.port(raw, "smtp", default_port),
            security=security,
            username=username,
            password=self.secret(raw, "smtp", "password", required=bool(username)),
            ca_file=self.optional_path(raw, "smtp", "ca_file"),
            tls_verify=self.optional(raw, "smtp", "tls_verify", bool, True),
            timeout=self.positive(raw, "smtp", "timeout", float, 60.0),
        )

    def agent(self, entry: Any, index: int) -> AgentSettings:
        raw = self.table(entry, f"agent[{index}]", {"email", "name"})
        email = self.nonempty(raw, f"agent[{index}]", "email").lower()
        if "@" not in email:
            raise self.fail(f"agent[{index}].email", f"{email!r} is not an email address")
        return AgentSettings(
            email=email, name=self.optional(raw, f"agent[{index}]", "name", str, "")
        )

    def strings(self, table: Mapping[str, Any], where: str, key: str) -> tuple[str, ...]:
        """An optional array of non-empty strings (empty when the key is absent)."""
        value = self.optional(table, where, key, list, [])
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{where}.{key}[{i}]", "expected a non-empty string")
            out.append(item.strip())
        return tuple(out)

    def triage(self, entry: Any) -> TriageSettings:
        allowed = {
            "target_precision",
            "retrain_interval_hours",
            "priority_levels",
            "vip_senders",
            "vip_domains",
            "vip_priority",
            "keywords",
            "matrix",
        }
        raw = self.table(entry, "triage", allowed)
        precision = self.optional(raw, "triage", "target_precision", float, 0.9)
        if not 0.5 <= precision < 1.0:
            raise self.fail("triage.target_precision", "expected a number from 0.5 to below 1")
        interval = self.optional(raw, "triage", "retrain_interval_hours", float, 0.0)
        if interval < 0:
            raise self.fail("triage.retrain_interval_hours", "must be 0 (never) or positive")
        levels = self.strings(raw, "triage", "priority_levels") or DEFAULT_PRIORITY_LEVELS
        if len(set(levels)) != len(levels):
            raise self.fail("triage.priority_levels", "lists a priority twice")
        known = f"one of priority_levels ({', '.join(levels)})"

        def level(value: str, key: str) -> str:
            if value not in levels:
                raise self.fail(key, f"got {value!r}; expected {known}")
            return value

        senders = tuple(s.lower() for s in self.strings(raw, "triage", "vip_senders"))
        for i, sender in enumerate(senders):
            if "@" not in sender:
                raise self.fail(f"triage.vip_senders[{i}]", f"{sender!r} is not an email address")
        domains = tuple(d.lower().lstrip("@") for d in self.strings(raw, "triage", "vip_domains"))
        vip = level(
            self.optional(
                raw, "triage", "vip_priority", str, "high" if "high" in levels else levels[-1]
            ),
            "triage.vip_priority",
        )
        keywords_table = self.table(raw.get("keywords", {}), "triage.keywords", set(levels))
        keywords = tuple(
            (name, self.strings(keywords_table, "triage.keywords", name))
            for name in levels
            if name in keywords_table
        )
        matrix: list[tuple[str, str, str]] = []
        matrix_table = self.optional(raw, "triage", "matrix", dict, {})
        for impact, row in matrix_table.items():
            where = f"triage.matrix.{impact}"
            if not isinstance(row, dict):
                raise self.fail(where, "must be a table mapping urgency to a priority")
            for urgency, value in row.items():
                if not isinstance(value, str):
                    raise self.fail(f"{where}.{urgency}", "expected a priority name (a string)")
                matrix.append((str(impact), str(urgency), level(value, f"{where}.{urgency}")))
        return TriageSettings(
            target_precision=precision,
            retrain_interval_hours=interval,
            priority_levels=levels,
            vip_senders=senders,
            vip_domains=domains,
            vip_priority=vip,
            keywords=keywords,
            matrix=tuple(matrix),
        )
