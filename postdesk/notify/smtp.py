"""Sending the outbox over SMTP with aiosmtplib: the only module that talks SMTP.

`OutboxSender.drain()` sends every due row once: it first recovers rows of senders
that died (notify/outbox.py), then claims due rows in batches and sends each over one
connection (SSL, STARTTLS or plain; AUTH when a username is configured). Per row:

- MAIL FROM and RCPT TO; a 5xx answer fails the row with that answer (a mail with
  several recipients fails if any is refused for good: it is never half-delivered);
- DATA and the message, all but the end-of-data line; then the row is durably marked
  `completing`, and only then is the end of data sent. So a crash before the mark leaves
  a transaction the server discards (the row is sent again), and only a crash in the one
  round trip after it leaves a row whose fate is unknown (`unconfirmed`, never resent
  on its own);
- 250: `sent`. 4xx, a lost connection or a timeout: queued again after a backoff that
  doubles from a minute up to an hour, until `retry_for` has passed since the mail was
  queued; then `failed`. 5xx: `failed` with the server's answer.

The end of data is written by hand because aiosmtplib's `data()` sends the message and
its end in one write, leaving no point at which to record that the end is next.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiosmtplib

from postdesk.config import SmtpSettings
from postdesk.errors import PostdeskError
from postdesk.models import OutboxState, utcnow
from postdesk.models.db import Database
from postdesk.notify.outbox import (
    Claimed,
    backoff,
    claim,
    completing,
    failed,
    mark_unconfirmed,
    recover,
    sent,
    try_later,
)
from postdesk.oauth import TokenError, token_source

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def data_lines(content: bytes) -> bytes:
    """`content` as DATA carries it: CRLF line ends, leading dots doubled (RFC 5321
    4.5.2), ending in CRLF, without the end-of-data line."""
    body = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", content))
    return body if body.endswith(b"\r\n") else body + b"\r\n"


@dataclass
class DrainResult:
    """What one drain of the outbox did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unconfirmed: int = 0
    requeued_after_crash: int = 0
    errors: list[str] = field(default_factory=list)


class _Refused(Exception):
    """The server answered a step of one mail with an error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}".strip())
        self.code = code


class OutboxSender:
    """Drains the outbox through one SMTP relay; safe to run in several processes."""

    def __init__(
        self,
        db: Database,
        smtp: SmtpSettings,
        *,
        owner: str,
        retry_for: timedelta = timedelta(days=2),
        batch_size: int = 50,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.smtp = smtp
        self.owner = owner
        self.retry_for = retry_for
        self.batch_size = batch_size
        self.should_stop = should_stop
        self.clock = clock

    def drain(self) -> DrainResult:
        """Send every row that is due now, once; returns when none is left (or on stop)."""
        result = DrainResult()
        found = recover(self.db, stale_after=self._stale_after(), now=self.clock())
        result.requeued_after_crash = len(found.requeued)
        result.unconfirmed += len(found.unconfirmed)
        for row_id in found.unconfirmed:
            log.warning("outbox %d: unconfirmed (its sender stopped after the end of data)", row_id)
        asyncio.run(self._drain(result))
        return result

    def _stale_after(self) -> timedelta:
        # A live sender finishes a row well within its timeouts; one silent for longer is
        # gone (on another machine, where its process cannot be looked up).
        return timedelta(seconds=max(300.0, 6 * self.smtp.timeout))

    async def _drain(self, result: DrainResult) -> None:
        while not self.should_stop():
            batch = claim(self.db, self.owner, self.batch_size, now=self.clock())
            if not batch:
                return
            if not await self._send_batch(batch, result):
                return  # the server is unreachable: the rest waits for the next drain

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.smtp
        context = None
        if settings.security != "none":
            context = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None
            )
            if not settings.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.security == "ssl",
            start_tls=settings.security == "starttls",
            tls_context=context,
            timeout=settings.timeout,
        )
        await client.connect()
        try:
            if settings.auth == "xoauth2":
                await xoauth2_login(client, settings)
            elif settings.username:
                await client.login(settings.username, settings.password.reveal())
        except BaseException:
            client.close()
            raise
        return client

    async def _send_batch(self, batch: list[Claimed], result: DrainResult) -> bool:
        """Send the claimed rows over one connection; False when none could be made."""
        try:
            client = await self._connect()
        except (aiosmtplib.SMTPException, OSError, PostdeskError) as exc:
            # PostdeskError: a password file that went missing, a token command that
            # failed (ConfigError, TokenError). The mail waits like for a server that is
            # down; the service goes on fetching and filing mail meanwhile.
            reason = f"cannot connect to {self.smtp.host}:{self.smtp.port}: {_one_line(exc)}"
            result.errors.append(reason)
            log.warning("outbox: %s", reason)
            for row in batch:
                self._transient(row, reason, OutboxState.SENDING, result)
            return False
        try:
            for index, row in enumerate(batch):
                if not await self._send_one(client, row, result):
                    # The connection is gone: give the rest back for the next drain.
                    for rest in batch[index + 1 :]:
                        self._transient(rest, "connection lost", OutboxState.SENDING, result)
                    return False
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        return True

    async def _send_one(self, client: aiosmtplib.SMTP, row: Claimed, result: DrainResult) -> bool:
        """One row; False when the connection is no longer usable."""
        state = OutboxState.SENDING
        try:
            await _step(client.mail(row.mail_from))
            for recipient in row.recipients:
                await _step(client.rcpt(recipient))
            started = await client.execute_command(b"DATA")
            if started.code != 354:
                raise _Refused(started.code, started.message)
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            protocol.write(data_lines(row.content))
            # The mark must follow the data out of our buffers: written while a large mail
            # is still queued in the transport, a crash during its sending would leave a
            # row `unconfirmed` that the server never got.
            await _flushed(client, self.smtp.timeout)
            if not completing(self.db, row.id, self.owner):
                # Taken over meanwhile (this sender was thought dead): leave the data
                # unfinished, so the server discards it, and let the new holder send it.
                client.close()
                return False
            state = OutboxState.COMPLETING
            protocol.write(b".\r\n")
            answer = await protocol.read_response(timeout=self.smtp.timeout)
            if answer.code != 250:
                raise _Refused(answer.code, answer.message)
        except _Refused as exc:
            if 500 <= exc.code < 600:
                failed(self.db, row.id, self.owner, str(exc), was=state)
                result.failed += 1
                log.warning("outbox %d <%s>: refused: %s", row.id, row.message_id, exc)
            else:
                self._transient(row, str(exc), state, result)
            return await _reset(client)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if state == OutboxState.COMPLETING:
                # The end of data went out and no answer came back: it may be delivered.
                _unconfirmed(self.db, row, self.owner, _one_line(exc))
                result.unconfirmed += 1
            else:
                self._transient(row, _one_line(exc), state, result)
            client.close()
            return False
        sent(self.db, row.id, self.owner, f"{answer.code} {answer.message}".strip())
        result.sent += 1
        log.debug(
            "outbox %d <%s>: sent to %s",
            row.id,
            row.message_id,
            ", ".join(row.recipients),
            extra={"outbox_id": row.id, "message_id": row.message_id},
        )
        return True

    def _transient(
        self, row: Claimed, reason: str, state: OutboxState, result: DrainResult
    ) -> None:
        now = self.clock()
        if now - row.retry_since >= self.retry_for:
            why = (
                f"not delivered within {_span(self.retry_for)} ({row.attempts} attempts): {reason}"
            )
            failed(self.db, row.id, self.owner, why, was=state)
            result.failed += 1
            log.warning("outbox %d <%s>: %s", row.id, row.message_id, why)
            return
        at = now + backoff(row.attempts)
        try_later(self.db, row.id, self.owner, reason, at=at, was=state)
        result.retrying += 1
        log.info("outbox %d <%s>: will retry at %s: %s", row.id, row.message_id, at, reason)


async def xoauth2_login(client: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    """AUTH XOAUTH2 with a token from [smtp.oauth] (its refresh runs off the event loop).

    A cached token the server refuses is replaced by a freshly refreshed one, once. A
    token that cannot be had is raised as SMTPAuthenticationError (code 0) carrying the
    TokenError's one line, so it is handled like a refused login.
    """
    tokens = token_source(settings.oauth, "[smtp]")
    try:
        token = await asyncio.to_thread(tokens.token)
        try:
            await client.auth_xoauth2(settings.username, token)
        except aiosmtplib.SMTPAuthenticationError:
            if not tokens.last_was_cached:
                raise
            log.info("[smtp]: cached access token refused; refreshing")
            tokens.forget()
            token = await asyncio.to_thread(tokens.token, fresh=True)
            await client.auth_xoauth2(settings.username, token)
    except TokenError as exc:
        raise aiosmtplib.SMTPAuthenticationError(0, str(exc)) from None


async def _step(call: object) -> None:
    """Await an SMTP command, turning a refusal into `_Refused` with its code."""
    try:
        await call  # type: ignore[misc]
    except aiosmtplib.SMTPResponseException as exc:
        raise _Refused(exc.code, exc.message) from None


async def _flushed(client: aiosmtplib.SMTP, timeout: float) -> None:
    """Wait until the transport has handed everything written to the operating system."""
    transport = client.transport
    if not isinstance(transport, asyncio.WriteTransport):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while transport.get_write_buffer_size() > 0:
        if transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost while sending data")
        if loop.time() > deadline:
            raise aiosmtplib.SMTPTimeoutError("timed out sending the message data")
        await asyncio.sleep(0.005)


async def _reset(client: aiosmtplib.SMTP) -> bool:
    """RSET after a refused mail, so the next one starts clean; False if that fails."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
        return False
    return True


def _unconfirmed(db: Database, row: Claimed, owner: str, reason: str) -> None:
    mark_unconfirmed(db, row.id, owner, f"no answer after the end of data: {reason}")


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 24 else f"{hours:g} hours"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
