"""Agent notifications: the agents of a ticket's queue hear of every customer message.

Agents never open a web page: a new ticket, or a customer writing again on one, is
mailed to the agents who serve the ticket's mailbox (`[[agent]] queues`, all mailboxes
when empty), or only to its assignee once someone has it. The mail shows the number,
subject, requester, category, priority and what the customer wrote (quotes removed),
and its Reply-To carries a token signed for the ticket AND that agent, so an answer
written in the agent's own mail client can be relayed to the customer (only when it
comes from that agent).

One notification per agent per customer message: the step runs once per message, in
its transaction. Nothing is sent for imported history, automatic mail, bounces, our own
mail, or mail from agents (an agent's answer is relayed, not announced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from postdesk.ingest.process import WorkItem
from postdesk.ingest.store import IMPORT
from postdesk.ingest.tokens import ReplyTokens, new_message_id
from postdesk.models import Contact, Mailbox, MailKind, Ticket
from postdesk.models.base import table_of
from postdesk.models.tickets import AGENT
from postdesk.notify.compose import Envelope, queue_mail
from postdesk.notify.templates import Templates

_tickets = table_of(Ticket)
_mailboxes = table_of(Mailbox)
_contacts = table_of(Contact)
_TICKET = (
    select(
        _tickets.c.subject,
        _tickets.c.category,
        _tickets.c.priority,
        _tickets.c.assignee_id,
        _mailboxes.c.name.label("mailbox"),
        _mailboxes.c.address,
    )
    .join(_mailboxes, _mailboxes.c.id == _tickets.c.mailbox_id)
    .where(_tickets.c.id == bindparam("ticket_id"))
)
_AGENT_IDS = select(_contacts.c.id, _contacts.c.email).where(
    _contacts.c.email.in_(bindparam("emails", expanding=True)), _contacts.c.role == AGENT
)


@dataclass(frozen=True)
class Agent:
    """An agent as notifications need them: address, name, queues, language."""

    email: str
    name: str = ""
    queues: Sequence[str] = ()  # mailbox names; empty: every mailbox
    language: str = "en"

    def serves(self, mailbox: str) -> bool:
        return not self.queues or mailbox in self.queues


class NotifyAgentsStep:
    """Tell the agents of the ticket's queue (or its assignee) what the customer wrote."""

    name = "notify"

    def __init__(
        self,
        templates: Templates,
        tokens: ReplyTokens,
        agents: Sequence[Agent],
        teams: Mapping[str, str],
    ) -> None:
        self.templates = templates
        self.tokens = tokens
        self.agents = {a.email.lower(): a for a in agents}
        self.teams = dict(teams)  # mailbox name -> the team name that signs its mail

    def __call__(self, item: WorkItem) -> None:
        sender, found = item.sender, item.kind
        if item.ticket_id is None or sender is None or item.raw.source == IMPORT:
            return
        if item.survey_answer:
            return  # a score for the survey, not a question: recorded, nobody to tell
        if sender.role == AGENT or (found is not None and found.kind != MailKind.HUMAN):
            return
        conn = item.conn
        ticket = conn.execute(_TICKET, {"ticket_id": item.ticket_id}).first()
        if ticket is None or not self.agents:
            return
        assignee = None
        if ticket.assignee_id is not None:
            assignee = conn.execute(
                select(_contacts.c.email).where(_contacts.c.id == ticket.assignee_id)
            ).scalar_one_or_none()
        if assignee is not None and assignee.lower() in self.agents:
            chosen = [self.agents[assignee.lower()]]
        else:
            chosen = [a for a in self.agents.values() if a.serves(ticket.mailbox)]
        if not chosen:
            return
        ids = dict(
            (email.lower(), contact_id)
            for contact_id, email in conn.execute(
                _AGENT_IDS, {"emails": [a.email.lower() for a in chosen]}
            )
        )
        parsed = item.need_parsed()
        requester = f"{sender.name} <{sender.email}>" if sender.name else sender.email
        team = self.teams.get(ticket.mailbox, "Support")
        domain = ticket.address.rpartition("@")[2] or "localhost"
        at = item.need_arrived()
        for agent in chosen:
            agent_id = ids.get(agent.email.lower())
            if agent_id is None:
                continue  # not synced as a contact yet: the next pass knows them
            rendered = self.templates.render(
                "notification",
                agent.language,
                ticket_number=item.ticket_id,
                subject=ticket.subject,
                team=team,
                follow_up=not item.created_ticket,
                requester=requester,
                category=ticket.category,
                priority=ticket.priority,
                text=item.visible or "",
                warning=item.agent_check or "",
            )
            envelope = Envelope(
                from_name=team,
                from_address=ticket.address,
                to=agent.email,
                to_name=agent.name,
                reply_to=self.tokens.agent_address(ticket.address, item.ticket_id, agent_id),
                message_id=new_message_id(domain),
                in_reply_to=parsed.message_id or None,
                references=parsed.references,
            )
            # Not counted towards the limit on automatic mail: that protects customers and
            # stops loops; an agent must hear of every customer message.
            queue_mail(
                conn,
                rendered,
                envelope,
                kind="notification",
                ticket_id=item.ticket_id,
                language=agent.language,
                at=at,
                automatic=True,
                limited=False,
            )
