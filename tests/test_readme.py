"""The README says what the program does: its command table lists exactly the commands
and subcommands `postdesk --help` lists, and every field `tickets list --json` and
`tickets show --json` print is described in its JSON section."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from postdesk.cli import main
from postdesk.daemon import Service
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.cli import Cli
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.tickets.lifecycle import merge_tickets

README = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")


def section(start: str, end: str) -> str:
    """The README from the line containing `start` up to the one containing `end`."""
    begin = README.index(start)
    return README[begin : README.index(end, begin)]


def help_commands(*path: str) -> set[str]:
    """The commands listed under "Commands:" in `postdesk [path] --help`."""
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    if "Commands:" not in result.output:
        return set()
    listing = result.output.split("Commands:", 1)[1]
    return set(re.findall(r"^  (\S+)", listing, flags=re.MULTILINE))


def readme_table() -> dict[str, set[str]]:
    """Each command in the README's command table, with the subcommands its rows name."""
    table = section("## Command line", "`-v` logs each event")
    listed: dict[str, set[str]] = {}
    for cell in re.findall(r"^\| `postdesk ([^`]*)`", table, flags=re.MULTILINE):
        words = cell.split()
        subcommands = listed.setdefault(words[0], set())
        if len(words) > 1 and not words[1].startswith(("-", "[", "(")) and words[1].islower():
            # `model list\|show\|promote\|rollback` names four subcommands in one row.
            subcommands.update(name for name in words[1].split("\\|") if name)
    return listed


def test_the_command_table_matches_postdesk_help() -> None:
    listed = readme_table()
    commands = help_commands()
    assert set(listed) == commands
    for command in sorted(commands):
        assert listed[command] == help_commands(command) or (
            not help_commands(command) and listed[command] <= {"--once"}
        ), command


def test_the_table_reader_reads_grouped_rows() -> None:
    # Guards the parsing above: a reader that found nothing would pass vacuously.
    listed = readme_table()
    assert {"list", "show", "promote", "rollback", "evaluate"} <= listed["model"]
    assert len(listed) >= 8 and "init" in listed


def keys(value: Any, into: set[str]) -> set[str]:
    """Every key of every dict in `value`, at any depth (but not inside event data)."""
    if isinstance(value, dict):
        for key, item in value.items():
            into.add(key)
            if key != "data":
                keys(item, into)
    elif isinstance(value, list):
        for item in value:
            keys(item, into)
    return into


def test_every_ticket_json_field_is_in_the_readme(sqlite_url: str, tmp_path: Path) -> None:
    db = Database(sqlite_url)
    try:
        upgrade(db)
        service = Service(settings_for(tmp_path, sqlite_url), db)
        ingest(
            service,
            mail("a@x", attachment=("invoice.pdf", b"%PDF-1.4 " * 20)),
            mail("b@x", reply_to="a@x", subject="Re: Help"),
            mail("c@x", subject="Another matter"),
        )
        number = ticket_of(db, "a@x")
        merge_tickets(db, number, ticket_of(db, "c@x"))
    finally:
        db.dispose()
    cli = Cli(tmp_path / "postdesk.toml")
    cli("tickets", "note", str(number), "--as", "sara@support.example", "Called them")
    shown = json.loads(cli("tickets", "show", str(number), "--json").stdout)
    listed = json.loads(cli("tickets", "list", "--json").stdout)
    fields = keys(shown, set()) | keys(listed, set())
    # The scenario reaches the nested fields too: messages, attachments, notes, links.
    assert {"links", "attachments", "sha256", "message_ids", "merged_into"} <= fields
    documented = set(re.findall(r"`([a-z0-9_]+)`", section("`tickets list --json` prints", "### ")))
    assert fields - documented == set()
