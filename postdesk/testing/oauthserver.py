"""An OAuth 2.0 authorization server on loopback, for XOAUTH2 tests.

It implements the two endpoints postdesk's logins meet: the token endpoint's refresh
grant (RFC 6749 section 6), rotating the refresh token on every use as Microsoft's does,
and token introspection (RFC 7662), which the test Dovecot's oauth2 passdb calls to check
the bearer token an IMAP client presents. The SMTP sink checks tokens with `valid()`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class OAuthServer:
    """Issues access tokens for one account from a refresh token; revokes them on cue.

    `refresh_token` is the one valid now; with `rotate` each refresh replaces it (the old
    one is then refused with invalid_grant). `expires_in` is what token answers announce.
    `requests` counts refresh grants answered.
    """

    def __init__(
        self,
        user: str,
        *,
        client_id: str = "postdesk-test",
        client_secret: str = "",
        rotate: bool = True,
        expires_in: int = 3600,
    ) -> None:
        self.user = user
        self.client_id = client_id
        self.client_secret = client_secret
        self.rotate = rotate
        self.expires_in = expires_in
        self.refresh_token = "rt-" + secrets.token_urlsafe(16)
        self.requests = 0
        self.introspections = 0
        self._access: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    def account(self, user: str) -> str:
        """Serve `user` from now on, from a new refresh token (returned); the access tokens
        and counts of the account served before are forgotten."""
        with self._lock:
            self.user = user
            self.refresh_token = "rt-" + secrets.token_urlsafe(16)
            self.requests = self.introspections = 0
            self._access.clear()
            return self.refresh_token

    def issue(self) -> str:
        """A new valid access token, as if another client had refreshed."""
        token = "at-" + secrets.token_urlsafe(24)
        with self._lock:
            self._access.add(token)
        return token

    def valid(self, user: str, token: str) -> bool:
        """Whether `token` is a live access token of `user`."""
        with self._lock:
            return user == self.user and token in self._access

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops working (refresh tokens still do)."""
        with self._lock:
            self._access.clear()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)

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

    # -- the endpoints --------------------------------------------------------------------

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or (
            self.client_secret and form.get("client_secret") != self.client_secret
        ):
            return 401, {"error": "invalid_client"}
        with self._lock:
            if form.get("refresh_token") != self.refresh_token:
                return 400, {"error": "invalid_grant", "error_description": "bad token"}
            self.requests += 1
            answer: dict[str, object] = {"token_type": "Bearer", "expires_in": self.expires_in}
            if self.rotate:
                self.refresh_token = "rt-" + secrets.token_urlsafe(16)
                answer["refresh_token"] = self.refresh_token
        answer["access_token"] = self.issue()
        return 200, answer

    def _introspect(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        with self._lock:
            self.introspections += 1
            live = form.get("token", "") in self._access
        if not live:
            return 200, {"active": False}
        return 200, {"active": True, "username": self.user, "exp": int(time.time()) + 600}


def _handler(owner: OAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), 65536)
            body = self.rfile.read(length).decode("utf-8", "replace")
            form = dict(urllib.parse.parse_qsl(body))
            if self.path == "/token":
                code, answer = owner._token(form)
            elif self.path == "/introspect":
                code, answer = owner._introspect(form)
            else:
                code, answer = 404, {"error": "not_found"}
            data = json.dumps(answer).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: tokens would be in the request lines of a verbose log

    return Handler
