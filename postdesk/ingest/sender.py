"""Find who sent a message and the contact that stands for them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from postdesk.errors import ParseError
from postdesk.ingest.parse import Address, ParsedMessage
from postdesk.ingest.store import InsertIgnoringConflicts
from postdesk.models import Contact, utcnow
from postdesk.models.base import table_of
from postdesk.models.lean import Lean
from postdesk.models.tickets import AGENT, CUSTOMER


@dataclass(frozen=True)
class Sender:
    """The contact a message came from, as the later steps need it."""

    id: int
    email: str  # lower-case
    name: str
    role: str  # customer | agent
    bouncing: bool = False  # mail to them bounced for good (cleared when they write)
    new: bool = False  # created by this message: nothing in the database is theirs yet
    # An agent's address whose mail is treated as a customer's (ingest/author.py): no
    # automatic answers go to it, it is ours.
    unproven_agent: bool = False


# Who a delivery report with no usable sender address (no From, or "MAILER-DAEMON <>")
# is filed as: one contact for all of them. The .invalid top-level domain (RFC 2606) can
# never receive mail, so nothing is ever sent to it by mistake.
DELIVERY_SYSTEM = Address("mailer-daemon@invalid", "Mail Delivery System")


def sender_address(parsed: ParsedMessage, *, bounce: bool = False) -> Address:
    """The address a reply should go to the author at: From, else Sender, else Reply-To.

    A delivery report (`bounce`: the kind step recognised it, before this) that names
    none of them is filed as DELIVERY_SYSTEM: bounces without a From exist, and what
    they report (a failed recipient, a ticket's undelivered reply) matters more than who
    sent them. Any other mail without a sender address cannot be filed and is quarantined.
    """
    if parsed.from_ is not None:
        return parsed.from_
    if parsed.sender is not None:
        return parsed.sender
    if parsed.reply_to:
        return parsed.reply_to[0]
    if bounce:
        return DELIVERY_SYSTEM
    raise ParseError("no sender address: From, Sender and Reply-To are all missing or unreadable")


_contacts = table_of(Contact)
_FIND = Lean(
    select(
        _contacts.c.id,
        _contacts.c.name,
        _contacts.c.role,
        _contacts.c.bouncing_since.is_not(None).label("bouncing"),
    ).where(_contacts.c.email == bindparam("email"))
)
_CREATE = Lean(
    InsertIgnoringConflicts(_contacts, "email", returning=("id",)).by_dialect,
    keys=("email", "name", "role", "created_at", "updated_at"),
)
_NAME = (
    update(_contacts)
    .where(_contacts.c.id == bindparam("contact_id"))
    .values(name=bindparam("name"), updated_at=bindparam("now"))
)


def get_or_create_contact(
    conn: Connection, address: Address, *, team_addresses: Collection[str] = ()
) -> Sender:
    """The contact for `address`, created (race-free) on first sight.

    Looked up first, since most mail comes from people already known; a contact that
    had no name gets the one this message gives. A new contact whose address is one of
    `team_addresses` (lower-case: agents' and our mailboxes') is an agent.
    """
    email = address.email.lower()
    found = _FIND.first(conn, {"email": email})
    if found is None:
        role = AGENT if email in team_addresses else CUSTOMER
        now = utcnow()
        # Two processes may see a new customer at once; the unique email decides who inserts.
        created = _CREATE.scalar(
            conn,
            {
                "email": email,
                "name": address.name,
                "role": role,
                "created_at": now,
                "updated_at": now,
            },
        )
        if created is not None:
            return Sender(created, email, address.name, role, new=True)
        found = _FIND.first(conn, {"email": email})
        if found is None:  # pragma: no cover - the conflicting row is committed or ours
            raise RuntimeError(f"contact {email} neither inserted nor found")
    contact_id, name, role, bouncing = found
    if address.name and not name:
        conn.execute(_NAME, {"contact_id": contact_id, "name": address.name, "now": utcnow()})
        name = address.name
    return Sender(contact_id, email, name, role, bool(bouncing))
