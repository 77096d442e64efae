"""Triage inside the mail pipeline: a model trained from a CSV with `postdesk model train`
classifies the tickets that mail fetched over IMAP opens, in the processing transaction.

Real servers only: Dovecot on loopback, SQLite and PostgreSQL, the CLI as a user runs it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from postdesk.classify.labels import triage_changes
from postdesk.config import load_settings
from postdesk.daemon import PassResult, Service
from postdesk.ingest.store import Incoming, store_many
from postdesk.models import TicketEvent
from postdesk.models.db import Database
from postdesk.testing.cli import Cli
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.labelled import CATEGORIES, synthetic, write_csv
from postdesk.testing.mail import Mail


def cli(config: Path, *args: str) -> str:
    return Cli(config)(*args).stdout


def train(config: Path, csv_file: Path, *extra: str) -> str:
    """`postdesk model train` of a category model on `csv_file` (title, body, category)."""
    args = ["--csv", str(csv_file), "--text", "title,body", "--label", "category", *extra]
    return cli(config, "model", "train", *args)


def mail(n: int, sender: str, subject: str, body: str) -> bytes:
    return bytes(
        Mail(
            sender=sender,
            to="support@support.example",
            subject=subject,
            date=datetime(2026, 11, 2, 9, n, tzinfo=UTC),
            message_id=f"triage{n}@customer.example",
            body=body,
        )
    )


def tickets_by_sender(config: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(cli(config, "tickets", "list", "--json"))
    return {row["requester"]["email"]: row for row in rows}


def test_new_tickets_from_imap_are_classified_or_marked_needs_triage(
    tmp_path: Path, db_url: str, dovecot_server: Dovecot, mail_user: MailUser
) -> None:
    config = write_config(
        tmp_path,
        db_url,
        mailbox_toml(dovecot_server, mail_user),
        '[triage]\nkeywords = { urgent = ["urgent", "فوری"] }\n',
    )
    cli(config, "init")
    csv_file = write_csv(tmp_path / "history.csv", synthetic(CATEGORIES, n=180, seed=11))
    trained = train(config, csv_file, "--seed", "1")
    assert "category-1" in trained
    threshold = json.loads(cli(config, "model", "show", "category-1", "--json"))["threshold"]
    assert 0 < threshold < 1

    dovecot_server.fill(
        mail_user,
        [
            mail(
                1,
                "ana@example.com",
                "Refund for my invoice",
                "I was charged twice on my card, please refund the payment.\n\nAna",
            ),
            mail(
                2,
                "bo@example.com",
                "Login error",
                "The server shows an error and crashes at login since the update.\n"
                "-- \nBo, sent from my phone",
            ),
            # Nothing in it tells a category: the model must not guess.
            mail(3, "cy@example.com", "Hello", "hello, question for the team today"),
            mail(
                4,
                "di@example.com",
                "URGENT: price quote",
                "please send a quote for the upgrade plan, a demo and the discount",
            ),
        ],
    )
    cli(config, "run", "--once")

    tickets = tickets_by_sender(config)
    assert set(tickets) == {"ana@example.com", "bo@example.com", "cy@example.com", "di@example.com"}
    for email, category in [
        ("ana@example.com", "billing"),
        ("bo@example.com", "technical"),
        ("di@example.com", "sales"),
    ]:
        ticket = tickets[email]
        assert ticket["category"] == category, ticket
        assert ticket["needs_triage"] is False
        how = ticket["triage"]["category"]
        assert how["source"] == "model" and how["model"] == "category-1"
        assert how["probability"] >= threshold
    unsure = tickets["cy@example.com"]
    assert unsure["category"] is None and unsure["needs_triage"] is True
    assert unsure["triage"]["category"]["model"] == "category-1"
    assert unsure["triage"]["category"]["probability"] < threshold
    # The operator's keyword rule set a priority, and says so (no priority model here).
    assert tickets["di@example.com"]["priority"] == "urgent"
    assert tickets["di@example.com"]["triage"]["priority"]["source"] == "rule:keyword:urgent"
    assert tickets["ana@example.com"]["priority"] is None

    listed = json.loads(cli(config, "tickets", "list", "--needs-triage", "--json"))
    assert [row["number"] for row in listed] == [unsure["number"]]
    shown = cli(config, "tickets", "show", str(unsure["number"]))
    assert "needs triage" in shown and "model unsure" in shown

    # The guess and its probability are kept in the event log, by postdesk.
    db = Database(db_url)
    try:
        with db.read_session() as session:
            events = session.execute(
                select(TicketEvent.kind, TicketEvent.actor, TicketEvent.data).where(
                    TicketEvent.ticket_id == unsure["number"], TicketEvent.kind == "category"
                )
            ).all()
    finally:
        db.dispose()
    [(_kind, actor, data)] = events
    assert actor == "postdesk" and data["to"] is None and data["confident"] is False
    assert data["suggestion"] in CATEGORIES and data["model"] == "category-1"


def test_model_is_loaded_once_and_a_promotion_is_picked_up(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path, sqlite_url)
    cli(config, "init")
    settings = load_settings(config)
    db = Database(sqlite_url)
    try:
        service = Service(settings, db)
        models = service.triage.models
        assert models.current() is None  # no model, no rule: nothing loaded
        csv_file = write_csv(tmp_path / "a.csv", synthetic(CATEGORIES, n=120, seed=2))
        train(config, csv_file)
        first = models.current()
        assert first is not None
        assert models.current() is first  # the same loaded model, pass after pass
        train(config, csv_file, "--force")
        second = models.current()
        assert second is not None and second is not first
        values, _events = triage_changes(
            second.classify("Refund", "invoice refund payment", "a@example.com")
        )
        assert values["category_model"] == "category-2"
    finally:
        db.dispose()


def test_a_broken_model_leaves_tickets_unclassified_not_quarantined(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = write_config(tmp_path, sqlite_url)
    cli(config, "init")
    csv_file = write_csv(tmp_path / "a.csv", synthetic(CATEGORIES, n=120, seed=2))
    train(config, csv_file)
    model_file = next((tmp_path / "data" / "models").glob("category-1*.skops"))
    model_file.write_bytes(b"not a model")
    eml = tmp_path / "in.eml"
    eml.write_bytes(mail(9, "ed@example.com", "Refund", "invoice refund"))
    result = Cli(config)("import", str(eml))
    [error] = [line for line in result.stderr.splitlines() if "triage:" in line]
    assert "category-1" in error and "left unclassified" in error
    [ticket] = json.loads(cli(config, "tickets", "list", "--json"))
    assert ticket["category"] is None and ticket["triage"]["category"]["model"] is None
    assert json.loads(cli(config, "inbound", "list", "--quarantined", "--json")) == []


def test_run_retrains_on_schedule_from_peoples_labels(tmp_path: Path, sqlite_url: str) -> None:
    """`[triage] retrain_interval_hours`: the service loop (`postdesk run`) retrains between
    passes when due, on the labels people gave; not again until the interval has passed on
    its clock; and the pass after a retrain classifies with the new model."""
    config = write_config(
        tmp_path,
        sqlite_url,
        "[run]\npoll_interval = 0.01\n\n[triage]\nretrain_interval_hours = 24\n"
        'categories = ["billing", "sales", "technical"]\n',
    )
    cli(config, "init")
    data = synthetic(CATEGORIES, n=45, seed=4)
    emls = tmp_path / "history"
    emls.mkdir()
    for n, (subject, body) in enumerate(zip(data.subjects, data.bodies, strict=True)):
        (emls / f"{n}.eml").write_bytes(mail(n, f"c{n}@example.com", subject, body))
    cli(config, "import", str(emls))
    tickets = tickets_by_sender(config)
    for n, label in enumerate(data.labels):
        cli(
            config,
            "model",
            "label",
            str(tickets[f"c{n}@example.com"]["number"]),
            "--category",
            label,
            "--as",
            "agent@example.com",
        )

    def versions() -> list[str]:
        return sorted(re.findall(r"category-\d+", cli(config, "model", "list")))

    # The service's wall clock, moved on by the test; the loop reads it for the schedule.
    clock = [datetime.now(UTC)]
    seen: list[list[str]] = []
    db = Database(sqlite_url)
    try:
        service = Service(load_settings(config), db, now=lambda: clock[0])

        def on_pass(result: PassResult) -> None:
            # Called after each pass, before the loop's retrain check.
            seen.append(versions())
            if len(seen) == 3:
                # A day and an hour later; a new customer's mail waits for the next pass.
                clock[0] += timedelta(hours=25)
                with db.transaction() as session:
                    store_many(
                        session,
                        [Incoming(mail(50, "new@example.com", "Refund", REFUND), "test")],
                        source="import",
                        mailbox_id=None,
                    )
            if len(seen) == 4:
                service.stop()

        service.run_forever(on_pass)
    finally:
        db.dispose()
    # Pass 1 found no model and trained one; pass 2 nothing new (not due for a day);
    # after the clock moved on, the loop trained again before pass 4.
    assert seen == [[], ["category-1"], ["category-1"], ["category-1", "category-2"]]
    assert json.loads(cli(config, "model", "show", "category", "--json"))["version"] == (
        "category-2"
    )
    new = tickets_by_sender(config)["new@example.com"]
    assert new["triage"]["category"]["model"] == "category-2"


REFUND = "invoice refund payment card"
