"""Fixtures shared by the whole suite: throwaway IMAP and SMTP servers on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from postdesk.testing import dovecot as dovecot_module
from postdesk.testing.dovecot import Dovecot, MailUser, TlsFiles, make_tls_files
from postdesk.testing.smtpsink import SmtpSink

REQUIRE_DOVECOT_ENV = "POSTDESK_REQUIRE_DOVECOT"


def dovecot_required() -> bool:
    """Whether a missing Dovecot must fail the run (CI) rather than skip the IMAP tests."""
    return os.environ.get(REQUIRE_DOVECOT_ENV, "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def dovecot_binary() -> Path:
    """The dovecot binary. Without one the test is skipped, or fails if CI requires Dovecot."""
    binary = dovecot_module.find_dovecot()
    if binary is None:
        reason = "dovecot is not installed (scripts/ensure-dovecot installs dovecot-imapd)"
        if dovecot_required():
            pytest.fail(f"{reason}, and {REQUIRE_DOVECOT_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def dovecot_server(
    dovecot_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dovecot]:
    """One private Dovecot for the session; tests isolate themselves with ``mail_user``."""
    server = Dovecot(tmp_path_factory.mktemp("dovecot"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_user(dovecot_server: Dovecot) -> MailUser:
    """A fresh account with an empty INBOX on the session's Dovecot."""
    return dovecot_server.add_user()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA and a certificate for localhost/127.0.0.1 signed by it."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain SMTP sink (no TLS, no auth) on a free loopback port."""
    with SmtpSink() as sink:
        yield sink
