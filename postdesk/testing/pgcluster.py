"""A private, throwaway PostgreSQL cluster that a test may stop and restart.

The machine's shared PostgreSQL server is used by every other test, so a test that
restarts PostgreSQL gets a cluster of its own: `initdb` into a temporary directory,
`pg_ctl start` on a free loopback port (the socket in that directory too), `restart`
and `stop` as the test says. Debian's binaries are found under
/usr/lib/postgresql/*/bin (the newest). As root, initdb and the server run as the
`postgres` user (PostgreSQL refuses to run as root), so the directory is made theirs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

PG_OS_USER = "postgres"
TIMEOUT = 60.0


class ClusterUnavailable(RuntimeError):
    """initdb or pg_ctl cannot be run here (not installed, or no user to run them as)."""


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: tuple(int(x) for x in p.parent.parent.name.split(".") if x.isdigit()),
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """One PostgreSQL cluster in a fresh temporary directory, trust authentication."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise ClusterUnavailable("no initdb under /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self._as_pg: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise ClusterUnavailable(f"running as root without a {PG_OS_USER!r} user") from None
            if shutil.which("runuser") is None:
                raise ClusterUnavailable("running as root without runuser")
            self._as_pg = ["runuser", "-u", PG_OS_USER, "--"]
        # /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="postdesk-pg-", dir="/tmp"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [*self._as_pg, *argv],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd="/",
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-600:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip()[-600:]} {tail}")

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                *("-D", str(self.data), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--locale=C", "--no-sync"),
            )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"),
        )
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._started = False

    def restart(self) -> None:
        """Stop (fast: every connection is closed) and start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            subprocess.run(
                [
                    *self._as_pg,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=TIMEOUT,
                cwd="/",
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
