"""`postdesk doctor`: check everything `postdesk run` needs, and say how to fix what fails.

Checks, in order: the config file, the data directory, the database and its schema, then
every mailbox (resolve the host, connect and secure the connection as configured, log
in with the password or an XOAUTH2 access token, EXAMINE the folder, IDLE offered or
not) and the SMTP relay (connect, TLS, AUTH when a username is configured; no mail is
sent). The network checks of different servers run
side by side, each bounded by a timeout, so a hung server costs one timeout, not one per
mailbox.

The mailbox checks open their own IMAP session rather than going through
`ImapSource`, whose errors are one line each for the service's log: here each kind of
failure (unknown host, refused connection, TLS, login, folder) needs its own fix. They
use `ImapSource`'s TLS settings, so they connect exactly as `postdesk run` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import ipaddress
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiosmtplib
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from postdesk.config import MailboxSettings, OAuthSettings, Secret, Settings, SmtpSettings
from postdesk.errors import ConfigError, DatabaseError
from postdesk.ingest.imap import _describe, _tls_context
from postdesk.models.db import Database, sqlite_file
from postdesk.models.migrate import current_revision, head_revision
from postdesk.oauth import TokenError, token_source
from postdesk.termsafe import terminal_safe

DEFAULT_TIMEOUT = 10.0
# A missing folder's message lists at most this many of the folders that exist.
FOLDERS_SHOWN = 15


@dataclass(frozen=True)
class Check:
    """The outcome of one check: `state` is "ok", "warn" (works, but risky) or "FAIL"."""

    name: str
    state: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "FAIL"

    def line(self) -> str:
        """The check as one line, made terminal-safe: a server's words may be in it."""
        text = f"{self.state:<5} {self.name}: {self.detail}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(terminal_safe(text).split("\n"))


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, "FAIL", detail, fix)


def check_config(path: Path) -> tuple[Check, Settings | None]:
    """Read the config file: its one-line error, or what it configures."""
    from postdesk.config import load_settings

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return _fail("config", str(exc)), None
    parts = [f"{len(settings.mailboxes)} mailbox(es)"]
    parts.append("[smtp]" if settings.smtp is not None else "no [smtp] (nothing is sent)")
    if not settings.mailboxes:
        return (
            _fail("config", f"{path}: no [[mailbox]] configured", "add a [[mailbox]] block"),
            settings,
        )
    return _ok("config", f"{path}: {', '.join(parts)}"), settings


def check_data_dir(settings: Settings) -> Check:
    """The data directory exists (or can be made) and postdesk may write to it."""
    data_dir = settings.data_dir
    if not data_dir.exists():
        parent = next((p for p in data_dir.parents if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK):
            return _ok("data_dir", f"{data_dir} does not exist yet; `postdesk init` creates it")
        return _fail(
            "data_dir",
            f"{data_dir} does not exist and cannot be created",
            f"create it, writable by postdesk's user, or set data_dir in {settings.path}",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".postdesk-doctor-", dir=data_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return _fail(
            "data_dir",
            f"cannot write to {data_dir} ({exc.strerror or exc})",
            "make it writable by postdesk's user (attachments, models and keys go there)",
        )
    return _ok("data_dir", f"{data_dir} is writable")


def check_database(settings: Settings) -> Check:
    """The database answers and its schema is the one this postdesk needs."""
    url = settings.database.url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return _fail("database", f"{path} does not exist", "run `postdesk init`")
    db = Database(url)
    try:
        try:
            db.check_reachable()
        except DatabaseError as exc:
            return _fail(
                "database",
                str(exc),
                f"check [database] url in {settings.path} and that the server is running",
            )
        current, head = current_revision(db), head_revision()
    finally:
        db.dispose()
    where = db.display_url
    if current == head:
        return _ok("database", f"{where}, schema {current} (current)")
    if current is None:
        return _fail("database", f"{where} has no postdesk schema", "run `postdesk init`")
    from postdesk.models.migrate import _known_revisions

    if current not in _known_revisions():
        return _fail(
            "database",
            f"{where} is at schema {current}, newer than this postdesk ({head})",
            "upgrade postdesk",
        )
    return _fail(
        "database",
        f"{where} is at schema {current}, this postdesk needs {head}: upgrade needed",
        "run `postdesk init`",
    )


def password_hint(secret: Secret, section: str, config: Path) -> str:
    """Where the password that was refused comes from, for the fix."""
    if secret.source == "file":
        return f"check the password in {secret.value} (password_file of {section}) and username"
    if secret.source == "env":
        return f"check the password in ${secret.value} (password_env of {section}) and username"
    return f"check password and username of {section} in {config}"


def token_hint(oauth: OAuthSettings | None, section: str, config: Path) -> str:
    """How to fix an access token that could not be had."""
    if oauth is not None and oauth.token_command:
        return f"run token_command of {section} by hand and fix what it says"
    return f"check the oauth settings of {section} in {config} and the refresh token file"


def _token_file_mode(oauth: OAuthSettings | None, name: str) -> list[Check]:
    """A warning when others may read the refresh token file (it is a password)."""
    path = oauth.refresh_token_file if oauth is not None else None
    if path is None:
        return []
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return []  # the refresh already said what is wrong with it
    if not mode & 0o077:
        return []
    return [
        Check(
            name,
            "warn",
            f"refresh_token_file {path} is readable by others (mode {mode:o})",
            f"chmod 600 {path}",
        )
    ]


def scope_hint(section: str, protocol: str) -> str:
    """How to fix an access token the server refused."""
    scope = (
        "https://outlook.office.com/IMAP.AccessAsUser.All"
        if protocol == "imap"
        else "https://outlook.office.com/SMTP.Send"
    )
    return (
        f"check username of {section} is the account the token is for, and the token's "
        f"scopes (Gmail: https://mail.google.com/; Microsoft 365: {scope}, and "
        f"{protocol.upper()} AUTH enabled for the mailbox)"
    )


def _resolve(host: str, port: int) -> str | None:
    """None when `host` resolves, else why not."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve host {host!r} ({exc})"
    return None


def _connect_fix(exc: BaseException, section: str, config: Path, tls_ports: str) -> str:
    """How to fix a failed connection or TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"set ca_file of {section} to the CA that signed the server's certificate, "
            "or give the server a trusted certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return f"check port and security of {section} in {config} ({tls_ports})"
    if isinstance(exc, ConnectionRefusedError):
        return f"check host and port of {section} in {config}, and that the server runs"
    if isinstance(exc, socket.timeout | TimeoutError):
        return (
            f"check host and port of {section} in {config}, and that no firewall drops "
            "the connection"
        )
    return f"check host, port and security of {section} in {config}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_version(client: Any) -> str:
    sock = getattr(getattr(client, "_imap", None), "sock", None)
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return f" ({version})" if version else ""


def check_mailbox(box: MailboxSettings, config: Path, timeout: float) -> list[Check]:
    """Connect to one mailbox as `postdesk run` would; one Check per step reached."""
    name = f"mailbox {box.name!r}"
    section = f"[[mailbox]] {box.name!r}"
    xoauth2 = box.auth == "xoauth2"
    try:
        password = token_source(box.oauth, name).token() if xoauth2 else box.password.reveal()
    except ConfigError as exc:
        return [_fail(name, f"password: {exc}")]
    except TokenError as exc:
        return [_fail(name, f"access token: {exc}", token_hint(box.oauth, section, config))]
    unresolved = _resolve(box.host, box.port)
    if unresolved:
        return [_fail(name, unresolved, f"check host of {section} in {config}")]
    address = f"{box.host}:{box.port}"
    checks: list[Check] = _token_file_mode(box.oauth if xoauth2 else None, name)
    client: Any = None
    doing = "connecting to"
    try:
        client = IMAPClient(
            box.host,
            port=box.port,
            ssl=box.security == "ssl",
            ssl_context=_tls_context(box) if box.security == "ssl" else None,
            timeout=min(timeout, box.timeout),
        )
        if box.security == "starttls":
            if not client.has_capability("STARTTLS"):
                return [
                    _fail(
                        name,
                        f"{address} does not offer STARTTLS",
                        f'set security = "ssl" (port 993) in {section}, or check the port',
                    )
                ]
            doing = "starting TLS with"
            client.starttls(_tls_context(box))
        tls = {"ssl": "TLS", "starttls": "STARTTLS", "none": "no TLS"}[box.security]
        checks.append(_ok(name, f"connected to {address}, {tls}{_tls_version(client)}"))
        if box.security == "none" and not _loopback(box.host):
            checks.append(
                Check(
                    name,
                    "warn",
                    f"the {'access token' if xoauth2 else 'password'} crosses the network "
                    "unencrypted",
                    f'set security = "ssl" or "starttls" in {section}',
                )
            )
        doing = "logging in to"
        try:
            if xoauth2:
                client.oauth2_login(box.username, password)
            elif box.username.isascii() and password.isascii():
                client.login(box.username, password)
            else:
                client.plain_login(box.username, password)
        except LoginError:
            checks.append(
                _fail(
                    name,
                    f"{'XOAUTH2 ' if xoauth2 else ''}login as {box.username!r} refused",
                    scope_hint(section, "imap")
                    if xoauth2
                    else password_hint(box.password, section, config),
                )
            )
            return checks
        how = " with XOAUTH2" if xoauth2 else ""
        checks.append(_ok(name, f"logged in as {box.username!r}{how}"))
        doing = "reading folders of"
        checks.append(_folder(client, box, name, section))
        idle = client.has_capability("IDLE")
        checks.append(
            _ok(name, "the server offers IDLE" if idle else "the server does not offer IDLE")
        )
    except (OSError, IMAPClientError) as exc:
        checks.append(
            _fail(
                name,
                f"{doing} {address} failed: {_describe(exc)}",
                _connect_fix(exc, section, config, '"ssl" is usually 993, "starttls" 143'),
            )
        )
    finally:
        if client is not None:
            try:
                client.logout()
            except Exception:
                with contextlib.suppress(Exception):
                    client.shutdown()
    return checks


def _folder(client: Any, box: MailboxSettings, name: str, section: str) -> Check:
    """EXAMINE (read-only SELECT) the configured folder; list the others if it is missing."""
    try:
        info = client.select_folder(box.folder, readonly=True)
    except IMAPClientError:
        folders = sorted(str(entry[2]) for entry in client.list_folders())
        close = difflib.get_close_matches(box.folder, folders, n=1, cutoff=0.5)
        shown = ", ".join(repr(f) for f in folders[:FOLDERS_SHOWN])
        if len(folders) > FOLDERS_SHOWN:
            shown += f" and {len(folders) - FOLDERS_SHOWN} more"
        hint = f"did you mean {close[0]!r}? " if close else ""
        return _fail(
            name,
            f"folder {box.folder!r} does not exist (folders: {shown or 'none'})",
            f"{hint}set folder of {section} to one that exists",
        )
    exists = int(info.get(b"EXISTS", 0))
    detail = f"folder {box.folder!r} has {exists} message(s)"
    if box.processed_folder and not client.folder_exists(box.processed_folder):
        detail += f"; processed_folder {box.processed_folder!r} is created at the first pass"
    return _ok(name, detail)


def check_smtp(smtp: SmtpSettings, config: Path, timeout: float) -> list[Check]:
    """Connect to the relay, secure it and log in as configured; QUIT without sending."""
    name = "smtp"
    xoauth2 = smtp.auth == "xoauth2"
    password = ""
    try:
        if xoauth2:
            password = token_source(smtp.oauth, "[smtp]").token()
        elif smtp.username:
            password = smtp.password.reveal()
    except ConfigError as exc:
        return [_fail(name, f"password: {exc}")]
    except TokenError as exc:
        return [_fail(name, f"access token: {exc}", token_hint(smtp.oauth, "[smtp]", config))]
    unresolved = _resolve(smtp.host, smtp.port)
    if unresolved:
        return [_fail(name, unresolved, f"check host of [smtp] in {config}")]
    address = f"{smtp.host}:{smtp.port}"
    context = None
    if smtp.security != "none":
        context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
        if not smtp.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

    async def probe() -> list[Check]:
        client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            use_tls=smtp.security == "ssl",
            start_tls=smtp.security == "starttls",
            tls_context=context,
            timeout=min(timeout, smtp.timeout),
        )
        found: list[Check] = _token_file_mode(smtp.oauth if xoauth2 else None, name)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            return [
                _fail(
                    name,
                    f"connecting to {address} failed: {_one_line(exc)}",
                    _connect_fix(cause, "[smtp]", config, '"ssl" is usually 465, "starttls" 587'),
                )
            ]
        try:
            tls = {"ssl": "TLS", "starttls": "STARTTLS", "none": "no TLS"}[smtp.security]
            found.append(_ok(name, f"connected to {address}, {tls}"))
            if smtp.username:
                try:
                    if xoauth2:
                        await client.auth_xoauth2(smtp.username, password)
                    else:
                        await client.login(smtp.username, password)
                except aiosmtplib.SMTPAuthenticationError as exc:
                    found.append(
                        _fail(
                            name,
                            f"{'XOAUTH2 ' if xoauth2 else ''}login as {smtp.username!r} "
                            f"refused ({exc.code} {exc.message})",
                            scope_hint("[smtp]", "smtp")
                            if xoauth2
                            else password_hint(smtp.password, "[smtp]", config),
                        )
                    )
                    return found
                how = " with XOAUTH2" if xoauth2 else ""
                found.append(_ok(name, f"logged in as {smtp.username!r}{how}"))
        except (aiosmtplib.SMTPException, OSError) as exc:
            found.append(_fail(name, f"{address}: {_one_line(exc)}"))
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        return found

    return asyncio.run(probe())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def diagnose(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> list[Check]:
    """Every check after the config's, in a stable order (network checks side by side)."""
    checks = [check_data_dir(settings), check_database(settings)]
    jobs: list[Callable[[], list[Check]]] = [
        partial(check_mailbox, box, settings.path, timeout) for box in settings.mailboxes
    ]
    smtp = settings.smtp
    if smtp is not None:
        jobs.append(partial(check_smtp, smtp, settings.path, timeout))
    if jobs:
        with ThreadPoolExecutor(max_workers=min(len(jobs), 8)) as pool:
            for found in pool.map(lambda job: job(), jobs):
                checks.extend(found)
    return checks
