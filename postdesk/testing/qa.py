"""Ticket histories for QA tests: solved tickets made through the lifecycle, fast.

`add_solved_tickets(db, specs)` writes each ticket the way the pipeline would leave it
(a customer's human message, an assignee, solved at a given time, optionally reopened
and solved again, a CSAT answer), without mail servers. And a config file whose
mailboxes are the queues the tickets are in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, insert, select

from postdesk.models import Contact, Mailbox, Message
from postdesk.models.base import table_of
from postdesk.models.db import Database
from postdesk.models.tickets import AGENT
from postdesk.testing.config import toml_str, write_config
from postdesk.tickets.lifecycle import (
    add_note,
    assign,
    open_ticket,
    record_csat,
    reopen,
    set_status,
)

_contacts = table_of(Contact)
_mailboxes = table_of(Mailbox)
_messages = table_of(Message)

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class SolvedTicket:
    """A ticket to write: solved `hours` after it opened, `day` days after BASE."""

    agent: str | None = "sara@example.com"
    queue: str = "support"
    day: int = 0
    hours: float = 2.0
    messages: int = 2  # customer messages (the first opens the ticket)
    csat: int | None = None
    reopened: bool = False
    reopened_to: str = "open"  # the status it was reopened to (open by a customer's mail)
    status: str = "solved"
    closed_day: int | None = None  # closed this many days after BASE, after being solved
    text: str | None = None  # the customer's first message (default: "message 0 of ticket i")
    reply: str | None = None  # the agent's reply, sent "<Name> via Support", an hour in
    note: str | None = None  # an internal note by the agent, half an hour in


def _contact(conn: Connection, email: str, role: str = "customer") -> int:
    found = conn.execute(select(_contacts.c.id).where(_contacts.c.email == email)).scalar()
    if found is not None:
        return int(found)
    row_id: int = conn.execute(
        insert(_contacts).returning(_contacts.c.id),
        {"email": email, "name": email.split("@")[0], "role": role, "created_at": BASE},
    ).scalar_one()
    return row_id


def _mailbox(conn: Connection, name: str) -> int:
    found = conn.execute(select(_mailboxes.c.id).where(_mailboxes.c.name == name)).scalar()
    if found is not None:
        return int(found)
    row_id: int = conn.execute(
        insert(_mailboxes).returning(_mailboxes.c.id),
        {"name": name, "address": f"{name}@example.com", "created_at": BASE},
    ).scalar_one()
    return row_id


def add_solved_tickets(db: Database, specs: Sequence[SolvedTicket]) -> list[int]:
    """Write one solved (or closed) ticket per spec; their numbers, in order."""
    numbers = []
    with db.transaction() as session:
        conn = session.connection()
        for i, spec in enumerate(specs):
            opened = BASE + timedelta(days=spec.day, minutes=i)
            customer = _contact(conn, f"customer{i}@example.org")
            number = open_ticket(
                conn,
                subject=f"question {i}",
                requester_id=customer,
                mailbox_id=_mailbox(conn, spec.queue),
                at=opened,
                actor="customer",
            )
            for m in range(spec.messages):
                conn.execute(
                    insert(_messages),
                    {
                        "ticket_id": number,
                        "contact_id": customer,
                        "direction": "in",
                        "kind": "human",
                        "from_email": f"customer{i}@example.org",
                        "subject": f"question {i}",
                        "received_at": opened + timedelta(minutes=m),
                        "text": spec.text if m == 0 and spec.text else f"message {m} of ticket {i}",
                    },
                )
            if spec.note is not None and spec.agent is not None:
                add_note(
                    conn, number, spec.note, actor=spec.agent, at=opened + timedelta(minutes=30)
                )
            if spec.reply is not None and spec.agent is not None:
                conn.execute(
                    insert(_messages),
                    {
                        "ticket_id": number,
                        "direction": "out",
                        "kind": "human",
                        "from_email": f"{spec.queue}@example.com",
                        "from_name": f"{spec.agent.split('@')[0].title()} via Support",
                        "to": [{"email": f"customer{i}@example.org", "name": ""}],
                        "subject": f"Re: question {i}",
                        "sent_at": opened + timedelta(hours=1),
                        "received_at": opened + timedelta(hours=1),
                        "text": spec.reply,
                    },
                )
            if spec.agent is not None:
                agent_id = _contact(conn, spec.agent, AGENT)
                assign(conn, number, agent_id, actor=spec.agent, at=opened)
            solved = opened + timedelta(hours=spec.hours)
            if spec.reopened:
                early = opened + timedelta(hours=spec.hours / 2)
                set_status(conn, number, "solved", actor="agent", why="test", at=early)
                if spec.reopened_to == "open":
                    reopen(conn, number, was="solved", actor="customer", why="test", at=early)
                else:  # an agent's #pending, say
                    set_status(conn, number, spec.reopened_to, actor="agent", why="test", at=early)
            set_status(conn, number, spec.status, actor="agent", why="test", at=solved)
            if spec.csat is not None:
                record_csat(conn, number, spec.csat, "", actor="customer", at=solved)
            if spec.closed_day is not None:
                closed = BASE + timedelta(days=spec.closed_day, minutes=i)
                set_status(conn, number, "closed", actor="postdesk", why="test", at=closed)
            numbers.append(number)
    return numbers


def qa_config(directory: Path, db_url: str, queues: Sequence[str] = ("support",)) -> Path:
    """A config file on `db_url` whose mailboxes are `queues` (never polled in tests)."""
    blocks = [
        "\n".join(
            [
                "[[mailbox]]",
                f"name = {toml_str(name)}",
                f'address = "{name}@example.com"',
                'host = "127.0.0.1"',
                "port = 1",
                'security = "none"',
                f'username = "{name}@example.com"',
                'password = "unused"',
            ]
        )
        + "\n"
        for name in queues
    ]
    return write_config(directory, db_url, *blocks)
