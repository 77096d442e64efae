"""Running the real `postdesk` click command in-process, on one config file.

Tests drive the CLI the way a user does (sqlite-utils' style): `Cli(config)("tickets",
"list")` invokes `postdesk -c config tickets list` with click's `CliRunner`, checks the
exit status, and for a failure (status 1) checks the error is one line, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from postdesk.cli import main
from postdesk.config import load_settings
from postdesk.models.db import Database

# A developer's $POSTDESK_CONFIG must never choose the config a test runs with.
CLEAN_ENV: dict[str, str | None] = {"POSTDESK_CONFIG": None}


def assert_one_line_error(stderr: str) -> str:
    """The `postdesk: error: ...` line that must be all of `stderr` (no traceback, no logs)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("postdesk: error: "), stderr
    return lines[0]


class Cli:
    """Runs the click command in-process against one config file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Result:
        """`postdesk -c <config> *args`, asserting it exits with `code`."""
        result = self.runner.invoke(main, ["-c", str(self.config), *args], env=CLEAN_ENV)
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        if code == 1:
            assert_one_line_error(result.stderr)
        return result

    def json(self, *args: str) -> Any:
        """The parsed output of `postdesk -c <config> *args --json`."""
        return json.loads(self(*args, "--json").stdout)

    def database(self) -> Database:
        """The database the config file names (the caller disposes of it)."""
        return Database(load_settings(self.config).database.url)
