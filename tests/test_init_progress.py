"""Long work is not silent: `postdesk init` upgrading an existing database says so, then
a line per migration step with its time (building the search index over stored mail is
one), on stderr; creating a new database stays one line."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from postdesk.models.migrate import _alembic_config, head_revision
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail


def test_an_upgrade_prints_a_line_per_step(tmp_path: Path, sqlite_url: str) -> None:
    cli = Cli(write_config(tmp_path, sqlite_url))
    created = cli("init")
    assert created.stderr == "" and created.stdout.startswith("created database")
    folder = tmp_path / "mail"
    folder.mkdir()
    for n in range(3):
        mail = Mail(sender=f"c{n}@example.org", to="s@example.com", subject=f"Question {n}")
        (folder / f"{n}.eml").write_bytes(bytes(mail))
    cli("import", str(folder))
    database = cli.database()
    try:
        cfg = _alembic_config()
        with database.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")  # before the search index
    finally:
        database.dispose()
    upgraded = cli("init")
    lines = upgraded.stderr.splitlines()
    assert lines[0] == f"init: upgrading schema 0008 to {head_revision()}..."
    steps = [line.split()[2] for line in lines[1:]]
    assert steps[0] == "0009" and steps[-1] == head_revision()
    assert all(line.startswith("init: schema ") and line.endswith(" s") for line in lines[1:])
    assert "Full-text search" in lines[1]
    assert upgraded.stdout.startswith("upgraded database")
    assert len(cli("tickets", "search", "question").stdout.splitlines()) == 1 + 3  # reindexed
    assert cli("init").stderr == ""  # up to date: nothing to say on stderr
