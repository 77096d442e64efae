"""The throwaway mail servers the rest of the suite, the benchmarks and the demo rely on."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import imapclient
import pytest
from imapclient.exceptions import LoginError

from postdesk.testing import dovecot as dovecot_module
from postdesk.testing.dovecot import (
    Dovecot,
    DovecotError,
    DovecotNotInstalled,
    MailUser,
    TlsFiles,
)
from postdesk.testing.smtpsink import ReceivedMail, SmtpSink


def message(subject: str, index: int = 0) -> bytes:
    return (
        f"From: Customer <customer{index}@example.org>\r\n"
        "To: support@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <m{index}.{subject.replace(' ', '-')}@example.org>\r\n"
        "Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
        "\r\n"
        f"Body of message {index}.\r\n"
    ).encode()


def strict_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that also applies the strict X.509 checks Python 3.13 enables."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


# -- Dovecot ------------------------------------------------------------------------------


def test_plain_port_offers_starttls_and_plain_login(dovecot_server: Dovecot) -> None:
    conn = imapclient.IMAPClient(dovecot_server.host, port=dovecot_server.port, ssl=False)
    try:
        capabilities = conn.capabilities()
    finally:
        conn.shutdown()
    assert b"STARTTLS" in capabilities
    assert {b"AUTH=PLAIN", b"AUTH=LOGIN"} <= set(capabilities)


def test_login_over_plain_imap(dovecot_server: Dovecot, mail_user: MailUser) -> None:
    conn = dovecot_server.client(mail_user)
    try:
        assert conn.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        conn.logout()


def test_login_after_starttls_verified_against_ca_file(
    dovecot_server: Dovecot, mail_user: MailUser
) -> None:
    conn = imapclient.IMAPClient(dovecot_server.host, port=dovecot_server.port, ssl=False)
    try:
        conn.starttls(strict_context(dovecot_server.ca_file))
        conn.login(mail_user.email, mail_user.password)
        assert conn.folder_exists("INBOX")
    finally:
        conn.logout()


def test_login_over_implicit_tls_verified_against_ca_file(
    dovecot_server: Dovecot, mail_user: MailUser
) -> None:
    for host in ("127.0.0.1", "localhost"):
        conn = imapclient.IMAPClient(
            host,
            port=dovecot_server.ssl_port,
            ssl=True,
            ssl_context=strict_context(dovecot_server.ca_file),
        )
        try:
            conn.login(mail_user.email, mail_user.password)
            assert conn.folder_exists("INBOX")
        finally:
            conn.logout()


def test_tls_is_not_trusted_without_the_ca_file(dovecot_server: Dovecot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imapclient.IMAPClient(
            dovecot_server.host,
            port=dovecot_server.ssl_port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
        )


def test_wrong_passwords_do_not_slow_down_later_logins(
    dovecot_server: Dovecot, mail_user: MailUser
) -> None:
    # With anvil's auth penalty on, these logins would be delayed by 2 + 4 + 8 s.
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(LoginError):
            dovecot_server.client(MailUser(mail_user.email, "not the password"))
    dovecot_server.client(mail_user).logout()
    assert time.monotonic() - started < 4


def test_users_added_while_running_can_log_in_at_once(dovecot_server: Dovecot) -> None:
    # Several in the same second: a single shared passwd-file would miss all but the first.
    for _ in range(5):
        user = dovecot_server.add_user()
        dovecot_server.client(user).logout()


def test_add_user_with_chosen_address_and_unusual_password(dovecot_server: Dovecot) -> None:
    user = dovecot_server.add_user("Helpdesk.Test+1@Example.COM", "p:a s{s}wörd")
    assert user == MailUser("helpdesk.test+1@example.com", "p:a s{s}wörd")
    dovecot_server.client(user).logout()
    with pytest.raises(ValueError, match="already exists"):
        dovecot_server.add_user("helpdesk.test+1@example.com")
    with pytest.raises(ValueError, match="not a plain address"):
        dovecot_server.add_user("no spaces@example.com")


def test_users_do_not_see_each_others_mail(dovecot_server: Dovecot) -> None:
    alice, bob = dovecot_server.add_user(), dovecot_server.add_user()
    dovecot_server.append(alice, message("for alice"))
    assert dovecot_server.message_count(alice) == 1
    assert dovecot_server.message_count(bob) == 0
    with pytest.raises(LoginError):
        dovecot_server.client(MailUser(bob.email, alice.password))


def test_append_returns_uid_and_sets_flags(dovecot_server: Dovecot, mail_user: MailUser) -> None:
    first = dovecot_server.append(mail_user, message("first"))
    second = dovecot_server.append(mail_user, message("second"), flags=[b"\\Seen"])
    assert second > first
    conn = dovecot_server.client(mail_user)
    try:
        conn.select_folder("INBOX", readonly=True)
        flags = conn.get_flags([first, second])
    finally:
        conn.logout()
    assert b"\\Seen" not in flags[first]
    assert b"\\Seen" in flags[second]


def test_fill_loads_messages_in_order(dovecot_server: Dovecot, mail_user: MailUser) -> None:
    dovecot_server.append(mail_user, message("already there"))
    added = dovecot_server.fill(mail_user, (message("bulk", i) for i in range(300)))
    assert added == 300
    assert dovecot_server.message_count(mail_user) == 301
    conn = dovecot_server.client(mail_user)
    try:
        conn.select_folder("INBOX", readonly=True)
        uids = conn.search(["SUBJECT", "bulk"])
        fetched = conn.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]", "RFC822.SIZE"])
    finally:
        conn.logout()
    order = [
        int(fetched[uid][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].split(b"<m")[1].split(b".")[0])
        for uid in sorted(uids)
    ]
    assert order == list(range(300))
    assert all(
        fetched[uid][b"RFC822.SIZE"] == len(message("bulk", n))
        for uid, n in zip(sorted(uids), order, strict=True)
    )


def test_fill_into_other_folders(dovecot_server: Dovecot, mail_user: MailUser) -> None:
    for folder in ("Archive", "Archive.2024", "Ärger & Co"):
        dovecot_server.create_folder(mail_user, folder)
        assert dovecot_server.fill(mail_user, [message(folder, i) for i in range(7)], folder) == 7
        assert dovecot_server.message_count(mail_user, folder) == 7
    assert dovecot_server.message_count(mail_user) == 0
    with pytest.raises(DovecotError, match="does not exist"):
        dovecot_server.fill(mail_user, [message("lost")], "Nowhere")


def test_fill_falls_back_to_multiappend(
    dovecot_server: Dovecot, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the folder's Maildir could not be located on disk.
    monkeypatch.setattr(dovecot_server, "_maildir", lambda user, folder="INBOX": Path("/nowhere"))
    added = dovecot_server.fill(mail_user, (message("appended", i) for i in range(1500)))
    assert added == 1500
    assert dovecot_server.message_count(mail_user) == 1500


def test_recreated_folder_gets_a_new_uidvalidity(
    dovecot_server: Dovecot, mail_user: MailUser
) -> None:
    assert dovecot_server.uidvalidity(mail_user) == dovecot_server.uidvalidity(mail_user)
    dovecot_server.create_folder(mail_user, "Tickets")
    dovecot_server.append(mail_user, message("ticket"), folder="Tickets")
    before = dovecot_server.uidvalidity(mail_user, "Tickets")
    dovecot_server.delete_folder(mail_user, "Tickets")
    dovecot_server.create_folder(mail_user, "Tickets")
    assert dovecot_server.uidvalidity(mail_user, "Tickets") != before
    assert dovecot_server.message_count(mail_user, "Tickets") == 0


@pytest.mark.usefixtures("dovecot_binary")
def test_private_instance_lifecycle(tmp_path: Path) -> None:
    server = Dovecot(tmp_path / "imap")
    with server:
        assert server.running
        user = server.add_user()
        server.append(user, message("survives a restart"))
        ports = (server.port, server.ssl_port)
        server.restart()
        assert (server.port, server.ssl_port) == ports
        assert server.message_count(user) == 1
        master = server._proc
        assert master is not None
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(master.pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", ports[0])):
        pass
    server.stop()  # a second stop is harmless
    assert "starting up" in server.log_path.read_text()


@pytest.mark.usefixtures("dovecot_binary")
def test_start_failure_reports_dovecots_own_error(tmp_path: Path) -> None:
    server = Dovecot(tmp_path / "imap")
    dovecot_module.make_tls_files(tmp_path / "imap" / "tls")
    (tmp_path / "imap" / "tls" / "key.pem").write_text("not a key\n")
    with pytest.raises(DovecotError, match="ssl_key"):
        server.start(timeout=10)
    assert not server.running


def test_missing_dovecot_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dovecot_module, "find_dovecot", lambda: None)
    with pytest.raises(DovecotNotInstalled, match="ensure-dovecot"):
        Dovecot(tmp_path).start()


@pytest.mark.parametrize(("required", "outcome"), [("", "1 skipped"), ("1", "1 error")])
def test_missing_dovecot_skips_or_fails_the_imap_tests(
    tmp_path: Path, required: str, outcome: str
) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "from postdesk.testing import dovecot\n"
        "dovecot.find_dovecot = lambda: None\n"
        "def test_uses_imap(mail_user):\n"
        "    pass\n"
    )
    tests_dir = Path(__file__).parent
    env = dict(os.environ, POSTDESK_REQUIRE_DOVECOT=required)
    env["PYTHONPATH"] = os.pathsep.join([str(tests_dir), str(tests_dir.parent)])
    # The suite's conftest loaded as a plugin, outside the suite, so it alone decides.
    argv = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "conftest", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(tmp_path), str(probe)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "dovecot is not installed" in result.stdout


def test_root_paths_dovecot_cannot_express_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot express"):
        Dovecot(tmp_path / "with space")


def test_tls_files_are_reused(tmp_path: Path) -> None:
    first = dovecot_module.make_tls_files(tmp_path)
    pem = first.cert_file.read_bytes()
    assert dovecot_module.make_tls_files(tmp_path).cert_file.read_bytes() == pem
    assert first.key_file.stat().st_mode & 0o077 == 0


# -- SMTP sink ----------------------------------------------------------------------------


def email(subject: str = "Your ticket") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "support@example.com"
    mail["To"] = "customer@example.org"
    mail["Subject"] = subject
    mail.set_content("We are on it.\n")
    return mail


def send(sink: SmtpSink, mail: EmailMessage, **options: Any) -> None:
    options.setdefault("start_tls", False)
    asyncio.run(aiosmtplib.send(mail, hostname=sink.host, port=sink.port, timeout=10, **options))


def test_sink_records_a_message(smtp_sink: SmtpSink) -> None:
    send(smtp_sink, email("Plain"))
    (received,) = smtp_sink.wait_for(1)
    assert received.mail_from == "support@example.com"
    assert received.rcpt_tos == ("customer@example.org",)
    assert b"Subject: Plain" in received.data
    assert not received.tls
    assert received.auth_user is None
    smtp_sink.clear()
    assert smtp_sink.messages == []


def test_sink_with_starttls(tls_files: TlsFiles) -> None:
    with SmtpSink(starttls=True, tls_cert=tls_files.cert_file, tls_key=tls_files.key_file) as sink:
        send(sink, email("Secret"), start_tls=True, tls_context=strict_context(tls_files.ca_file))
        (received,) = sink.wait_for(1)
    assert received.tls
    assert b"Subject: Secret" in received.data


def test_sink_requires_auth(tls_files: TlsFiles) -> None:
    with SmtpSink(auth=("agent@example.com", "s3cret:ü")) as sink:
        send(sink, email("Authed"), username="agent@example.com", password="s3cret:ü")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            send(sink, email("Wrong"), username="agent@example.com", password="nope")
        assert refused.value.code == 535
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as anonymous:
            send(sink, email("Anonymous"))
        assert anonymous.value.code == 530
        (received,) = sink.wait_for(1)
    assert received.auth_user == "agent@example.com"

    with SmtpSink(
        starttls=True,
        tls_cert=tls_files.cert_file,
        tls_key=tls_files.key_file,
        auth=("agent", "pw"),
    ) as sink:
        context = strict_context(tls_files.ca_file)
        send(sink, email(), start_tls=True, tls_context=context, username="agent", password="pw")
        (received,) = sink.wait_for(1)
    assert received.tls
    assert received.auth_user == "agent"


@pytest.mark.parametrize("code", [451, 550])
def test_fail_next_refuses_then_accepts(smtp_sink: SmtpSink, code: int) -> None:
    smtp_sink.fail_next(2, code)
    for attempt in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            send(smtp_sink, email(f"attempt {attempt}"))
        assert refused.value.code == code
    send(smtp_sink, email("attempt 2"))
    (accepted,) = smtp_sink.wait_for(1)
    assert b"attempt 2" in accepted.data
    assert [b"attempt 0" in mail.data for mail in smtp_sink.refused] == [True, False]


def test_sink_refuses_unknown_recipients_and_failed_deliveries() -> None:
    delivered: list[bytes] = []

    def deliver(mail: ReceivedMail) -> None:
        if b"Subject: Broken" in mail.data:
            raise OSError("disk full")
        delivered.append(mail.data)

    with SmtpSink(accepts=lambda rcpt: rcpt.endswith("@example.org"), deliver=deliver) as sink:
        send(sink, email("Kept"))
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            send(sink, email("Broken"))
        assert failed.value.code == 451 and "disk full" in failed.value.message
        stranger = email("Nobody")
        stranger.replace_header("To", "nobody@example.net")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            send(sink, stranger)
        assert refused.value.recipients[0].code == 550
        (kept,) = sink.wait_for(1)
    assert b"Subject: Kept" in kept.data and delivered == [kept.data]
    assert [b"Subject: Broken" in mail.data for mail in sink.refused] == [True]


def test_fail_next_validates_its_arguments(smtp_sink: SmtpSink) -> None:
    with pytest.raises(ValueError):
        smtp_sink.fail_next(1, 250)
    with pytest.raises(ValueError):
        smtp_sink.fail_next(-1)


def test_wait_for_gives_up(smtp_sink: SmtpSink) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0 of the 1 expected"):
        smtp_sink.wait_for(1, timeout=0.2)
    assert time.monotonic() - started < 2


def test_sink_bind_errors_surface(smtp_sink: SmtpSink) -> None:
    clash = SmtpSink(port=smtp_sink.port)
    with pytest.raises(OSError):
        clash.start()
    clash.stop()


def test_sink_stops_cleanly_with_a_client_still_connected() -> None:
    sink = SmtpSink()
    sink.start()
    idle = socket.create_connection((sink.host, sink.port))
    try:
        assert idle.recv(100).startswith(b"220")
        started = time.monotonic()
        sink.stop()
        assert time.monotonic() - started < 5
    finally:
        idle.close()
    sink.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((sink.host, sink.port)):
        pass


def test_sink_needs_a_certificate_for_starttls() -> None:
    with pytest.raises(ValueError, match="tls_cert"):
        SmtpSink(starttls=True)


def test_sink_fixture_is_a_fresh_sink(smtp_sink: SmtpSink) -> None:
    assert smtp_sink.messages == []
    assert smtp_sink.refused == []
    assert isinstance(smtp_sink.port, int)
