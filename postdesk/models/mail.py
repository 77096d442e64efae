"""Tables for mail as it arrives: mailboxes, their sync state, raw and parsed messages."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from postdesk.models.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from postdesk.models.tickets import Contact, Ticket


# Status of a raw message in the processing pipeline.
class RawStatus(StrEnum):
    """Where a stored raw message is: waiting for processing, done, or set aside."""

    PENDING = "pending"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"  # a step failed; the reason is kept (`inbound retry`)
    # Set aside for good by a person (`inbound discard`): the bytes and reason are kept
    # for the record, and a copy fetched or imported again is not processed.
    DISCARDED = "discarded"


class MailKind(StrEnum):
    """Who wrote an inbound message, as ingest/automatic.py decides and Message.kind stores.

    The values are what the database holds; they never change.
    """

    HUMAN = "human"  # a person: may open or reopen a ticket and get an automatic reply
    AUTOMATIC = "automatic"  # auto-replies, receipts, list and bulk mail
    BOUNCE = "bounce"  # a delivery report about mail we sent
    OWN = "own"  # mail we sent ourselves, coming back


class Mailbox(Base):
    """A support mailbox named in the config; rows outlive config edits so history stays."""

    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    address: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailboxSync(Base):
    """Where fetching stands in one IMAP folder, and who may poll it right now.

    `last_uid` is the checkpoint: every UID at or below it (under `uidvalidity`) is in
    the database. It is only ever advanced in the same transaction that stores the
    messages, so a crash can neither skip nor repeat a message.

    After a UIDVALIDITY change every UID up to `resync_until_uid` is first matched by
    Message-ID against what this folder delivered before, so known mail is not fetched
    (or stored) again; the field is cleared once the checkpoint passes it.
    """

    __tablename__ = "mailbox_sync"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    resync_until_uid: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # While the last attempt failed: when the service means to try again (its back-off).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    mailbox: Mapped[Mailbox] = relationship()


class RawMessage(Base):
    """The bytes of one distinct inbound message, stored before anything else happens.

    Distinct means: a different Message-ID or different originator content
    (`dedupe_key`), so the same mail delivered to two of our addresses is one row.
    `status` moves from pending to processed or quarantined (with `reason`).
    `mailbox_id` is the mailbox it first arrived in (None for an import without one);
    `origin` says where the bytes came from, for people reading `postdesk inbound list`.
    """

    __tablename__ = "raw_messages"
    __table_args__ = (Index(None, "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    header_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id"))
    source: Mapped[str] = mapped_column(String(20))
    origin: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default=RawStatus.PENDING)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The sender a person gave a message that has no usable From, Sender or Reply-To
    # (`postdesk inbound retry ID --sender EMAIL`); used only when the mail has none.
    given_sender: Mapped[str | None] = mapped_column(String(320))
    # Set in a commit of its own before processing begins, cleared by the commit that
    # files the message: a pending row still claimed after its claimer died was in hand
    # when it died. `unfinished` counts such attempts (see ingest/process.py).
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unfinished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Delivery(Base):
    """One copy of a raw message in an IMAP folder, found under a (UIDVALIDITY, UID).

    Several deliveries may share one raw message. `server_done` records whether the
    post-commit action (flag \\Seen or move to the processed folder) has happened, so a
    crash between the commit and that action is finished on the next pass.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "folder", "uidvalidity", "uid"),
        Index(None, "mailbox_id", "server_done"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    raw_message_id: Mapped[int] = mapped_column(ForeignKey("raw_messages.id"), index=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    server_done: Mapped[bool] = mapped_column(Boolean, default=False)


# How `messages.agent_check` begins for an agent's own proven mail without a reply token
# (ingest/author.py writes it; the KPIs count such mail as a response).
AGENT_OWN_MAIL = "the agent's own mail"


class Message(Base):
    """A parsed message that belongs to a ticket (inbound now; outbound later)."""

    __tablename__ = "messages"
    __table_args__ = (Index(None, "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_message_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    direction: Mapped[str] = mapped_column(String(10), default="in")
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_email: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(Text, default="")
    to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cc: Mapped[list[Any]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text, default="")
    thread_rule: Mapped[str] = mapped_column(String(40), default="new")
    thread_reason: Mapped[str] = mapped_column(Text, default="")
    defects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # A MailKind value (see ingest/automatic.py), and why.
    kind: Mapped[str] = mapped_column(
        String(20), default=MailKind.HUMAN.value, server_default=MailKind.HUMAN.value
    )
    kind_reason: Mapped[str | None] = mapped_column(Text, default="")
    # The new text of the message without quoted history and signature (ingest/quotes.py);
    # NULL on messages stored before postdesk computed it.
    visible_text: Mapped[str | None] = mapped_column(Text, default="")
    # For mail from an agent's address or to an agent's reply token: whether it was taken
    # as that agent's and why (postdesk/ingest/author.py); None for everyone else's mail.
    # Proven mail of an agent's own (no token reply) starts with AGENT_OWN_MAIL.
    agent_check: Mapped[str | None] = mapped_column(Text)
    # The topmost Authentication-Results header from the configured receiving server
    # (`[authentication] authserv_id`, ingest/authres.py) as it came, for rules that need
    # to know whether the sender's domain vouched for the mail; None without one.
    auth_results: Mapped[str | None] = mapped_column(Text)

    ticket: Mapped[Ticket] = relationship(back_populates="messages")
    contact: Mapped[Contact | None] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", order_by="Attachment.id"
    )


class MessageRef(Base):
    """One Message-ID a stored message points at (In-Reply-To or References).

    Indexed so a late-arriving parent, or a sibling replying to the same missing parent,
    finds the ticket of messages that already point at it.
    """

    __tablename__ = "message_refs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    ref_message_id: Mapped[str] = mapped_column(String(998), index=True)


class Attachment(Base):
    """A file that came with a message, stored content-addressed under the data directory."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    relpath: Mapped[str] = mapped_column(Text)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content_id: Mapped[str | None] = mapped_column(String(998))

    message: Mapped[Message] = relationship(back_populates="attachments")
