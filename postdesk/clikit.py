"""The parts every `postdesk` command is built from: its context, shared options, output.

`postdesk.cli` (the entry point) and each feature's commands (`classify/cli.py`, later
`notify/cli.py` and `qa/cli.py`) import from here; this module imports none of them, so
command modules never import each other and the entry point can register them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from postdesk.config import Settings, config_path, load_settings
from postdesk.errors import DatabaseError
from postdesk.models.db import Database, sqlite_file
from postdesk.models.migrate import require_current

# Every command prints text from mail through this one function (re-exported here).
from postdesk.termsafe import terminal_safe as terminal_safe

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


pass_context = click.make_pass_decorator(Context)
"""Passes the command's `Context` as its first argument."""


def json_option(command: F) -> F:
    """The `--json` flag, passed to the command as `as_json`; one spelling, one help text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )


def print_json(data: Any) -> None:
    """Print a command's result as JSON: indented, non-ASCII text (Persian) kept readable."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))
