"""Every `postdesk` command and subcommand explains itself, as sqlite-utils checks for its CLI."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from postdesk.cli import main


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of `command` and of every command below it, depth first."""
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMANDS = list(walk(main))


def test_the_walk_reaches_subcommands() -> None:
    # Guards the walk itself: a walk that stopped at the top would pass vacuously.
    assert ("tickets", "list") in COMMANDS
    assert ("model", "train") in COMMANDS
    assert len(COMMANDS) > 15


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "postdesk")
def test_every_command_has_help_text(path: tuple[str, ...]) -> None:
    command = command_at(path)
    assert command.help and command.help.strip(), f"`postdesk {' '.join(path)}` has no docstring"
    assert command.get_short_help_str().strip(), path
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Usage:" in result.output


def test_every_option_has_help_text_and_json_has_one() -> None:
    json_helps: set[str | None] = set()
    for path in COMMANDS:
        for param in command_at(path).params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            assert param.help and param.help.strip(), (path, param.opts)
            if "--json" in param.opts:
                json_helps.add(param.help)
    # Every --json comes from clikit.json_option, so there is exactly one help text.
    assert len(json_helps) == 1, json_helps
