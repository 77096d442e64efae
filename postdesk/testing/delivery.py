"""A small mail system for end-to-end tests: SMTP on loopback that delivers into Dovecot.

`MailSystem` joins an `SmtpSink` (aiosmtpd) to the test `Dovecot`: every message the SMTP
server accepts is APPENDed over IMAP to the INBOX of each recipient, logged in as that
Dovecot user, the way a real MTA's local delivery would file it. A test can then send
mail as customers and agents do, let postdesk fetch its support mailbox and send its
outbox through the same server, and read what each person received in their own INBOX.

* Recipients are the users added through `add_user()` (or `register()`). A subaddress is
  delivered to its user as Postfix's ``recipient_delimiter = +`` does:
  ``help+t5a2-sig@shop.example`` lands in the INBOX of ``help@shop.example``. Anyone
  else is refused at RCPT TO with 550 5.1.1, so a stray address fails loudly.
* Each delivered copy gets the trace headers a delivery agent writes on top:
  ``Return-Path`` (the envelope sender), ``Delivered-To`` (the envelope recipient as
  given, subaddress and all) and a ``Received`` line.
* Delivery happens before the SMTP server answers 250, so once a client's DATA is
  accepted (postdesk's outbox drain, or `send()`) the mail is in the INBOX. A delivery
  that fails is answered 451 and the message is not kept.
* `SmtpSink.messages` still records every accepted message as sent, for counting what
  arrived at the server.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import smtplib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from types import TracebackType
from typing import Self

import imapclient

from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.smtpsink import ReceivedMail, SmtpSink

SUBADDRESS_DELIMITER = "+"


def mailbox_address(address: str) -> str:
    """The address whose mailbox receives `address`: lower-cased, subaddress removed."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split(SUBADDRESS_DELIMITER, 1)[0]}@{domain}"


def parse(raw: bytes) -> EmailMessage:
    """`raw` as an `EmailMessage` (the email package's modern API), read with LF line
    ends so that decoded text parts have no stray CRs."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


class MailSystem:
    """An SMTP server on a free loopback port delivering into the INBOXes of `dovecot`.

    Use it as a context manager (or `start()`/`stop()`); `dovecot` must be running and
    stays the caller's to stop. `smtp` is the underlying sink: its port, and the messages
    it accepted.
    """

    def __init__(self, dovecot: Dovecot, host: str = "127.0.0.1") -> None:
        self.dovecot = dovecot
        self._users: dict[str, MailUser] = {}
        self._lock = threading.Lock()
        self.smtp = SmtpSink(host, accepts=self.accepts, deliver=self._deliver)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the SMTP server listens on."""
        return self.smtp.host

    @property
    def port(self) -> int:
        """The SMTP server's port (known once started)."""
        return self.smtp.port

    def start(self) -> None:
        """Start the SMTP server."""
        self.smtp.start()

    def stop(self) -> None:
        """Stop the SMTP server; never raises."""
        self.smtp.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- users --------------------------------------------------------------------------

    def add_user(self, email_address: str | None = None, password: str | None = None) -> MailUser:
        """A new Dovecot account (see `Dovecot.add_user`) that this server delivers to."""
        user = self.dovecot.add_user(email_address, password)
        self.register(user)
        return user

    def register(self, user: MailUser) -> None:
        """Deliver mail for `user` (an existing account on the same Dovecot)."""
        with self._lock:
            self._users[mailbox_address(user.email)] = user

    def accepts(self, address: str) -> bool:
        """Whether mail to `address` (a subaddress too) has a mailbox to go to."""
        with self._lock:
            return mailbox_address(address) in self._users

    # -- sending and reading ------------------------------------------------------------

    def smtp_toml(self) -> str:
        """The `[smtp]` block that makes postdesk send through this server."""
        return f'[smtp]\nhost = "{self.host}"\nport = {self.port}\nsecurity = "none"\n'

    def send(
        self, raw: bytes, *, mail_from: str | None = None, to: Sequence[str] | None = None
    ) -> None:
        """Submit `raw` as a mail client does. The envelope defaults to the message's own
        From and its To and Cc; SMTPRecipientsRefused if none of them exists."""
        message = parse(raw)
        if mail_from is None:
            senders = getaddresses([str(v) for v in message.get_all("From", [])])
            mail_from = senders[0][1] if senders else ""
        if to is None:
            heads = [str(v) for name in ("To", "Cc") for v in message.get_all(name, [])]
            to = [addr for _name, addr in getaddresses(heads) if addr]
        with smtplib.SMTP(self.host, self.port, timeout=30) as client:
            # smtplib sends bytes as they are; SMTP wants CRLF line ends.
            client.sendmail(mail_from, list(to), _crlf(raw))

    def inbox(self, user: MailUser, folder: str = "INBOX") -> list[bytes]:
        """Every message in `user`'s folder as delivered, in UID order (read with PEEK)."""
        with self._session(user) as conn:
            conn.select_folder(folder, readonly=True)
            uids = sorted(conn.search("ALL"))
            if not uids:
                return []
            fetched = conn.fetch(uids, [b"BODY.PEEK[]"])
            return [bytes(fetched[uid][b"BODY[]"]) for uid in uids]

    def messages(self, user: MailUser, folder: str = "INBOX") -> list[EmailMessage]:
        """`inbox()` parsed."""
        return [parse(raw) for raw in self.inbox(user, folder)]

    # -- internals ----------------------------------------------------------------------

    def _deliver(self, mail: ReceivedMail) -> None:
        """File one accepted message in each recipient's INBOX (on the SMTP thread)."""
        for rcpt in mail.rcpt_tos:
            with self._lock:
                user = self._users[mailbox_address(rcpt)]
            trace = (
                f"Return-Path: <{mail.mail_from}>\r\n"
                f"Delivered-To: {rcpt}\r\n"
                f"Received: from localhost by postdesk-test-mx with ESMTP for <{rcpt}>; "
                f"{format_datetime(datetime.now(UTC))}\r\n"
            ).encode()
            self.dovecot.append(user, trace + _crlf(mail.data))

    @contextlib.contextmanager
    def _session(self, user: MailUser) -> Iterator[imapclient.IMAPClient]:
        conn = self.dovecot.client(user)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()


def _crlf(data: bytes) -> bytes:
    """`data` with CRLF line ends, as IMAP APPEND and mail stores expect."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
