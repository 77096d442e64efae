"""A support inbox for ticket tests: customer mail, fed through a Service, looked up again.

`mail()` is a customer's message to support@support.example on 1 March 2026 unless told
otherwise; the threading, lifecycle and understanding tests write their conversations
with it and ask `ticket_of()` / `rule_of()` where each message landed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from postdesk.daemon import ImportResult, Service, import_messages, sync_config
from postdesk.ingest.sources import ImportedMessage
from postdesk.ingest.store import Incoming, store_many
from postdesk.models import Message
from postdesk.models.db import Database
from postdesk.testing.mail import Attachment, Mail

SUPPORT_ADDRESS = "support@support.example"


def mail(
    mid: str,
    *,
    sender: str = "Alice <alice@example.com>",
    subject: str = "Help",
    body: str = "Hello",
    reply_to: str | None = None,
    references: list[str] | None = None,
    date: datetime | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    """A message with Message-ID `mid`; `reply_to` is the Message-ID it answers (In-Reply-To)."""
    return bytes(
        Mail(
            sender=sender,
            to=SUPPORT_ADDRESS,
            subject=subject,
            body=body,
            date=date or datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
            message_id=mid,
            in_reply_to=reply_to or None,
            references=references or (),
            attachments=[Attachment(*attachment)] if attachment else (),
        )
    )


def ingest(service: Service, *raws: bytes) -> ImportResult:
    """Import `raws` as `postdesk import` would, each named "test #<index>"."""
    items = [ImportedMessage(f"test #{i}", raw) for i, raw in enumerate(raws)]
    return import_messages(service, items)


def fetched(service: Service, mailbox: str, *raws: bytes) -> None:
    """Store `raws` as mail fetched from `mailbox` (no IMAP server involved), then run a
    pass of `service` without fetching: processing, and sending the outbox if any."""
    ids = sync_config(service.db, service.settings)
    with service.db.transaction() as session:
        store_many(
            session,
            [Incoming(raw, f"test {i}") for i, raw in enumerate(raws)],
            source="imap",
            mailbox_id=ids[mailbox],
        )
    service.run_once(fetch=False)


def ticket_of(db: Database, mid: str) -> int:
    """The ticket the message with Message-ID `mid` belongs to."""
    with db.read_session() as session:
        return session.execute(
            select(Message.ticket_id).where(Message.message_id == mid)
        ).scalar_one()


def rule_of(db: Database, mid: str) -> str:
    """The threading rule that put the message with Message-ID `mid` in its ticket."""
    with db.read_session() as session:
        return session.execute(
            select(Message.thread_rule).where(Message.message_id == mid)
        ).scalar_one()
