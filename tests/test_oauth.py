"""XOAUTH2 logins against real servers: Dovecot with its oauth2 passdb (which checks each
bearer token at a token introspection endpoint), an aiosmtpd sink offering AUTH XOAUTH2,
and an OAuth token endpoint on loopback that rotates the refresh token at every refresh
(postdesk/testing/oauthserver.py), as Microsoft's does.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from postdesk import oauth
from postdesk.config import MailboxSettings, OAuthSettings, Secret, SmtpSettings, parse_settings
from postdesk.errors import ConfigError, MailboxError, MailboxLoginError
from postdesk.ingest.imap import ImapSource
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.notify.outbox import enqueue
from postdesk.notify.smtp import OutboxSender
from postdesk.testing.cli import Cli
from postdesk.testing.config import toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.oauthserver import OAuthServer
from postdesk.testing.smtpsink import SmtpSink


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[OAuthServer]:
    with OAuthServer("nobody@example.com") as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(
    dovecot_binary: Path, tmp_path_factory: pytest.TempPathFactory, oauth_server: OAuthServer
) -> Iterator[Dovecot]:
    """A Dovecot that also takes XOAUTH2, checking tokens at `oauth_server`."""
    server = Dovecot(
        tmp_path_factory.mktemp("dovecot-oauth"),
        oauth2_introspection_url=oauth_server.introspection_url,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def account(oauth_dovecot: Dovecot, oauth_server: OAuthServer) -> MailUser:
    user = oauth_dovecot.add_user()
    oauth_server.account(user.email)
    return user


def refresh_file(tmp_path: Path, server: OAuthServer) -> Path:
    path = tmp_path / "refresh-token"
    path.write_text(server.refresh_token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def refresh_file_with(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "refresh-token"
    path.write_text(token + "\n", encoding="utf-8")
    return path


def refresh_oauth(server: OAuthServer, path: Path) -> OAuthSettings:
    return OAuthSettings(
        token_url=server.token_url, client_id=server.client_id, refresh_token_file=path
    )


def command_oauth(*argv: str) -> OAuthSettings:
    return OAuthSettings(token_command=argv, command_timeout=5.0)


def token_script(tmp_path: Path, body: str) -> tuple[str, str]:
    """A token command: python running `body` (the token is never on its command line)."""
    script = tmp_path / "token.py"
    script.write_text(body, encoding="utf-8")
    return sys.executable, str(script)


def mailbox(dovecot: Dovecot, user: MailUser, oauth: OAuthSettings) -> MailboxSettings:
    return MailboxSettings(
        name="gmail",
        address=user.email,
        host="127.0.0.1",
        port=dovecot.port,
        security="none",
        username=user.email,
        auth="xoauth2",
        oauth=oauth,
        timeout=10.0,
    )


def inbox_count(box: MailboxSettings) -> int:
    with ImapSource(box) as source:
        return source.select("INBOX").exists


def test_imap_refresh_grant_saves_the_rotated_token_and_caches_the_access_token(
    oauth_dovecot: Dovecot, account: MailUser, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    oauth_dovecot.append(account, b"Subject: hi\r\n\r\nhello\r\n")
    first = oauth_server.refresh_token
    path = refresh_file(tmp_path, oauth_server)
    box = mailbox(oauth_dovecot, account, refresh_oauth(oauth_server, path))

    assert inbox_count(box) == 1
    assert oauth_server.requests == 1
    # The provider rotated the refresh token: the new one replaced the file, owner-only.
    saved = path.read_text(encoding="utf-8").strip()
    assert saved == oauth_server.refresh_token != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # A second connection uses the cached access token: no new refresh.
    assert inbox_count(box) == 1
    assert oauth_server.requests == 1
    assert oauth_server.introspections == 2


def test_imap_refused_cached_token_is_refreshed_once_and_retried(
    oauth_dovecot: Dovecot, account: MailUser, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    path = refresh_file(tmp_path, oauth_server)
    box = mailbox(oauth_dovecot, account, refresh_oauth(oauth_server, path))
    assert inbox_count(box) == 0
    oauth_server.revoke_access_tokens()  # revoked, or expired earlier than announced

    assert inbox_count(box) == 0
    assert oauth_server.requests == 2
    assert path.read_text(encoding="utf-8").strip() == oauth_server.refresh_token


def test_imap_a_refused_refresh_token_is_one_line_naming_mailbox_and_file(
    oauth_dovecot: Dovecot, account: MailUser, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    path = tmp_path / "refresh-token"
    path.write_text("rt-revoked\n", encoding="utf-8")
    box = mailbox(oauth_dovecot, account, refresh_oauth(oauth_server, path))
    # Retrying cannot help until someone writes a new refresh token: a refused login.
    with pytest.raises(MailboxLoginError) as caught:
        inbox_count(box)
    message = str(caught.value)
    assert message.startswith(f"mailbox 'gmail': the refresh token in {path} was refused")
    assert "invalid_grant" in message and "\n" not in message
    assert "rt-revoked" not in message


def test_imap_a_fresh_token_the_server_refuses_is_not_retried(
    oauth_dovecot: Dovecot, account: MailUser, tmp_path: Path
) -> None:
    box = mailbox(oauth_dovecot, account, command_oauth(*token_script(tmp_path, "print('at-x')")))
    with pytest.raises(MailboxLoginError) as caught:
        inbox_count(box)
    assert str(caught.value) == (
        f"mailbox 'gmail' (127.0.0.1:{oauth_dovecot.port}): login as {account.email!r} was "
        "refused; check the access token"
    )


def test_imap_token_command(
    oauth_dovecot: Dovecot, account: MailUser, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(oauth_server.issue(), encoding="utf-8")
    script = f"print(open({str(token_file)!r}).read())"
    box = mailbox(oauth_dovecot, account, command_oauth(*token_script(tmp_path, script)))
    assert inbox_count(box) == 0
    assert oauth_server.requests == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "import sys; print('x'); sys.stderr.write('trace\\nno account\\n'); sys.exit(3)",
            "token_command 'python' failed with exit status 3: no account",
        ),
        ("pass", "token_command 'python' printed no access token"),
        ("import time; time.sleep(30)", "token_command 'python' did not finish within 1 s"),
    ],
)
def test_a_failing_token_command_is_one_line_naming_the_mailbox(
    oauth_dovecot: Dovecot, account: MailUser, tmp_path: Path, body: str, expected: str
) -> None:
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    oauth = OAuthSettings(
        token_command=(str(python), token_script(tmp_path, body)[1]), command_timeout=1.0
    )
    with pytest.raises(MailboxError) as caught:
        inbox_count(mailbox(oauth_dovecot, account, oauth))
    # The command may fail for a passing reason (no network): not a refused login.
    assert not isinstance(caught.value, MailboxLoginError)
    assert str(caught.value).startswith(f"mailbox 'gmail': {expected}")
    assert "\n" not in str(caught.value)


def test_an_unreachable_token_endpoint_is_not_a_refused_login(
    oauth_dovecot: Dovecot, account: MailUser, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    oauth = OAuthSettings(
        token_url=f"http://127.0.0.1:{port}/token",
        client_id="id",
        refresh_token_file=refresh_file_with(tmp_path, "rt-x"),
    )
    with pytest.raises(MailboxError) as caught:
        inbox_count(mailbox(oauth_dovecot, account, oauth))
    assert not isinstance(caught.value, MailboxLoginError)
    assert str(caught.value).startswith(
        f"mailbox 'gmail': cannot reach the token endpoint 127.0.0.1:{port} ("
    )


def test_a_missing_token_command(oauth_dovecot: Dovecot, account: MailUser, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-tool")
    with pytest.raises(MailboxLoginError, match=r"^mailbox 'gmail': token_command .* not found"):
        inbox_count(mailbox(oauth_dovecot, account, command_oauth(missing)))


# -- SMTP ---------------------------------------------------------------------------------


def message(n: int) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "support@example.com"
    mail["To"] = "alice@example.com"
    mail["Subject"] = f"reply {n}"
    mail["Message-ID"] = f"<oauth-{n}@example.com>"
    mail.set_content("Hello\n")
    return mail


@pytest.fixture
def xoauth2_sink(oauth_server: OAuthServer) -> Iterator[SmtpSink]:
    oauth_server.account("support@example.com")
    with SmtpSink(xoauth2=oauth_server.valid) as sink:
        yield sink


def smtp(sink: SmtpSink, oauth: OAuthSettings) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=sink.port,
        security="none",
        username="support@example.com",
        auth="xoauth2",
        oauth=oauth,
        timeout=10.0,
    )


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """SQLite only: the outbox's database behaviour is not what these tests are about."""
    database = Database(sqlite_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


def send(db: Database, settings: SmtpSettings, n: int) -> Any:
    with db.transaction() as session:
        enqueue(session.connection(), message(n), kind="acknowledgement")
    return OutboxSender(db, settings, owner="test-sender").drain()


def test_smtp_xoauth2_with_refresh_and_one_retry_after_a_refused_token(
    db: Database, xoauth2_sink: SmtpSink, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    path = refresh_file(tmp_path, oauth_server)
    settings = smtp(xoauth2_sink, refresh_oauth(oauth_server, path))
    assert send(db, settings, 1).sent == 1
    assert [m.auth_user for m in xoauth2_sink.messages] == ["support@example.com"]
    assert path.read_text(encoding="utf-8").strip() == oauth_server.refresh_token
    assert oauth_server.requests == 1

    oauth_server.revoke_access_tokens()
    assert send(db, settings, 2).sent == 1
    assert oauth_server.requests == 2
    assert len(xoauth2_sink.messages) == 2


def test_smtp_token_command_and_its_failure(
    db: Database, xoauth2_sink: SmtpSink, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    good = f"print({oauth_server.issue()!r})"
    assert send(db, smtp(xoauth2_sink, command_oauth(*token_script(tmp_path, good))), 1).sent == 1

    bad = "import sys; sys.stderr.write('not signed in'); sys.exit(1)"
    result = send(db, smtp(xoauth2_sink, command_oauth(*token_script(tmp_path, bad))), 2)
    assert result.sent == 0 and result.retrying == 1
    (error,) = result.errors
    assert "[smtp]: token_command" in error and "exit status 1: not signed in" in error
    assert len(xoauth2_sink.messages) == 1


# -- doctor and config --------------------------------------------------------------------


def test_doctor_logs_in_with_xoauth2_and_reports_a_failing_command(
    oauth_dovecot: Dovecot,
    account: MailUser,
    oauth_server: OAuthServer,
    xoauth2_sink: SmtpSink,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    oauth_server.account(account.email)
    path = refresh_file(tmp_path, oauth_server)
    imap_block = (
        "[[mailbox]]\n"
        'name = "gmail"\n'
        f"address = {toml_str(account.email)}\n"
        'host = "127.0.0.1"\n'
        f"port = {oauth_dovecot.port}\n"
        'security = "none"\n'
        f"username = {toml_str(account.email)}\n"
        'auth = "xoauth2"\n'
        "[mailbox.oauth]\n"
        f"token_url = {toml_str(oauth_server.token_url)}\n"
        f"client_id = {toml_str(oauth_server.client_id)}\n"
        f"refresh_token_file = {toml_str(str(path))}\n"
    )
    failing = token_script(tmp_path, "import sys; sys.exit(2)")
    smtp_block = (
        "[smtp]\n"
        'host = "127.0.0.1"\n'
        f"port = {xoauth2_sink.port}\n"
        'security = "none"\n'
        'username = "support@example.com"\n'
        'auth = "xoauth2"\n'
        "[smtp.oauth]\n"
        f"token_command = [{toml_str(failing[0])}, {toml_str(failing[1])}]\n"
    )
    Cli(write_config(tmp_path, sqlite_url))("init")
    config = write_config(tmp_path, sqlite_url, imap_block, smtp_block)
    # Google does not rotate refresh tokens, so a file left readable stays so (a rotated
    # token is saved owner-only).
    monkeypatch.setattr(oauth_server, "rotate", False)
    path.chmod(0o644)
    lines = Cli(config)("doctor", "--timeout", "5", code=1).stdout.splitlines()
    assert (
        f"warn  mailbox 'gmail': refresh_token_file {path} is readable by others (mode 644); "
        f"fix: chmod 600 {path}"
    ) in lines
    assert f"ok    mailbox 'gmail': logged in as {account.email!r} with XOAUTH2" in lines
    (smtp_line,) = [line for line in lines if line.startswith("FAIL  smtp")]
    assert smtp_line.startswith("FAIL  smtp: access token: [smtp]: token_command")
    assert "exit status 2" in smtp_line and "fix: run token_command of [smtp] by hand" in smtp_line


def parse(mailbox: dict[str, object]) -> MailboxSettings:
    base: dict[str, object] = {
        "name": "m",
        "address": "m@example.com",
        "host": "imap.example.com",
        "username": "m@example.com",
        "auth": "xoauth2",
    }
    data = {"database": {"url": "sqlite:///x.db"}, "mailbox": [base | mailbox]}
    return parse_settings(data, Path("/etc/postdesk.toml")).mailboxes[0]


def test_config_presets_and_one_line_errors() -> None:
    box = parse(
        {
            "oauth": {
                "provider": "microsoft",
                "tenant": "contoso.example",
                "client_id": "id",
                "refresh_token_file": "rt",
            }
        }
    )
    assert box.oauth is not None and box.password == Secret("none")
    assert box.oauth.token_url == (
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    )
    assert "offline_access" in box.oauth.scope
    assert box.oauth.refresh_token_file == Path("/etc/rt")
    google = parse({"oauth": {"provider": "google", "client_id": "i", "refresh_token_file": "r"}})
    assert google.oauth is not None
    assert google.oauth.token_url == "https://oauth2.googleapis.com/token"

    cases: list[tuple[dict[str, object], str]] = [
        ({}, "mailbox 'm'.oauth: is missing; auth = \"xoauth2\" needs token_command"),
        ({"oauth": {"client_id": "x"}}, "mailbox 'm'.oauth.provider: is missing"),
        (
            {"oauth": {"provider": "google", "refresh_token_file": "r"}},
            "mailbox 'm'.oauth.client_id: is missing; the refresh grant needs it",
        ),
        (
            {"oauth": {"token_command": ["x"], "provider": "google"}},
            "mailbox 'm'.oauth.provider: is not used with token_command",
        ),
        (
            {"oauth": {"token_command": ["x"]}, "password": "p"},
            "mailbox 'm'.password: is not used with auth = \"xoauth2\"",
        ),
        (
            {"oauth": {"token_commands": ["x"]}},
            "mailbox 'm'.oauth.token_commands: unknown key; did you mean 'token_command'?",
        ),
        (
            {"auth": "password", "password": "p", "oauth": {"token_command": ["x"]}},
            "mailbox 'm'.oauth: is only used with auth = \"xoauth2\"",
        ),
        (
            {"oauth": {"token_url": "http://example.com/t", "client_id": "i"}},
            "mailbox 'm'.oauth.token_url: must be https://",
        ),
    ]
    for mailbox, expected in cases:
        with pytest.raises(ConfigError) as caught:
            parse(mailbox)
        assert f"/etc/postdesk.toml: {expected}" in str(caught.value), str(caught.value)


def test_a_rotated_refresh_token_that_cannot_be_saved_fails_the_refresh(
    oauth_server: OAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old refresh token may be spent once the provider rotated it, so the access
    token is not used when its successor cannot be saved. The write failure is simulated
    (tests run as root here, which writes into read-only directories)."""

    def no_space(target: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(oauth, "write_atomically", no_space)
    oauth_server.account("x@example.com")
    path = refresh_file(tmp_path, oauth_server)
    with pytest.raises(oauth.TokenError) as caught:
        oauth.TokenSource(refresh_oauth(oauth_server, path), "[smtp]").token()
    assert str(caught.value) == (
        f"[smtp]: the provider rotated the refresh token but {path} cannot be written "
        "(No space left on device); make it writable by postdesk's user and get a new "
        "refresh token"
    )


def test_client_secrets_and_refresh_tokens_are_masked_in_logs(tmp_path: Path) -> None:
    from postdesk.logs import secrets_of

    refresh = tmp_path / "rt"
    refresh.write_text("rt-0123456789abcdef\n", encoding="utf-8")
    oauth_table = {
        "provider": "google",
        "client_id": "id",
        "client_secret": "cs-0123456789abcdef",
        "refresh_token_file": str(refresh),
    }
    data = {
        "database": {"url": "sqlite:///x.db"},
        "mailbox": [
            {
                "name": "m",
                "address": "m@example.com",
                "host": "imap.example.com",
                "username": "m@example.com",
                "auth": "xoauth2",
                "oauth": oauth_table,
            }
        ],
    }
    found = secrets_of(parse_settings(data, tmp_path / "postdesk.toml"))
    assert {"rt-0123456789abcdef", "cs-0123456789abcdef"} <= found


def test_processes_sharing_a_rotating_refresh_token_refresh_one_at_a_time(
    oauth_server: OAuthServer, tmp_path: Path
) -> None:
    """Four processes (think `postdesk run` and `postdesk doctor`) start a refresh at once;
    each rotation spends the token the others read, unless they take turns."""
    oauth_server.account("x@example.com")
    path = refresh_file(tmp_path, oauth_server)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from postdesk.config import OAuthSettings\n"
        "from postdesk.oauth import TokenSource\n"
        "settings = OAuthSettings(token_url=sys.argv[1], client_id=sys.argv[2],"
        " refresh_token_file=Path(sys.argv[3]))\n"
        "print(len(TokenSource(settings, 'p').token()))\n"
    )
    argv = [sys.executable, "-c", script, oauth_server.token_url, oauth_server.client_id]
    procs = [
        subprocess.Popen([*argv, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outcomes = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outcomes
    assert oauth_server.requests == 4
    assert path.read_text(encoding="utf-8").strip() == oauth_server.refresh_token
