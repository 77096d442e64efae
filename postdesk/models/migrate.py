"""Create or upgrade the schema with Alembic, and check it before work starts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from postdesk.errors import DatabaseError
from postdesk.models.db import Database


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "postdesk:migrations")
    return cfg


def head_revision() -> str:
    """The newest schema revision this postdesk knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "postdesk ships at least one migration"
    return head


def current_revision(db: Database) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    db: Database,
    applied: Callable[[str, str, float], None] | None = None,
    starting: Callable[[str | None, str], None] | None = None,
) -> tuple[str | None, str]:
    """Bring the database to the newest schema; return (revision before, revision after).
    `starting(before, head)` is called once the upgrade is known to be possible, and
    `applied(revision, what, seconds)` after each migration step (a long one, such as
    building the search index over stored mail, is then not silent)."""
    db.check_reachable()
    before = current_revision(db)
    if before is not None and before not in _known_revisions():
        # Alembic would fail with "Can't locate revision"; say what it means instead.
        raise _newer_schema(db, before)
    if starting is not None:
        starting(before, head_revision())
    cfg = _alembic_config()
    if applied is not None:
        started = [time.monotonic()]

        def on_version_apply(*, step: Any, **_: Any) -> None:
            now = time.monotonic()
            # The first words of the migration's docstring, up to a bracket: what it does.
            what = " ".join((step.up_revision.doc or "").split()).split(" (")[0]
            applied(str(step.up_revision_id), what[:60], now - started[0])
            started[0] = now

        cfg.attributes["on_version_apply"] = on_version_apply
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()


def _known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def _newer_schema(db: Database, current: str) -> DatabaseError:
    return DatabaseError(
        f"the database {db.display_url} is at schema {current}, newer than this postdesk "
        f"knows ({head_revision()}); upgrade postdesk"
    )


def require_current(db: Database) -> None:
    """Raise a DatabaseError telling the operator what to run unless the schema is current."""
    db.check_reachable()
    current = current_revision(db)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise DatabaseError(
            f"the database {db.display_url} has no postdesk schema yet; run `postdesk init`"
        )
    if current not in _known_revisions():
        raise _newer_schema(db, current)
    raise DatabaseError(
        f"the database {db.display_url} is at schema {current}, this postdesk needs {head}; "
        "run `postdesk init` to upgrade it"
    )
