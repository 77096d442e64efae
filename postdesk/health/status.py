"""`postdesk status`: the service's state as the database records it, with no network.

Per configured mailbox: when its folder was last fetched successfully and how long ago
(the lag), the last error and when it happened, and how many of its raw messages wait
for processing or are quarantined. Then the outbox (queued, failed and unconfirmed mail,
and the age of the oldest queued row), the active triage models, and whether the schema
is the one this postdesk needs.

What counts as a problem (the command exits 1 when there is one, so monitoring can run
it) is listed in `Status.problems`:

- a mailbox whose last fetch failed (its error is kept until a fetch succeeds);
- a mailbox never fetched successfully, or not for longer than `max_lag`;
- mail queued in the outbox for longer than `max_lag` (the relay is not taking it);
- a schema older than this postdesk's (run `postdesk init`).

After a failure the service records when it will try the folder again (its back-off,
`retry_at`); a successful fetch clears the error and that time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from postdesk.config import Settings
from postdesk.errors import PostdeskError
from postdesk.models import Mailbox, MailboxSync, OutboxMail, OutboxState, RawMessage, RawStatus
from postdesk.models import utcnow as _utcnow
from postdesk.models.db import Database
from postdesk.models.migrate import current_revision, head_revision

# Without --max-lag: a mailbox is late when it was not fetched for this many poll
# intervals, and never sooner than MIN_MAX_LAG (a pass over a big mailbox takes a while).
LAG_INTERVALS = 5
MIN_MAX_LAG = timedelta(minutes=5)


def default_max_lag(settings: Settings) -> timedelta:
    """How late a mailbox or a queued mail may be before it counts as a problem."""
    return max(timedelta(seconds=LAG_INTERVALS * settings.run.poll_interval), MIN_MAX_LAG)


@dataclass
class MailboxStatus:
    """One configured mailbox's folder, as the database last saw it."""

    name: str
    folder: str
    last_success_at: datetime | None = None
    lag_seconds: float | None = None  # now - last_success_at
    last_error: str | None = None  # set while the latest attempt failed
    last_error_at: datetime | None = None
    retry_at: datetime | None = None  # while failing: the service's next attempt
    pending: int = 0
    quarantined: int = 0


@dataclass
class ModelStatus:
    """The active model of one triage target."""

    target: str
    version: str
    trained_at: str | None


@dataclass
class Status:
    """Everything `postdesk status` reports."""

    now: datetime
    max_lag_seconds: float
    mailboxes: list[MailboxStatus] = field(default_factory=list)
    # Raw messages stored without a mailbox (`postdesk import` without --mailbox).
    unassigned_pending: int = 0
    unassigned_quarantined: int = 0
    outbox: dict[str, int] = field(default_factory=dict)  # state -> count, all states
    oldest_queued_at: datetime | None = None
    oldest_queued_seconds: float | None = None
    models: list[ModelStatus] = field(default_factory=list)
    models_error: str | None = None
    schema: str | None = None
    schema_head: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        out: dict[str, Any] = _jsonable(data)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def collect(
    settings: Settings,
    db: Database,
    *,
    now: datetime | None = None,
    max_lag: timedelta | None = None,
) -> Status:
    """Read the status from the database (and the model store in data_dir)."""
    now = now or _utcnow()
    limit = max_lag if max_lag is not None else default_max_lag(settings)
    status = Status(now=now, max_lag_seconds=limit.total_seconds(), schema_head=head_revision())
    status.schema = current_revision(db)
    if status.schema != status.schema_head:
        # Reading tables of an older schema could fail on a missing column: stop here.
        status.problems.append(
            f"schema {status.schema or 'none'} is not {status.schema_head}: "
            "upgrade needed, run `postdesk init`"
        )
        return status
    with db.read_session() as session:
        ids = dict(session.execute(select(Mailbox.name, Mailbox.id)).all())
        counts: dict[tuple[int | None, str], int] = {
            (mailbox_id, state): n
            for mailbox_id, state, n in session.execute(
                select(RawMessage.mailbox_id, RawMessage.status, func.count())
                .where(RawMessage.status.in_([RawStatus.PENDING, RawStatus.QUARANTINED]))
                .group_by(RawMessage.mailbox_id, RawMessage.status)
            )
        }
        syncs = {
            (row.mailbox_id, row.folder): row
            for row in session.execute(select(MailboxSync)).scalars()
        }
        status.outbox = {
            state: n
            for state, n in session.execute(
                select(OutboxMail.state, func.count()).group_by(OutboxMail.state)
            )
        }
        status.oldest_queued_at = session.execute(
            select(func.min(OutboxMail.created_at)).where(
                OutboxMail.state.in_([OutboxState.QUEUED, OutboxState.SENDING])
            )
        ).scalar_one()
    configured = set()
    for box in settings.mailboxes:
        mailbox_id = ids.get(box.name)
        configured.add(mailbox_id)
        entry = MailboxStatus(box.name, box.folder)
        status.mailboxes.append(entry)
        entry.pending = counts.get((mailbox_id, RawStatus.PENDING), 0)
        entry.quarantined = counts.get((mailbox_id, RawStatus.QUARANTINED), 0)
        sync = syncs.get((mailbox_id, box.folder)) if mailbox_id is not None else None
        if sync is not None:
            entry.last_success_at = sync.last_success_at
            entry.last_error = sync.last_error
            entry.last_error_at = sync.last_error_at if sync.last_error else None
            entry.retry_at = sync.retry_at if sync.last_error else None
        if entry.last_success_at is not None:
            entry.lag_seconds = max((now - entry.last_success_at).total_seconds(), 0.0)
        _mailbox_problems(status, entry, limit)
    for (mailbox_id, state), n in counts.items():
        if mailbox_id not in configured:
            # Imports without --mailbox, and mailboxes no longer in the config.
            if state == RawStatus.PENDING:
                status.unassigned_pending += n
            else:
                status.unassigned_quarantined += n
    if status.oldest_queued_at is not None:
        age = max((now - status.oldest_queued_at).total_seconds(), 0.0)
        status.oldest_queued_seconds = age
        if age > status.max_lag_seconds:
            status.problems.append(
                f"outbox: mail queued for {span(age)} (more than {span(limit)}) is not "
                "going out; see `postdesk outbox list --state queued`"
            )
    _models(settings, status)
    return status


def _mailbox_problems(status: Status, entry: MailboxStatus, limit: timedelta) -> None:
    where = f"mailbox {entry.name!r}"
    if entry.last_error:
        # The recorded error usually names the mailbox already.
        error = entry.last_error
        named = error if error.startswith(where) else f"{where}: {error}"
        status.problems.append(f"last fetch failed: {named}")
    elif entry.last_success_at is None:
        status.problems.append(f"{where}: never fetched; is `postdesk run` running?")
    elif entry.lag_seconds is not None and entry.lag_seconds > limit.total_seconds():
        status.problems.append(
            f"{where}: last fetched {span(entry.lag_seconds)} ago (more than {span(limit)}); "
            "is `postdesk run` running?"
        )


def _models(settings: Settings, status: Status) -> None:
    from postdesk.classify.store import ModelStore

    store = ModelStore(settings.data_dir)
    try:
        for target, version in sorted(store.active_versions().items()):
            created = store.metadata(version).get("created_at")
            status.models.append(
                ModelStatus(target, version, str(created) if created is not None else None)
            )
    except PostdeskError as exc:
        # An unreadable model store is the triage's problem, shown but not fatal here.
        status.models_error = str(exc)


def span(value: float | timedelta) -> str:
    """A duration for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
