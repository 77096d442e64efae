"""Readiness, watchdog and status messages to systemd (`Type=notify` units).

The protocol is one datagram per message on the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`), holding
newline-separated `KEY=value` assignments: `READY=1`, `WATCHDOG=1`, `STOPPING=1`,
`STATUS=...`. That is a dozen lines, so postdesk speaks it itself rather than depend on
a binding to libsystemd (which needs a C compiler and the library's headers to install)
or on a small, rarely released package.

Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing. A failed send is logged
once and never stops the service: systemd restarting or a full socket buffer must not
take the mail flow down with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# A status line is shown by `systemctl status`; keep it short and on one line.
MAX_STATUS = 200


class Notifier:
    """Sends state changes to the service manager named by the environment."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        # systemd wants a ping at least every WATCHDOG_USEC; half of it leaves room for
        # a slow pass and scheduling delays (what sd_watchdog_enabled(3) recommends).
        self.watchdog_interval: float | None = (
            watchdog_usec / 2_000_000 if watchdog_usec and self.address else None
        )
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier for this process: `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and
        `$WATCHDOG_PID` (a watchdog meant for another process is ignored)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "").strip() or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "").strip()
        if raw.isdigit() and int(raw) > 0:
            pid = env.get("WATCHDOG_PID", "").strip()
            if not pid or (pid.isdigit() and int(pid) == os.getpid()):
                usec = int(raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            # Linux abstract namespace: a leading NUL byte instead of the '@'.
            return b"\0" + self.address[1:].encode()
        return self.address

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (keyword names are upper-cased); True if sent."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = " ".join(str(value).split())  # a newline would start another field
            lines.append(f"{key.upper()}={text}")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), self._target())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd notify socket %s: %s", self.address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status[:MAX_STATUS])

    def status(self, status: str) -> None:
        self.send(status=status[:MAX_STATUS])

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self.send(watchdog=1)

    def reloading(self) -> None:
        # MONOTONIC_USEC tells systemd which reload this is (systemd.service(5)).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(reloading=1, monotonic_usec=usec, status="reloading the configuration")

    def stopping(self, status: str = "stopping") -> None:
        self.send(stopping=1, status=status[:MAX_STATUS])

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
