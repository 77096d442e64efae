"""`postdesk status`: what the database says about each mailbox, the queues, the models
and the schema, and an exit status monitoring can act on. Real Dovecot for the fetches
and the failures, real SQLite and PostgreSQL for the counts."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import update

from postdesk.config import load_settings
from postdesk.daemon import Service, sync_config
from postdesk.health.status import collect, span
from postdesk.ingest.store import IMPORT, Incoming, store_many
from postdesk.models import MailboxSync, OutboxMail, OutboxState, RawMessage, RawStatus, utcnow
from postdesk.models.db import Database
from postdesk.models.migrate import _alembic_config, head_revision
from postdesk.testing.cli import Cli
from postdesk.testing.config import mailbox_toml, toml_str, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.fetching import mails, put
from postdesk.testing.labelled import CATEGORIES, synthetic, write_csv


def test_fetches_failures_counts_outbox_and_exit_status(
    dovecot_server: Dovecot, mail_user: MailUser, db: Database, tmp_path: Path
) -> None:
    bad = dovecot_server.add_user()
    config = write_config(
        tmp_path,
        db.url,
        mailbox_toml(dovecot_server, mail_user, name="support"),
        mailbox_toml(dovecot_server, bad, name="sales").replace(
            f"password = {toml_str(bad.password)}", 'password = "wrong"'
        ),
    )
    cli = Cli(config)
    settings = load_settings(config)
    ids = sync_config(db, settings)

    # Nothing has run yet: both mailboxes are problems.
    before = cli("status", code=1)
    assert "mailbox 'support': never fetched; is `postdesk run` running?" in before.stdout
    assert before.stderr.strip() == "postdesk: error: unhealthy: 2 problem(s), listed above"

    put(dovecot_server, mail_user, mails(3))
    result = Service(settings, db).run_once()
    assert set(result.errors) == {"sales"}

    # One message of `support` set aside, one imported without a mailbox left pending.
    with db.transaction() as session:
        session.execute(
            update(RawMessage)
            .where(
                RawMessage.id
                == session.query(RawMessage.id).order_by(RawMessage.id).limit(1).scalar_subquery()
            )
            .values(status=RawStatus.QUARANTINED, reason="test")
        )
        store_many(
            session, [Incoming(mails(1, seed=99)[0].raw, "test")], source=IMPORT, mailbox_id=None
        )
        old = utcnow() - timedelta(hours=2)
        session.add(
            OutboxMail(
                kind="reply",
                message_id="<status-test@example.com>",
                mail_from="support@example.com",
                recipients=["alice@example.com"],
                content=b"Subject: hi\r\n\r\nhi\r\n",
                created_at=old,
                next_attempt_at=old,
                retry_since=old,
            )
        )
        session.add(
            OutboxMail(
                kind="reply",
                message_id="<status-test-2@example.com>",
                mail_from="support@example.com",
                recipients=["bob@example.com"],
                content=b"Subject: hi\r\n\r\nhi\r\n",
                state=OutboxState.FAILED,
            )
        )

    data = json.loads(cli("status", "--json", code=1).stdout)
    boxes = {box["name"]: box for box in data["mailboxes"]}
    support, sales = boxes["support"], boxes["sales"]
    assert support["last_error"] is None and support["last_success_at"] is not None
    assert 0 <= support["lag_seconds"] < 60
    assert support["pending"] == 0 and support["quarantined"] == 1
    assert sales["last_success_at"] is None and sales["lag_seconds"] is None
    assert "login as" in sales["last_error"] and sales["last_error_at"] is not None
    # The back-off: one poll interval (60 s) after the first failure.
    retry = datetime.fromisoformat(sales["retry_at"]) - datetime.fromisoformat(
        sales["last_error_at"]
    )
    assert 58 <= retry.total_seconds() <= 61, retry
    assert support["retry_at"] is None
    assert data["unassigned_pending"] == 1
    assert data["outbox"]["queued"] == 1 and data["outbox"]["failed"] == 1
    assert 7100 < data["oldest_queued_seconds"] < 7300
    assert data["schema"] == data["schema_head"] == head_revision()
    assert data["healthy"] is False
    assert len(data["problems"]) == 2
    assert data["problems"][0].startswith("last fetch failed: mailbox 'sales' (127.0.0.1:")
    assert data["problems"][1].startswith("outbox: mail queued for 2 h (more than 5 min)")

    text = cli("status", code=1).stdout
    assert "mailbox support (INBOX): last fetched " in text
    assert "; 0 pending, 1 quarantined" in text
    assert "mailbox sales (INBOX): last fetched never; 0 pending, 0 quarantined" in text
    assert "  last error " in text and "login as" in text
    assert re.search(r"\n  next try \S+ \S+ UTC \(in [1-6]?\d s\)\n", text), text
    assert "without a configured mailbox: 1 pending, 0 quarantined" in text
    assert "outbox: 1 queued (oldest 2 h), 1 failed, 0 unconfirmed, 0 sent" in text
    assert f"schema: {head_revision()} (current)" in text

    # A successful fetch clears the error; a long gap since then is a problem again.
    with db.transaction() as session:
        session.execute(update(OutboxMail).values(state=OutboxState.SENT))
        session.execute(
            update(MailboxSync)
            .where(MailboxSync.mailbox_id == ids["sales"])
            .values(last_error=None, last_success_at=utcnow() - timedelta(minutes=20))
        )
    lagging = collect(settings, db)
    assert lagging.problems == [
        "mailbox 'sales': last fetched 20 min ago (more than 5 min); is `postdesk run` running?"
    ]
    assert collect(settings, db, max_lag=timedelta(hours=1)).healthy
    healthy = cli("status", "--max-lag", "3600").stdout
    assert healthy.rstrip().endswith("healthy")


def test_schema_behind_says_to_run_init(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    db.dispose()
    cli = Cli(write_config(tmp_path, url))
    result = cli("status", code=1)
    assert (
        f"schema: 0001, this postdesk needs {head_revision()}: upgrade needed, run `postdesk init`"
        in result.stdout
    )
    cli("init")
    assert cli("status").stdout.splitlines()[-1] == "healthy"  # no mailboxes, nothing queued


def test_a_missing_sqlite_file_is_one_line_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    result = Cli(write_config(tmp_path, f"sqlite:///{missing}"))("status", code=1)
    assert result.stderr.strip() == (
        f"postdesk: error: database file {missing} does not exist; run `postdesk init`"
    )
    assert not missing.exists()


def test_active_models_are_listed(tmp_path: Path, sqlite_url: str) -> None:
    cli = Cli(write_config(tmp_path, sqlite_url))
    cli("init")
    assert "models: none active" in cli("status").stdout
    data = write_csv(tmp_path / "tickets.csv", synthetic(CATEGORIES, n=90))
    # --force: this is about status listing the active model, not about whether a model
    # of 90 synthetic tickets passes the automatic activation checks.
    cli(
        "model",
        "train",
        "--csv",
        str(data),
        "--text",
        "title,body",
        "--label",
        "category",
        "--force",
    )
    (model,) = cli.json("status")["models"]
    assert model["target"] == "category" and model["version"] == "category-1"
    assert model["trained_at"] and model["trained_at"][:4] == str(utcnow().year)
    assert f"models: category category-1 (trained {model['trained_at']})" in cli("status").stdout


def test_span() -> None:
    assert [span(s) for s in (5, 125, 3600, 3660 * 2, 86400 * 2 + 3600)] == [
        "5 s",
        "2 min",
        "1 h",
        "2 h 2 min",
        "2 d 1 h",
    ]
