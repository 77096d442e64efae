"""The relay: an agent's reply, written in their own mail client, acts on the ticket.

A reply counts as the agent's only when it was sent to the token of a notification
(`support+t<N>a<A>-<sig>@`, signed for ticket N and agent A) AND comes from agent A's
own address. Then its `#commands` (notify/commands.py) are applied through the ticket
lifecycle and its text (quotes and signature removed, sign-off kept:
`ingest.quotes.reply_text`) is sent to the customer as "Agent via Team"
(notify/reply.py); after `#note` the text is an internal note instead, never sent. All
commands are checked first: one that is wrong gets the agent a short error mail, and
nothing is applied or sent. Whether a mail is that reply is decided before threading
(ingest/author.py, which also checks Authentication-Results): anything else (no token,
an edited token, another agent's token, a spoofed agent address, a failing DMARC) is
customer mail and executes nothing; when it carried an agent token, why is also
recorded on the ticket the token names. Whatever happens, the agent's mail itself stays
on the ticket, as the file step stored it (with `agent_check` saying what was decided).
"""

from __future__ import annotations

import logging
from typing import Any

from postdesk.config import Settings
from postdesk.ingest.process import WorkItem
from postdesk.ingest.quotes import reply_text
from postdesk.ingest.store import IMPORT
from postdesk.ingest.threader import recipients
from postdesk.ingest.tokens import ReplyTokens, new_message_id
from postdesk.models import MailKind, TicketStatus
from postdesk.notify.commands import Command, parse_reply
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.reply import ReplyError, queue_reply
from postdesk.notify.survey import queue_survey
from postdesk.notify.templates import Templates
from postdesk.tickets.lifecycle import (
    add_note,
    agent_mail,
    assign,
    resolve_merged,
    set_label,
    set_status,
)
from postdesk.tickets.views import Agent, find_agent, ticket_exists

log = logging.getLogger(__name__)


class RelayStep:
    """Carry out an agent's emailed reply: its #commands, then its text to the customer."""

    name = "relay"

    def __init__(self, settings: Settings, templates: Templates, tokens: ReplyTokens) -> None:
        self.settings = settings
        self.templates = templates
        self.tokens = tokens

    def __call__(self, item: WorkItem) -> None:
        sender, found = item.sender, item.kind
        if sender is None or item.ticket_id is None or item.raw.source == IMPORT:
            return
        if found is not None and found.kind != MailKind.HUMAN:
            return
        parsed = item.need_parsed()
        conn = item.conn
        at = item.need_arrived()
        record: dict[str, Any] = {"message_id": parsed.message_id}
        if item.agent_token is None:
            refused = item.refused_token
            if refused is not None and ticket_exists(conn, refused[0]):
                # Someone used an agent's token and was not that agent: say so on the
                # ticket the token names (the mail itself went where a customer's goes).
                record.update(done="nothing", why=item.agent_check or "")
                target = resolve_merged(conn, refused[0])
                agent_mail(conn, target, record, actor=sender.email, at=at)
            return  # not an agent's proven reply: customer mail, nothing to carry out
        ticket_id = item.ticket_id
        agent = find_agent(conn, self.settings.agents, sender.email)
        if agent is None:
            agent = Agent(sender.id, sender.email, sender.name)
        reply = parse_reply(
            reply_text(parsed.text, parsed.html),
            priorities=self.settings.triage.priority_levels,
        )
        assignees = self._assignees(conn, reply.commands, agent, reply.errors)
        if reply.errors:
            line, why = reply.errors[0]
            self._command_error(item, ticket_id, agent, line, why)
            record.update(done="nothing", why=f"{line}: {why}")
            agent_mail(conn, ticket_id, record, actor=agent.email, at=at)
            return
        status = None
        for command in reply.commands:
            if command.name == "status":
                status = command.value
                set_status(conn, ticket_id, status, actor=agent.email, why="#command", at=at)
            elif command.name in ("priority", "category"):
                set_label(conn, ticket_id, command.name, command.value, actor=agent.email, at=at)
            elif command.name == "assign":
                assign(conn, ticket_id, assignees[command.value], actor=agent.email, at=at)
        record["commands"] = [c.line for c in reply.commands]
        if reply.note:
            if reply.text.strip():
                add_note(conn, ticket_id, reply.text, actor=agent.email, at=at)
            record["done"] = "note"
        elif reply.text.strip():
            try:
                queue_reply(
                    conn,
                    self.settings,
                    ticket_id,
                    reply.text,
                    agent,
                    status=status,
                    templates=self.templates,
                    at=at,
                )
            except ReplyError as exc:
                record.update(done="commands only", why=str(exc))
            else:
                record["done"] = "relayed"
        else:
            record["done"] = "commands only"
        if status == TicketStatus.SOLVED:
            # After the reply: the customer reads the answer before being asked about it.
            queue_survey(conn, self.settings, ticket_id, templates=self.templates, at=at)
        agent_mail(conn, ticket_id, record, actor=agent.email, at=at)

    def _assignees(
        self,
        conn: Any,
        commands: list[Command],
        agent: Agent,
        errors: list[tuple[str, str]],
    ) -> dict[str, int | None]:
        """The contact id each #assign names; an unknown agent becomes an error."""
        found: dict[str, int | None] = {}
        for command in commands:
            if command.name != "assign":
                continue
            if command.value == "me":
                found["me"] = agent.contact_id
            elif command.value == "nobody":
                found["nobody"] = None
            else:
                other = find_agent(conn, self.settings.agents, command.value)
                if other is None or other.contact_id is None:
                    errors.append((command.line, f"{command.value} is not one of our agents"))
                else:
                    found[command.value] = other.contact_id
        return found

    def _command_error(
        self, item: WorkItem, ticket_id: int, agent: Agent, line: str, why: str
    ) -> None:
        """Tell the agent which command could not be applied, and that nothing was."""
        mailbox = next(
            (b for b in self.settings.mailboxes if b.address in recipients_lower(item)), None
        ) or (self.settings.mailboxes[0] if self.settings.mailboxes else None)
        if mailbox is None or agent.contact_id is None:
            return
        rendered = self.templates.render(
            "command_error",
            agent.language,
            ticket_number=ticket_id,
            subject=item.need_parsed().subject,
            team=mailbox.team,
            agent_name=agent.name or agent.email.partition("@")[0],
            command=line,
            reason=why,
        )
        parsed = item.need_parsed()
        envelope = Envelope(
            from_name=mailbox.team,
            from_address=mailbox.address,
            to=agent.email,
            to_name=agent.name,
            reply_to=self.tokens.agent_address(mailbox.address, ticket_id, agent.contact_id),
            message_id=new_message_id(mailbox.address.rpartition("@")[2] or "localhost"),
            in_reply_to=parsed.message_id or None,
            references=parsed.references,
        )
        queue_mail(
            item.conn,
            rendered,
            envelope,
            kind="command_error",
            ticket_id=ticket_id,
            language=agent.language,
            at=item.need_arrived(),
            automatic=True,
        )


def recipients_lower(item: WorkItem) -> set[str]:
    """The message's recipients without +details, lower-case (to find our mailbox)."""
    found = set()
    for address in recipients(item.need_parsed()):
        local, _, domain = address.lower().partition("@")
        found.add(f"{local.split('+', 1)[0]}@{domain}")
    return found
