"""Lean statements (postdesk/models/lean.py) read and write what Connection.execute does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from postdesk.ingest.store import InsertIgnoringConflicts
from postdesk.models import Contact, Ticket, TicketEvent, UTCDateTime
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.models.lean import Lean, LeanError
from postdesk.models.tickets import CUSTOMER

_contacts = table_of(Contact)
_tickets = table_of(Ticket)
_events = table_of(TicketEvent)
AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _contact(conn: object, email: str) -> int:
    lean = Lean(
        insert(_contacts).returning(_contacts.c.id),
        keys=("email", "name", "role", "created_at", "updated_at"),
    )
    params = {"email": email, "name": "Sara", "role": CUSTOMER, "created_at": AT, "updated_at": AT}
    contact_id = lean.scalar(conn, params)  # type: ignore[arg-type]
    assert isinstance(contact_id, int)
    return contact_id


def test_rows_written_and_read_match_sqlalchemy(db: Database) -> None:
    ticket_keys = ["subject", "status", "requester_id", "mailbox_id", "created_at"]
    ticket_keys += ["updated_at", "last_message_at", "closed_at", "needs_triage"]
    open_ticket = Lean(insert(_tickets).returning(_tickets.c.id), keys=ticket_keys)
    add_event = Lean(insert(_events), keys=("ticket_id", "at", "kind", "actor", "data"))
    with db.engine.connect() as conn, conn.begin():
        requester = _contact(conn, "sara@example.com")
        ticket_id = open_ticket.scalar(
            conn,
            {
                "subject": "سفارش ۱۲",
                "status": "new",
                "requester_id": requester,
                "mailbox_id": None,
                "created_at": AT,
                "updated_at": AT,
                "last_message_at": AT,
                "closed_at": None,
                "needs_triage": False,
            },
        )
        data = {"closed": "auto-reply", "n": [1, 2], "fa": "سلام"}
        add_event.many(
            conn,
            [
                {"ticket_id": ticket_id, "at": AT, "kind": "created", "actor": "a@b", "data": data},
                {"ticket_id": ticket_id, "at": AT, "kind": "x", "actor": "a@b", "data": {}},
            ],
        )
        # Read back through SQLAlchemy: the same values as written through it.
        row = conn.execute(select(_tickets).where(_tickets.c.id == ticket_id)).one()
        assert row.subject == "سفارش ۱۲" and row.created_at == AT and row.closed_at is None
        events = conn.execute(
            select(_events.c.at, _events.c.data).where(_events.c.ticket_id == ticket_id)
        ).all()
        assert [tuple(e) for e in events] == [(AT, data), (AT, {})]
        # And read through Lean: the same Python values SQLAlchemy returns.
        lean_row = Lean(
            select(
                _tickets.c.subject,
                _tickets.c.created_at,
                _tickets.c.needs_triage,
                _tickets.c.closed_at.is_(None).label("open"),
            ).where(_tickets.c.id == bindparam("ticket_id"))
        ).first(conn, {"ticket_id": ticket_id})
        assert lean_row == ("سفارش ۱۲", AT, False, True)
        assert isinstance(lean_row[1], datetime) and lean_row[1].tzinfo is not None
        of_ticket = _events.c.ticket_id == bindparam("t")
        lean_events = Lean(select(_events.c.data).where(of_ticket).order_by(_events.c.id)).rows(
            conn, {"t": ticket_id}
        )
        assert lean_events == [(data,), ({},)]


def test_literals_in_the_statement_and_a_parameter_used_twice(db: Database) -> None:
    now = bindparam("now", type_=UTCDateTime())
    later = AT + timedelta(hours=1)
    with db.engine.connect() as conn, conn.begin():
        requester = _contact(conn, "ali@example.com")
        conn.execute(
            insert(_tickets),
            {
                "subject": "s",
                "status": "closed",
                "requester_id": requester,
                "created_at": AT,
                "updated_at": AT,
                "last_message_at": AT,
            },
        )
        touch = Lean(
            update(_tickets)
            .where(_tickets.c.status == "closed", _tickets.c.updated_at < now)
            .values(updated_at=now, last_message_at=now)
            .returning(_tickets.c.status, _tickets.c.updated_at)
        )
        assert touch.rows(conn, {"now": later}) == [("closed", later)]
        assert touch.rows(conn, {"now": later}) == []  # the literal and the bound time held
        closed = Lean(select(exists().where(_tickets.c.status == "closed")))
        assert closed.scalar(conn, {}) is True or closed.scalar(conn, {}) == 1
        changed = Lean(update(_tickets).values(subject=bindparam("s")))
        assert changed.run(conn, {"s": "t"}) == 1


def test_a_dialect_specific_statement_and_conflicts(db: Database) -> None:
    create = InsertIgnoringConflicts(_contacts, "email", returning=("id",))
    keys = ("email", "name", "role", "created_at", "updated_at")
    lean = Lean(create.by_dialect, keys=keys)
    params: dict[str, object] = {"email": "x@example.com", "name": "", "role": CUSTOMER}
    params |= {"created_at": AT, "updated_at": AT}
    with db.engine.connect() as conn, conn.begin():
        first = lean.scalar(conn, params)
        assert isinstance(first, int)
        assert lean.scalar(conn, params) is None  # the conflict inserted nothing
        plain = Lean(insert(_contacts), keys=keys)
        with pytest.raises(IntegrityError):  # raised as SQLAlchemy raises it
            plain.run(conn, params)


def test_statements_it_cannot_run_faithfully_are_refused(db: Database) -> None:
    with db.engine.connect() as conn, conn.begin():
        # created_at's default is computed in Python (utcnow): refused, not left out.
        missing = Lean(insert(_contacts), keys=("email", "name", "role", "updated_at"))
        with pytest.raises(LeanError, match="created_at has a Python-side default"):
            missing.run(conn, {"email": "e@x", "name": "", "role": CUSTOMER})
        expanding = Lean(
            select(_contacts.c.id).where(_contacts.c.id.in_(bindparam("ids", expanding=True)))
        )
        with pytest.raises(LeanError, match="expanding"):
            expanding.rows(conn, {"ids": [1]})
