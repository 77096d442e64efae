"""Tickets: the lifecycle (the one writer of ticket state and events) and read views.

- `lifecycle`: open, a message arrives, reopen, follow-up, status, assignment, notes,
  labels (people's and triage's), merge. Every INSERT or UPDATE of a ticket or its
  events is made there.
- `views`: the rows behind `tickets list` and `tickets show` (JSON shapes).
- `search`: the full-text index (kept by triggers on messages) and `tickets search`.
"""

from postdesk.tickets.lifecycle import (
    TicketNotFound,
    add_note,
    assign,
    check_status,
    merge,
    merge_tickets,
    resolve_merged,
    set_status,
)
from postdesk.tickets.views import iso, list_tickets, show_ticket

__all__ = [
    "TicketNotFound",
    "add_note",
    "assign",
    "check_status",
    "iso",
    "list_tickets",
    "merge",
    "merge_tickets",
    "resolve_merged",
    "set_status",
    "show_ticket",
]
