"""Fixtures shared by the whole suite: throwaway IMAP and SMTP servers on loopback,
empty databases, and settings for mailboxes on the test Dovecot.

Helpers that are not fixtures (mail builder, CLI runner, config files) live in
`postdesk.testing`; test modules never import each other or this file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from postdesk.config import Settings
from postdesk.errors import DatabaseError
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing import dovecot as dovecot_module
from postdesk.testing.config import mailbox_toml, settings_for
from postdesk.testing.corpora import REQUIRE_SHARED_ENV
from postdesk.testing.dovecot import Dovecot, MailUser, TlsFiles, make_tls_files
from postdesk.testing.postgres import pg_schema_url
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


REQUIRE_SYSTEMD_ENV = "POSTDESK_REQUIRE_SYSTEMD"


@pytest.fixture(scope="session")
def systemd_analyze() -> Path:
    """The systemd-analyze binary. Without one the test is skipped, or fails if CI
    requires it (`make test` installs it through scripts/ensure-systemd)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (scripts/ensure-systemd installs systemd)"
        if _flag(REQUIRE_SYSTEMD_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_SYSTEMD_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return Path(found)


# --- databases -------------------------------------------------------------------------

PG_URL_ENV = "POSTDESK_TEST_PG_URL"
REQUIRE_PG_ENV = "POSTDESK_REQUIRE_PG"
PG_FALLBACK_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """A PostgreSQL server the tests may create schemas on ($POSTDESK_TEST_PG_URL or local)."""
    url = os.environ.get(PG_URL_ENV) or PG_FALLBACK_URL
    probe = Database(url)
    try:
        probe.check_reachable()
    except DatabaseError as exc:
        reason = f"PostgreSQL is not reachable ({exc}); set {PG_URL_ENV}"
        if _flag(REQUIRE_PG_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_PG_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    finally:
        probe.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, then a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'postdesk.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    with pg_schema_url(base) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database file (for tests that need only one backend)."""
    return f"sqlite:///{tmp_path / 'postdesk.db'}"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated, empty database on each backend."""
    database = Database(db_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def config(tmp_path: Path, db: Database, dovecot_server: Dovecot) -> Callable[..., Settings]:
    """Settings for mailboxes on the test Dovecot: config(user, **mailbox_toml options)."""

    def make(*boxes: tuple[MailUser, dict[str, Any]] | MailUser, **options: Any) -> Settings:
        blocks = []
        for box in boxes:
            user, extra = box if isinstance(box, tuple) else (box, options)
            blocks.append(mailbox_toml(dovecot_server, user, **extra))
        return settings_for(tmp_path, db.url, *blocks)

    return make


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root logger for its process; undo that after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    others = {n: logging.getLogger(n).level for n in ("sqlalchemy", "imapclient", "alembic")}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in others.items():
            logging.getLogger(name).setLevel(lvl)


# --- corpora -------------------------------------------------------------------------
# Corpus tests find their data through postdesk.testing.corpora (require_corpus,
# require_cpython_email_data), which honours $POSTDESK_SHARED_DATA and fails instead of
# skipping under $POSTDESK_REQUIRE_SHARED. As a backstop, under that variable (CI) no test
# of a corpus module may be skipped for any reason: a skip there is reported as a failure.

CORPUS_MODULES = ("test_corpus_", "test_classify_corpus")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and _flag(REQUIRE_SHARED_ENV)
        and item.path.name.startswith(CORPUS_MODULES)
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"corpus test skipped ({reason}), and {REQUIRE_SHARED_ENV}=1 forbids it"
    return report
