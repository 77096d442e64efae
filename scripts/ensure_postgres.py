#!/usr/bin/env python3
"""Print the SQLAlchemy URL of a PostgreSQL server the test suite may create schemas on.

Run it with the project's virtualenv python (it needs psycopg 3). It prints exactly one line
on stdout, tries these in order and uses the first that works:

1. $POSTDESK_TEST_PG_URL, if set;
2. postgresql+psycopg://postgres@127.0.0.1:5432/test (override with $POSTDESK_PG_DEFAULT_URL);
3. a private cluster on 127.0.0.1:54329 kept in ${XDG_RUNTIME_DIR:-/tmp}/postdesk-test-pg,
   created with Debian's initdb (installing the postgresql package if needed) and reused by
   later calls.

"Works" means: connects, and the user may CREATE SCHEMA. Progress goes to stderr; any
failure is one line on stderr and exit status 1. ``--stop`` stops the private cluster.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENV_URL = "POSTDESK_TEST_PG_URL"
ENV_DEFAULT_URL = "POSTDESK_PG_DEFAULT_URL"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PRIVATE_HOST = "127.0.0.1"
PRIVATE_PORT = 54329
PRIVATE_DB = "test"
PRIVATE_USER = "postgres"
PG_OS_USER = "postgres"

CONNECT_TIMEOUT = 3
COMMAND_TIMEOUT = 120
APT_TIMEOUT = 900
READY_TIMEOUT = 60.0


class Failure(Exception):
    """Ends the script: the message is the one line printed on stderr."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stop", action="store_true", help="stop the private cluster if it is running"
    )
    args = parser.parse_args(argv)
    try:
        if args.stop:
            stop_private_cluster()
            return 0
        print(find_or_start_server())
        return 0
    except Failure as exc:
        print(f"ensure_postgres: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ensure_postgres: {exc}", file=sys.stderr)
        return 1


def progress(message: str) -> None:
    print(f"ensure_postgres: {message}", file=sys.stderr, flush=True)


def find_or_start_server() -> str:
    candidates = []
    if os.environ.get(ENV_URL):
        candidates.append((ENV_URL, os.environ[ENV_URL]))
    candidates.append(("the default server", os.environ.get(ENV_DEFAULT_URL) or DEFAULT_URL))
    for label, url in candidates:
        problem = usable(url)
        if problem is None:
            return url
        progress(f"not using {label} ({redact(url)}): {problem}")
    return ensure_private_cluster()


# -- probing ------------------------------------------------------------------------------


def usable(url: str) -> str | None:
    """None if ``url`` accepts a connection and lets its user create a schema, else why not."""
    psycopg = import_psycopg()
    try:
        conninfo = libpq_url(url)
    except ValueError as exc:
        return str(exc)
    probe = f"postdesk_probe_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT) as conn:
            # Inside a transaction that is rolled back: nothing is left behind.
            conn.execute(f'CREATE SCHEMA "{probe}"')
            conn.rollback()
    except psycopg.errors.InsufficientPrivilege:
        return "the user may not CREATE SCHEMA there"
    except psycopg.Error as exc:
        return one_line(str(exc)) or type(exc).__name__
    return None


def import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise Failure(
            "psycopg is not installed; run this with the project's virtualenv python "
            "(pip install 'postdesk[postgres]')"
        ) from None
    return psycopg


def libpq_url(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (the driver part removed)."""
    match = re.match(r"postgres(?:ql)?(?:\+\w+)?://", url)
    if match is None:
        raise ValueError("not a postgresql:// URL")
    return "postgresql://" + url[match.end() :]


def redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def one_line(text: str) -> str:
    return " ".join(text.split())


# -- the private cluster ------------------------------------------------------------------


def private_dir() -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    if os.geteuid() == 0 and not readable_by_pg_user(base):
        # root's runtime dir is typically 0700; the postgres user could not reach it.
        progress(f"{base} is not reachable for the {PG_OS_USER} user; using /tmp instead")
        base = Path("/tmp")
    return base / "postdesk-test-pg"


def private_url() -> str:
    return f"postgresql+psycopg://{PRIVATE_USER}@{PRIVATE_HOST}:{PRIVATE_PORT}/{PRIVATE_DB}"


def ensure_private_cluster() -> str:
    url = private_url()
    if usable(url) is None:
        progress(f"reusing the private cluster on port {PRIVATE_PORT}")
        return url

    directory = private_dir()
    data = directory / "data"
    log = directory / "postgres.log"
    bindir = find_bindir(data)
    prepare_directory(directory)

    if not (data / "PG_VERSION").is_file():
        if data.exists():
            # A half-made cluster from an interrupted initdb cannot be started; redo it.
            progress(f"removing the incomplete cluster in {data}")
            shutil.rmtree(data)
        progress(f"creating a private cluster in {data}")
        run_as_pg(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                PRIVATE_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )

    status = run_as_pg(
        [str(bindir / "pg_ctl"), "-D", str(data), "status"], "pg_ctl status", check=False
    )
    if status.returncode != 0:
        progress(f"starting the private cluster on {PRIVATE_HOST}:{PRIVATE_PORT}")
        # Durability is pointless for a throwaway test cluster and costs a lot of time.
        options = (
            f"-c listen_addresses={PRIVATE_HOST} -p {PRIVATE_PORT} -k {directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = run_as_pg(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(READY_TIMEOUT)),
                "start",
            ],
            "pg_ctl start",
            check=False,
        )
        if started.returncode != 0:
            raise Failure(f"the private cluster did not start: {log_tail(log)}")

    wait_until_accepting(url)
    create_database()
    problem = usable(url)
    if problem is not None:
        raise Failure(f"the private cluster on port {PRIVATE_PORT} is not usable: {problem}")
    return url


def wait_until_accepting(url: str) -> None:
    psycopg = import_psycopg()
    admin = libpq_url(url).rsplit("/", 1)[0] + "/postgres"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with psycopg.connect(admin, connect_timeout=CONNECT_TIMEOUT):
                return
        except psycopg.Error as exc:
            if time.monotonic() >= deadline:
                raise Failure(
                    f"the private cluster does not accept connections after "
                    f"{READY_TIMEOUT:.0f}s: {one_line(str(exc))}"
                ) from None
        time.sleep(0.2)


def create_database() -> None:
    psycopg = import_psycopg()
    admin = libpq_url(private_url()).rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PRIVATE_DB,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{PRIVATE_DB}"')
    except psycopg.Error as exc:
        raise Failure(f"could not create database {PRIVATE_DB}: {one_line(str(exc))}") from None


def stop_private_cluster() -> None:
    data = private_dir() / "data"
    if not (data / "PG_VERSION").is_file():
        progress(f"no private cluster in {data}")
        return
    bindir = find_bindir(data, install=False)
    result = run_as_pg(
        [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
        "pg_ctl stop",
        check=False,
    )
    progress("stopped the private cluster" if result.returncode == 0 else "it was not running")


def find_bindir(data: Path, install: bool = True) -> Path:
    """Debian's bin directory for the cluster's major version, else the newest installed."""
    installed = {
        path.parent.parent.name: path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.is_file()
    }
    if not installed and install:
        install_postgresql()
        return find_bindir(data, install=False)
    if not installed:
        raise Failure("no initdb under /usr/lib/postgresql/*/bin; install Debian's postgresql")
    try:
        wanted = (data / "PG_VERSION").read_text().strip()
    except OSError:
        return installed[max(installed, key=version_key)]
    if wanted not in installed:
        raise Failure(
            f"the cluster in {data} is PostgreSQL {wanted}, which is not installed; "
            f"remove {data.parent} to start afresh"
        )
    return installed[wanted]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def install_postgresql() -> None:
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and run(["sudo", "-n", "true"], check=False).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        raise Failure("PostgreSQL is not installed; run: sudo apt-get install postgresql")
    if shutil.which("apt-get") is None:
        raise Failure("PostgreSQL is not installed and apt-get is missing; install postgresql")
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    apt += ["-o", "DPkg::Lock::Timeout=120"]
    progress("installing Debian's postgresql package")
    run([*apt, "update"], timeout=APT_TIMEOUT)
    run([*apt, "install", "-y", "--no-install-recommends", "postgresql"], timeout=APT_TIMEOUT)


def prepare_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            raise Failure(
                f"running as root, but there is no '{PG_OS_USER}' user to run initdb"
            ) from None
        # initdb and the server run as postgres and must own what they write.
        for path in (directory, *directory.rglob("*")):
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


def readable_by_pg_user(path: Path) -> bool:
    if shutil.which("runuser") is None:
        return False
    probe = run(["runuser", "-u", PG_OS_USER, "--", "test", "-x", str(path)], check=False)
    return probe.returncode == 0


def run_as_pg(argv: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise Failure("running as root needs runuser (util-linux) to run PostgreSQL")
        argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
    # Run from a directory the postgres user can read, or initdb warns about the cwd.
    return run(argv, check=check, what=what, cwd="/")


def run(
    argv: list[str],
    *,
    check: bool = True,
    what: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    label = what or argv[0]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        raise Failure(f"{label} did not finish within {timeout:.0f}s") from None
    except OSError as exc:
        raise Failure(f"{label} could not run: {exc}") from None
    if check and result.returncode != 0:
        detail = one_line(result.stderr or result.stdout)[-300:]
        raise Failure(f"{label} failed (exit {result.returncode}): {detail}")
    return result


def log_tail(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {log}"
    return one_line(" | ".join(lines[-3:]))[-400:] or f"nothing in {log}"


if __name__ == "__main__":
    sys.exit(main())
