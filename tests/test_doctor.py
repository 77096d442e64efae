"""`postdesk doctor` against the real test Dovecot and an aiosmtpd SMTP sink.

Every failure here really happens: a refused login, a host name that cannot resolve
(`.invalid` is reserved, RFC 2606, so no query leaves the machine for it), a folder the
account does not have, an SMTP port nobody listens on.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.cli import Cli
from postdesk.testing.config import mailbox_toml, toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.smtpsink import SmtpSink


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    db = Database(sqlite_url)
    upgrade(db)
    db.dispose()
    return sqlite_url


def smtp_block(sink: SmtpSink, port: int | None = None, extra: str = "") -> str:
    return f'[smtp]\nhost = "127.0.0.1"\nport = {port or sink.port}\nsecurity = "none"\n{extra}\n'


def doctor(tmp_path: Path, db_url: str, *blocks: str, code: int) -> list[str]:
    config = write_config(tmp_path, db_url, *blocks)
    result = Cli(config)("doctor", "--timeout", "5", code=code)
    if code:
        assert "checks failed" in result.stderr
    return result.stdout.splitlines()


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


def test_everything_ok(
    dovecot_server: Dovecot, mail_user: MailUser, smtp_sink: SmtpSink, db_url: str, tmp_path: Path
) -> None:
    dovecot_server.create_folder(mail_user, "Done")
    lines = doctor(
        tmp_path,
        db_url,
        mailbox_toml(dovecot_server, mail_user, processed_folder="Done"),
        mailbox_toml(dovecot_server, dovecot_server.add_user(), name="tls", security="ssl"),
        smtp_block(smtp_sink),
        code=0,
    )
    assert failures(lines) == []
    text = "\n".join(lines)
    assert lines[0].startswith("ok    config: ") and "2 mailbox(es), [smtp]" in lines[0]
    assert lines[1].startswith("ok    data_dir: ")
    assert lines[2].startswith("ok    database: ") and "(current)" in lines[2]
    assert f"ok    mailbox 'support': connected to 127.0.0.1:{dovecot_server.port}, no TLS" in text
    assert f"ok    mailbox 'support': logged in as {mail_user.email!r}" in text
    assert "ok    mailbox 'support': folder 'INBOX' has 0 message(s)" in text
    assert "ok    mailbox 'support': the server offers IDLE" in text
    # The ssl mailbox reports the TLS version the handshake agreed on.
    assert (
        f"ok    mailbox 'tls': connected to 127.0.0.1:{dovecot_server.ssl_port}, TLS (TLSv1."
        in text
    )
    assert f"ok    smtp: connected to 127.0.0.1:{smtp_sink.port}, no TLS" in text
    # Doctor sends nothing.
    assert smtp_sink.messages == []


def test_wrong_password_names_the_password_file(
    dovecot_server: Dovecot, mail_user: MailUser, db_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "support.password"
    secret.write_text("not-the-password\n", encoding="utf-8")
    block = mailbox_toml(dovecot_server, mail_user).replace(
        f"password = {toml_str(mail_user.password)}", f"password_file = {toml_str(str(secret))}"
    )
    lines = doctor(tmp_path, db_url, block, code=1)
    assert failures(lines) == [
        f"FAIL  mailbox 'support': login as {mail_user.email!r} refused; fix: check the "
        f"password in {secret} (password_file of [[mailbox]] 'support') and username"
    ]


def test_unknown_host(
    mail_user: MailUser, dovecot_server: Dovecot, db_url: str, tmp_path: Path
) -> None:
    block = mailbox_toml(dovecot_server, mail_user).replace(
        'host = "127.0.0.1"', 'host = "imap.nonexistent.invalid"'
    )
    lines = doctor(tmp_path, db_url, block, code=1)
    (line,) = failures(lines)
    assert line.startswith(
        "FAIL  mailbox 'support': cannot resolve host 'imap.nonexistent.invalid' ("
    )
    assert line.endswith(
        f"; fix: check host of [[mailbox]] 'support' in {tmp_path / 'postdesk.toml'}"
    )


def test_missing_folder_lists_the_folders_and_the_closest(
    dovecot_server: Dovecot, mail_user: MailUser, db_url: str, tmp_path: Path
) -> None:
    dovecot_server.create_folder(mail_user, "Support")
    block = mailbox_toml(dovecot_server, mail_user, extra='folder = "Suport"')
    lines = doctor(tmp_path, db_url, block, code=1)
    assert failures(lines) == [
        "FAIL  mailbox 'support': folder 'Suport' does not exist (folders: 'INBOX', 'Support'); "
        "fix: did you mean 'Support'? set folder of [[mailbox]] 'support' to one that exists"
    ]
    # The login before it worked, and the IDLE check still ran.
    assert any(line.startswith("ok    mailbox 'support': logged in") for line in lines)
    assert any("IDLE" in line for line in lines)


def test_smtp_down_and_wrong_smtp_password(
    dovecot_server: Dovecot, mail_user: MailUser, db_url: str, tmp_path: Path
) -> None:
    with SmtpSink() as gone:
        port = gone.port
    lines = doctor(
        tmp_path, db_url, mailbox_toml(dovecot_server, mail_user), smtp_block(gone, port), code=1
    )
    (line,) = failures(lines)
    assert line.startswith(f"FAIL  smtp: connecting to 127.0.0.1:{port} failed: ")
    assert "fix: check host and port of [smtp]" in line and "that the server runs" in line

    # aiosmtpd warns (on the log the CLI prints) that this sink takes AUTH without TLS:
    # true, and meant, on loopback; quiet it so stderr holds only postdesk's line.
    mail_log = logging.getLogger("mail.log")
    level = mail_log.level
    mail_log.setLevel(logging.ERROR)
    try:
        check_smtp_login(dovecot_server, mail_user, db_url, tmp_path)
    finally:
        mail_log.setLevel(level)


def check_smtp_login(
    dovecot_server: Dovecot, mail_user: MailUser, db_url: str, tmp_path: Path
) -> None:
    with SmtpSink(auth=("relay", "right")) as sink:
        auth = 'username = "relay"\npassword_env = "POSTDESK_TEST_SMTP_PASSWORD"'
        with pytest.MonkeyPatch.context() as env:
            env.setenv("POSTDESK_TEST_SMTP_PASSWORD", "wrong")
            block = smtp_block(sink, extra=auth)
            lines = doctor(tmp_path, db_url, mailbox_toml(dovecot_server, mail_user), block, code=1)
            assert failures(lines) == [
                "FAIL  smtp: login as 'relay' refused (535 5.7.8 Authentication credentials "
                "invalid); fix: check the password in $POSTDESK_TEST_SMTP_PASSWORD (password_env "
                "of [smtp]) and username"
            ]
            env.setenv("POSTDESK_TEST_SMTP_PASSWORD", "right")
            lines = doctor(tmp_path, db_url, mailbox_toml(dovecot_server, mail_user), block, code=0)
            assert "ok    smtp: logged in as 'relay'" in lines


def test_database_without_schema_and_a_broken_config(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    lines = doctor(tmp_path, url, mailbox_toml(dovecot_server, mail_user), code=1)
    assert failures(lines) == [
        f"FAIL  database: {tmp_path / 'missing.db'} does not exist; fix: run `postdesk init`"
    ]
    # Doctor must not create the database file it found missing.
    assert not (tmp_path / "missing.db").exists()

    config = tmp_path / "postdesk.toml"
    config.write_text("[database]\nurl = 5\n", encoding="utf-8")
    result = Cli(config)("doctor", code=1)
    assert result.stdout.startswith(f"FAIL  config: {config}: database.url: ")
    assert len(result.stdout.splitlines()) == 1


def test_starttls_and_tls_mismatch_and_a_silent_server_within_the_timeout(
    dovecot_server: Dovecot, mail_user: MailUser, db_url: str, tmp_path: Path
) -> None:
    lines = doctor(
        tmp_path, db_url, mailbox_toml(dovecot_server, mail_user, security="starttls"), code=0
    )
    assert any(
        line.startswith(
            f"ok    mailbox 'support': connected to 127.0.0.1:{dovecot_server.port}, "
            "STARTTLS (TLSv1."
        )
        for line in lines
    ), lines

    # security = "ssl" on the plain port: the TLS handshake meets a plain greeting.
    mismatch = mailbox_toml(dovecot_server, mail_user, security="ssl").replace(
        f"port = {dovecot_server.ssl_port}", f"port = {dovecot_server.port}"
    )
    (line,) = failures(doctor(tmp_path, db_url, mismatch, code=1))
    assert line.startswith(
        f"FAIL  mailbox 'support': connecting to 127.0.0.1:{dovecot_server.port} failed: TLS error"
    )
    assert "fix: check port and security of [[mailbox]] 'support'" in line

    # A server that takes the connection and never says a word: bounded by --timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        block = mailbox_toml(dovecot_server, mail_user).replace(
            f"port = {dovecot_server.port}", f"port = {port}"
        )
        config = write_config(tmp_path, db_url, block)
        started = time.monotonic()
        result = Cli(config)("doctor", "--timeout", "1", code=1)
        took = time.monotonic() - started
    (line,) = failures(result.stdout.splitlines())
    assert line.startswith(
        f"FAIL  mailbox 'support': connecting to 127.0.0.1:{port} failed: timed out"
    )
    assert "no firewall drops the connection" in line
    assert took < 10, took


def test_a_line_never_carries_control_characters() -> None:
    from postdesk.health.doctor import Check

    line = Check("mailbox 'x'", "FAIL", "server said \x1b[2Jhello\x07", "fix \r\n it").line()
    assert line == "FAIL  mailbox 'x': server said hello; fix: fix   it"
