"""Changing tickets through the lifecycle: merges, status, assignment, notes, triage."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.errors import PostdeskError
from postdesk.models import Contact, Ticket, TicketEvent
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.tickets import (
    TicketNotFound,
    add_note,
    assign,
    merge_tickets,
    resolve_merged,
    set_status,
    show_ticket,
)
from postdesk.tickets.lifecycle import apply_triage, set_label


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


def _events(db: Database, number: int, kind: str) -> list[TicketEvent]:
    with db.read_session() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == number, TicketEvent.kind == kind)
        return list(session.execute(query.order_by(TicketEvent.id)).scalars())


def test_assign_records_who_had_it_and_who_has_it(service: Service, db: Database) -> None:
    ingest(service, mail("as@x", subject="Assign me"))
    number = ticket_of(db, "as@x")
    with db.transaction() as session:
        sara = Contact(email="sara@support.example", name="Sara", role="agent")
        session.add(sara)
        session.flush()
        sara_id = sara.id
    with db.transaction() as session:
        conn = session.connection()
        assert assign(conn, number, sara_id, actor="lead@support.example") is True
        assert assign(conn, number, sara_id, actor="lead@support.example") is False
        assert assign(conn, number, None, actor="sara@support.example") is True
        with pytest.raises(TicketNotFound):
            assign(conn, 99999, sara_id, actor="x")
    with db.read_session() as session:
        assert session.get_one(Ticket, number).assignee_id is None
    events = _events(db, number, "assigned")
    assert [(e.actor, e.data) for e in events] == [
        ("lead@support.example", {"from": None, "to": sara_id}),
        ("sara@support.example", {"from": sara_id, "to": None}),
    ]


def test_a_note_is_an_event_and_changes_nothing_else(service: Service, db: Database) -> None:
    ingest(service, mail("n@x", subject="Note me"))
    number = ticket_of(db, "n@x")
    before = show_ticket(db, number)
    with db.transaction() as session:
        add_note(session.connection(), number, "customer is a VIP", actor="sara@support.example")
        with pytest.raises(TicketNotFound):
            add_note(session.connection(), 99999, "lost", actor="x")
    after = show_ticket(db, number)
    assert after["status"] == before["status"]
    # It reads with the conversation as a note, never as mail.
    assert [m for m in after["messages"] if m["direction"] != "note"] == before["messages"]
    [shown] = [m for m in after["messages"] if m["direction"] == "note"]
    assert shown["text"] == "customer is a VIP" and shown["message_id"] is None
    [note] = _events(db, number, "note")
    assert (note.actor, note.data) == ("sara@support.example", {"text": "customer is a VIP"})


def test_triage_never_overrules_a_persons_label(service: Service, db: Database) -> None:
    ingest(service, mail("t@x", subject="Triage me"))
    number = ticket_of(db, "t@x")
    with db.transaction() as session:
        conn = session.connection()
        set_label(conn, number, "category", "billing", actor="sara@support.example")
        values = {
            "needs_triage": False,
            "category": "technical",
            "category_source": "model",
            "category_probability": 0.97,
            "category_model": "category-3",
            "priority": "high",
            "priority_source": "rule:keyword:high",
        }
        events = [("category", {"to": "technical"}), ("priority", {"to": "high"})]
        apply_triage(conn, number, values, events)
    with db.read_session() as session:
        ticket = session.get_one(Ticket, number)
        assert (ticket.category, ticket.category_source, ticket.category_model) == (
            "billing",
            "human",
            None,
        )
        assert (ticket.priority, ticket.priority_source) == ("high", "rule:keyword:high")
    assert [e.actor for e in _events(db, number, "category")] == ["sara@support.example"]
    assert [e.data["to"] for e in _events(db, number, "priority")] == ["high"]
