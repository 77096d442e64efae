"""Decide which ticket an inbound message belongs to, and record why.

Rules, first match wins:
1. `reply-token`: a recipient address carries a validly signed reply token
   (``support+t<N>-<sig>@``, or an agent's ``support+t<N>a<A>-<sig>@``, see
   ingest/tokens.py) naming ticket N, whoever sends it: only mail from us carries it;
2. `message-id`: a message with the same Message-ID is already on a ticket (a second
   copy with different content, e.g. re-sent with another footer), from the same sender
   (or our own mail coming back); from anyone else it joins nothing and the first
   stored message keeps the id;
3. `in-reply-to` / `references`: a Message-ID it answers is on a ticket (In-Reply-To
   first, then References from the nearest ancestor back to the root; for a bounce, the
   Message-ID of the mail that bounced). Outbound mail is stored too, so replies to our
   own messages match;
4. `referenced-by`: a stored message answers this one (the parent arrived late);
5. `shared-parent`: a stored message answers the same missing message as this one;
   Rules 3-5 join only when the sender takes part in the ticket (`_takes_part`: an
   agent, the requester, an earlier sender, an address the ticket's mail went to, or a
   reply sent to an address other than ours that the ticket's inbound mail also went
   to, i.e. the list it runs on). A delivery report about mail we sent joins that mail;
6. `subject-tag`: the subject carries `[#N]` (any digits: ASCII, Persian, Arabic-Indic)
   and the sender takes part in ticket N (as above), so quoting someone else's ticket
   number does not attach mail to it;
7. `subject`: human mail only, for clients that strip threading headers: a subject with
   a reply prefix (lexicon/prefixes.py) and no reply header that leads to a stored
   message; the same requester, the same subject key (prefixes, tags and Persian
   spelling normalised, see textnorm.py; stored with the ticket), the requester's most
   recent such ticket not solved, closed or merged, its last message within the window;
   generic subjects never match;
8. `related`: a header rule or the subject (without a reply prefix) pointed at a ticket
   the message may not join: a new ticket, linked to that one (`ThreadMatch.related`);
9. otherwise `new`. A customer's forward (Fwd: with a forwarded message inside) is
   `forward`, a new ticket, whatever its headers say (only an identical copy matches).

A match on a ticket that was merged into another is moved to that one. The queries that
find a ticket also return whether it was merged, so the merge chain is only walked for
the rare message that lands on a merged ticket.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Integer,
    Select,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.sql.selectable import ScalarSelect

from postdesk.ingest.parse import ParsedMessage
from postdesk.ingest.sender import Sender
from postdesk.ingest.textnorm import is_forward, is_generic_subject, is_reply, subject_key
from postdesk.ingest.tokens import ReplyTokens
from postdesk.lexicon import any_phrase
from postdesk.lexicon.quoting import (
    FORWARD_MARKERS,
    ORIGINAL_MESSAGE_MARKERS,
    UNFRAMED_FORWARD_MARKERS,
)
from postdesk.models import MailKind, Message, MessageRef, Ticket
from postdesk.models.base import table_of
from postdesk.models.lean import Lean
from postdesk.models.tickets import AGENT, MAX_TICKET_ID, TicketStatus
from postdesk.tickets.lifecycle import resolve_merged

NEW = "new"
FORWARD = "forward"
RELATED = "related"  # a new ticket, linked to the one its headers or subject pointed at
_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")
# The line above a message forwarded inline: a forward marker or an original-message
# separator between rules of dashes ("---------- Forwarded message ---------",
# "-----Original Message-----", "-------- Wiadomość przekazana dalej --------"), or
# Apple Mail's unframed "Begin forwarded message:". The phrases are lexicon/quoting.py's;
# a marker may be only the start of what the client writes, so up to 40 more characters
# may follow it before the closing dashes.
_INLINE_FORWARD = re.compile(
    rf"^-{{2,}} ?{any_phrase((*FORWARD_MARKERS, *ORIGINAL_MESSAGE_MARKERS))}[^\n-]{{0,40}}-{{2,}}"
    rf"|^{any_phrase(UNFRAMED_FORWARD_MARKERS)}:",
    re.IGNORECASE | re.MULTILINE,
)
_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_TAG = re.compile(r"\[#\s*([0-9۰-۹٠-٩]{1,12})\s*\]")


@dataclass(frozen=True)
class ThreadOptions:
    """What threading needs besides the message: the token key and the time window."""

    tokens: ReplyTokens | None = None
    subject_window: timedelta = timedelta(days=7)
    # Our mailboxes' and agents' addresses (lower-case): a shared recipient that is one
    # of them (or a plus-address of one) says nothing about who takes part. Empty (no
    # mailbox configured, e.g. import only): the shared-recipient rule is off, since
    # postdesk cannot tell the support address from a list's.
    own_addresses: frozenset[str] = frozenset()


DEFAULT_OPTIONS = ThreadOptions()


@dataclass(frozen=True)
class ThreadMatch:
    """The threading decision for one message: the ticket (None = new) and why."""

    ticket_id: int | None
    rule: str
    reason: str
    # For a new ticket: the ticket it is linked to as related (the one a header or the
    # subject pointed at, which the sender is not on).
    related: int | None = None


def subject_tags(subject: str) -> list[int]:
    """Ticket numbers tagged in a subject, in order; `[#۱۲]` reads as 12."""
    return [int(m.group(1).translate(_DIGITS)) for m in _TAG.finditer(subject)]


def _ancestors(parsed: ParsedMessage) -> list[tuple[str, str]]:
    """The Message-IDs this message answers, nearest first, each with the header it came from."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for mid in parsed.in_reply_to:
        if mid not in seen:
            seen.add(mid)
            out.append((mid, "in-reply-to"))
    for mid in reversed(parsed.references):
        if mid not in seen:
            seen.add(mid)
            out.append((mid, "references"))
    if parsed.message_id:
        # A message never threads onto itself through its own references.
        out = [(mid, how) for mid, how in out if mid != parsed.message_id]
    return out


def _first_ticket(found: dict[str, int], order: Sequence[str]) -> tuple[str, int] | None:
    for mid in order:
        if mid in found:
            return mid, found[mid]
    return None


_messages = table_of(Message)
_refs = table_of(MessageRef)
_tickets = table_of(Ticket)


def _first(
    pk: ColumnElement[int], key_column: ColumnElement[str], key: BindParameter[str]
) -> ScalarSelect[Any]:
    """The lowest `pk` among rows whose `key_column` equals `key` (NULL if none).

    Grouped, so PostgreSQL looks the key up in its index rather than walking `pk` in
    order until a row matches (its plan for min() without GROUP BY).
    """
    return select(func.min(pk)).where(key_column == key).group_by(key_column).scalar_subquery()


# The most Message-IDs one lookup statement takes (a power of two; see `_find`).
CANDIDATES_AT_ONCE = 8


@functools.cache
def _candidates(count: int) -> Lean:
    """For each of `count` Message-IDs (parameters key0, key1, ...): the ticket of the first
    stored message with that id, and the ticket and Message-ID of the first stored message
    that refers to it, as one row (n, stored_ticket, referring_ticket, referring_id).

    One round trip gathers what the Message-ID rules need; they are then applied in Python.
    Every lookup is an equality on an index, one branch per Message-ID: a plan PostgreSQL
    caches for the prepared statement while the tables are still tiny stays an index
    lookup as they grow, where the plan for an IN list over many ids may scan the tables.
    """
    branches = []
    for n in range(count):
        key: BindParameter[str] = bindparam(f"key{n}")
        branches.append(
            select(
                literal_column(str(n), Integer).label("n"),
                _first(_messages.c.id, _messages.c.message_id, key).label("stored_pk"),
                _first(_refs.c.message_pk, _refs.c.ref_message_id, key).label("referring_pk"),
            )
        )
    firsts = (branches[0] if count == 1 else union_all(*branches)).subquery("firsts")
    found = _messages.alias("found")
    merged = _tickets.alias("merged")

    def of_message(pk: ColumnElement[int], column: str) -> ScalarSelect[Any]:
        return select(found.c[column]).where(found.c.id == pk).scalar_subquery()

    def merged_into(pk: ColumnElement[int]) -> ScalarSelect[Any]:
        return (
            select(merged.c.merged_into_id)
            .join(found, found.c.ticket_id == merged.c.id)
            .where(found.c.id == pk)
            .scalar_subquery()
        )

    statement: Select[Any] = select(
        firsts.c.n,
        of_message(firsts.c.stored_pk, "ticket_id").label("stored_ticket"),
        of_message(firsts.c.stored_pk, "contact_id").label("stored_contact"),
        of_message(firsts.c.stored_pk, "direction").label("stored_direction"),
        merged_into(firsts.c.stored_pk).label("stored_merged"),
        of_message(firsts.c.referring_pk, "ticket_id").label("referring_ticket"),
        merged_into(firsts.c.referring_pk).label("referring_merged"),
        of_message(firsts.c.referring_pk, "message_id").label("referring_id"),
    )
    return Lean(statement)


_TAGGED_TICKET = Lean(
    select(_tickets.c.requester_id, _tickets.c.merged_into_id).where(
        _tickets.c.id == bindparam("ticket_id")
    )
)
_REQUESTER = Lean(select(_tickets.c.requester_id).where(_tickets.c.id == bindparam("ticket_id")))
_HAS_WRITTEN = Lean(
    select(
        exists().where(
            _messages.c.ticket_id == bindparam("ticket_id"),
            _messages.c.contact_id == bindparam("contact_id"),
        )
    )
)


def find_ticket(
    conn: Connection,
    parsed: ParsedMessage,
    sender: Sender,
    *,
    kind: MailKind = MailKind.HUMAN,
    bounced_id: str | None = None,
    arrived: datetime | None = None,
    options: ThreadOptions = DEFAULT_OPTIONS,
) -> ThreadMatch:
    """Apply the rules above to `parsed`, sent by `sender`, then follow merges."""
    match, merged_into = _find(conn, parsed, sender, kind, bounced_id, arrived, options)
    if match.ticket_id is None or merged_into is None:
        return match
    target = resolve_merged(conn, merged_into)
    if target == match.ticket_id:
        return match
    reason = f"{match.reason}; ticket {match.ticket_id} was merged into {target}"
    return ThreadMatch(target, match.rule, reason)


def _find(
    conn: Connection,
    parsed: ParsedMessage,
    sender: Sender,
    kind: MailKind,
    bounced_id: str | None,
    arrived: datetime | None,
    options: ThreadOptions,
) -> tuple[ThreadMatch, int | None]:
    """The match, and the ticket the matched ticket was merged into (None if it was not)."""
    forward = kind == MailKind.HUMAN and sender.role != AGENT and _is_customer_forward(parsed)
    if options.tokens is not None and not forward:
        addresses = recipients(parsed)
        number = options.tokens.find(addresses)
        if number is None:
            # An agent's token mailed by someone else (a forwarded notification): the
            # token still names the ticket; ingest/author.py withholds the agent's powers.
            agent_token = options.tokens.find_agent(addresses)
            number = agent_token[0] if agent_token else None
        if number is not None and number <= MAX_TICKET_ID:
            tagged = _TAGGED_TICKET.first(conn, {"ticket_id": number})
            if tagged is not None:
                reason = f"signed reply token of ticket {number}"
                return ThreadMatch(number, "reply-token", reason), tagged[1]

    own = parsed.message_id
    ancestors = _ancestors(parsed)
    if bounced_id and bounced_id != own:
        ancestors.insert(0, (bounced_id, "in-reply-to"))
    ids = [mid for mid, _ in ancestors]
    keys: list[str] = [own, *ids] if own else ids
    # Message-ID -> (ticket, Message-ID) of the first message stored with that id, and
    # of the first message that answers it.
    # Message-ID -> the ticket the merge chain starts from, where that ticket was merged.
    merges: dict[int, int] = {}
    stored: dict[str, int] = {}
    stored_contact: dict[str, int | None] = {}
    sent_by_us: set[str] = set()  # Message-IDs of mail postdesk sent
    referring: dict[str, tuple[int, str | None]] = {}
    for first in range(0, len(keys), CANDIDATES_AT_ONCE):
        # Statements come in sizes 1, 2, 4 and 8, the extra branches repeating the last
        # key; a longer list of ids is looked up 8 at a time. Each size is compiled once
        # per process, at 0.3 ms a branch: one statement for all of a message's up to
        # 101 ids took 40 ms to compile for 128 branches (where a round trip more costs
        # microseconds on SQLite, a fraction of a millisecond on PostgreSQL).
        chunk = keys[first : first + CANDIDATES_AT_ONCE]
        size = 1 << (len(chunk) - 1).bit_length()
        params = {f"key{n}": chunk[min(n, len(chunk) - 1)] for n in range(size)}
        for row in _candidates(size).rows(conn, params):
            n, stored_ticket, contact, direction, stored_merged = row[:5]
            referring_ticket, referring_merged, referring_id = row[5:]
            if n >= len(chunk):
                continue
            key = chunk[n]
            if stored_ticket is not None:
                stored[key] = stored_ticket
                stored_contact[key] = contact
                if direction == "out":
                    sent_by_us.add(key)
                if stored_merged is not None:
                    merges[stored_ticket] = stored_merged
            if referring_ticket is not None:
                referring[key] = (referring_ticket, referring_id)
                if referring_merged is not None:
                    merges[referring_ticket] = referring_merged

    def on(ticket_id: int, rule: str, reason: str) -> tuple[ThreadMatch, int | None]:
        return ThreadMatch(ticket_id, rule, reason), merges.get(ticket_id)

    # The first ticket a header rule pointed at but the sender is not on: the message
    # opens a ticket of its own linked to that one, unless a later rule finds its place.
    related: tuple[int, str] | None = None

    def joins(ticket_id: int, rule: str, reason: str) -> tuple[ThreadMatch, int | None] | None:
        nonlocal related
        if _takes_part(conn, ticket_id, sender, parsed, options):
            return on(ticket_id, rule, reason)
        if related is None:
            related = (ticket_id, f"{reason}, but {sender.email} is not on that ticket")
        return None

    if own and own in stored:
        reason = f"Message-ID <{own}> is already on ticket {stored[own]}"
        # Our own mail coming back (kind "own": its Message-ID is one we sent) is a copy.
        if stored_contact.get(own) == sender.id or (kind == MailKind.OWN and own in sent_by_us):
            return on(stored[own], "message-id", reason)
        # Another sender reusing a Message-ID neither joins that ticket nor replaces the
        # message: the first stored message keeps the id (lookups take the lowest row).
        related = (stored[own], f"{reason} from another sender")
    if forward:
        return ThreadMatch(None, FORWARD, "a customer's forward opens a ticket of its own"), None

    for mid, how in ancestors:
        if mid not in stored:
            continue
        ticket_id = stored[mid]
        header = "In-Reply-To" if how == "in-reply-to" else "References"
        if mid == bounced_id:
            header = "the bounced message"
        reason = f"{header} <{mid}> is a message of ticket {ticket_id}"
        if mid == bounced_id and kind == MailKind.BOUNCE and mid in sent_by_us:
            # A delivery report about mail postdesk sent goes with that mail.
            return on(ticket_id, how, reason)
        found = joins(ticket_id, how, reason)
        if found is not None:
            return found
        break  # the nearest stored ancestor decides; older ones belong to the same thread

    if own and own in referring:
        ticket_id, child = referring[own]
        found = joins(
            ticket_id, "referenced-by", f"message <{child}> of ticket {ticket_id} answers this one"
        )
        if found is not None:
            return found

    hit = _first_ticket({mid: ticket for mid, (ticket, _) in referring.items()}, ids)
    if hit is not None:
        mid, ticket_id = hit
        found = joins(
            ticket_id,
            "shared-parent",
            f"ticket {ticket_id} already has a reply to <{mid}>, which is not stored",
        )
        if found is not None:
            return found

    for number in subject_tags(parsed.subject):
        if number > MAX_TICKET_ID:
            continue
        tagged = _TAGGED_TICKET.first(conn, {"ticket_id": number})
        if tagged is None:
            continue
        requester_id, merged_into_id = tagged
        if _takes_part(conn, number, sender, parsed, options, requester_id):
            reason = f"subject tag [#{number}] and the sender is on it"
            return ThreadMatch(number, "subject-tag", reason), merged_into_id

    # Only a reply whose threading headers lead nowhere (a client that strips them) is
    # matched by subject: a fresh mail with a familiar subject is a new request. A
    # contact this message created has no tickets yet: the subject rule cannot match.
    usable_headers = bool(stored) or bool(referring)
    if (
        kind == MailKind.HUMAN
        and arrived is not None
        and not sender.new
        and not usable_headers
        and not is_generic_subject(parsed.subject)
    ):
        same = _SAME_SUBJECT.first(
            conn,
            {
                "requester_id": sender.id,
                "key": ticket_subject_key(parsed.subject),
                "since": arrived - options.subject_window,
            },
        )
        if same is not None:
            ticket_id = same[0]
            if is_reply(parsed.subject):
                reason = f"same sender and subject as open ticket {ticket_id}, within the window"
                # Merged tickets are not candidates (see the query).
                return ThreadMatch(ticket_id, "subject", reason), None
            if related is None:
                related = (
                    ticket_id,
                    f"same sender and subject as open ticket {ticket_id}, but no reply prefix",
                )
    if related is not None:
        ticket_id, reason = related
        if ticket_id in merges:
            ticket_id = resolve_merged(conn, merges[ticket_id])
        return ThreadMatch(None, RELATED, f"{reason}; a new ticket, linked", ticket_id), None
    return ThreadMatch(None, NEW, "no rule matched"), None


# Longer keys are stored as a digest: an index entry stays small (PostgreSQL refuses
# B-tree entries over about 2,700 bytes) and equal keys still give equal digests.
SUBJECT_KEY_CHARS = 255


def ticket_subject_key(subject: str) -> str:
    """What `tickets.subject_key` holds for a ticket opened with `subject`, and what the
    subject rule looks up for a message with that subject: `subject_key` (prefixes and
    tags gone, Persian letters and digits normalized, case-folded), or a digest of it
    when it is longer than SUBJECT_KEY_CHARS.

    Stored when the ticket is opened (TicketStep) rather than computed from each
    candidate's subject at every message: a requester with many open tickets (a company's
    shared address) cost 10-20 key computations and a 20-row read per message, growing
    with the mailbox; now it is one index seek. Changing `subject_key` or this function
    changes what the column must hold: add a migration that recomputes it, as 0016 did.
    """
    key = subject_key(subject)
    if len(key) <= SUBJECT_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"


# The requester's most recent open ticket with the message's subject key, last written
# to within the window. Merged tickets are not candidates: replies go to their target
# through the header rules.
_SAME_SUBJECT = Lean(
    select(_tickets.c.id)
    .where(
        _tickets.c.requester_id == bindparam("requester_id"),
        _tickets.c.subject_key == bindparam("key"),
        # Not NOT IN (...): a list renders as an expanding parameter, which Lean refuses.
        _tickets.c.status != TicketStatus.SOLVED,
        _tickets.c.status != TicketStatus.CLOSED,
        _tickets.c.merged_into_id.is_(None),
        _tickets.c.last_message_at >= bindparam("since"),
    )
    .order_by(_tickets.c.last_message_at.desc())
    .limit(1)
)
_ADDRESSEES = Lean(
    select(_messages.c.direction, _messages.c.to, _messages.c.cc).where(
        _messages.c.ticket_id == bindparam("ticket_id")
    )
)


def recipients(parsed: ParsedMessage) -> list[str]:
    """Every address the message was sent to: To, Cc and the delivery headers."""
    found = [a.email for a in (*parsed.to, *parsed.cc)]
    for name in _RECIPIENT_HEADERS:
        found.extend(parsed.headers.get(name, ()))
    return found


def _is_customer_forward(parsed: ParsedMessage) -> bool:
    if not is_forward(parsed.subject):
        return False
    if any(a.content_type.lower() == "message/rfc822" for a in parsed.attachments):
        return True
    return _INLINE_FORWARD.search(parsed.text) is not None


def _takes_part(
    conn: Connection,
    ticket_id: int,
    sender: Sender,
    parsed: ParsedMessage,
    options: ThreadOptions,
    requester_id: int | None = None,
) -> bool:
    """Whether `sender` is on ticket `ticket_id`: an agent, the requester, someone who
    wrote on it, or an address its messages went to (a Cc'd colleague; the customer our
    replies went to). A reply sent to an address other than ours that the ticket's
    inbound mail also went to (the list the conversation runs on) counts as well."""
    if sender.role == AGENT:
        return True
    if requester_id is None:
        requester_id = _REQUESTER.scalar(conn, {"ticket_id": ticket_id})
    if requester_id == sender.id:
        return True
    if not sender.new and _HAS_WRITTEN.scalar(
        conn, {"ticket_id": ticket_id, "contact_id": sender.id}
    ):
        return True
    addressees: set[str] = set()
    # Addresses inbound mail of the ticket went to besides ours: a mailing list, a
    # colleague on Cc. Outbound mail is left out, so that naming the customer our reply
    # went to does not let a stranger in.
    shared: set[str] = set()
    for direction, to, cc in _ADDRESSEES.rows(conn, {"ticket_id": ticket_id}):
        for entry in (*(to or ()), *(cc or ())):
            if isinstance(entry, dict):
                email = str(entry.get("email", "")).lower()
                addressees.add(email)
                if direction == "in":
                    shared.add(email)
    if sender.email in addressees:
        return True
    # A reply-all to the conversation's other recipients (the list it runs on) is a
    # reply in the open: everyone on the conversation sees it.
    # Only where postdesk knows its own addresses: otherwise the support address itself
    # would look like such a list. The addresses the message was delivered to are ours.
    if not options.own_addresses:
        return False
    delivered = {
        a.strip().strip("<>").lower()
        for name in _RECIPIENT_HEADERS
        for a in parsed.headers.get(name, ())
    }
    mine = {a.email.lower() for a in (*parsed.to, *parsed.cc)} - {sender.email} - delivered
    return any(not _is_own(email, options.own_addresses) for email in mine & shared)


def _is_own(email: str, own: frozenset[str]) -> bool:
    """Whether `email` is one of `own` or a plus-address of one (a reply token)."""
    if email in own:
        return True
    local, at, domain = email.partition("@")
    return bool(at) and f"{local.split('+', 1)[0]}@{domain}" in own
