"""One builder for the hand-made messages tests feed to postdesk.

`bytes(Mail(...))` is an RFC 5322 message written by Python's `email` package: the
headers in a fixed order (From, To, Cc, Subject, Date, Message-ID, In-Reply-To,
References), then the content (plain text, with an HTML alternative and attachments when
given), then any extra header lines in the order given. Message-IDs are passed bare and
written in angle brackets. Synthetic inbox traffic in bulk is `mailgen.generate()`'s job.

Tests that need a MIME structure the `email` package will not write (a hand-made
multipart/report, say) give `content_type` and a body that is already that content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime


@dataclass(frozen=True)
class Attachment:
    """A file attached to a built message."""

    filename: str
    data: bytes
    content_type: str = "application/pdf"


@dataclass(frozen=True, kw_only=True)
class Mail:
    """One message to build: `bytes(Mail(...))`, or `.message()` for mailbox files.

    `sender=None` leaves out From. `date` is a datetime or a ready header value; `None`
    leaves Date out, as it does Message-ID. `headers` are extra (name, value) lines after
    the others. `content_type` takes `body` as the finished content, written 8-bit after
    the header block under that Content-Type, for structures the email package cannot
    build (the one option `message()` gets by parsing the bytes back).
    """

    sender: str | None
    to: str
    subject: str
    body: str = ""
    cc: str | None = None
    html: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    date: datetime | str | None = None
    headers: Sequence[tuple[str, str]] = ()
    attachments: Sequence[Attachment] = ()
    charset: str = "utf-8"
    content_type: str | None = None

    def message(self) -> EmailMessage:
        """The message as an `EmailMessage`."""
        if self.content_type is not None:
            parsed = message_from_bytes(bytes(self), policy=default_policy)
            assert isinstance(parsed, EmailMessage)
            return parsed
        return self._build()

    def __bytes__(self) -> bytes:
        """The message's bytes, LF line ends, as a mail client would have written it."""
        if self.content_type is None:
            return bytes(self._build())
        if self.html is not None or self.attachments:
            raise ValueError("with content_type the body is all the content: no html, no files")
        # The email package would rewrite a multipart body it did not build itself, and
        # requote the Content-Type: the finished content goes after the header block as is.
        head = bytes(self._build()).removesuffix(b"\n")
        content = (
            f"MIME-Version: 1.0\nContent-Type: {self.content_type}\n"
            "Content-Transfer-Encoding: 8bit\n\n"
        )
        return head + content.encode("ascii") + self.body.encode(self.charset)

    def _build(self) -> EmailMessage:
        msg = EmailMessage(policy=default_policy)
        if self.sender is not None:  # None: no From at all, which postdesk must refuse
            msg["From"] = self.sender
        msg["To"] = self.to
        if self.cc is not None:
            msg["Cc"] = self.cc
        msg["Subject"] = self.subject
        if self.date is not None:
            msg["Date"] = self.date if isinstance(self.date, str) else format_datetime(self.date)
        if self.message_id is not None:
            msg["Message-ID"] = f"<{self.message_id}>"
        if self.in_reply_to is not None:
            msg["In-Reply-To"] = f"<{self.in_reply_to}>"
        if self.references:
            msg["References"] = " ".join(f"<{ref}>" for ref in self.references)
        if self.content_type is None:
            msg.set_content(self.body, charset=self.charset)
            if self.html is not None:
                msg.add_alternative(self.html, subtype="html", charset=self.charset)
            for attachment in self.attachments:
                maintype, subtype = attachment.content_type.split("/", 1)
                msg.add_attachment(
                    attachment.data,
                    maintype=maintype,
                    subtype=subtype,
                    filename=attachment.filename,
                )
        for name, value in self.headers:
            msg[name] = value
        return msg
