"""Find who sent a message and the contact that stands for them."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from postdesk.errors import ParseError
from postdesk.ingest.parse import Address, ParsedMessage
from postdesk.models import Contact, utcnow
from postdesk.models.tickets import AGENT, CUSTOMER


def sender_address(parsed: ParsedMessage) -> Address:
    """The address a reply should go to the author at: From, else Sender, else Reply-To."""
    if parsed.from_ is not None:
        return parsed.from_
    if parsed.sender is not None:
        return parsed.sender
    if parsed.reply_to:
        return parsed.reply_to[0]
    raise ParseError("no sender address: From, Sender and Reply-To are all missing or unreadable")


def get_or_create_contact(
    session: Session, address: Address, *, agent_emails: Collection[str] = ()
) -> Contact:
    """The contact for `address`, created (race-free) on first sight."""
    email = address.email.lower()
    role = AGENT if email in agent_emails else CUSTOMER
    values = {
        "email": email,
        "name": address.name,
        "role": role,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    # Two processes may see a new customer at once; the unique email decides who inserts.
    if session.get_bind().dialect.name == "postgresql":
        pg_stmt = postgresql.insert(Contact).values(**values)
        session.execute(pg_stmt.on_conflict_do_nothing(index_elements=["email"]))
    else:
        lite_stmt = sqlite.insert(Contact).values(**values)
        session.execute(lite_stmt.on_conflict_do_nothing(index_elements=["email"]))
    contact = session.execute(select(Contact).where(Contact.email == email)).scalar_one()
    if address.name and not contact.name:
        contact.name = address.name
    return contact
