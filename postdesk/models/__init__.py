"""SQLAlchemy 2 models of everything postdesk stores, and the engine/session setup."""

from postdesk.models.base import Base, UTCDateTime, utcnow
from postdesk.models.mail import (
    PENDING,
    PROCESSED,
    QUARANTINED,
    Attachment,
    Delivery,
    Mailbox,
    MailboxSync,
    MailKind,
    Message,
    MessageRef,
    RawMessage,
)
from postdesk.models.tickets import Contact, Ticket, TicketEvent, TicketLink

__all__ = [
    "PENDING",
    "PROCESSED",
    "QUARANTINED",
    "Attachment",
    "Base",
    "Contact",
    "Delivery",
    "MailKind",
    "Mailbox",
    "MailboxSync",
    "Message",
    "MessageRef",
    "RawMessage",
    "Ticket",
    "TicketEvent",
    "TicketLink",
    "UTCDateTime",
    "utcnow",
]
