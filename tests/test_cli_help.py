"""Every `postdesk` command and subcommand explains itself, as sqlite-utils checks for its CLI."""

from __future__ import annotations

import shlex
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


def examples(path: tuple[str, ...]) -> list[list[str]]:
    """The `$ postdesk ...` lines of the "Example:" block of `path`'s --help, split."""
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Example:" in text, f"`postdesk {' '.join(path)} --help` has no example"
    block = text.split("Example:", 1)[1]
    found = []
    for line in block.splitlines():
        if line.strip().startswith("$ "):
            words = shlex.split(line.strip()[2:])
            # The shell's part of the line (`> file`, `| head`) is not postdesk's.
            cut = [i for i, word in enumerate(words) if word in (">", ">>", "|", "<")]
            found.append(words[: cut[0]] if cut else words)
        elif line.strip() and found:
            break
    return found


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "postdesk")
def test_every_command_help_has_a_working_example(path: tuple[str, ...]) -> None:
    """Each --help shows at least one example of that very command, and every example
    parses: its options exist and its values convert (click's own parsing, nothing run)."""
    lines = examples(path)
    assert lines, f"`postdesk {' '.join(path)} --help`: the Example block has no `$ postdesk` line"
    # A command's own example calls it; a group's calls one of its subcommands.
    assert any(_command_words(line)[: len(path)] == path for line in lines), (path, lines)
    for line in lines:
        assert line[0] == "postdesk", line
        args = line[1:]
        command: click.Command = main
        parent = main.make_context("postdesk", list(args), resilient_parsing=True)
        words = _command_words(line)
        for word in words:
            assert isinstance(command, click.Group)
            command = command.commands[word]
        rest = args[args.index(words[-1]) + 1 :] if words else []
        try:
            command.make_context(words[-1] if words else "postdesk", rest, parent=parent)
        except click.BadParameter as exc:
            # Files named in examples need not exist here; every other value must convert.
            assert "does not exist" in str(exc), (line, exc)


def _command_words(line: list[str]) -> tuple[str, ...]:
    """The subcommand path an example line calls (`postdesk -c F tickets show 4` ->
    ("tickets", "show")), skipping the global options."""
    words: list[str] = []
    command: click.Command = main
    args = iter(line[1:])
    for arg in args:
        if not isinstance(command, click.Group):
            break
        if arg in ("-c", "--config"):
            next(args)
            continue
        if arg.startswith("-"):
            continue
        command = command.commands[arg]
        words.append(arg)
    return tuple(words)


def test_shell_completion_is_clicks_own() -> None:
    """What the README tells users to put in their shell: click's completion, by name."""
    env = {
        "_POSTDESK_COMPLETE": "bash_complete",
        "COMP_WORDS": "postdesk inbound ",
        "COMP_CWORD": "2",
    }
    result = CliRunner().invoke(main, [], prog_name="postdesk", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["plain,discard", "plain,list", "plain,retry", "plain,show"]
    script = CliRunner().invoke(
        main, [], prog_name="postdesk", env={"_POSTDESK_COMPLETE": "bash_source"}
    )
    assert "_postdesk_completion()" in script.output


def test_tickets_list_help_names_the_statuses() -> None:
    from postdesk.models.tickets import TICKET_STATUSES

    text = " ".join(CliRunner().invoke(main, ["tickets", "list", "--help"]).output.split())
    assert all(status.value in text for status in TICKET_STATUSES)
    assert "new, open, pending, solved or closed" in text
