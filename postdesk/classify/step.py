"""Triage as a step of the mail pipeline: categorize and prioritize each new ticket.

`TriageStep` reads the active models through `ActiveTriage`, which loads them once and
keeps them while they stay active: a promotion or rollback (`postdesk model ...`) is seen
at the next pass (`refresh()`), which loads the new ones. scikit-learn is imported only
when a model or a priority rule is in use. A model that cannot be loaded, or that fails
on a ticket, is logged and leaves tickets unclassified: it never keeps mail from its
ticket.

The step needs only the item's connection and the ticket the message opened, so it
depends on the ticket lifecycle, not on ingest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

from postdesk.config import Settings
from postdesk.tickets.lifecycle import NewTicket, apply_triage

if TYPE_CHECKING:
    from postdesk.classify.triage import Triage

log = logging.getLogger(__name__)


class ActiveTriage:
    """The active models and rules, loaded once and again only after they change."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The active model versions last seen, and what was loaded for them.
        self._key: tuple[tuple[str, str], ...] | None = None
        self._loaded: Triage | None = None

    def current(self) -> Triage | None:
        """What classifies new tickets now, or None (tickets are left unclassified)."""
        from postdesk.classify.errors import ModelError
        from postdesk.classify.store import ModelStore

        triage_settings = self.settings.triage
        rules = bool(
            triage_settings.vip_senders or triage_settings.vip_domains or triage_settings.keywords
        )
        try:
            active = ModelStore(self.settings.data_dir).active_versions()
        except ModelError as exc:
            active = {}
            if self._key != (("error", str(exc)),):
                log.error("triage: %s; new tickets are left unclassified", exc)
            key: tuple[tuple[str, str], ...] = (("error", str(exc)),)
        else:
            key = tuple(sorted(active.items()))
        if key == self._key:
            return self._loaded
        self._key, self._loaded = key, None
        if not active and not rules:
            return None

        from postdesk.classify.triage import Triage

        try:
            loaded = Triage.load(self.settings)
        except Exception as exc:  # a model that cannot be used must not stop the mail
            detail = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "triage: %s; new tickets are left unclassified until a model is promoted "
                "or rolled back (postdesk model ...)",
                " ".join(detail.split()),
            )
            log.debug("triage: traceback", exc_info=True)
            return None
        if loaded is None:
            return None
        log.info("triage: %s", ", ".join(f"{t} {v}" for t, v in loaded.versions.items()) or "rules")
        self._loaded = loaded
        return loaded


class Opening(Protocol):
    """What the triage step reads of a work item."""

    @property
    def conn(self) -> Connection: ...

    @property
    def opened(self) -> NewTicket | None: ...


class TriageStep:
    """Categorize and prioritize a ticket a customer's message just opened."""

    name = "triage"

    def __init__(self, models: ActiveTriage) -> None:
        self.models = models
        self._triage: Triage | None = None

    def refresh(self) -> None:
        """Pick up models promoted or rolled back since; called once per pass."""
        self._triage = self.models.current()

    def __call__(self, item: Opening) -> None:
        opened = item.opened
        if opened is None or self._triage is None:
            return
        from postdesk.classify.labels import triage_changes

        values: dict[str, Any]
        events: list[tuple[str, Any]]
        try:
            result = self._triage.classify(opened.subject, opened.text, opened.requester)
        except Exception as exc:
            # A model that fails must not keep mail from its ticket: a person sorts it.
            log.warning("ticket %d: triage failed, needs triage: %s", opened.ticket_id, exc)
            values, events = {"needs_triage": True}, []
        else:
            values, events = triage_changes(result)
        apply_triage(item.conn, opened.ticket_id, values, events, at=opened.at)
