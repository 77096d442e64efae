"""Statements the mail pipeline runs for every message, executed on the driver's cursor.

SQLAlchemy's execution path (execution context, compiled-cache lookup, parameter
construction, result object) costs 15-70 µs a statement in Python on this pipeline's
statements, measured on SQLite: a lookup by index takes 1.5 µs in the driver and 17 µs
through `Connection.execute`; the message INSERT with its 23 parameters 76 and 144 µs.
With six statements a message, that was a quarter of the time postdesk spent per
message. A `Lean` statement is a Core statement compiled once per dialect by SQLAlchemy,
whose parameters and result columns are converted by the statement's own types (their
`bind_processor` and `result_processor`, so values read and written are the same as
through `Connection.execute`), and executed on the DBAPI cursor of the SQLAlchemy
`Connection` it is given, inside that connection's transaction.

What it does not do, by design (each checked when the statement is compiled, so a
statement that needs one fails the first time it runs, in tests):
- Python-side column defaults and onupdate values other than constants: pass the
  values (e.g. `updated_at`) explicitly;
- expanding IN parameters (`bindparam(..., expanding=True)`): their SQL depends on the
  number of values;
- SQLAlchemy's cursor events and SQL echo: these statements do not appear in
  `create_engine(echo=True)` output.

Errors are raised as SQLAlchemy raises them (`sqlalchemy.exc.DBAPIError` subclasses,
e.g. IntegrityError, OperationalError), so outages are told from other failures as
elsewhere (models/db.py `is_outage`); a lost connection is invalidated as SQLAlchemy
would do, so the pool never hands it out again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    # Per parameter, in the order the driver wants them: (its name in the SQL, the key
    # the caller passes its value under or None for a constant, the constant, the
    # processor of its type).
    params: tuple[tuple[str, str | None, Any, Processor], ...]
    results: tuple[Processor, ...]  # one per result column; empty for no rows


class LeanError(TypeError):
    """A statement Lean cannot run faithfully (see the module docstring)."""


class Lean:
    """A Core statement (or one per dialect name) run past SQLAlchemy's execution path.

    `keys`: for an INSERT or UPDATE, the columns the caller gives values for, in any
    order (they decide the compiled column list, as the keys of the first parameter set
    do for `Connection.execute`).
    """

    def __init__(
        self,
        statement: ClauseElement | Mapping[str, ClauseElement],
        *,
        keys: Sequence[str] | None = None,
    ) -> None:
        self._statements = statement
        self._keys = list(keys) if keys is not None else None
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}

    # --- running ---------------------------------------------------------------------

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every result row, each a tuple in the order of the statement's columns."""
        compiled = self._for(conn.dialect)
        cursor = self._execute(conn, compiled, params)
        try:
            return self._convert(compiled, cursor.fetchall())
        except conn.dialect.loaded_dbapi.Error as exc:
            raise self._error(conn, compiled, params, exc) from exc
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first result row, or None; the rest are discarded."""
        compiled = self._for(conn.dialect)
        cursor = self._execute(conn, compiled, params)
        try:
            row = cursor.fetchone()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise self._error(conn, compiled, params, exc) from exc
        finally:
            cursor.close()
        return None if row is None else self._convert(compiled, [row])[0]

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.first(conn, params)
        return None if row is None else row[0]

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute a statement without results; the number of rows it changed."""
        compiled = self._for(conn.dialect)
        cursor = self._execute(conn, compiled, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def many(self, conn: Connection, params: Iterable[Mapping[str, Any]]) -> None:
        """Execute a statement without results once per parameter set (executemany)."""
        compiled = self._for(conn.dialect)
        values = [self._values(compiled, p) for p in params]
        if not values:
            return
        dbapi = conn.dialect.loaded_dbapi
        cursor = self._cursor(conn)
        try:
            cursor.executemany(compiled.sql, values)
        except dbapi.Error as exc:
            raise self._error(conn, compiled, values, exc) from exc
        finally:
            cursor.close()

    # --- internals -------------------------------------------------------------------

    def _statement(self, dialect: Dialect) -> ClauseElement:
        statements = self._statements
        if isinstance(statements, ClauseElement):
            return statements
        try:
            return statements[dialect.name]
        except KeyError:  # pragma: no cover - config validation admits only two dialects
            raise LeanError(f"no statement for the {dialect.name} dialect") from None

    def _for(self, dialect: Dialect) -> _Compiled:
        # Per driver and parameter style, not only per database: the SQL text differs.
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        statement = self._statement(dialect)
        compiled = statement.compile(dialect=dialect, column_keys=self._keys)
        assert isinstance(compiled, SQLCompiler)
        for kind in ("insert_prefetch", "update_prefetch"):
            for column in getattr(compiled, kind, ()):
                default = column.default if kind == "insert_prefetch" else column.onupdate
                if default is None or not getattr(default, "is_scalar", False):
                    raise LeanError(
                        f"{column.table.name}.{column.name} has a Python-side default; "
                        "pass its value explicitly"
                    )
        positional = bool(dialect.positional)
        names: Sequence[str]
        if positional:
            names = list(compiled.positiontup or ())
        else:
            names = list(compiled.bind_names.values())
        escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
        by_name = {compiled.bind_names[bind]: bind for bind in compiled.bind_names}
        prefetch = {
            **{c.key: c.default for c in getattr(compiled, "insert_prefetch", ())},
            **{c.key: c.onupdate for c in getattr(compiled, "update_prefetch", ())},
        }
        params: list[tuple[str, str | None, Any, Processor]] = []
        for name in names:
            bind = by_name[name]
            if bind.expanding:
                raise LeanError(f"parameter {bind.key!r} is expanding (IN list)")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            given: str | None = None
            constant: Any = None
            if bind.key in prefetch:
                constant = prefetch[bind.key].arg
            elif bind.callable is not None:
                raise LeanError(f"parameter {bind.key!r} has a callable value")
            elif bind.required:
                given = bind.key  # a bindparam("name") or a column the caller gives
            else:
                constant = bind.value  # a literal in the statement (x == "out")
            params.append((escaped.get(name, name), given, constant, processor))
        results: list[Processor] = []
        for column in getattr(statement, "exported_columns", ()):
            results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
        return _Compiled(compiled.string, positional, tuple(params), tuple(results))

    @staticmethod
    def _values(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        if compiled.positional:
            out: list[Any] = []
            for _name, given, constant, processor in compiled.params:
                value = params[given] if given is not None else constant
                out.append(value if processor is None else processor(value))
            return out
        named: dict[str, Any] = {}
        for name, given, constant, processor in compiled.params:
            value = params[given] if given is not None else constant
            named[name] = value if processor is None else processor(value)
        return named

    @staticmethod
    def _cursor(conn: Connection) -> Any:
        if not conn.in_transaction():
            conn.begin()  # as Connection.execute's autobegin would
        return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def _execute(self, conn: Connection, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = self._values(compiled, params)
        cursor = self._cursor(conn)
        try:
            cursor.execute(compiled.sql, values)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise self._error(conn, compiled, values, exc) from exc
        return cursor

    @staticmethod
    def _convert(compiled: _Compiled, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        processors = compiled.results
        if not any(p is not None for p in processors):
            return [tuple(row) for row in rows]
        return [
            tuple(
                value if p is None else p(value) for p, value in zip(processors, row, strict=False)
            )
            for row in rows
        ]

    @staticmethod
    def _error(conn: Connection, compiled: _Compiled, params: Any, exc: Exception) -> Exception:
        """`exc` as SQLAlchemy raises it; a lost connection is invalidated first."""
        dialect = conn.dialect
        dbapi_conn = conn.connection.dbapi_connection
        lost = bool(dialect.is_disconnect(exc, dbapi_conn, None))  # type: ignore[arg-type]
        if lost:
            conn.invalidate(exc)
        return DBAPIError.instance(
            compiled.sql,
            params,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        )
