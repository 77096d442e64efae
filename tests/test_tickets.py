"""Changing tickets: merges and status changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from postdesk.daemon import Service
from postdesk.errors import PostdeskError
from postdesk.models import Ticket
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.tickets import (
    TicketNotFound,
    merge_tickets,
    resolve_merged,
    set_status,
    show_ticket,
)


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    return Service(settings_for(tmp_path, db_url), db)


def test_merge_moves_messages_closes_source_and_links(service: Service, db: Database) -> None:
    ingest(
        service,
        mail("a1@x", subject="Printer broken"),
        mail("b1@x", subject="Printer still broken", sender="alice@example.com"),
        mail("b2@x", reply_to="b1@x", subject="Re: Printer still broken"),
    )
    a, b = ticket_of(db, "a1@x"), ticket_of(db, "b1@x")
    assert a != b

    assert merge_tickets(db, a, b) == 2

    merged = show_ticket(db, a)
    assert merged["message_ids"] == ["a1@x", "b1@x", "b2@x"]
    assert merged["links"] == [{"ticket": a, "kind": "merged", "other": b}]
    gone = show_ticket(db, b)
    assert gone["status"] == "closed" and gone["merged_into"] == a
    assert gone["closed_at"] is not None and gone["message_ids"] == []
    with db.read_session() as session:
        assert resolve_merged(session, b) == a
        assert resolve_merged(session, a) == a
    # A later reply by headers to a message of the merged ticket lands on the target.
    ingest(service, mail("b3@x", reply_to="b2@x", subject="Re: Printer still broken"))
    assert ticket_of(db, "b3@x") == a


def test_merge_refuses_nonsense(service: Service, db: Database) -> None:
    ingest(service, mail("a@x", subject="One thing"), mail("b@x", subject="Another thing"))
    ingest(service, mail("c@x", subject="A third thing"))
    a, b, c = (ticket_of(db, m) for m in ("a@x", "b@x", "c@x"))
    with pytest.raises(PostdeskError, match="into itself"):
        merge_tickets(db, a, a)
    with pytest.raises(TicketNotFound, match="no ticket #999"):
        merge_tickets(db, a, 999)
    merge_tickets(db, a, b)
    with pytest.raises(PostdeskError, match=f"already merged into #{a}; use #{a}"):
        merge_tickets(db, c, b)
    with pytest.raises(PostdeskError, match=f"already merged into #{a}"):
        merge_tickets(db, b, c)


def test_set_status_keeps_closed_at(service: Service, db: Database) -> None:
    ingest(service, mail("s@x", subject="Status test"))
    number = ticket_of(db, "s@x")
    with db.transaction() as session:
        conn = session.connection()
        set_status(conn, number, "solved", actor="sara@support.example", why="answered")
        assert session.get_one(Ticket, number).closed_at is not None
        set_status(conn, number, "open", actor="alice@example.com", why="reply")
        assert session.get_one(Ticket, number, populate_existing=True).closed_at is None
        with pytest.raises(PostdeskError, match="unknown ticket status 'done'"):
            set_status(conn, number, "done", actor="x", why="y")
