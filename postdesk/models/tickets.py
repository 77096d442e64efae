"""Tables for the people and the tickets: contacts, tickets and their event history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from postdesk.models.base import Base, UTCDateTime, utcnow
from postdesk.models.mail import Mailbox, Message

CUSTOMER = "customer"
AGENT = "agent"
# The actor of events postdesk itself causes (triage predictions, rules).
SYSTEM_ACTOR = "postdesk"
# The ticket number column's range: a larger number (a tag, a token) names no ticket.
MAX_TICKET_ID = 2**31 - 1


# Ticket lifecycle: new (nobody has acted yet) -> open -> pending (waiting for the
# customer) -> solved -> closed. A customer reply moves pending/solved back to open.
class TicketStatus(StrEnum):
    """Where a ticket is in its lifecycle (postdesk/tickets/lifecycle.py changes it)."""

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


TICKET_STATUSES = tuple(TicketStatus)


class Contact(Base):
    """A person who writes to us or answers for us, identified by email address."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(String(20), default=CUSTOMER)
    # Set when mail to this address bounced for good; cleared when they write again.
    bouncing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounce_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Ticket(Base):
    """A customer's request and every message about it. `id` is the ticket number."""

    __tablename__ = "tickets"
    # (requester_id, last_message_at): a requester's tickets, newest first, read in index
    # order. (requester_id, subject_key, last_message_at): threading's subject rule, one
    # seek for a requester's most recent ticket with a subject (ingest/threader.py);
    # without last_message_at SQLite's planner takes the index before and walks all of
    # the requester's recent tickets (EXPLAIN QUERY PLAN; tests/test_threading_rules.py).
    __table_args__ = (
        Index(None, "status", "id"),
        Index(None, "requester_id", "last_message_at"),
        Index(None, "requester_id", "subject_key", "last_message_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    # The subject as threading compares it (ingest/threader.py: ticket_subject_key), set
    # when the ticket is opened; NULL: never matched by subject.
    subject_key: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=TicketStatus.NEW)
    requester_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id"))
    category: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str | None] = mapped_column(String(50))
    # Triage (postdesk.classify). Who set `category` and `priority` ("model", "human",
    # and for priority also "rule:<which>" or "matrix:<cell>"), the model's probability
    # for its label and the model version. A model's unsure guess is not applied: the
    # label stays empty (probability and version say what was tried) and `needs_triage`
    # asks a person to decide.
    category_source: Mapped[str | None] = mapped_column(String(200))
    category_probability: Mapped[float | None] = mapped_column(Float)
    category_model: Mapped[str | None] = mapped_column(String(100))
    priority_source: Mapped[str | None] = mapped_column(String(200))
    priority_probability: Mapped[float | None] = mapped_column(Float)
    priority_model: Mapped[str | None] = mapped_column(String(100))
    needs_triage: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the ticket last became solved or closed (None while open).
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When an agent first answered the customer (a relayed reply, `tickets reply`, or
    # an agent's own mail on the ticket), and when the ticket was last solved (cleared
    # when it is reopened; kept when a solved ticket is closed): the SLA clocks' ends.
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    solved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The customer's answer to the satisfaction survey: 1-5, and what they added.
    csat_score: Mapped[int | None] = mapped_column(Integer)
    csat_comment: Mapped[str | None] = mapped_column(Text)
    # Set on a ticket merged into another; replies to it land on that one.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))

    requester: Mapped[Contact] = relationship(foreign_keys=[requester_id])
    assignee: Mapped[Contact | None] = relationship(foreign_keys=[assignee_id])
    mailbox: Mapped[Mailbox | None] = relationship()
    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")
    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id"
    )

    @property
    def number(self) -> int:
        """The number customers and agents see, as in the `[#N]` subject tag."""
        return self.id


class TicketEvent(Base):
    """One change to a ticket: created, status, merge, later assignment and the like.

    Messages are not repeated here: each is its own row in `messages`, with its time and
    the threading rule that put it on the ticket; a ticket's history is both, by time.
    """

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(320), default="system")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


FOLLOW_UP = "follow-up"  # a reply to a long-closed ticket opened this one
MERGED = "merged"  # the other ticket was merged into this one
# The message that opened this ticket pointed at the other one (a reply header or the
# same subject) but was not let in: its sender is not on that ticket, or it was new mail.
RELATED = "related"


class TicketLink(Base):
    """A relation between two tickets, read as: `ticket` <kind> `other`."""

    __tablename__ = "ticket_links"
    __table_args__ = (UniqueConstraint("ticket_id", "other_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    other_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
