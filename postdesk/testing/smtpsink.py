"""An SMTP server on loopback that records what it is sent, for outbox tests and the demo.

It runs aiosmtpd in a background thread with its own event loop, so synchronous tests and
asyncio code under test can both talk to it. aiosmtpd is a development dependency, so it is
imported only when a sink starts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the client sent it: envelope, raw DATA, and how the session was secured."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool = False
    auth_user: str | None = None


class SmtpSink:
    """A throwaway SMTP server on a free loopback port that keeps every message it accepts.

    ``starttls`` offers STARTTLS with the given certificate and key; ``auth`` requires AUTH
    PLAIN or LOGIN with that user and password (allowed without TLS, it is loopback).
    ``fail_next`` makes it refuse coming messages, to exercise a sender's retry logic.

    ``accepts`` decides at RCPT TO which recipients exist (the others get 550 5.1.1), and
    ``deliver`` is called with every message before it is accepted, on the sink's thread:
    if it raises, the message is refused with 451 and kept in ``refused``. Together they
    turn the sink into a mail server that delivers (see testing/delivery.py).

    ``xoauth2`` makes it offer AUTH XOAUTH2 and require a login: it is called with the
    user and bearer token of each attempt and says whether they are good (for instance
    testing/oauthserver.py's ``OAuthServer.valid``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        starttls: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        auth: tuple[str, str] | None = None,
        accepts: Callable[[str], bool] | None = None,
        deliver: Callable[[ReceivedMail], None] | None = None,
        xoauth2: Callable[[str, str], bool] | None = None,
    ) -> None:
        if starttls and (tls_cert is None or tls_key is None):
            raise ValueError("starttls=True needs tls_cert and tls_key")
        self._host = host
        self._requested_port = port
        self._port = 0
        self.starttls = starttls
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.auth = auth
        self.accepts = accepts
        self.deliver = deliver
        self.xoauth2 = xoauth2
        self._changed = threading.Condition()
        self._messages: list[ReceivedMail] = []
        self._refused: list[ReceivedMail] = []
        self._fail_count = 0
        self._fail_code = 451
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the sink listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the sink listens on (known once started)."""
        if not self._port:
            raise RuntimeError("the SmtpSink has not been started")
        return self._port

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of the messages accepted so far, oldest first."""
        with self._changed:
            return list(self._messages)

    @property
    def refused(self) -> list[ReceivedMail]:
        """A copy of the messages refused because of fail_next(), oldest first."""
        with self._changed:
            return list(self._refused)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages were accepted; TimeoutError after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SmtpSink on port {self._port} accepted {len(self._messages)} of the "
                    f"{count} expected messages within {timeout:g}s"
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget accepted and refused messages; a pending fail_next() stays in force."""
        with self._changed:
            self._messages.clear()
            self._refused.clear()

    def fail_next(self, n: int, code: int = 451) -> None:
        """Refuse the next ``n`` messages at the end of DATA with ``code`` (4xx or 5xx).

        451 is a transient failure a sender should retry; 550 a permanent one it should
        not. Replaces any earlier fail_next() still pending; n=0 cancels it.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        if not 400 <= code <= 599:
            raise ValueError(f"code must be an SMTP failure (4xx or 5xx), not {code}")
        with self._changed:
            self._fail_count = n
            self._fail_code = code

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Bind, start serving in a background thread and wait for the SMTP greeting.

        A bind failure (port in use, address not local) is raised as the OSError it is.
        """
        if self._thread is not None:
            return
        smtp_class, auth_result_class = _import_aiosmtpd()
        tls_context: ssl.SSLContext | None = None
        if self.starttls:
            assert self.tls_cert is not None and self.tls_key is not None
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(self.tls_cert, self.tls_key)

        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._requested_port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])

        if self.auth is not None or self.xoauth2 is not None:
            # AUTH without TLS is deliberate here (loopback); aiosmtpd warns on every session.
            warnings.filterwarnings(
                "ignore",
                message="Requiring AUTH while not requiring TLS",
                category=UserWarning,
                module="aiosmtpd",
            )
        loop = asyncio.new_event_loop()
        handler = (
            _XOAuth2Handler(self, self.xoauth2, auth_result_class)
            if self.xoauth2 is not None
            else _Handler(self)
        )
        authenticator = _Authenticator(self.auth, auth_result_class) if self.auth else None

        def factory() -> Any:
            return smtp_class(
                handler,
                hostname="localhost",
                tls_context=tls_context,
                require_starttls=False,
                auth_required=self.auth is not None or self.xoauth2 is not None,
                auth_require_tls=False,
                authenticator=authenticator,
                enable_SMTPUTF8=True,
                loop=loop,
            )

        ready = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(
            target=_serve,
            args=(loop, sock, factory, ready, failures),
            name=f"SmtpSink-{self._port}",
            daemon=True,
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            if not ready.wait(timeout):
                raise TimeoutError(f"SmtpSink did not start serving within {timeout:g}s")
            if failures:
                raise failures[0]
            _expect_greeting(self._host, self._port, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving and join the thread; never raises."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed itself
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

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

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._thread is not None else "stopped"
        return f"<SmtpSink {self._host} {state} messages={len(self.messages)}>"

    def _receive(self, session: Any, envelope: Any) -> str:
        """Record one message; called on the sink's event loop thread at the end of DATA."""
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        auth_data = getattr(session, "auth_data", None)
        login = getattr(auth_data, "login", None)
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from or ""),
            rcpt_tos=tuple(str(rcpt) for rcpt in envelope.rcpt_tos),
            data=bytes(content),
            tls=session.ssl is not None,
            auth_user=login.decode("utf-8", "replace") if isinstance(login, bytes) else None,
        )
        with self._changed:
            if self._fail_count > 0:
                self._fail_count -= 1
                self._refused.append(mail)
                code = self._fail_code
                return f"{code} {code // 100}.0.0 Refused on request (SmtpSink.fail_next)"
        if self.deliver is not None:
            try:
                self.deliver(mail)
            except Exception as exc:
                with self._changed:
                    self._refused.append(mail)
                detail = " ".join(str(exc).split())[:200]
                return f"451 4.3.0 Delivery failed: {type(exc).__name__}: {detail}"
        with self._changed:
            self._messages.append(mail)
            self._changed.notify_all()
        return "250 2.0.0 Accepted by SmtpSink"


class _Handler:
    """aiosmtpd handler hooks; aiosmtpd finds them by name."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        accepts = self._sink.accepts
        if accepts is not None and not accepts(address):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._sink._receive(session, envelope)


@dataclass(frozen=True)
class _OAuthLogin:
    login: bytes


class _XOAuth2Handler(_Handler):
    """The handler plus AUTH XOAUTH2 (aiosmtpd offers every `auth_*` method it has)."""

    def __init__(
        self, sink: SmtpSink, check: Callable[[str, str], bool], result_class: Any
    ) -> None:
        super().__init__(sink)
        self._check = check
        self._result_class = result_class

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        # Only the initial-response form (what clients send); anything else fails.
        fields: dict[str, str] = {}
        if len(args) == 2:
            try:
                decoded = base64.b64decode(args[1], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            for part in decoded.split("\x01"):
                name, _, value = part.partition("=")
                fields[name] = value
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        ok = bool(user and token) and self._check(user, token)
        data = _OAuthLogin(user.encode("utf-8")) if ok else None
        return self._result_class(success=ok, handled=False, auth_data=data)


class _Authenticator:
    """Accepts exactly one user/password pair for AUTH PLAIN and LOGIN."""

    def __init__(self, credentials: tuple[str, str], result_class: Any) -> None:
        self._user = credentials[0].encode("utf-8")
        self._password = credentials[1].encode("utf-8")
        self._result_class = result_class

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        login = getattr(auth_data, "login", None)
        password = getattr(auth_data, "password", None)
        ok = (
            isinstance(login, bytes)
            and isinstance(password, bytes)
            and hmac.compare_digest(login, self._user)
            and hmac.compare_digest(password, self._password)
        )
        # handled=False lets aiosmtpd send its standard 535 reply on failure.
        return self._result_class(success=ok, handled=False, auth_data=auth_data if ok else None)


def _import_aiosmtpd() -> tuple[Any, Any]:
    try:
        from aiosmtpd.smtp import SMTP, AuthResult
    except ImportError as exc:
        raise RuntimeError(
            "SmtpSink needs aiosmtpd, a development dependency: pip install 'postdesk[dev]'"
        ) from exc
    return SMTP, AuthResult


def _serve(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: Callable[[], Any],
    ready: threading.Event,
    failures: list[BaseException],
) -> None:
    """Body of the sink's thread: serve on ``sock`` until the loop is stopped."""
    asyncio.set_event_loop(loop)
    try:
        # aiosmtpd builds its protocol lazily per connection; building one now surfaces a
        # bad TLS or auth setup in start() instead of as a dropped first connection.
        factory()
        server = loop.run_until_complete(loop.create_server(factory, sock=sock))
    except BaseException as exc:
        failures.append(exc)
        sock.close()
        loop.close()
        ready.set()
        return
    ready.set()
    try:
        loop.run_forever()
    finally:
        server.close()
        # Cancelling the per-connection tasks closes their transports, so nothing is left
        # pending when the loop closes.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 1.0))
        loop.close()


def _expect_greeting(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout) as conn:
        greeting = conn.recv(1024)
        with contextlib.suppress(OSError):
            conn.sendall(b"QUIT\r\n")
    if not greeting.startswith(b"220"):
        raise RuntimeError(f"SmtpSink on port {port} did not greet with 220: {greeting!r}")
