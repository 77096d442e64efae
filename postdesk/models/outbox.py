"""The outbox: every mail postdesk decides to send, as a row, until it is sent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from postdesk.models.base import Base, UTCDateTime, utcnow


class OutboxState(StrEnum):
    """Where an outgoing mail is (postdesk/notify/outbox.py says how it moves)."""

    QUEUED = "queued"  # waiting for its first attempt, or for the next after a failure
    SENDING = "sending"  # an attempt is under way; the server has not had the end of data
    COMPLETING = "completing"  # the end of data is being sent: delivered unless refused
    SENT = "sent"  # the server accepted it
    FAILED = "failed"  # refused for good (5xx), or not delivered within the retry time
    UNCONFIRMED = "unconfirmed"  # the sender died after the end of data: never resent alone


class OutboxMail(Base):
    """One outgoing mail: its complete bytes, fixed when queued, and its delivery record.

    Written in the transaction of the change that decided to send it, so a mail is queued
    exactly when that change is kept. `message_id` is the Message-ID inside `content`; it
    never changes, so replies thread and a mail sent again is recognisably the same one.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "recipient", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    # The first recipient, lower-case, and whether no person wrote the mail: what the
    # limit on automatic mail per recipient counts.
    recipient: Mapped[str] = mapped_column(String(320), default="")
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    subject: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(20), default=OutboxState.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Since when it is being tried: queued, or queued again by a person (`outbox retry`);
    # transient failures give up `[outbox] retry_hours` after this.
    retry_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The process sending it now (see postdesk/owner.py) and since when.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The server's last answer (or why no answer came), for people reading the outbox.
    last_error: Mapped[str | None] = mapped_column(Text)
    # Each attempt: when, and how it ended (kept short; the newest last).
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
