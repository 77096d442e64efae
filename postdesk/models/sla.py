"""The record of SLA alerts sent (owned by postdesk/sla/alerts.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from postdesk.models.base import Base, UTCDateTime, utcnow


class SlaAlert(Base):
    """One alert about one clock of one ticket, for one due time.

    Written in the transaction that queues the alert's mails, so a record exists exactly
    when its mails were queued. The unique constraint is what makes it once: two
    instances checking the same ticket at the same moment cannot both insert it, and a
    due time that moves (a priority change, a pause) is a new due time and may be alerted
    again.
    """

    __tablename__ = "sla_alerts"
    __table_args__ = (UniqueConstraint("ticket_id", "clock", "kind", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    clock: Mapped[str] = mapped_column(String(20))  # first_response, resolution
    kind: Mapped[str] = mapped_column(String(20))  # at_risk, breach
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The agents it went to, lower-case (the outbox rows say whether it was delivered).
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
