"""A ticket as the QA reviewer reads it: a plain-text transcript, pure (no terminal, no
database), from the dict `postdesk.tickets.show_ticket` returns.

- Customer and agent messages and internal notes in time order, each with its time and
  how long after the ticket opened it came; notes are marked as never sent.
- The header: subject, queue, status, assignee, category and priority, CSAT, and the SLA
  when the ticket has one (`ticket["sla"]`), and other reviewers' scores.
- Blind mode hides who the agent was: the assignee, agents' names in "Sara via Support",
  agents' addresses, note authors, those names where the text mentions them, and other
  reviewers' scores.
- Persian text stays in logical order (bidi-capable terminals lay it out right to left)
  and is wrapped by display width, so zero-width joiners and wide characters do not break
  lines early or late.

Each line is a `Line(style, text)`: the terminal layer colours by `style`, tests read `text`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wcwidth import wcswidth

from postdesk.termsafe import terminal_safe

HIDDEN_AGENT = "Agent"
"""What blind mode shows instead of an agent's name or address."""

_PERSIAN = re.compile(r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Line:
    """One line of the screen: its `style` ("title", "header", "customer", "agent",
    "note", "text", "muted") and text."""

    style: str
    text: str


@dataclass(frozen=True)
class OtherReview:
    """Another reviewer's review of the same ticket (shown unless blind)."""

    reviewer: str
    score: float | None
    finished: bool


def is_persian(text: str) -> bool:
    """Mostly Persian letters (more Persian than Latin letters)."""
    return len(_PERSIAN.findall(text)) > len(_LATIN.findall(text))


def ticket_language(ticket: Mapping[str, Any]) -> str:
    """ "fa" when the customer's messages are mostly Persian, else "en"."""
    text = " ".join(
        str(m.get("visible_text") or m.get("text") or "")
        for m in ticket.get("messages", [])
        if m.get("direction") == "in"
    )
    return "fa" if is_persian(f"{ticket.get('subject') or ''} {text}") else "en"


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal (wide characters 2, joiners and marks 0)."""
    width = wcswidth(text)
    if width >= 0:
        return int(width)
    # Control characters: count the printable ones.
    return sum(max(0, int(wcswidth(ch))) for ch in text if unicodedata.category(ch) != "Cc")


def wrap(text: str, width: int) -> list[str]:
    """`text` wrapped to `width` display columns, paragraph by paragraph; blank lines kept."""
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        if not paragraph.strip():
            lines.append("")
            continue
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if display_width(candidate) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def when(value: str | None) -> str:
    """An ISO time as "2026-11-02 09:05" (UTC), or "?"."""
    if not value:
        return "?"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def duration(seconds: float) -> str:
    """A span as "45s", "12m", "3h 05m" or "2d 4h"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _after(value: str | None, start: datetime | None) -> str:
    if not value or start is None:
        return ""
    try:
        delta = (datetime.fromisoformat(value) - start).total_seconds()
    except ValueError:
        return ""
    return "" if delta < 1 else f"  (+{duration(delta)})"


def _sender(message: Mapping[str, Any]) -> tuple[str, str]:
    sender = message.get("from") or {}
    return str(sender.get("name") or ""), str(sender.get("email") or "")


def agent_identities(ticket: Mapping[str, Any]) -> list[str]:
    """Every name and address that says who the agent was: the assignee, the senders of
    agents' mail (the "Sara" of "Sara via Support"), the authors of internal notes."""
    found: list[str] = []
    assignee = ticket.get("assignee") or {}
    found += [str(assignee.get("name") or ""), str(assignee.get("email") or "")]
    requester = (ticket.get("requester") or {}).get("email")
    for message in ticket.get("messages", []):
        name, email = _sender(message)
        direction = message.get("direction")
        if direction == "out" or (direction == "in" and message.get("agent_check")):
            found.append(name.split(" via ", 1)[0] if " via " in name else name)
            if email != requester:
                found.append(email)
        elif direction == "note":
            found += [name, email]
    names = {n.strip() for n in found if n and n.strip() and len(n.strip()) > 1}
    # Longest first, so "sara@example.com" is hidden whole before "sara".
    return sorted(names, key=lambda n: (-len(n), n))


def hide(text: str, identities: Sequence[str]) -> str:
    """`text` with each of `identities` (names, addresses) replaced by HIDDEN_AGENT."""
    for identity in identities:
        pattern = re.compile(rf"(?<!\w){re.escape(identity)}(?!\w)", re.IGNORECASE)
        text = pattern.sub(HIDDEN_AGENT, text)
    return text


def _sla_text(sla: Any) -> str:
    """The ticket's SLA in one line, whatever shape it has (a dict of clocks, or text)."""
    if sla is None:
        return ""
    if not isinstance(sla, Mapping):
        return str(sla)
    parts = []
    for key, value in sla.items():
        label = str(key).replace("_", " ")
        if isinstance(value, Mapping):
            bits = [
                f"{k.replace('_', ' ')} {when(v) if str(k).endswith('_at') or k == 'due' else v}"
                for k, v in value.items()
                if v is not None and k != "breached"
            ]
            flag = " BREACHED" if value.get("breached") else ""
            parts.append(f"{label}: {', '.join(bits) or '-'}{flag}")
        elif isinstance(value, bool):
            parts.append(label if value else f"not {label}")
        elif value is not None:
            parts.append(f"{label}: {value}")
    return "; ".join(parts)


def render_transcript(
    ticket: Mapping[str, Any],
    *,
    blind: bool = False,
    width: int = 100,
    others: Iterable[OtherReview] = (),
) -> list[Line]:
    """The ticket as the reviewer reads it, `width` columns wide."""
    width = max(30, width)
    secret = agent_identities(ticket) if blind else []

    def shown(text: str) -> str:
        return hide(text, secret) if blind else text

    lines = [Line("title", shown(f"Ticket #{ticket['number']}: {ticket.get('subject') or ''}"))]
    assignee = ticket.get("assignee")
    if blind:
        agent = "(hidden: blind review)"
    elif assignee:
        agent = " ".join(filter(None, [assignee.get("name"), f"<{assignee.get('email')}>"]))
    else:
        agent = "-"
    requester = ticket.get("requester") or {}
    customer = " ".join(
        filter(None, [requester.get("name"), f"<{requester.get('email')}>"])
    ).strip()
    lines.append(Line("header", f"Customer: {customer or '-'}   Agent: {agent}"))
    lines.append(
        Line(
            "header",
            f"Queue: {ticket.get('queue') or '-'}   Status: {ticket.get('status') or '-'}   "
            f"Category: {ticket.get('category') or '-'}   "
            f"Priority: {ticket.get('priority') or '-'}",
        )
    )
    times = [f"Opened: {when(ticket.get('created_at'))}"]
    if ticket.get("first_response_at"):
        times.append(f"First response: {when(ticket['first_response_at'])}")
    if ticket.get("solved_at"):
        times.append(f"Solved: {when(ticket['solved_at'])}")
    lines.append(Line("header", "   ".join(times)))
    csat = ticket.get("csat")
    if csat:
        comment = f" \u2014 \u201c{csat['comment']}\u201d" if csat.get("comment") else ""
        lines.append(Line("header", f"CSAT: {csat['score']}/5{comment}"))
    else:
        lines.append(Line("header", "CSAT: no answer"))
    if "sla" in ticket:
        lines.append(Line("header", f"SLA: {_sla_text(ticket['sla']) or '-'}"))
    others = list(others)
    if others and not blind:
        listed = ", ".join(
            f"{o.reviewer} {o.score:.0f}"
            if o.finished and o.score is not None
            else f"{o.reviewer} {'N/A' if o.finished else '(in progress)'}"
            for o in others
        )
        lines.append(Line("header", f"Other reviews: {listed}"))
    elif others:
        lines.append(Line("header", "Other reviews: hidden (blind review)"))

    start = None
    if ticket.get("created_at"):
        start = datetime.fromisoformat(ticket["created_at"])
    requester_email = requester.get("email")
    for message in ticket.get("messages", []):
        at = message.get("date") or message.get("received_at")
        name, email = _sender(message)
        direction = message.get("direction")
        is_agent = direction == "out" or (
            direction == "in" and bool(message.get("agent_check")) and email != requester_email
        )
        if direction == "note":
            who = HIDDEN_AGENT if blind else (name or email or "?")
            style, head = "note", f"INTERNAL NOTE (never sent) \u00b7 {who}"
        elif is_agent:
            if blind:
                team = name.split(" via ", 1)[1] if " via " in name else ""
                who = f"{HIDDEN_AGENT} via {team}" if team else HIDDEN_AGENT
            else:
                who = name or email or "?"
            style, head = "agent", f"AGENT \u00b7 {who}"
        else:
            who = " ".join(filter(None, [name, f"<{email}>" if email else ""])) or "?"
            style, head = "customer", f"CUSTOMER \u00b7 {shown(who)}"
        lines.append(Line("text", ""))
        lines.append(Line(style, f"\u2500\u2500 {head} \u00b7 {when(at)}{_after(at, start)}"))
        body = str(message.get("visible_text") or message.get("text") or "").strip()
        for text_line in wrap(shown(body) or "(no text)", width - 2):
            lines.append(Line("note" if direction == "note" else "text", f"  {text_line}"))
        for attachment in message.get("attachments") or []:
            lines.append(Line("muted", f"  [attachment: {attachment.get('filename')}]"))
    # Mail can carry terminal escape sequences (screen clears, OSC 52 clipboard writes):
    # none of them reaches the reviewer's terminal.
    return [Line(line.style, terminal_safe(line.text)) for line in lines]


def plain(lines: Iterable[Line]) -> str:
    """The lines as text, one per line."""
    return "\n".join(line.text for line in lines)
