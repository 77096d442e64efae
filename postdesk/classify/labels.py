"""Triage in the database: storing predictions, recording people's labels, and reading
the labelled tickets the next model learns from.

Every change to a ticket's category or priority is a TicketEvent of kind "category" or
"priority" whose data says where the value came from:

    {"to": "billing", "from": null, "source": "human", "confirmed": false}
    {"to": null, "source": "model", "model": "category-3", "probability": 0.41,
     "suggestion": "billing", "confident": false}
    {"to": "urgent", "source": "rule:keyword:urgent"}

Only events with source "human" (an agent's `#category`/`#priority` command, or
`postdesk model label`) are training data; a label a person confirms without changing it
is recorded the same way with "confirmed": true. Predictions and rules never train.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from postdesk.classify.data import LabelledData
from postdesk.classify.errors import TrainingDataError
from postdesk.classify.triage import (
    MODEL_SOURCE,
    TICKET_TARGETS,
    TriageResult,
)
from postdesk.config import Settings
from postdesk.models import Message, Ticket, TicketEvent
from postdesk.models.db import Database
from postdesk.tickets.lifecycle import HUMAN_SOURCE, PRIORITY, apply_triage, set_label

_CHUNK = 500


def _check_target(target: str) -> None:
    if target not in TICKET_TARGETS:
        raise TrainingDataError(
            f"tickets have no {target!r} label; use one of {', '.join(TICKET_TARGETS)}"
        )


def triage_changes(result: TriageResult) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """What `result` does to a ticket no person has labelled yet: the column values and
    the events (kind, data), for code that writes them itself (the mail pipeline puts the
    values into the INSERT of the new ticket).

    A target no model or rule had anything to say about is not among the values.
    """
    values: dict[str, Any] = {"needs_triage": result.needs_triage}
    events: list[tuple[str, Any]] = []
    category = result.prediction("category")
    if category is not None:
        values.update(
            category=result.category,
            category_source=MODEL_SOURCE if result.category is not None else None,
            category_probability=result.category_probability,
            category_model=result.category_model,
        )
        events.append(
            (
                "category",
                {
                    "to": result.category,
                    "source": MODEL_SOURCE,
                    "model": category.model,
                    "probability": round(category.probability, 4),
                    "suggestion": category.label,
                    "confident": category.confident,
                },
            )
        )
    priority = result.prediction(PRIORITY)
    if result.priority is not None or priority is not None:
        values.update(
            priority=result.priority,
            priority_source=result.priority_source,
            priority_probability=result.priority_probability,
            priority_model=result.priority_model,
        )
        data: dict[str, Any] = {"to": result.priority, "source": result.priority_source}
        if priority is not None:
            data["model_suggestion"] = {
                "model": priority.model,
                "label": priority.label,
                "probability": round(priority.probability, 4),
                "confident": priority.confident,
            }
        events.append(("priority", data))
    return values, events


def record_triage(
    conn: Connection, ticket_id: int, result: TriageResult, *, at: datetime | None = None
) -> None:
    """Store `result` on ticket `ticket_id` and in its event log (in the caller's
    transaction, through the ticket lifecycle).

    Targets no model or rule had anything to say about are left untouched, and so is a
    label a person already set.
    """
    values, events = triage_changes(result)
    apply_triage(conn, ticket_id, values, events, at=at)


# A person's label (`postdesk model label`, agents' #category/#priority) is written by
# the ticket lifecycle; it is what the next model trains on.
record_label = set_label


def human_labels(session: Session, target: str) -> dict[int, str]:
    """Ticket id -> the label a person last gave `target` (tickets without one omitted)."""
    _check_target(target)
    labels: dict[int, str] = {}
    query = (
        select(TicketEvent.ticket_id, TicketEvent.data)
        .where(TicketEvent.kind == target)
        .order_by(TicketEvent.id)
    )
    for ticket_id, data in session.execute(query):
        if not isinstance(data, dict) or data.get("source") != HUMAN_SOURCE:
            continue
        value = data.get("to")
        if isinstance(value, str) and value.strip():
            labels[ticket_id] = value.strip()
        else:
            labels.pop(ticket_id, None)
    return labels


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def first_customer_texts(session: Session, ticket_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Ticket id -> (subject, visible text of its first message from the requester).

    Falls back to the first inbound message when the requester wrote none; never uses
    what agents wrote.
    """
    found: dict[int, tuple[str, str]] = {}
    fallback: dict[int, tuple[str, str]] = {}
    order = (func.coalesce(Message.sent_at, Message.received_at), Message.id)
    for chunk in _chunks(ticket_ids):
        query = (
            select(
                Ticket.id,
                Ticket.subject,
                Ticket.requester_id,
                Message.contact_id,
                Message.visible_text,
                Message.text,
            )
            .join(Message, Message.ticket_id == Ticket.id)
            .where(Ticket.id.in_(chunk), Message.direction == "in")
            .order_by(Ticket.id, *order)
        )
        for tid, subject, requester, contact, visible, text in session.execute(query):
            body = visible if visible is not None else (text or "")
            if contact == requester and tid not in found:
                found[tid] = (subject or "", body)
            fallback.setdefault(tid, (subject or "", body))
    return {tid: found.get(tid, fallback[tid]) for tid in fallback}


def training_data_from_db(db: Database, target: str) -> LabelledData:
    """Every ticket whose `target` a person set or confirmed, as training data."""
    with db.read_session() as session:
        labels = human_labels(session, target)
        texts = first_customer_texts(session, sorted(labels))
        created = _created_times(session, sorted(texts))
    ids = [tid for tid in sorted(labels) if tid in texts]
    if not ids:
        raise TrainingDataError(
            f"no ticket has a {target} set or confirmed by a person yet "
            f"(agents' #{target} commands or `postdesk model label`)"
        )
    return LabelledData(
        tuple(texts[t][0] for t in ids),
        tuple(texts[t][1] for t in ids),
        tuple(labels[t] for t in ids),
        {"kind": "db", "database": db.display_url, "target": target, "tickets": len(ids)},
        tuple(created[t] for t in ids),
    )


def _created_times(session: Session, ticket_ids: list[int]) -> dict[int, float]:
    """Ticket id -> when it was created (seconds since the epoch), for the time-ordered
    check a new model gets before it replaces the active one."""
    found: dict[int, float] = {}
    for chunk in _chunks(ticket_ids):
        query = select(Ticket.id, Ticket.created_at).where(Ticket.id.in_(chunk))
        for tid, created in session.execute(query):
            found[tid] = created.timestamp() if created is not None else 0.0
    return found


_ADDRESS = re.compile(r"[^@\s<>,;]{1,64}@[^@\s<>,;.]{1,63}(?:\.[^@\s<>,;.]{1,63})+")


class LabelRefused(TrainingDataError):
    """A person's label that would teach the next model something wrong."""


def known_categories(conn: Connection, settings: Settings) -> list[str]:
    """The categories a person may give without `--new-category`: `[triage] categories`,
    the active category model's labels, and those people already gave."""
    from postdesk.classify.store import ModelStore

    known = set(settings.triage.categories)
    store = ModelStore(settings.data_dir)
    active = store.active("category")
    if active is not None:
        classes = store.metadata(active).get("classes")
        if isinstance(classes, list):
            known.update(str(c) for c in classes)
    given = select(Ticket.category).where(
        Ticket.category_source == HUMAN_SOURCE, Ticket.category.is_not(None)
    )
    known.update(str(c) for c in conn.execute(given.distinct()).scalars())
    return sorted(known)


def check_label(
    conn: Connection,
    settings: Settings,
    number: int,
    target: str,
    value: str,
    *,
    new_category: bool = False,
) -> str:
    """`value` (stripped) if it is a label `target` may have; else LabelRefused saying why.

    A category must be one already known (see `known_categories`) unless `new_category`;
    a priority one of `[triage] priority_levels`. Near misses are named ("did you mean").
    """
    _check_target(target)
    value = value.strip()
    if not value:
        raise LabelRefused(f"the {target} cannot be empty")
    if target == PRIORITY:
        allowed = list(settings.triage.priority_levels)
        if value not in allowed:
            raise LabelRefused(
                f"{value!r} is not a priority{_did_you_mean(value, allowed)}; "
                f"priority_levels are {', '.join(allowed)}"
            )
        return value
    if new_category:
        return value
    known = known_categories(conn, settings)
    if value in known:
        return value
    if not known:
        raise LabelRefused(
            f"no categories are known yet ([triage] categories is empty, no category model "
            f"is active); give --new-category to add {value!r}"
        )
    shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    raise LabelRefused(
        f"{value!r} is not a known category{_did_you_mean(value, known)} (known: {shown}); "
        "give --new-category to add it"
    )


def _did_you_mean(value: str, choices: list[str]) -> str:
    folded = {c.casefold(): c for c in choices}
    close = folded.get(value.casefold()) or next(
        iter(difflib.get_close_matches(value, choices, n=1, cutoff=0.75)), None
    )
    return f" (did you mean {close!r}?)" if close else ""


def check_labeller(address: str) -> str:
    """The address of the person labelling (`--as`), lower-cased; LabelRefused if it is not one."""
    address = address.strip()
    if len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise LabelRefused(f"--as {address!r} is not an email address (e.g. agent@example.com)")
    return address.lower()


def check_not_merged(conn: Connection, number: int) -> None:
    """LabelRefused if ticket `number` was merged into another (label that one instead)."""
    merged_into = conn.execute(
        select(Ticket.merged_into_id).where(Ticket.id == number)
    ).scalar_one_or_none()
    if merged_into is not None:
        raise LabelRefused(
            f"ticket #{number} was merged into #{merged_into}; label #{merged_into} instead"
        )
