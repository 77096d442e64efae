"""The parts every `postdesk` command is built from: its context, shared options, output,
argument types and what an error becomes.

`postdesk.cli` (the entry point) and each feature's commands (`classify/cli.py`,
`notify/cli.py` and `qa/cli.py`) import from here; this module imports none of them, so
command modules never import each other and the entry point can register them all.

Exit statuses (README, "Exit status"):

- 0: done;
- 1: the user's error or the environment's (bad config, unknown ticket, unreachable or
  read-only database): one line on stderr, `postdesk: error: ...`;
- 2: click's usage errors (unknown option, missing argument, a number out of range);
- 70: an internal error, a bug (`EX_SOFTWARE` of sysexits.h): one line naming the file
  the traceback was written to; `-vv` prints the traceback on stderr too;
- 130: interrupted (Ctrl-C), after saying what was done.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from postdesk import __version__
from postdesk.config import Settings, config_path, load_settings
from postdesk.errors import ConfigError, DatabaseError, PostdeskError
from postdesk.files import private_directory
from postdesk.models.db import Database, describe_error, is_read_only_error, sqlite_file
from postdesk.models.migrate import require_current
from postdesk.models.tickets import MAX_TICKET_ID

# Every command prints text from mail through this one function (re-exported here).
from postdesk.termsafe import terminal_safe as terminal_safe

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What every command needs: where the config is and how talkative to be."""

    config: str | None
    verbose: int
    _settings: Settings | None = None
    _db: Database | None = None

    def settings(self) -> Settings:
        """The settings, read from the config file the first time a command asks."""
        if self._settings is None:
            self._settings = load_settings(config_path(self.config))
        return self._settings

    def database(self, *, migrated: bool = True) -> Database:
        """The database, connected on first use; by default it must be at the current schema."""
        if self._db is None:
            url = self.settings().database.url
            path = sqlite_file(url)
            if migrated and path is not None and not path.exists():
                # Connecting would create an empty file; say what to do instead.
                raise DatabaseError(f"database file {path} does not exist; run `postdesk init`")
            db = Database(url)
            db.check_reachable()
            if migrated:
                require_current(db)
            self._db = db
        return self._db

    def close(self) -> None:
        """Release the database connections, if a command opened any."""
        if self._db is not None:
            self._db.dispose()

    def writable_data_dir(self) -> Path:
        """The configured data_dir, created if missing; a ConfigError naming it when it
        cannot be created or written to (attachments, the reply-token key, models)."""
        settings = self.settings()
        data_dir = settings.data_dir
        try:
            private_directory(data_dir)
            # Access checks lie for root and on some mounts: create a file and remove it.
            fd, probe = tempfile.mkstemp(prefix=".postdesk-write-test-", dir=data_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(
                str(settings.path),
                "data_dir",
                f"cannot write to {str(data_dir)!r} ({exc.strerror or exc}); "
                "expected a directory postdesk may create files in",
            ) from None
        return data_dir


pass_context = click.make_pass_decorator(Context)
"""Passes the command's `Context` as its first argument."""


def json_option(command: F) -> F:
    """The `--json` flag, passed to the command as `as_json`; one spelling, one help text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )


FORMATS = ("table", "json", "csv", "tsv")


def format_options(columns: tuple[str, ...]) -> Callable[[F], F]:
    """`--format table|json|csv|tsv`, `--columns NAMES` (naming `columns` in its help) and
    `--json` (the same as `--format json`), passed as `output`, `columns` and `as_json`;
    `output_format` turns the first and last into one format."""

    def decorate(command: F) -> F:
        command = json_option(command)
        command = click.option(
            "--columns",
            metavar="NAMES",
            help="Comma-separated columns to show: " + ", ".join(columns) + ".",
        )(command)
        return click.option(
            "--format",
            "output",
            type=click.Choice(FORMATS),
            default=None,
            help="Output format (default: table); --json is --format json.",
        )(command)

    return decorate


def output_format(output: str | None, as_json: bool) -> str:
    """The format asked for: `--format`, else json with `--json`, else a table. Both
    naming different formats is a user's error."""
    if as_json and output not in (None, "json"):
        raise PostdeskError(f"give --json or --format {output}, not both")
    return output or ("json" if as_json else "table")


def print_json(data: Any) -> None:
    """Print a command's result as JSON: indented, non-ASCII text (Persian) kept readable."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


class TicketNumber(click.IntRange):
    """A ticket number, 1 to the largest the database holds; "#42" is taken as 42.

    Out of range is click's usage error (exit 2), never a database overflow.
    """

    name = "ticket number"

    def __init__(self) -> None:
        super().__init__(1, MAX_TICKET_ID)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            value = value.strip().removeprefix("#")
        return super().convert(value, param, ctx)


TICKET_NUMBER = TicketNumber()
"""The type of every ticket-number argument and option."""

ROW_ID = click.IntRange(1, 2**31 - 1)
"""The type of every database id argument (raw message, outbox row): a positive 32-bit
integer, the range of an integer column on PostgreSQL."""


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print `postdesk: error: <message>` as one line on stderr and exit with `code`."""
    click.echo(f"postdesk: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def write_crash_report(obj: object) -> Path | None:
    """Write the traceback being handled to a private file; its path, or None.

    The file goes to `<data_dir>/crash-reports/` when the config was read (a service's
    data directory survives a private /tmp), else to the temporary directory ($TMPDIR).
    """
    report = (
        f"postdesk {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
        f"command: {' '.join(sys.argv)}\n\n{traceback.format_exc()}"
    )
    places: list[Path] = []
    settings = obj._settings if isinstance(obj, Context) else None
    if settings is not None:
        places.append(settings.data_dir / "crash-reports")
    places.append(Path(tempfile.gettempdir()))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for place in places:
        try:
            place.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"postdesk-crash-{stamp}-", suffix=".txt", dir=place)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(report)
            return Path(name)
        except OSError:
            continue
    return None


class PostdeskGroup(click.Group):
    """Turns every error escaping a command into one line and an exit status (above)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PostdeskError as exc:
            fail(str(exc))
        except OperationalError as exc:
            # The database's trouble, not postdesk's: unreachable, locked, read-only, full.
            fail(describe_error(exc, _database_url(ctx)))
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`postdesk tickets list | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_read_only_error(exc):
                # PostgreSQL's refusals to write are not all OperationalErrors.
                fail(describe_error(exc, _database_url(ctx)))
            internal_error(ctx.obj, exc)
        finally:
            obj = ctx.obj
            if isinstance(obj, Context):
                obj.close()


def _database_url(ctx: click.Context) -> str | None:
    """The URL (password hidden) of the database the command opened, if it opened one."""
    obj = ctx.obj
    return obj._db.display_url if isinstance(obj, Context) and obj._db is not None else None


def internal_error(obj: object, exc: BaseException) -> NoReturn:
    """Report a bug: one line with where the traceback went, exit 70 (-vv: traceback too)."""
    verbose = obj.verbose if isinstance(obj, Context) else 0
    if verbose >= 2:
        click.echo(traceback.format_exc().rstrip(), err=True)
    where = write_crash_report(obj)
    orig = getattr(exc, "orig", None)  # a driver's error inside SQLAlchemy's: not the SQL
    detail = " ".join(str(orig if isinstance(orig, BaseException) else exc).split())
    if len(detail) > 200:
        detail = detail[:200] + "…"
    saved = f"the traceback is in {where}" if where else "run with -vv for the traceback"
    fail(
        f"internal error, a bug in postdesk: {type(exc).__name__}: {detail} ({saved}; "
        "please report it)",
        EXIT_INTERNAL,
    )
