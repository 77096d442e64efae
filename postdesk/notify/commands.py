"""Agents' `#commands`: the lines at the top of an emailed reply that act on the ticket.

    #close | #solve | #pending | #open      set the status
    #priority low|normal|high|urgent        (the configured priority levels)
    #category NAME                          a person's label: what the next model learns
    #assign me | #assign EMAIL | #assign nobody
    #note                                   the rest of the mail is an internal note

Commands are the lines that start with `#` before the first line of text (blank lines
between them are fine); a `#` later in the mail is text. All of a reply's commands are
checked before any is applied: one unknown command or value makes the reply an error
(the agent gets a short answer saying which line and why) and nothing is applied or
sent. A reply of commands only sends nothing to the customer. Parsing is one pass over
the lines, each cut to a bounded length: hostile mail costs linear time.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

STATUS_COMMANDS = {"close": "closed", "solve": "solved", "pending": "pending", "open": "open"}
MAX_COMMANDS = 20  # a reply with more "commands" than this is text, not commands
_MAX_LINE = 400


@dataclass(frozen=True)
class Command:
    """One checked command: what it sets, and the line it came from."""

    name: str  # "status", "priority", "category", "assign", "note"
    value: str  # the status, level, category, "me"/"nobody"/an address; "" for note
    line: str


@dataclass
class ParsedReply:
    """An agent's reply split into its commands and its text."""

    commands: list[Command] = field(default_factory=list)
    text: str = ""  # what follows the commands (the reply, or with #note the note)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (line, why)

    @property
    def note(self) -> bool:
        return any(c.name == "note" for c in self.commands)


def parse_reply(text: str, *, priorities: Collection[str]) -> ParsedReply:
    """Split `text` (the agent's reply, quotes and signature already removed)."""
    lines = text.splitlines()
    result = ParsedReply()
    index = 0
    while index < len(lines) and len(result.commands) + len(result.errors) < MAX_COMMANDS:
        line = lines[index].strip()[:_MAX_LINE]
        if not line:
            index += 1
            continue
        if not line.startswith("#") or line.startswith("##"):
            break
        index += 1
        word, _, rest = line[1:].partition(" ")
        word, rest = word.strip().lower(), " ".join(rest.split())
        if word == "note":
            result.commands.append(Command("note", "", line))
            if rest:  # "#note the rest of this line" is part of the note
                lines.insert(index, rest)
            break
        checked = _check(word, rest, priorities)
        if isinstance(checked, str):
            result.errors.append((line, checked))
        else:
            result.commands.append(Command(checked[0], checked[1], line))
    statuses = [c for c in result.commands if c.name == "status"]
    if len({c.value for c in statuses}) > 1:
        result.errors.append((statuses[-1].line, "two different statuses in one reply"))
    result.text = "\n".join(lines[index:]).strip("\n")
    return result


def _check(word: str, rest: str, priorities: Collection[str]) -> tuple[str, str] | str:
    """(name, value) of a valid command, or why it is not one."""
    if word in STATUS_COMMANDS:
        if rest:
            return f"#{word} takes no value"
        return "status", STATUS_COMMANDS[word]
    if word == "priority":
        level = rest.lower()
        if level not in priorities:
            return f"unknown priority {rest!r}; use one of {', '.join(priorities)}"
        return "priority", level
    if word == "category":
        if not rest:
            return "#category needs a name"
        return "category", rest
    if word == "assign":
        target = rest.lower()
        if target in ("me", "nobody") or (target.count("@") == 1 and " " not in target):
            return "assign", target
        return "#assign takes me, nobody or an agent's address"
    known = ", ".join(f"#{c}" for c in (*STATUS_COMMANDS, "priority", "category", "assign", "note"))
    return f"unknown command #{word}; the commands are {known}"
