"""The Prometheus endpoint of `postdesk run` (`[metrics] listen = "127.0.0.1:9108"`).

Two kinds of numbers:

- counters and the latency histogram are kept by the service process, from what each
  pass returns (`Metrics.record`): messages stored from each mailbox, quarantined,
  processed (with the time from being stored to being processed), fetch failures, mail
  sent and failed. They start at zero when the service starts, as Prometheus expects.
- gauges are read from the database at each scrape (`DatabaseCollector`, the same
  reading as `postdesk status`): pending and quarantined raw messages and the fetch lag
  per mailbox, whether its last fetch failed, the outbox by state and the age of its
  oldest queued mail. Reading them at scrape time keeps them true whoever changed the
  database (a person retrying quarantined mail, another instance sending the outbox).

The latency histogram observes every message the database shows processed since the
previous pass, whichever instance processed it (with several instances, read it from
one), except quarantined mail a person retried: waiting for that person is not
processing latency. The endpoint has no authentication: listen on loopback or a private network.

prometheus-client is the `metrics` extra (`pip install 'postdesk[metrics]'`): most
installations never scrape, and the service imports it only when `[metrics] listen` is
set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from postdesk.config import Settings, listen_address
from postdesk.errors import ConfigError, PostdeskError
from postdesk.models import Mailbox, RawMessage, RawStatus, utcnow
from postdesk.models.db import Database, describe_error

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from postdesk.daemon import PassResult

log = logging.getLogger(__name__)

NO_MAILBOX = "-"  # the mailbox label of mail imported without --mailbox
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


def _require_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise PostdeskError(
            "[metrics] listen is set but prometheus-client is not installed; "
            "install it with `pip install 'postdesk[metrics]'`"
        ) from None


class DatabaseCollector:
    """Gauges read from the database at each scrape (see the module's docstring)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from postdesk.health.status import collect

        up = GaugeMetricFamily("postdesk_database_up", "1 when the database could be read.")
        try:
            status = collect(self.settings, self.db)
        except (SQLAlchemyError, PostdeskError) as exc:
            log.warning("metrics: cannot read the database: %s", _reason(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        schema = GaugeMetricFamily(
            "postdesk_schema_current", "1 when the database schema is the one postdesk needs."
        )
        schema.add_metric([], 1 if status.schema == status.schema_head else 0)
        yield schema
        raw = GaugeMetricFamily(
            "postdesk_raw_messages",
            "Raw messages waiting for processing or quarantined, by mailbox.",
            labels=["mailbox", "status"],
        )
        lag = GaugeMetricFamily(
            "postdesk_sync_lag_seconds",
            "Seconds since the mailbox was last fetched successfully.",
            labels=["mailbox"],
        )
        failing = GaugeMetricFamily(
            "postdesk_sync_failing", "1 while the mailbox's last fetch failed.", labels=["mailbox"]
        )
        for box in status.mailboxes:
            raw.add_metric([box.name, RawStatus.PENDING.value], box.pending)
            raw.add_metric([box.name, RawStatus.QUARANTINED.value], box.quarantined)
            if box.lag_seconds is not None:
                lag.add_metric([box.name], box.lag_seconds)
            failing.add_metric([box.name], 1 if box.last_error else 0)
        raw.add_metric([NO_MAILBOX, RawStatus.PENDING.value], status.unassigned_pending)
        raw.add_metric([NO_MAILBOX, RawStatus.QUARANTINED.value], status.unassigned_quarantined)
        yield from (raw, lag, failing)
        outbox = GaugeMetricFamily(
            "postdesk_outbox_mails", "Outgoing mails by state.", labels=["state"]
        )
        from postdesk.models import OutboxState

        for state in OutboxState:
            outbox.add_metric([state.value], status.outbox.get(state.value, 0))
        yield outbox
        oldest = GaugeMetricFamily(
            "postdesk_outbox_oldest_queued_seconds",
            "Age of the oldest mail waiting to be sent (0 when none waits).",
        )
        oldest.add_metric([], status.oldest_queued_seconds or 0.0)
        yield oldest


class Metrics:
    """The service's metrics: a registry, what `record` counts, and the HTTP endpoint."""

    def __init__(
        self, settings: Settings, db: Database, *, now: Callable[[], datetime] = utcnow
    ) -> None:
        _require_client()
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.settings = settings
        self.db = db
        self._now = now
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "postdesk_messages_ingested",
            "New messages stored from IMAP.",
            ["mailbox"],
            registry=r,
        )
        self.processed = Counter(
            "postdesk_messages_processed",
            "Raw messages processed into tickets by this service.",
            registry=r,
        )
        self.quarantined = Counter(
            "postdesk_messages_quarantined",
            "Raw messages set aside because a processing step failed.",
            ["mailbox"],
            registry=r,
        )
        self.fetch_failures = Counter(
            "postdesk_fetch_failures", "Failed fetch passes.", ["mailbox"], registry=r
        )
        self.sent = Counter("postdesk_mail_sent", "Mails the SMTP relay accepted.", registry=r)
        self.failed = Counter(
            "postdesk_mail_failed", "Mails given up on (refused, or retried too long).", registry=r
        )
        self.latency = Histogram(
            "postdesk_processing_latency_seconds",
            "From a message being stored to it being processed, by mailbox.",
            ["mailbox"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for box in settings.mailboxes:
            # Every configured mailbox's series exists from the start, at zero.
            self.ingested.labels(box.name)
            self.quarantined.labels(box.name)
            self.fetch_failures.labels(box.name)
        r.register(DatabaseCollector(settings, db))
        self._since = now()
        self._floor = 0
        try:
            with db.read_session() as session:
                self._floor = self._next_floor(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the database yet: %s", _reason(exc))
        self._server: Any = None

    def record(self, result: PassResult) -> None:
        """Count what one pass did; never raises (the service must not stop for metrics)."""
        try:
            self._record(result)
        except (SQLAlchemyError, PostdeskError) as exc:
            log.warning("metrics: cannot record the pass: %s", _reason(exc))

    def _record(self, result: PassResult) -> None:
        for fetched in result.fetches:
            self.ingested.labels(fetched.mailbox).inc(fetched.stored)
        for name in result.errors:
            self.fetch_failures.labels(name).inc()
        self.processed.inc(result.processed.processed)
        if result.outbox is not None:
            self.sent.inc(result.outbox.sent)
            self.failed.inc(result.outbox.failed)
        with self.db.read_session() as session:
            names: dict[int | None, str] = {
                id_: name for id_, name in session.execute(select(Mailbox.id, Mailbox.name))
            }
            if result.processed.quarantined_ids:
                for mailbox_id in session.execute(
                    select(RawMessage.mailbox_id).where(
                        RawMessage.id.in_(result.processed.quarantined_ids)
                    )
                ).scalars():
                    self.quarantined.labels(names.get(mailbox_id, NO_MAILBOX)).inc()
            # Only ids above the floor can have been processed since the last pass (the
            # index on status and id finds them without reading the whole table).
            rows = session.execute(
                select(RawMessage.mailbox_id, RawMessage.received_at, RawMessage.processed_at)
                .where(
                    RawMessage.status == RawStatus.PROCESSED,
                    RawMessage.id > self._floor,
                    RawMessage.processed_at > self._since,
                )
                .order_by(RawMessage.processed_at)
            ).all()
            self._floor = self._next_floor(session)
        for mailbox_id, received_at, processed_at in rows:
            if processed_at is None:  # the query excludes it; for the type checker
                continue
            seconds = max((processed_at - received_at).total_seconds(), 0.0)
            self.latency.labels(names.get(mailbox_id, NO_MAILBOX)).observe(seconds)
            self._since = max(self._since, processed_at)

    @staticmethod
    def _next_floor(session: Session) -> int:
        """The highest id below every message that may be processed from now on: those
        pending now and those stored later. (A quarantined message a person retries is
        left out: the wait for that person is not processing latency.)"""
        # The highest id first: a message stored between the two reads is above it.
        highest = session.execute(select(func.max(RawMessage.id))).scalar_one()
        pending = session.execute(
            select(func.min(RawMessage.id)).where(RawMessage.status == RawStatus.PENDING)
        ).scalar_one()
        if pending is not None:
            return min(int(pending) - 1, int(highest or 0))
        return int(highest or 0)

    def serve(self) -> tuple[str, int]:
        """Start the HTTP endpoint in a background thread; the address it listens on."""
        from prometheus_client import start_http_server

        host, port = listen_address(self.settings.metrics.listen)
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                str(self.settings.path),
                "metrics.listen",
                f"cannot listen on {self.settings.metrics.listen} ({exc.strerror or exc})",
            ) from None
        self._server = server
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop the HTTP endpoint, if it runs."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _reason(exc: BaseException) -> str:
    return describe_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)


@contextmanager
def served(
    settings: Settings,
    db: Database,
    on_pass: Callable[[PassResult], None] | None = None,
) -> Iterator[Callable[[PassResult], None] | None]:
    """While inside, the endpoint runs when `[metrics] listen` is set; yields the callback
    `Service.run_forever` calls after each pass: `on_pass`, plus recording the metrics."""
    if not settings.metrics.listen:
        yield on_pass
        return
    metrics = Metrics(settings, db)
    host, port = metrics.serve()
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics: serving http://%s:%d/metrics", shown, port)

    def after_pass(result: PassResult) -> None:
        metrics.record(result)
        if on_pass is not None:
            on_pass(result)

    try:
        yield after_pass
    finally:
        metrics.close()
