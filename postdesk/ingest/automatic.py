"""Whether an inbound message was written by a person: human, automatic, bounce or own.

A helpdesk that answers machines starts mail loops and opens tickets nobody can close, so
every parsed message gets its kind (`kind_of_mail`, a `MailKind`) before threading:

- ``own``: mail we sent ourselves coming back (our loop header, one of our Message-IDs,
  or From one of our own addresses). Checked first: our auto-replies carry
  Auto-Submitted too, and must not be mistaken for a customer's.
- ``bounce``: a delivery report about mail we sent: an RFC 3464 DSN
  (message/delivery-status or message/global-delivery-status, multipart/report with
  report-type=delivery-status), or a non-standard one (MAILER-DAEMON sender,
  X-Failed-Recipients, a postmaster or null-sender message with a failure subject) that
  came with a null or MAILER-DAEMON envelope sender (Return-Path). Headers, subjects and
  From lines anyone can write; without that structure or envelope such a message is
  ``automatic`` (never answered, marks nobody as bouncing). Even a real bounce marks a
  contact as bouncing only when it names a message we sent to them (ingest/steps.py).
  `failed_recipients` lists the addresses that failed for good: DSN recipients with
  Action: failed, else X-Failed-Recipients, else the addresses the usual Exim, Postfix,
  qmail, sendmail, Gmail and Office 365 texts list. A delay warning is a bounce with no
  failed recipients, so nobody is marked as bouncing for it.
- ``automatic``: any other machine-sent mail: RFC 3834 Auto-Submitted other than "no",
  X-Autoreply and its relatives, Precedence bulk/junk/list/auto_reply,
  X-Auto-Response-Suppress naming auto-replies (All, OOF, AutoReply), List-Unsubscribe,
  a null envelope sender (Return-Path: <>), other multipart/report mail (read receipts
  as MDNs, ARF abuse complaints, success DSNs), and out-of-office subjects in about
  twenty languages, English and Persian included.
- ``human``: everything else. When in doubt a message is human: a missed auto-reply
  costs a needless ticket, a missed customer costs the customer.

Deliberately not signals: List-Id alone (lists relay people: a customer writing through
their team's group, or our own address being a group), a noreply/no-reply sender (web
forms send the customer's request from noreply@ with Reply-To the customer), body text
("I am out of the office" in a message is not an auto-reply), and a postmaster sender
with nothing else machine-like about it (a postmaster is also a person). When the list
is our own group (List-Id or List-Post naming one of `own_addresses`, as Google Groups
and Mailman write them), List-Unsubscribe and Precedence list/bulk are ignored too: the
group added them to a customer's mail.

The caller decides what each kind means (attach but never open or reopen a ticket,
never auto-reply, mark bouncing contacts); this module only says what the message is
and why. It is pure and cheap: headers first, attachments' content types next, and the
text of a message only when it is already a candidate bounce. The out-of-office and
bounce phrases it looks for are in lexicon/autoreply.py and lexicon/bounces.py.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from postdesk.ingest.parse import ParsedMessage, normalize_message_id
from postdesk.lexicon.autoreply import OOF_PHRASES, OOF_SENTENCES, OOF_UNTIL_WORDS
from postdesk.lexicon.bounces import DELAY_SUBJECTS, FAILURE_SUBJECTS, RETURNED_MESSAGE_MARKERS
from postdesk.models.mail import MailKind

# A bounce naming more recipients than this keeps the first ones; a DSN for a mass
# mailing can list thousands.
MAX_FAILED_RECIPIENTS: Final = 100
# Non-DSN bounce texts put the failed addresses near the top; reading further only finds
# addresses of the returned message.
_BODY_SCAN_CHARS: Final = 8000
_LIST_SCAN_CHARS: Final = 2000
# Auto-reply and bounce subjects say what they are at the start; a 100 KB subject (a
# hostile or broken message) is not read further than this.
_SUBJECT_CHARS: Final = 256
# How much of a returned message is read for its Message-ID.
_HEADER_BYTES: Final = 65536
_DSN_BYTES: Final = 131072


@dataclass(frozen=True, slots=True)
class KindOfMail:
    """What kind of mail an inbound message is, and the one-line reason that decided it."""

    kind: MailKind
    reason: str
    # Lower-cased addresses that failed permanently (bounces only), in report order.
    failed_recipients: tuple[str, ...] = ()
    # The Message-ID (bare) of the message a bounce or receipt reports on, when it names
    # it: bounces rarely carry In-Reply-To, so this is how one finds its ticket.
    original_message_id: str | None = None

    @property
    def is_human(self) -> bool:
        """Whether the message may open or reopen a ticket and get an automatic reply."""
        return self.kind == MailKind.HUMAN


def kind_of_mail(
    parsed: ParsedMessage,
    *,
    own_message_ids: Callable[[str], bool] | None = None,
    loop_header: str = "X-Postdesk-Loop",
    own_addresses: Collection[str] = (),
) -> KindOfMail:
    """Decide whether one parsed message is human, automatic, bounce or own mail.

    Raises nothing of its own (only what `own_message_ids` may raise): whatever the
    parser returned gets a kind.

    `own_message_ids` answers whether a bare Message-ID (no angle brackets) is one we
    generated; `loop_header` is the header our outbound mail carries; `own_addresses`
    are our mailboxes' addresses (not agents': an agent writing in is a person).
    """
    headers = parsed.headers
    own = {address.lower() for address in own_addresses}

    if loop_header.lower() in headers:
        return KindOfMail(MailKind.OWN, f"our loop header {loop_header}")
    message_id = parsed.message_id
    if message_id is not None and own_message_ids is not None and own_message_ids(message_id):
        return KindOfMail(MailKind.OWN, f"Message-ID <{message_id}> is one we sent")

    bounce = _bounce(parsed, own)
    if bounce is not None:
        return bounce

    sender = parsed.from_.email if parsed.from_ is not None else None
    if sender is not None and sender in own:
        return KindOfMail(MailKind.OWN, f"From our own address {sender}")

    return _automatic(parsed, own) or _human(headers)


# --- own and human -------------------------------------------------------------------


def _human(headers: Mapping[str, tuple[str, ...]]) -> KindOfMail:
    if _first_token(_first(headers, "auto-submitted")) == "no":
        return KindOfMail(MailKind.HUMAN, "Auto-Submitted: no")
    return KindOfMail(MailKind.HUMAN, "no sign of automatic mail")


# --- automatic -----------------------------------------------------------------------

_AUTOREPLY_HEADERS: Final = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-autoreply-from",
    "x-mail-autoreply",
)
_FALSE_VALUES: Final = frozenset({"no", "false", "0", "off"})
_PRECEDENCE_AUTOMATIC: Final = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
# X-Auto-Response-Suppress tokens that say "this message is itself automatic". DR, RN and
# NRN only decline receipts, which people's clients ask for too.
_SUPPRESS_AUTOMATIC: Final = frozenset({"all", "oof", "autoreply"})
_REPORT_PARTS: Final = {
    "message/disposition-notification": "read receipt (MDN message/disposition-notification)",
    "message/global-disposition-notification": "read receipt (MDN)",
    "message/feedback-report": "ARF feedback report (abuse complaint)",
}
_REPORT_TYPES: Final = {
    "disposition-notification": "read receipt (multipart/report disposition-notification)",
    "feedback-report": "ARF feedback report (abuse complaint)",
}
_NULL_PATH: Final = re.compile(r"\s*<\s*>\s*")
_COMMENT: Final = re.compile(r"\([^()]*\)")


def _automatic(parsed: ParsedMessage, own: set[str]) -> KindOfMail | None:
    headers = parsed.headers

    report = _report_reason(parsed)
    if report is not None:
        return KindOfMail(MailKind.AUTOMATIC, report, original_message_id=_reported_id(parsed))

    auto_submitted = _first(headers, "auto-submitted")
    token = _first_token(auto_submitted)
    if token and token != "no":
        return KindOfMail(MailKind.AUTOMATIC, f"Auto-Submitted: {_short(auto_submitted)}")

    for name in _AUTOREPLY_HEADERS:
        token = _first_token(_first(headers, name))
        if token and token not in _FALSE_VALUES:
            return KindOfMail(
                MailKind.AUTOMATIC, f"{_header_name(name)}: {_short(_first(headers, name))}"
            )
    if _first_token(_first(headers, "x-autogenerated")) == "reply":
        return KindOfMail(MailKind.AUTOMATIC, "X-AutoGenerated: Reply")

    for name in ("precedence", "x-precedence"):
        precedence = _first_token(_first(headers, name))
        if precedence in _PRECEDENCE_AUTOMATIC:
            if precedence in ("list", "bulk") and _our_list(headers, own):
                continue
            return KindOfMail(MailKind.AUTOMATIC, f"{_header_name(name)}: {precedence}")

    suppress = _first(headers, "x-auto-response-suppress")
    if suppress is not None:
        tokens = {token.strip().lower() for token in suppress.split(",")}
        if tokens & _SUPPRESS_AUTOMATIC:
            return KindOfMail(MailKind.AUTOMATIC, f"X-Auto-Response-Suppress: {_short(suppress)}")

    return_path = _first(headers, "return-path")
    if return_path is not None and _NULL_PATH.fullmatch(return_path):
        return KindOfMail(MailKind.AUTOMATIC, "null envelope sender (Return-Path: <>)")

    if "list-unsubscribe" in headers and not _our_list(headers, own):
        return KindOfMail(MailKind.AUTOMATIC, "List-Unsubscribe: bulk or list mail")

    subject = _fold(parsed.subject[:_SUBJECT_CHARS])
    if subject:
        match = _OOF_SUBJECT.search(subject) or _OOF_SENTENCE.search(subject)
        if match is not None:
            return KindOfMail(MailKind.AUTOMATIC, f"auto-reply subject {_short(parsed.subject)!r}")
    return None


def _report_reason(parsed: ParsedMessage) -> str | None:
    """Why the message is a machine report other than a failure DSN, if it is one."""
    for attachment in parsed.attachments:
        reason = _REPORT_PARTS.get(attachment.content_type)
        if reason is not None:
            return reason
    content_type = _first(parsed.headers, "content-type")
    if content_type is not None and content_type.lower().lstrip().startswith("multipart/report"):
        report_type = _report_type(content_type)
        return _REPORT_TYPES.get(report_type, f"multipart/report ({report_type or 'no type'})")
    return None


def _our_list(headers: Mapping[str, tuple[str, ...]], own: set[str]) -> bool:
    """Whether the list headers are those of our own group address (support@ as a group)."""
    if not own:
        return False
    post = " ".join(headers.get("list-post", ())).lower()
    list_id = " ".join(headers.get("list-id", ())).lower()
    for address in own:
        if f"mailto:{address}" in post:
            return True
        if f"<{address.replace('@', '.')}>" in list_id:
            return True
    return False


# Out-of-office subjects (lexicon/autoreply.py): phrases written already case-folded and
# put through _FOLD when compiled, as the subject is folded the same way before matching.
# A phrase counts at the start of the subject (after punctuation or a "[queue #N]" tag)
# and only when followed by a separator or the end, so "Re: Automatic reply" (a person
# answering one) and "Out of office hours support?" stay human.
_FOLD: Final = str.maketrans(
    {
        "ي": "ی",  # Arabic yeh, as windows-1256 and Arabic keyboards write Persian
        "ى": "ی",
        "ك": "ک",  # Arabic kaf
        "\u200c": " ",  # ZWNJ: "پاسخ‌خودکار" and "پاسخ خودکار" are the same words
        "\u200d": "",
        "\u0640": "",  # tatweel
        "\u00a0": " ",
    }
)
_OOF_END: Final = r"(?=$|\s*[:：\-–—(\[|/.,!*»؛،]|\s(?:" + "|".join(OOF_UNTIL_WORDS) + r")\b)"
_OOF_SUBJECT: Final = re.compile(
    r"^[\W_]*(?:\[[^\]]{0,80}\][\W_]*)?(?:"
    + "|".join(phrase.translate(_FOLD) for phrase in OOF_PHRASES)
    + ")"
    + _OOF_END
)
# "Jane Doe is out of the office" (IBM Notes and many vacation scripts).
_OOF_SENTENCE: Final = re.compile(r"\b(?:" + "|".join(OOF_SENTENCES) + ")" + _OOF_END)


def _fold(subject: str) -> str:
    return " ".join(subject.translate(_FOLD).casefold().split())


# --- bounces -------------------------------------------------------------------------

_DSN_PARTS: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DAEMON_SENDER: Final = re.compile(
    r"mailer[-_ ]?daemon|mail[-_ ]daemon|mail delivery (?:subsystem|system)"
    r"|\bmicrosoftexchange[0-9a-f]{32}@",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT: Final = re.compile("|".join(FAILURE_SUBJECTS), re.IGNORECASE)
_DELAY_SUBJECT: Final = re.compile("|".join(DELAY_SUBJECTS), re.IGNORECASE)
_SUCCESS_SUBJECT: Final = re.compile(r"\((?:success|relayed|delivered)\)", re.IGNORECASE)


def _bounce(parsed: ParsedMessage, own: set[str]) -> KindOfMail | None:
    headers = parsed.headers
    dsn_parts = [a.data for a in parsed.attachments if a.content_type in _DSN_PARTS]
    content_type = (_first(headers, "content-type") or "").lower().lstrip()
    is_report = content_type.startswith("multipart/report")
    dsn_report = is_report and _report_type(content_type) == "delivery-status"
    if dsn_parts:
        return _from_dsn(parsed, dsn_parts, "multipart/report" if is_report else "DSN part")

    failed_header = _failed_recipients_header(headers)
    from_value = _first(headers, "from") or ""
    sender = parsed.from_.email if parsed.from_ is not None else ""
    subject = parsed.subject[:_SUBJECT_CHARS]

    reason: str | None = None
    if dsn_report:
        reason = "multipart/report delivery-status without a DSN part"
    elif failed_header:
        reason = "X-Failed-Recipients"
    elif _DAEMON_SENDER.search(from_value):
        reason = f"sender {_short(from_value, 60)}"
    elif "x-ms-exchange-message-is-ndr" in headers:
        reason = "X-MS-Exchange-Message-Is-Ndr"
    else:
        machine = _machine_sign(headers, sender)
        if (
            machine is not None
            and _BOUNCE_SUBJECT.search(subject)
            and not _SUCCESS_SUBJECT.search(subject)
        ):
            reason = f"failure subject from {machine}"
    if reason is None:
        return None
    if not dsn_report and not _envelope_from_machine(headers):
        # Anyone can write these headers, subjects and From lines; the envelope sender
        # is set by the mail system. Not a bounce, so it marks nobody as bouncing; still
        # machine-looking mail, which is never answered.
        return KindOfMail(
            MailKind.AUTOMATIC,
            f"looks like a bounce ({reason}) but has neither a delivery-status report nor "
            "a null or MAILER-DAEMON return path",
        )

    text = _report_text(parsed.text)
    recipients = failed_header or _body_recipients(text, own, parsed)
    original = _reported_id(parsed) or _quoted_id(parsed.text, len(text))
    if recipients:
        return KindOfMail(
            MailKind.BOUNCE,
            f"{reason}: failed {_list(recipients)}",
            recipients[:MAX_FAILED_RECIPIENTS],
            original,
        )
    if _DELAY_SUBJECT.search(subject):
        return KindOfMail(
            MailKind.BOUNCE, f"{reason}: delivery delayed (warning only)", (), original
        )
    return KindOfMail(MailKind.BOUNCE, f"{reason}: no failed recipient named", (), original)


def _envelope_from_machine(headers: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether the envelope sender, as the delivering server recorded it (the topmost
    Return-Path, else X-Envelope-From), is null or MAILER-DAEMON: how mail systems send
    delivery reports (RFC 5321 4.5.5)."""
    for name in ("return-path", "x-envelope-from"):
        value = _first(headers, name)
        if value is None:
            continue
        path = value.strip().strip("<>").strip().lower()
        return path == "" or path.partition("@")[0] == "mailer-daemon"
    return False


def _machine_sign(headers: Mapping[str, tuple[str, ...]], sender: str) -> str | None:
    """A second sign that a failure-sounding subject comes from a machine, not a person."""
    if sender.partition("@")[0] == "postmaster":
        return "postmaster"
    for name in ("return-path", "x-envelope-from"):
        value = _first(headers, name)
        if value is not None and _NULL_PATH.fullmatch(value):
            return "null sender"
    token = _first_token(_first(headers, "auto-submitted"))
    if token and token != "no":
        return "Auto-Submitted sender"
    return None


def _from_dsn(parsed: ParsedMessage, parts: list[bytes], where: str) -> KindOfMail:
    failed: list[str] = []
    failed_status: list[str] = []
    failed_unnamed = 0
    delayed: list[str] = []
    other: list[str] = []
    for data in parts:
        for fields in _field_blocks(data):
            recipient = _dsn_recipient(fields)
            action = _first_token(fields.get("action"))
            status = _first_token(fields.get("status"))
            if not action and not recipient:
                continue
            if not action:
                # Some MTAs omit Action; the status class says the same (RFC 3463).
                action = {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[:1], "")
            if action == "failed" and recipient:
                failed.append(recipient)
                failed_status.append(status)
            elif action == "failed":
                failed_unnamed += 1
            elif action == "delayed":
                delayed.append(recipient or "?")
            else:
                other.append(f"{action or 'unknown'} {recipient or '?'}")
    original = _reported_id(parsed)
    if failed:
        recipients = _unique(failed)
        statuses = sorted({status for status in failed_status if status})
        detail = f" ({', '.join(statuses)})" if statuses else ""
        return KindOfMail(
            MailKind.BOUNCE,
            f"DSN {where}: failed {_list(recipients)}{detail}",
            recipients[:MAX_FAILED_RECIPIENTS],
            original,
        )
    if failed_unnamed:
        return KindOfMail(
            MailKind.BOUNCE, f"DSN {where}: failed, no usable recipient", (), original
        )
    if delayed:
        return KindOfMail(
            MailKind.BOUNCE,
            f"DSN {where}: delayed for {_list(_unique(delayed))} (warning only)",
            (),
            original,
        )
    if other:
        # Delivered, relayed or expanded: a success notice, not a failure.
        return KindOfMail(MailKind.AUTOMATIC, f"DSN {where}: {_list(other)}", (), original)
    return KindOfMail(MailKind.BOUNCE, f"DSN {where} without recipient fields", (), original)


def _field_blocks(data: bytes) -> Iterable[dict[str, str]]:
    """The header-style field groups of a delivery-status body, names lower-cased."""
    fields: dict[str, str] = {}
    name: str | None = None
    # A report listing more recipients than MAX_FAILED_RECIPIENTS needs no full read.
    text = data[:_DSN_BYTES].decode("utf-8", "replace")
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
            name = None
            continue
        if line[0] in " \t":
            if name is not None:
                fields[name] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon:
            name = None
            continue
        name = key.strip().lower()
        if name in fields:
            name = None  # keep the first occurrence
            continue
        fields[name] = value.strip()
    if fields:
        yield fields


_UTF8_ESCAPE: Final = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ADDR: Final = r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
# Only from the start of a run of address characters: unanchored, a run without "@" was
# rescanned from each of its characters, quadratic in its length (a 60 KB
# X-Failed-Recipients header took half a minute).
_ADDRESS: Final = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])" + _ADDR)


def _dsn_recipient(fields: Mapping[str, str]) -> str | None:
    """The recipient a DSN block is about: Original-Recipient (what we sent to), else Final."""
    for name in ("original-recipient", "final-recipient"):
        value = fields.get(name)
        if not value:
            continue
        address_type, semicolon, address = value.partition(";")
        if not semicolon:
            address, address_type = address_type, "rfc822"
        address = _COMMENT.sub("", address).strip().strip("<>").strip()
        if address_type.strip().lower() == "utf-8":
            address = _UTF8_ESCAPE.sub(lambda m: _codepoint(m.group(1)), address)
        if _ADDRESS.fullmatch(address):
            return address.lower()
    return None


def _codepoint(hex_digits: str) -> str:
    value = int(hex_digits, 16)
    return chr(value) if value <= 0x10FFFF else "\ufffd"


def _failed_recipients_header(headers: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    values = headers.get("x-failed-recipients")
    if not values:
        return ()
    return _unique(match.lower() for value in values for match in _ADDRESS.findall(value))


# Where a bounce text stops describing the failure and starts quoting the returned mail.
_ORIGINAL_MARKER: Final = re.compile(
    r"^[ \t]*[-=_#*]*[ \t]*(?:" + "|".join(RETURNED_MESSAGE_MARKERS) + ")"
    r"|^(?:return-path|received|message-id|dkim-signature|from|date|to|subject):",
    re.IGNORECASE | re.MULTILINE,
)
# Phrases after which the failed addresses are listed one per line (Gmail, Exim,
# sendmail, Exchange, qmail, Yahoo, Postfix without DSN, Sun/Oracle servers).
_LIST_TRIGGER: Final = re.compile(
    r"delivery\s+to\s+the\s+following\s+recipients?\s+failed\s+permanently"
    r"|following\s+address(?:\(es\)|es)?\s+failed"
    r"|following\s+addresses\s+had\s+permanent\s+fatal\s+errors"
    r"|delivery\s+has\s+failed\s+to\s+these\s+recipients\s+or\s+groups"
    r"|able\s+to\s+deliver\s+your\s+message\s+to\s+the\s+following\s+address"
    r"|(?:could|can)\s*not\s+be\s+delivered\s+to\s+(?:one\s+or\s+more|the\s+following)"
    r"\s+(?:of\s+its\s+)?recipients?",
    re.IGNORECASE,
)
_LISTED_ADDRESS: Final = re.compile(
    r"^[ \t]*(?:recipient(?: address)?:[ \t]*)?<?(" + _ADDR + r")>?(?=[\s:;,.()]|$)",
    re.IGNORECASE | re.MULTILINE,
)
# Sentences naming the failed address inline (Office 365, and terse older servers).
_INLINE_FAILURE: Final = re.compile(
    r"your\s+message\s+to\s+<?(" + _ADDR + r")>?\s+(?:(?:couldn['’]t|could\s+not|can['’]t|cannot)"
    r"\s+be|wasn['’]t|was\s+not)\s+delivered"
    r"|your\s+message\s+(?:wasn['’]t|was\s+not|couldn['’]t\s+be|could\s+not\s+be)\s+delivered\s+to"
    r"\s+<?(" + _ADDR + r")"
    r"|delivery\s+failed(?:\s+\d+\s+attempts?)?:\s*<?(" + _ADDR + r")"
    # sendmail's summary line for a recipient it gave up on
    r"|^[ \t]*<(" + _ADDR + r")>[ \t]+\(unrecoverable\s+error\)",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_MESSAGE_ID: Final = re.compile(r"^message-id:\s*(<[^>\n]+>)", re.IGNORECASE | re.MULTILINE)


def _report_text(text: str) -> str:
    """The part of a bounce's text before the quoted original message."""
    head = text[:_BODY_SCAN_CHARS]
    marker = _ORIGINAL_MARKER.search(head)
    return head[: marker.start()] if marker is not None else head


def _body_recipients(text: str, own: set[str], parsed: ParsedMessage) -> tuple[str, ...]:
    found: list[str] = []
    for trigger in _LIST_TRIGGER.finditer(text):
        window = text[trigger.end() : trigger.end() + _LIST_SCAN_CHARS]
        found.extend(match.group(1) for match in _LISTED_ADDRESS.finditer(window))
    for match in _INLINE_FAILURE.finditer(text):
        found.append(next(group for group in match.groups() if group))
    # The bounce's own recipient is the sender of the returned mail, never a failure.
    ours = own | {address.email for address in parsed.to}
    return _unique(
        address
        for address in (address.lower().rstrip(".") for address in found)
        if address not in ours
    )


def _reported_id(parsed: ParsedMessage) -> str | None:
    """The Message-ID of the message a report is about, from its enclosed parts."""
    for attachment in parsed.attachments:
        content_type = attachment.content_type
        if content_type in ("message/disposition-notification", "message/feedback-report"):
            for fields in _field_blocks(attachment.data):
                value = fields.get("original-message-id")
                if value:
                    return normalize_message_id(value)
        elif content_type in ("message/rfc822", "message/global", "text/rfc822-headers"):
            header_block = email.parser.BytesHeaderParser(policy=email.policy.compat32)
            # Only the header block is wanted; a returned message can be megabytes.
            head = attachment.data[:_HEADER_BYTES]
            value = header_block.parsebytes(head).get("message-id")
            if value:
                return normalize_message_id(str(value))
    return None


def _quoted_id(text: str, start: int) -> str | None:
    """The Message-ID of an original message quoted inline after a bounce text."""
    match = _QUOTED_MESSAGE_ID.search(text, start, start + _BODY_SCAN_CHARS)
    return normalize_message_id(match.group(1)) if match is not None else None


# --- small helpers -------------------------------------------------------------------

_REPORT_TYPE: Final = re.compile(r""";\s*report-type\s*=\s*"?([^";\s]+)""", re.IGNORECASE)


def _report_type(content_type: str) -> str:
    match = _REPORT_TYPE.search(content_type)
    return match.group(1).lower() if match is not None else ""


def _first(headers: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _first_token(value: str | None) -> str:
    """The first word of a header value, lower-case, without comments or parameters."""
    if not value:
        return ""
    value = _COMMENT.sub(" ", value).split(";", 1)[0].strip()
    return value.split(None, 1)[0].lower() if value else ""


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def _list(items: tuple[str, ...] | list[str], shown: int = 3) -> str:
    head = ", ".join(items[:shown])
    return f"{head} and {len(items) - shown} more" if len(items) > shown else head


def _short(value: str | None, limit: int = 80) -> str:
    text = " ".join((value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
