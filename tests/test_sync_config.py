"""sync_config: the config's mailboxes and agents in the database, written only on change.

It runs at every `--once` pass and whenever the mailbox threads start, so the usual call
(nothing changed) must only read: checked by watching for SQLite's BEGIN IMMEDIATE, the
statement every postdesk write transaction begins with (models/db.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from postdesk.daemon import sync_config
from postdesk.models import Contact, Mailbox
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.models.tickets import AGENT
from postdesk.testing.config import settings_for


def _mailbox(name: str, address: str) -> str:
    return (
        f'[[mailbox]]\nname = "{name}"\naddress = "{address}"\nhost = "127.0.0.1"\n'
        f'port = 143\nsecurity = "none"\nusername = "{name}"\npassword = "x"\n'
    )


def _agent(email: str, name: str) -> str:
    return f'[[agent]]\nemail = "{email}"\nname = "{name}"\n'


def _write_transactions(db: Database) -> list[str]:
    """The list every write transaction `db` begins from now on is noted in."""
    begun: list[str] = []

    def note(sql: str) -> None:
        if sql.startswith("BEGIN IMMEDIATE"):
            begun.append(sql)

    @event.listens_for(db.engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(note)

    db.engine.dispose()  # connections made from now on are traced
    return begun


def test_rows_are_created_then_left_alone_while_the_config_is_unchanged(
    tmp_path: Path, sqlite_url: str
) -> None:
    db = Database(sqlite_url)
    upgrade(db)
    settings = settings_for(
        tmp_path,
        sqlite_url,
        _mailbox("support", "Support@Shop.example"),
        _mailbox("billing", "billing@shop.example"),
        _agent("Sara@Shop.example", "Sara"),
    )
    ids = sync_config(db, settings)
    with db.read_session() as session:
        rows = {m.name: (m.id, m.address) for m in session.scalars(select(Mailbox))}
        sara = session.scalars(select(Contact).where(Contact.email == "sara@shop.example")).one()
    assert rows == {
        "support": (ids["support"], "support@shop.example"),
        "billing": (ids["billing"], "billing@shop.example"),
    }
    assert (sara.role, sara.name) == (AGENT, "Sara")

    # Unchanged: the same ids, from reads alone.
    begun = _write_transactions(db)
    assert sync_config(db, settings) == ids
    assert begun == []
    # A changed address is written (and seen by the same watch).
    moved = settings_for(
        tmp_path,
        sqlite_url,
        _mailbox("support", "help@shop.example"),
        _mailbox("billing", "billing@shop.example"),
        _agent("sara@shop.example", "Sara"),
    )
    assert sync_config(db, moved) == ids
    assert len(begun) == 1
    db.dispose()


@pytest.mark.parametrize("change", ["address", "demoted", "renamed", "new mailbox", "new agent"])
def test_a_difference_is_written(tmp_path: Path, db: Database, change: str) -> None:
    """Each thing the config decides is put back when the database says otherwise."""
    blocks = [_mailbox("support", "support@shop.example"), _agent("sara@shop.example", "Sara")]
    ids = sync_config(db, settings_for(tmp_path, db.url, *blocks))
    if change == "address":
        blocks[0] = _mailbox("support", "help@shop.example")
    elif change == "demoted":
        with db.transaction() as session:
            session.execute(
                update(Contact).where(Contact.email == "sara@shop.example").values(role="customer")
            )
    elif change == "renamed":
        blocks[1] = _agent("sara@shop.example", "Sara Ahmadi")
    elif change == "new mailbox":
        blocks.append(_mailbox("billing", "billing@shop.example"))
    else:
        blocks.append(_agent("omid@shop.example", "Omid"))
    again = sync_config(db, settings_for(tmp_path, db.url, *blocks))
    assert again["support"] == ids["support"]
    with db.read_session() as session:
        boxes = {m.name: m.address for m in session.scalars(select(Mailbox))}
        agents = {
            c.email: c.name for c in session.scalars(select(Contact).where(Contact.role == AGENT))
        }
    assert boxes["support"] == (
        "help@shop.example" if change == "address" else "support@shop.example"
    )
    assert agents["sara@shop.example"] == ("Sara Ahmadi" if change == "renamed" else "Sara")
    if change == "new mailbox":
        assert set(again) == {"support", "billing"} and boxes["billing"] == "billing@shop.example"
    if change == "new agent":
        assert agents["omid@shop.example"] == "Omid"


def test_no_mailboxes_and_no_agents(tmp_path: Path, sqlite_url: str) -> None:
    """An empty config (a fresh `postdesk init`) is a valid call: nothing to read or write."""
    db = Database(sqlite_url)
    upgrade(db)
    settings = settings_for(tmp_path, sqlite_url)
    assert sync_config(db, settings) == {}
    db.dispose()
