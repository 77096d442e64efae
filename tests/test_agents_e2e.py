"""End to end, against real servers: Dovecot on loopback holds everybody's mailbox and an
SMTP server (aiosmtpd) delivers into it (postdesk.testing.delivery). Customers and agents
send mail over SMTP as their mail clients would, postdesk runs `run --once` from the
command line, and every assertion reads what people actually received in their INBOX.

Issue 10, criteria 1 and 4: the whole agent workflow by mail in English and in Persian,
with replies written the way Thunderbird, Outlook and Gmail write them; and postdesk
facing an auto-responder without looping beyond `[notify] auto_reply_limit`.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid, parseaddr
from pathlib import Path

import pytest

from postdesk.config import load_settings
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.testing.cli import Cli
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.delivery import MailSystem, parse
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mail import Mail

TEAM = "Shop Support"


@pytest.fixture
def mail_system(dovecot_server: Dovecot) -> Iterator[MailSystem]:
    with MailSystem(dovecot_server) as system:
        yield system


@dataclass
class Desk:
    """postdesk on the test servers: its support mailbox, an agent, and the CLI."""

    mail: MailSystem
    support: MailUser
    sara: MailUser
    cli: Cli
    config: Path

    def run_once(self) -> None:
        self.cli("run", "--once")

    def ticket(self, number: int) -> dict[str, object]:
        shown: dict[str, object] = self.cli.json("tickets", "show", str(number))
        return shown

    def status(self, number: int) -> str:
        return str(self.ticket(number)["status"])


def unique(name: str, domain: str) -> str:
    """A fresh address: the session's Dovecot is shared by every test."""
    return f"{name}-{secrets.token_hex(4)}@{domain}"


def make_desk(
    mail: MailSystem, tmp_path: Path, sqlite_url: str, *, notify: str = "", agent: bool = True
) -> Desk:
    support = mail.add_user(unique("help", "shop.example"))
    sara = mail.add_user(unique("sara", "shop.example"))
    blocks = [
        mailbox_toml(mail.dovecot, support, name="shop", extra=f'team = "{TEAM}"'),
        mail.smtp_toml(),
    ]
    if agent:
        blocks.append(f'[[agent]]\nemail = "{sara.email}"\nname = "Sara"\n')
    if notify:
        blocks.append(notify)
    config = write_config(tmp_path, sqlite_url, *blocks)
    cli = Cli(config)
    cli("init")
    return Desk(mail, support, sara, cli, config)


@pytest.fixture
def desk(mail_system: MailSystem, tmp_path: Path, sqlite_url: str) -> Desk:
    return make_desk(mail_system, tmp_path, sqlite_url)


def now() -> datetime:
    return datetime.now(UTC)


def address(header: object) -> str:
    return parseaddr(str(header))[1].lower()


def bare_id(header: object) -> str:
    return str(header).strip().strip("<>")


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    return text_of(part)


def text_of(part: EmailMessage) -> str:
    """A text part decoded. Base64 carries the canonical CRLF line ends (RFC 2046)."""
    return str(part.get_content()).replace("\r\n", "\n")


def texts(message: EmailMessage) -> list[str]:
    """Every text part, decoded (plain and HTML)."""
    return [text_of(part) for part in message.walk() if part.get_content_maintype() == "text"]


def new_mail(desk: Desk, user: MailUser, seen: int) -> list[EmailMessage]:
    """What reached `user` after the first `seen` messages."""
    return desk.mail.messages(user)[seen:]


# --- how the agent's mail client writes a reply --------------------------------------

SIGNATURE = "Sara Ahmadi | Shop Support\n+98 21 5550 0100 | shop.example"
# Written when the notification arrived, as each client renders it.
QUOTED_AT = datetime(2026, 5, 12, 10, 4, tzinfo=UTC)


@dataclass(frozen=True)
class AgentReply:
    """What the agent writes above the quote, and in which UI language the client runs."""

    body: str
    language: str = "en"


def _threading(notification: EmailMessage) -> tuple[str, list[str]]:
    parent = bare_id(notification["Message-ID"])
    refs = [bare_id(r) for r in str(notification.get("References", "")).split() if r.strip()]
    return parent, [*refs, parent]


def _subject(notification: EmailMessage) -> str:
    return f"Re: {notification['Subject']}"


def _sender_display(notification: EmailMessage) -> tuple[str, str]:
    name, addr = parseaddr(str(notification["From"]))
    return name or addr, addr


def thunderbird(notification: EmailMessage, agent: MailUser, reply: AgentReply) -> bytes:
    """Thunderbird, plain text, reply above the quote: the "-- " signature sits between the
    reply and the attribution line, and every line of the notification is quoted '> '."""
    name, _addr = _sender_display(notification)
    quoted = "\n".join(f"> {line}".rstrip() for line in plain_text(notification).splitlines())
    if reply.language == "fa":
        attribution = f"در ۱۲/۰۵/۲۰۲۶ ساعت ۱۰:۰۴، {name} نوشت:"
    else:
        attribution = f"On 5/12/26 10:04 AM, {name} wrote:"
    body = f"{reply.body}\n\n-- \n{SIGNATURE}\n\n{attribution}\n{quoted}\n"
    parent, references = _threading(notification)
    return bytes(
        Mail(
            sender=f"Sara <{agent.email}>",
            to=str(notification["Reply-To"]),
            subject=_subject(notification),
            body=body,
            date=now(),
            message_id=make_msgid(domain="shop.example").strip("<>"),
            in_reply_to=parent,
            references=references,
            headers=[
                ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Thunderbird/128.5.0"),
                ("Content-Language", reply.language),
            ],
        )
    )


OUTLOOK_LABELS = ("From", "Sent", "To", "Subject")
OUTLOOK_LABELS_FA = ("از", "ارسال شده", "به", "موضوع")


def outlook(notification: EmailMessage, agent: MailUser, reply: AgentReply) -> bytes:
    """Outlook desktop: nothing quoted with '>'; a rule, then a From/Sent/To/Subject block
    and the notification as it was, in the plain text and (styled) in the HTML."""
    name, addr = _sender_display(notification)
    if reply.language == "fa":  # Outlook with a Persian user interface
        labels = OUTLOOK_LABELS_FA
        sent = "سه‌شنبه، ۱۲ مه ۲۰۲۶ ۱۰:۰۴"
    else:
        labels = OUTLOOK_LABELS
        sent = "Tuesday, May 12, 2026 10:04 AM"
    fields = [f"{name} <{addr}>", sent, f"Sara <{agent.email}>", str(notification["Subject"])]
    block = "\n".join(f"{label}: {value}" for label, value in zip(labels, fields, strict=True))
    original = plain_text(notification)
    rule = "_" * 32
    text = f"{reply.body}\n\n-- \n{SIGNATURE}\n\n{rule}\n{block}\n\n{original}\n"

    def lines_html(value: str) -> str:
        return "<br>\n".join(html.escape(line) for line in value.splitlines())

    html_body = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        '<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} '
        '</style></head><body dir="ltr">\n'
        '<div class="elementToProof" style="font-family: Aptos, Calibri, Helvetica, sans-serif;'
        ' font-size: 12pt; color: rgb(0, 0, 0);">'
        f"{lines_html(reply.body)}</div>\n"
        '<div id="Signature"><div>-- <br>'
        f"{lines_html(SIGNATURE)}</div></div>\n"
        '<div id="appendonsend"></div>\n'
        '<hr style="display:inline-block;width:98%" tabindex="-1">\n'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" '
        'style="font-size:11pt" color="#000000">'
        + "<br>\n".join(
            f"<b>{label}:</b> {html.escape(value)}"
            for label, value in zip(labels, fields, strict=True)
        )
        + "</font>"
        "<div>&nbsp;</div></div>\n"
        f'<div class="BodyFragment"><font size="2"><span style="font-size:11pt;">'
        f'<div class="PlainText">{lines_html(original)}</div></span></font></div>\n'
        "</body></html>\n"
    )
    parent, references = _threading(notification)
    return bytes(
        Mail(
            sender=f"Sara <{agent.email}>",
            to=str(notification["Reply-To"]),
            subject=f"RE: {notification['Subject']}",
            body=text,
            html=html_body,
            date=now(),
            message_id=(
                f"PAXPR10MB{secrets.token_hex(6).upper()}@PAXPR10MB7777.EURPRD10.PROD.OUTLOOK.COM"
            ),
            in_reply_to=parent,
            references=references,
            headers=[
                ("Thread-Topic", str(notification["Subject"])),
                ("Thread-Index", "AQHbw1+0x5vQkq2mS0yBv6p0cE2rXw=="),
                ("Accept-Language", "en-US"),
                ("Content-Language", "en-US"),
                ("X-MS-Has-Attach", ""),
                ("X-MS-TNEF-Correlator", ""),
            ],
        )
    )


def gmail(notification: EmailMessage, agent: MailUser, reply: AgentReply) -> bytes:
    """Gmail: the reply, a "-- " signature (gmail_signature in the HTML), then the "On …
    wrote:" attribution wrapped over two lines and the notification quoted '> '; the HTML
    has the same in a gmail_quote blockquote."""
    name, addr = _sender_display(notification)
    original = plain_text(notification)
    quoted = "\n".join(f"> {line}".rstrip() for line in original.splitlines())
    if reply.language == "fa":
        attribution = f"‫در تاریخ سه‌شنبه ۱۲ مهٔ ۲۰۲۶ ساعت ۱۰:۰۴ {name} <\n{addr}> نوشت:‬"
    else:
        attribution = f"On Tue, May 12, 2026 at 10:04 AM {name} <\n{addr}> wrote:"
    text = f"{reply.body}\n\n-- \n{SIGNATURE}\n\n{attribution}\n\n{quoted}\n"

    def lines_html(value: str) -> str:
        return "<br>".join(html.escape(line) for line in value.splitlines())

    direction = "rtl" if reply.language == "fa" else "ltr"
    html_body = (
        f'<div dir="{direction}">{lines_html(reply.body)}<br clear="all"><div><br></div>'
        '<span class="gmail_signature_prefix">-- </span><br>'
        f'<div dir="ltr" class="gmail_signature" data-smartmail="gmail_signature">'
        f"{lines_html(SIGNATURE)}</div></div><br>"
        '<div class="gmail_quote gmail_quote_container">'
        f'<div dir="{direction}" class="gmail_attr">{html.escape(attribution.replace(chr(10), ""))}'
        "<br></div>"
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
        f"{lines_html(original)}</blockquote></div>\n"
    )
    parent, references = _threading(notification)
    return bytes(
        Mail(
            sender=f"Sara <{agent.email}>",
            to=str(notification["Reply-To"]),
            subject=_subject(notification),
            body=text,
            html=html_body,
            date=now(),
            message_id=f"CAF{secrets.token_hex(12)}+{secrets.token_hex(4)}@mail.gmail.com",
            in_reply_to=parent,
            references=references,
        )
    )


Client = Callable[[EmailMessage, MailUser, AgentReply], bytes]
CLIENTS: dict[str, Client] = {"thunderbird": thunderbird, "outlook": outlook, "gmail": gmail}


# --- the conversation, per language ----------------------------------------------------


@dataclass(frozen=True)
class Script:
    """What everybody writes in one language."""

    language: str
    customer_name: str
    subject: str
    question: str  # also the line the notification carries, and the quote repeats
    replies: dict[str, str]  # per client: the agent's reply, sign-off included
    sign_off: str
    survey_answer: str
    survey_subject: str  # a phrase of the survey's subject


ENGLISH = Script(
    language="en",
    customer_name="Alice Moreau",
    subject="Cracked lid on order 10023",
    question="My order 10023 arrived yesterday and the lid of the teapot is cracked.",
    replies={
        "thunderbird": "Hello Alice,\n\nI am sorry about the lid. A new one leaves our "
        "warehouse today.\n\nThanks,\nSara",
        "outlook": "Hi Alice,\n\nThe courier confirmed the pickup: tracking number "
        "CX-55120.\n\nBest regards,\nSara",
        "gmail": "Hello again Alice,\n\nThe replacement lid was delivered this morning.\n\n"
        "Thanks, Sara",
    },
    sign_off="Sara",
    survey_answer="4 thanks",
    survey_subject="How did we do?",
)

PERSIAN = Script(
    language="fa",
    customer_name="مریم احمدی",
    subject="درب قوری سفارش ۱۰۰۲۳ شکسته است",
    question="سلام، سفارش ۱۰۰۲۳ من دیروز رسید ولی درب قوری شکسته بود. لطفاً بررسی کنید.",
    replies={
        "thunderbird": "سلام مریم خانم،\n\nبابت درب شکسته متأسفیم. درب جدید امروز از انبار "
        "ارسال می‌شود.\n\nممنون،\nسارا",
        "outlook": "سلام،\n\nپیک تحویل بسته را تأیید کرد: کد رهگیری CX-55120.\n\nبا سپاس،\nسارا",
        "gmail": "سلام دوباره،\n\nدرب جدید امروز صبح به دستتان رسید.\n\nممنون، سارا",
    },
    sign_off="سارا",
    survey_answer="۴ ممنون",
    survey_subject="از پاسخ ما راضی بودید؟",
)


def customer_mail(
    script: Script, customer: MailUser, to: str, body: str, subject: str, **fields: object
) -> bytes:
    return bytes(
        Mail(
            sender=f"{script.customer_name} <{customer.email}>",
            to=to,
            subject=subject,
            body=body,
            date=now(),
            message_id=make_msgid(domain="example.com").strip("<>"),
            **fields,  # type: ignore[arg-type]
        )
    )


def assert_relayed(
    out: EmailMessage,
    raw: bytes,
    *,
    desk: Desk,
    script: Script,
    reply: str,
    customer_ids: list[str],
    notification: EmailMessage,
    agent_mail: bytes,
) -> None:
    """The customer got the agent's reply and sign-off alone, from the support address,
    in their own thread, with no trace of the agent's address or mail client."""
    assert address(out["From"]) == desk.support.email
    assert parseaddr(str(out["From"]))[0] == f"Sara via {TEAM}"
    assert bare_id(out["In-Reply-To"]) == customer_ids[-1]
    references = [bare_id(r) for r in str(out["References"]).split()]
    assert customer_ids[0] in references and customer_ids[-1] in references
    assert desk.sara.email.encode() not in raw.lower()
    agent_id = bare_id(parse(agent_mail)["Message-ID"]).encode()
    assert agent_id not in raw
    assert "Sara" not in str(out.get("Reply-To", ""))
    assert out.get("Auto-Submitted") in (None, "no")  # a person wrote this one
    text = plain_text(out)
    for paragraph in reply.split("\n\n"):
        assert paragraph in text, (paragraph, text)
    for part in texts(out):
        assert desk.sara.email not in part.lower()
        assert "Sara Ahmadi" not in part and "5550 0100" not in part  # the signature
        assert "wrote:" not in part and "نوشت:" not in part  # an attribution line
        assert "Sent:" not in part and "________" not in part  # Outlook's header block
        assert "Subject:" not in part
        assert "ارسال شده:" not in part and "موضوع:" not in part
        assert script.question not in part  # the history quoted in the agent's mail
        for line in plain_text(notification).splitlines():
            if len(line.strip()) > 25:
                assert line.strip() not in part, line


def full_flow(desk: Desk, script: Script) -> None:
    mail = desk.mail
    customer = mail.add_user(unique("customer", "example.com"))
    support = desk.support.email

    # 1. The customer writes to support; one pass acknowledges the ticket.
    first = customer_mail(script, customer, support, script.question, script.subject)
    mail.send(first)
    customer_ids = [bare_id(parse(first)["Message-ID"])]
    desk.run_once()
    [ticket] = desk.cli.json("tickets", "list")
    number = int(ticket["number"])
    assert ticket["requester"]["email"] == customer.email

    [ack] = mail.messages(customer)
    assert ack["Auto-Submitted"] == "auto-replied"
    assert address(ack["From"]) == support
    assert f"[#{number}]" in str(ack["Subject"])
    digits = str(number).translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    ack_text = plain_text(ack)
    assert str(number) in ack_text or digits in ack_text
    if script.language == "fa":
        assert ack["Content-Language"] == "fa"
    assert bare_id(ack["In-Reply-To"]) == customer_ids[0]

    # 2. Sara, the agent, is told, with a Reply-To token signed for the ticket and her.
    [notification] = mail.messages(desk.sara)
    tokens = ReplyTokens(load_key(load_settings(desk.config)))
    reply_to = address(notification["Reply-To"])
    assert reply_to.startswith(support.split("@")[0] + "+")
    found = tokens.find_agent([reply_to])
    assert found is not None and found[0] == number
    assert script.question in plain_text(notification)

    # 3. Sara answers three times, from Thunderbird, Outlook and Gmail: each reply reaches
    # the customer alone, from the support address, in the customer's thread.
    seen = len(mail.messages(customer))
    for client, text in script.replies.items():
        reply = CLIENTS[client](notification, desk.sara, AgentReply(text, script.language))
        mail.send(reply)
        desk.run_once()
        arrived = mail.inbox(customer)[seen:]
        assert len(arrived) == 1, (client, [str(parse(r)["Subject"]) for r in arrived])
        seen += 1
        out = parse(arrived[0])
        assert f"[#{number}]" in str(out["Subject"])
        if script.language == "fa":
            assert out["Content-Language"] == "fa"
        assert_relayed(
            out,
            arrived[0],
            desk=desk,
            script=script,
            reply=text,
            customer_ids=customer_ids,
            notification=notification,
            agent_mail=reply,
        )
        assert desk.status(number) == "pending"

    # 4. #close from Sara's own address but without her token, to the plain support
    # address: it changes nothing and nobody hears of it.
    untokened = bytes(
        Mail(
            sender=f"Sara <{desk.sara.email}>",
            to=support,
            subject=f"Re: [#{number}] {script.subject}",
            body=f"#close\n\n-- \n{SIGNATURE}\n",
            date=now(),
            message_id=make_msgid(domain="shop.example").strip("<>"),
        )
    )
    mail.send(untokened)
    desk.run_once()
    assert desk.status(number) == "pending"
    assert len(mail.messages(customer)) == seen

    # 5. #solve with her token solves the ticket and sends the survey, and nothing else.
    solve = gmail(notification, desk.sara, AgentReply("#solve", script.language))
    mail.send(solve)
    desk.run_once()
    assert desk.status(number) == "solved"
    [survey] = new_mail(desk, customer, seen)
    seen += 1
    assert script.survey_subject in str(survey["Subject"])
    assert f"[#{number}]" in str(survey["Subject"])
    assert survey["Auto-Submitted"] == "auto-replied"
    assert address(survey["From"]) == support
    assert desk.sara.email.encode() not in mail.inbox(customer)[-1].lower()

    # 6. The customer answers the survey from their mail client: CSAT 4, still solved,
    # and nobody is told (an answer to the survey is not a new question).
    sara_seen = len(mail.messages(desk.sara))
    answer = customer_mail(
        script,
        customer,
        str(survey["Reply-To"]),
        f"{script.survey_answer}\n\nOn Tue, 12 May 2026 at 11:00, {TEAM} <{support}> wrote:\n"
        + "\n".join(f"> {line}" for line in plain_text(survey).splitlines())
        + "\n",
        f"Re: {survey['Subject']}",
        in_reply_to=bare_id(survey["Message-ID"]),
        references=[*customer_ids, bare_id(survey["Message-ID"])],
    )
    mail.send(answer)
    desk.run_once()
    shown = desk.ticket(number)
    csat = shown["csat"]
    assert isinstance(csat, dict) and csat["score"] == 4, csat
    assert shown["status"] == "solved"
    assert len(mail.messages(customer)) == seen  # nothing more to the customer
    assert len(mail.messages(desk.sara)) == sara_seen  # nor to the agent


@pytest.mark.parametrize("script", [ENGLISH, PERSIAN], ids=["en", "fa"])
def test_the_agent_workflow_by_mail_end_to_end(desk: Desk, script: Script) -> None:
    full_flow(desk, script)


# --- criterion 4: an auto-responder facing postdesk ------------------------------------


@dataclass(frozen=True)
class Responder:
    """How the other side answers whatever reaches its INBOX."""

    headers: bool  # RFC 3834 Auto-Submitted and friends
    threaded: bool  # In-Reply-To and the original subject (which carries our [#N])
    fresh_subject: bool  # a new subject each time (another helpdesk's own numbers)


RESPONDERS = {
    # Exchange-style out-of-office: well marked, in the thread.
    "rfc3834": Responder(headers=True, threaded=True, fresh_subject=False),
    # A plain "Out of office" mail without any automatic header, nothing threaded.
    "plain": Responder(headers=False, threaded=False, fresh_subject=False),
    # The worst case: another helpdesk acknowledging every mail as a new request of its
    # own, without automatic headers, threading or our subject.
    "helpdesk": Responder(headers=False, threaded=False, fresh_subject=True),
}


def answer_new_mail(
    mail: MailSystem, responder: MailUser, style: Responder, seen: int, counter: list[int]
) -> int:
    """The responder answers each message that arrived after the first `seen`; how many
    messages its INBOX holds now."""
    arrived = mail.messages(responder)
    for message in arrived[seen:]:
        counter[0] += 1
        to = str(message.get("Return-Path", "")).strip("<> ") or address(message["From"])
        if style.fresh_subject:
            subject = f"Request #{4800 + counter[0]} received"
            body = (
                f"Thank you for contacting us. Your request #{4800 + counter[0]} has been "
                "received and will be answered within two working days."
            )
        elif style.threaded:
            subject = f"Automatic reply: {message['Subject']}"
            body = "I am out of the office until 20 May with no access to email."
        else:
            subject = "Out of office"
            body = "I am out of the office until 20 May with no access to email."
        headers: list[tuple[str, str]] = []
        if style.headers:
            headers = [
                ("Auto-Submitted", "auto-replied"),
                ("X-Auto-Response-Suppress", "All"),
                ("X-Autoreply", "yes"),
            ]
        in_reply_to = bare_id(message["Message-ID"]) if style.threaded else None
        raw = bytes(
            Mail(
                sender=f"Robin Vacation <{responder.email}>",
                to=to,
                subject=subject,
                body=body,
                date=now(),
                message_id=make_msgid(domain="away.example").strip("<>"),
                in_reply_to=in_reply_to,
                headers=headers,
            )
        )
        mail.send(raw, mail_from="" if style.headers else responder.email, to=[to])
    return len(arrived)


LIMIT = 3
ROUNDS = LIMIT + 4


@pytest.mark.parametrize("style", list(RESPONDERS), ids=list(RESPONDERS))
def test_an_auto_responder_gets_at_most_the_limit(
    mail_system: MailSystem, tmp_path: Path, sqlite_url: str, style: str
) -> None:
    notify = f"[notify]\nauto_reply_limit = {LIMIT}\nauto_reply_window_hours = 3\n"
    desk = make_desk(mail_system, tmp_path, sqlite_url, notify=notify)
    responder = mail_system.add_user(unique("robin", "away.example"))
    behaviour = RESPONDERS[style]
    # A person writes to support, then leaves with an auto-responder switched on.
    mail_system.send(
        bytes(
            Mail(
                sender=f"Robin Vacation <{responder.email}>",
                to=desk.support.email,
                subject="Invoice 7781 has the wrong address",
                body="Please send invoice 7781 again with our new address in Lyon.",
                date=now(),
                message_id=make_msgid(domain="away.example").strip("<>"),
            )
        )
    )
    seen, counter = 0, [0]
    for _round in range(ROUNDS):
        desk.run_once()
        seen = answer_new_mail(mail_system, responder, behaviour, seen, counter)
    desk.run_once()

    # Counted at the receiving server: what the SMTP server accepted for the responder,
    # and what its INBOX holds.
    sent_to_responder = [
        m for m in mail_system.smtp.messages if responder.email in (r.lower() for r in m.rcpt_tos)
    ]
    received = mail_system.messages(responder)
    assert len(received) == len(sent_to_responder)
    assert all(m["Auto-Submitted"] == "auto-replied" for m in received)
    assert len(received) <= LIMIT
    numbers = [t["number"] for t in desk.cli.json("tickets", "list")]
    directions = [
        m["direction"]
        for n in numbers
        for m in desk.cli.json("tickets", "show", str(n))["messages"]
    ]
    assert directions.count("in") == 1 + counter[0]  # every mail from the responder was kept
    if behaviour.headers:
        assert len(received) == 1  # automatic mail is never answered at all
    if behaviour.fresh_subject:
        assert len(received) == LIMIT  # only the limit stopped this one
        assert counter[0] == LIMIT


def test_unknown_recipients_are_refused_and_subaddresses_delivered(
    mail_system: MailSystem,
) -> None:
    """The test mail system itself: subaddresses reach their user; strangers bounce."""
    import smtplib

    user = mail_system.add_user(unique("box", "example.org"))
    local, domain = user.email.split("@")
    raw = bytes(Mail(sender="a@example.com", to=f"{local}+tag@{domain}", subject="x", body="y"))
    mail_system.send(raw)
    [delivered] = mail_system.messages(user)
    assert delivered["Delivered-To"] == f"{local}+tag@{domain}"
    assert delivered["Return-Path"] == "<a@example.com>"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mail_system.send(raw, to=[f"nobody@{domain}"])
    assert getaddresses([str(delivered["To"])])[0][1] == f"{local}+tag@{domain}"
