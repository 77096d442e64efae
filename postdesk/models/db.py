"""Engine and session setup for SQLite and PostgreSQL, and the schema version check.

SQLite is tuned for one long-running writer plus short CLI readers: WAL journal, foreign
keys on, a generous busy timeout, and write transactions that take the write lock at
BEGIN (`BEGIN IMMEDIATE`) so two writers queue instead of failing half-way. Within one
process, writers also take turns in the order they asked (`WriteTurns`). Commits run
with `synchronous=NORMAL` (safe against a killed process); a session opened with
`durable=True` commits with `synchronous=FULL`, for the few transactions that must
survive a power cut because something irreversible happens on a server right after.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import SQLAlchemyError as _SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postdesk.errors import DatabaseError
from postdesk.files import private_file
from postdesk.lexicon.persian import index_text

FOLD_FUNCTION = "postdesk_fold"
"""The SQL function the search index's triggers call on SQLite (tickets/search.py):
`postdesk.lexicon.persian.index_text`, registered on every connection postdesk opens."""

_DURABLE = "postdesk_durable"
_READONLY = "postdesk_readonly"


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
        return "<unparseable URL>"


class Database:
    """One database: its engine and the sessions postdesk works in."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            # Not echoing the URL: it may hold a password.
            raise DatabaseError(f"database.url is not a valid database URL ({exc})") from None
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            db_path = parsed.database
            # A `file:` URI (`?mode=ro&uri=true`) is SQLite's to resolve.
            if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
                parent = Path(db_path).parent
                if not parent.is_dir():
                    raise DatabaseError(
                        f"the directory of the SQLite database {db_path} does not exist; "
                        "create it or change database.url"
                    )
                if not db_path.startswith("file:"):
                    # Owner-only from the start; SQLite gives its journal and WAL files
                    # the database file's mode.
                    try:
                        private_file(Path(db_path))
                    except OSError as exc:
                        raise DatabaseError(
                            f"cannot create the SQLite database {db_path}: {exc.strerror or exc}"
                        ) from None
            kwargs["connect_args"] = {
                "timeout": BUSY_SECONDS,
                "check_same_thread": False,
                "factory": _SqliteConnection,
            }
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            hint = ""
            if self.dialect == "postgresql":
                hint = "; install the PostgreSQL driver: pip install 'postdesk[postgres]'"
            raise DatabaseError(f"cannot use database {_redact(url)}: {exc}{hint}") from None
        if self.dialect == "sqlite":
            _tune_sqlite(self.engine, WriteTurns())
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._durable = sessionmaker(
            self.engine.execution_options(**{_DURABLE: True}), expire_on_commit=False
        )
        self._read = sessionmaker(
            self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )

    def __repr__(self) -> str:
        return f"Database({_redact(self.url)})"

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return _redact(self.url)

    def session(self, *, durable: bool = False) -> Session:
        """A session for work that writes; `durable` commits survive a power cut on SQLite."""
        return (self._durable if durable else self._write)()

    def read_session(self) -> Session:
        """A session for reading only; on SQLite it never blocks the writer."""
        return self._read()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.session(durable=durable) as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def check_reachable(self) -> None:
        """Connect once, turning driver errors into a one-line DatabaseError."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except _SQLAlchemyError as exc:
            raise DatabaseError(
                f"cannot connect to {self.display_url}: {_first_line(exc)}"
            ) from None

    def check_writable(self) -> None:
        """Write to the schema version table and roll back: a DatabaseError naming the
        database when it is read-only for postdesk (`init` checks this, since reading
        a read-only database at the current schema would otherwise look fine)."""
        try:
            with self.engine.connect() as conn, conn.begin() as tx:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
                tx.rollback()
        except _SQLAlchemyError as exc:
            raise DatabaseError(describe_error(exc, self.display_url)) from None

    def has_tables(self) -> bool:
        """Whether the database already holds postdesk's schema version table."""
        with self.engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


_SYNCHRONOUS = "postdesk.synchronous"
# How long a writer waits for SQLite's write lock (the busy timeout), and for its turn.
BUSY_SECONDS = 30.0


class WriteTurns:
    """This process's SQLite writers, served in the order they asked.

    SQLite's own busy handler lets a waiting writer sleep and poll (1, 2, 5 ... 100 ms):
    a writer that commits and begins again at once, as the processor does batch after
    batch, nearly always wins against one polling, so a mailbox thread with a fetched
    batch to store waited for seconds, and fetching and processing took turns instead of
    overlapping (measured in `postdesk run` on 10,000 messages: the mailbox thread spent
    10-12 s of a 15 s run waiting to begin). Here the writer that asked first is handed
    the turn when the holder's transaction ends. Other processes (the CLI) still queue on
    SQLite's lock and busy timeout.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the turn; whether it was had."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        if gate.acquire(timeout=timeout):
            return True  # handed over by `release`
        with self._mutex:
            try:
                self._waiting.remove(gate)
            except ValueError:
                return True  # handed over just as the wait ran out
            return False

    def release(self) -> None:
        """End the holder's turn: the longest waiting writer has it next."""
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._held = False


class _SqliteConnection(sqlite3.Connection):
    """sqlite3's connection, giving up its writer's turn (`WriteTurns`) when its write
    transaction has ended: committed, rolled back or closed."""

    turns: WriteTurns | None = None
    has_turn = False

    def take_turn(self) -> None:
        if self.turns is not None and not self.has_turn:
            # Past the wait, SQLite's busy timeout still guards the write lock itself.
            self.has_turn = self.turns.acquire(BUSY_SECONDS)

    def end_turn(self) -> None:
        if self.has_turn and not self.in_transaction and self.turns is not None:
            self.has_turn = False
            self.turns.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn()  # kept by a failed COMMIT that left the transaction open

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.has_turn and self.turns is not None:
                self.has_turn = False
                self.turns.release()


def add_sqlite_functions(dbapi_conn: Any) -> None:
    """Register postdesk's SQL functions on a sqlite3 connection: `postdesk_fold`, which
    the search index's insert and update triggers call (migration 0014). A program that
    has not registered it (the sqlite3 shell) can read the database but cannot insert or
    update messages: SQLite says "no such function: postdesk_fold"."""
    dbapi_conn.create_function(FOLD_FUNCTION, 1, index_text, deterministic=True)


def _tune_sqlite(engine: Engine, turns: WriteTurns) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        add_sqlite_functions(dbapi_conn)
        if isinstance(dbapi_conn, _SqliteConnection):
            dbapi_conn.turns = turns
        # Let SQLAlchemy's "begin" event decide how transactions start, instead of the
        # sqlite3 module's implicit deferred BEGIN before the first write.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
        record.info[_SYNCHRONOUS] = "NORMAL"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        pooled = conn.connection
        driver = pooled.dbapi_connection
        assert driver is not None
        if driver.in_transaction:
            # Left open by a COMMIT that failed (SQLite keeps the transaction when a
            # deferred constraint fails it); SQLAlchemy has already given it up.
            driver.rollback()
        options = conn.get_execution_options()
        if options.get(_READONLY):
            conn.exec_driver_sql("BEGIN")
            return
        level = "FULL" if options.get(_DURABLE) else "NORMAL"
        # The safety level cannot change inside a transaction, so set it just before, when
        # it differs from what this connection has (kept with the pooled connection).
        if pooled.info.get(_SYNCHRONOUS) != level:
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            pooled.info[_SYNCHRONOUS] = level
        if isinstance(driver, _SqliteConnection):
            driver.take_turn()
        try:
            # Through SQLAlchemy, so that "database is locked" arrives as its
            # OperationalError.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if isinstance(driver, _SqliteConnection):
                driver.end_turn()
            raise


def is_lock_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked" after the busy timeout ran out."""
    return isinstance(exc, OperationalError) and "locked" in str(exc).lower()


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database itself failed (unreachable, connection lost,
    locked, disk full): work must stop and be retried, not be blamed on the data."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# SQLSTATEs of PostgreSQL's refusals to write: a read-only transaction (a standby, or
# default_transaction_read_only) and a role without the privilege.
_READ_ONLY_STATES = frozenset({"25006", "42501"})


def is_read_only_error(exc: BaseException) -> bool:
    """Whether `exc` is the database refusing a write: a read-only SQLite file (or one
    in a folder postdesk may not write to) or a PostgreSQL read-only transaction or
    missing privilege."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _READ_ONLY_STATES:
        return True
    text_ = str(orig).lower()
    return "readonly database" in text_ or "read-only" in text_


def describe_error(exc: BaseException, display_url: str | None = None) -> str:
    """A database error as one line, for the CLI and logs (never the SQL statement)."""
    if is_read_only_error(exc):
        where = f"the database {display_url}" if display_url else "the database"
        if display_url is None:
            hint = ""
        elif display_url.startswith("sqlite"):
            hint = " (to its file and the folder it is in)"
        else:
            hint = " (a role with write privileges, on the primary server)"
        return (
            f"{where} is read-only for postdesk ({_first_line(exc)}); postdesk must be "
            f"able to write to it{hint}"
        )
    return f"database error: {_first_line(exc)}"


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)
