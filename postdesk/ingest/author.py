"""Is mail from an agent's address really that agent's? Anyone can write any From.

An agent's mail has powers a customer's has not: its `#commands` change tickets, its
text is relayed to the customer, it answers a ticket instead of reopening it. So mail
from an agent's address (or to an agent's reply token) is taken as the agent's only when
something proves it:

* A reply to a notification: the recipient is a validly signed agent token
  (``support+t<N>a<A>-<sig>@``, ingest/tokens.py) for ticket N and agent A, the From is
  agent A's address, and, where the operator names the receiving server
  (`[authentication] authserv_id`), its topmost Authentication-Results does not show the
  agent's domain failing DMARC (or SPF and DKIM both failing alignment, ingest/authres.py).
  Only such mail runs #commands and is relayed (notify/relay.py); it joins ticket N.
* Without a token: the agent's own mail (Bcc'd to support, or written to a customer with
  support on Cc) counts as the agent's, a response that does not reopen the ticket, only
  when the trusted Authentication-Results show the domain passing. It never runs commands.
* Anything else from an agent's address (no token and nothing to prove the sender, an
  edited token, another agent's or another ticket's token, a failing DMARC) is taken as
  customer mail: threaded like a customer's (no agent privileges), kept on the ticket,
  and shown to the team with a warning, but it changes nothing: no commands, no relay,
  no reopening, no acknowledgement to the team address.

Whatever is decided is recorded on the message (`messages.agent_check`), with the reason.
Imported mail is history and keeps the roles it was written with; automatic mail (an
agent's out-of-office reply) acts on nothing anyway and is left as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection

from postdesk.ingest.authres import HEADER, check_domain, trusted
from postdesk.ingest.process import WorkItem
from postdesk.ingest.store import IMPORT
from postdesk.ingest.threader import recipients
from postdesk.ingest.tokens import ReplyTokens
from postdesk.models import MailKind
from postdesk.models.mail import AGENT_OWN_MAIL
from postdesk.models.tickets import AGENT, CUSTOMER

log = logging.getLogger(__name__)


class AuthorStep:
    """Decide whether mail from an agent's address, or to an agent's token, is the agent's."""

    name = "author"

    def __init__(self, tokens: ReplyTokens, authserv_ids: Collection[str] = ()) -> None:
        self.tokens = tokens
        self.authserv_ids = frozenset(a.lower() for a in authserv_ids)

    def __call__(self, item: WorkItem) -> None:
        sender = item.need_sender()
        found = item.kind
        if item.raw.source == IMPORT or (found is not None and found.kind != MailKind.HUMAN):
            return
        parsed = item.need_parsed()
        token = self.tokens.find_agent(recipients(parsed))
        if sender.role != AGENT:
            if token is not None:
                why = f"not an agent's: {sender.email} wrote to agent #{token[1]}'s reply token"
                self._refuse(item, token, why, downgrade=False)
            return
        passed: bool | None = None  # None: nothing configured to prove or disprove it
        proof = ""
        if self.authserv_ids:
            results = trusted(parsed.headers.get(HEADER, ()), self.authserv_ids)
            if results is None:
                passed = False
                proof = (
                    "no Authentication-Results from "
                    f"{' or '.join(sorted(self.authserv_ids))} ([authentication] authserv_id)"
                )
            else:
                verdict = check_domain(results, sender.email)
                passed, proof = verdict.passed, verdict.why
        if passed is False:
            self._refuse(item, token, f"taken as customer mail: {proof}")
        elif token is not None and token[1] != sender.id:
            why = (
                f"taken as customer mail: the reply token is another agent's, not {sender.email}'s"
            )
            self._refuse(item, token, why)
        elif token is not None:
            item.agent_token = token
            item.agent_check = f"the agent's reply: signed token of ticket {token[0]}" + (
                f"; {proof}" if proof else ""
            )
        elif passed:
            item.agent_check = f"{AGENT_OWN_MAIL}, without a reply token (no #commands); {proof}"
        else:
            self._refuse(
                item,
                None,
                "taken as customer mail: from an agent's address without a reply token, "
                "and nothing proves who sent it (see [authentication] authserv_id)",
            )

    def _refuse(
        self, item: WorkItem, token: tuple[int, int] | None, why: str, *, downgrade: bool = True
    ) -> None:
        sender = item.need_sender()
        item.agent_check = why
        item.refused_token = token
        if downgrade:
            item.sender = dataclasses.replace(sender, role=CUSTOMER, unproven_agent=True)
        log.warning("%s <%s>: %s", sender.email, item.need_parsed().message_id, why)
