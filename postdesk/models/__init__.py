"""SQLAlchemy 2 models of everything postdesk stores, and the engine/session setup."""

from postdesk.models.base import Base, UTCDateTime, utcnow
from postdesk.models.mail import (
    Attachment,
    Delivery,
    Mailbox,
    MailboxSync,
    MailKind,
    Message,
    MessageRef,
    RawMessage,
    RawStatus,
)
from postdesk.models.outbox import OutboxMail, OutboxState
from postdesk.models.qa import (
    QaAssignment,
    QaRating,
    QaReview,
    QaSample,
    QaSampledTicket,
    QaScorecard,
)
from postdesk.models.sla import SlaAlert
from postdesk.models.tickets import Contact, Ticket, TicketEvent, TicketLink, TicketStatus

__all__ = [
    "Attachment",
    "Base",
    "Contact",
    "Delivery",
    "MailKind",
    "Mailbox",
    "MailboxSync",
    "Message",
    "MessageRef",
    "OutboxMail",
    "OutboxState",
    "QaAssignment",
    "QaRating",
    "QaReview",
    "QaSample",
    "QaSampledTicket",
    "QaScorecard",
    "RawMessage",
    "RawStatus",
    "SlaAlert",
    "Ticket",
    "TicketEvent",
    "TicketLink",
    "TicketStatus",
    "UTCDateTime",
    "utcnow",
]
