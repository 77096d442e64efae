"""Building the mail postdesk sends: headers that thread, identify us and stop loops.

Every mail gets a fresh Message-ID of ours (`postdesk.…`, so the kind-of-mail step
recognises it coming back), In-Reply-To and References that continue the customer's
thread, the ticket tag in the subject (the template puts it there), a Reply-To with the
ticket's signed reply token, and our loop header. Mail nobody wrote by hand
(acknowledgements, surveys, errors) also carries RFC 3834 `Auto-Submitted:
auto-replied` and `X-Auto-Response-Suppress: All`, so well-behaved auto-responders do
not answer it. Persian mail says so in Content-Language.
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import Connection

from postdesk.notify.outbox import enqueue
from postdesk.notify.templates import Rendered

LOOP_HEADER = "X-Postdesk-Loop"  # what ingest/automatic.py recognises as our own mail
REFERENCES_KEPT = 20  # the thread's root and its latest ids are what clients use


@dataclass(frozen=True)
class Envelope:
    """Who a mail is from and to, and which thread it continues."""

    from_name: str
    from_address: str
    to: str
    reply_to: str
    message_id: str  # bare, without angle brackets
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    to_name: str = ""


def compose(
    rendered: Rendered,
    envelope: Envelope,
    *,
    automatic: bool,
    language: str,
    date: datetime,
) -> EmailMessage:
    """The complete message for `rendered` (text, and HTML beside it when there is one)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = Address(envelope.from_name, addr_spec=envelope.from_address)
    message["To"] = Address(envelope.to_name, addr_spec=envelope.to)
    message["Reply-To"] = envelope.reply_to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{envelope.message_id}>"
    if envelope.in_reply_to:
        message["In-Reply-To"] = f"<{envelope.in_reply_to}>"
    references = [*envelope.references]
    if envelope.in_reply_to and envelope.in_reply_to not in references:
        references.append(envelope.in_reply_to)
    if references:
        kept = references[:1] + references[1:][-(REFERENCES_KEPT - 1) :]
        message["References"] = " ".join(f"<{r}>" for r in kept)
    message[LOOP_HEADER] = envelope.from_address
    if automatic:
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    # After the content: setting it clears every Content-* header.
    message["Content-Language"] = language
    return message


def queue_mail(
    conn: Connection,
    rendered: Rendered,
    envelope: Envelope,
    *,
    kind: str,
    ticket_id: int,
    language: str,
    at: datetime,
    automatic: bool,
    limited: bool | None = None,
) -> int:
    """Compose `rendered` for `envelope` and queue it on ticket `ticket_id`, in the
    caller's transaction; the outbox row's id.

    `automatic`: no person wrote it (RFC 3834 headers). `limited`: it counts towards the
    limit on automatic mail per recipient (by default when automatic; notifications to
    agents are automatic but never limited).
    """
    message = compose(rendered, envelope, automatic=automatic, language=language, date=at)
    return enqueue(
        conn,
        message,
        kind=kind,
        ticket_id=ticket_id,
        automatic=automatic if limited is None else limited,
        text=rendered.text,
        at=at,
    )
