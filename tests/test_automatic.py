"""Classifying inbound mail as human, automatic, bounce or own (postdesk.ingest.automatic).

Each rule is checked on a message written here (English and Persian), with the negatives
that must stay human; then the public corpora: every flanker and CPython email test
message is classified without an exception, and flanker's bounces are bounces with the
failed recipients their reports name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from postdesk.errors import ParseError
from postdesk.ingest.automatic import KindOfMail, kind_of_mail
from postdesk.ingest.parse import ParsedMessage, parse_message
from postdesk.lexicon.autoreply import OOF_PHRASES
from postdesk.testing.corpora import require_corpus, require_cpython_email_data
from postdesk.testing.mail import Mail

SUPPORT = "support@example.org"


def mail(
    *extra: str,
    subject: str = "Question about my order",
    sender: str = "Jane Customer <jane@example.com>",
    body: str = "Hello,\n\nmy order 48213 has not arrived yet. Can you check?\n\nJane\n",
    content_type: str = "text/plain; charset=utf-8",
) -> ParsedMessage:
    """A message to the support address with the given extra header lines."""
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in extra)]
    built = Mail(
        sender=sender,
        to=f"Support <{SUPPORT}>",
        subject=subject,
        date="Mon, 04 Mar 2024 10:00:00 +0100",
        message_id="c1.4821@mail.example.com",
        headers=headers,
        body=body,
        content_type=content_type,
    )
    return parse_message(bytes(built))


def report(
    report_type: str,
    status_type: str,
    status_body: str,
    *,
    notice: str = "Your message could not be delivered.\n",
    sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.org>",
    subject: str = "Undelivered Mail Returned to Sender",
    extra: tuple[str, ...] = (),
) -> ParsedMessage:
    """A multipart/report with a notice, one status part and the returned message."""
    body = (
        "--B\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        f"{notice}\n--B\nContent-Type: {status_type}\n\n{status_body}\n"
        "--B\nContent-Type: message/rfc822\n\n"
        f"From: Support <{SUPPORT}>\nTo: customer@example.net\n"
        "Subject: Re: [#77] Refund\nMessage-ID: <reply-77.1@example.org>\n\n"
        "Your refund is on its way.\n--B--\n"
    )
    return mail(
        *extra,
        sender=sender,
        subject=subject,
        body=body,
        content_type=f'multipart/report; report-type={report_type}; boundary="B"',
    )


# --- human ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Double charge on my card", "Hello, I was charged twice this month.\n"),
        ("پیگیری سفارش", "سلام، سفارش من هنوز نرسیده است. لطفاً پیگیری کنید.\n"),
    ],
)
def test_a_person_writing_is_human(subject: str, body: str) -> None:
    result = kind_of_mail(mail(subject=subject, body=body), own_addresses=[SUPPORT])
    assert result == KindOfMail("human", "no sign of automatic mail")
    assert result.is_human


@pytest.mark.parametrize(
    "body",
    [
        "I was out of office last week, so I only saw your answer now.\n",
        "I am out of the office until Monday; please call my colleague.\n",
        "تا دوشنبه خارج از دفتر هستم و پاسخ خودکار را هم فعال نکرده‌ام.\n",
    ],
)
def test_out_of_office_words_in_the_body_are_human(body: str) -> None:
    assert kind_of_mail(mail(body=body)).kind == "human"


def test_auto_submitted_no_is_human() -> None:
    result = kind_of_mail(mail("Auto-Submitted: no"))
    assert (result.kind, result.reason) == ("human", "Auto-Submitted: no")


def test_list_id_alone_is_human() -> None:
    # A list relays people: a customer writing through their team's group is a customer.
    parsed = mail("List-Id: Acme operations team <ops.acme.example.com>")
    assert kind_of_mail(parsed).kind == "human"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Automatic reply: [#12] Refund",  # a person answering an auto-reply
        "AW: Automatische Antwort: Rechnung",
        "Out of office hours support?",
        "Vacation rental booking 3345",
        "Automatic replies are not working in my account",
        "Absence",
        "پاسخ خودکار ایمیل من کار نمی‌کند",  # "my email's auto-reply does not work"
        "On holiday - lost luggage",
        "Undeliverable email to my colleague?",  # a failure subject, but from a person
    ],
)
def test_subjects_that_only_look_automatic_are_human(subject: str) -> None:
    assert kind_of_mail(mail(subject=subject)).kind == "human"


@pytest.mark.parametrize(
    "header",
    ["X-Autoreply: no", "Precedence: first-class", "X-Auto-Response-Suppress: DR, RN, NRN"],
)
def test_headers_that_do_not_mean_automatic(header: str) -> None:
    assert kind_of_mail(mail(header)).kind == "human"


def test_noreply_sender_is_human() -> None:
    # Web forms send the customer's request from noreply@ with Reply-To the customer.
    parsed = mail("Reply-To: jane@example.com", sender="Website <noreply@shop.example.com>")
    assert kind_of_mail(parsed).kind == "human"


def test_postmaster_writing_plainly_is_human() -> None:
    parsed = mail(sender="Postmaster <postmaster@example.net>", subject="Your SPF record")
    assert kind_of_mail(parsed).kind == "human"


# --- automatic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: Auto-Notified (vacation)", "Auto-Submitted: Auto-Notified (vacation)"),
        ("Auto-Submitted: auto-replied; owner-email=a@b.example", None),
        ("X-Autoreply: yes", "X-Autoreply: yes"),
        ("X-Autorespond: vacation", "X-Autorespond: vacation"),
        ("X-Autoresponder: true", "X-Autoresponder: true"),
        ("X-AutoGenerated: Reply", "X-AutoGenerated: Reply"),
        ("Precedence: auto_reply", "Precedence: auto_reply"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: junk", "Precedence: junk"),
        ("Precedence: list", "Precedence: list"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress: All"),
        ("X-Auto-Response-Suppress: DR, OOF, AutoReply", None),
        (
            "List-Unsubscribe: <mailto:leave@news.example.com>",
            "List-Unsubscribe: bulk or list mail",
        ),
        ("Return-Path: <>", "null envelope sender (Return-Path: <>)"),
    ],
)
def test_automatic_headers(header: str, reason: str | None) -> None:
    result = kind_of_mail(mail(header))
    assert result.kind == "automatic"
    assert result.failed_recipients == ()
    if reason is not None:
        assert result.reason == reason


def test_auto_submitted_reason_wins_over_weaker_signs() -> None:
    parsed = mail("Precedence: bulk", "Auto-Submitted: auto-replied", subject="Out of office")
    assert kind_of_mail(parsed).reason == "Auto-Submitted: auto-replied"


@pytest.mark.parametrize("own_addresses", [[SUPPORT], ["SUPPORT@Example.ORG"]])
def test_our_own_group_list_headers_are_ignored(own_addresses: list[str]) -> None:
    # support@ being a Google Group or a Mailman list adds list headers to every message.
    group = (
        "List-Id: <support.example.org>",
        "List-Post: <mailto:support@example.org>",
        "List-Unsubscribe: <mailto:support+unsubscribe@example.org>",
        "Precedence: list",
    )
    assert kind_of_mail(mail(*group), own_addresses=own_addresses).kind == "human"
    assert kind_of_mail(mail(*group)).kind == "automatic"


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: [#12] Refund",
        "Auto-Reply: Your message",
        "AutoReply",
        "Out of Office: Re: Invoice 42",
        "Out of office until 12 March",
        "*Out of the Office*",
        "[support.example.net #33575] AutoReply: FYI",
        "Jane Doe is out of the office.",
        "AUTO: Jane Doe is out of the office (returning 05/06/2024)",
        "Automatische Antwort: Rechnung 42",
        "Abwesenheitsnotiz: Rechnung 42",
        "Ich bin nicht im Büro",
        "Außer Haus: Rechnung",
        "Réponse automatique : Facture",
        "Absente du bureau",
        "Respuesta automática: Factura",
        "Fuera de la oficina",
        "Automatisch antwoord: Factuur",
        "Afwezigheidsbericht",
        "Risposta automatica: Fattura",
        "Resposta automática: Fatura",
        "Autosvar: Faktura",
        "Automaattinen vastaus: Lasku",
        "Automatyczna odpowiedź: Faktura",
        "Автоматический ответ: Счёт",
        "Otomatik yanıt: Fatura",
        "رد تلقائي: فاتورة",
        "自动回复: 发票",
        "自動応答：請求書",
        "자동 회신: 청구서",
        "پاسخ خودکار: پیگیری سفارش",
        "پاسخ‌خودکار: پیگیری سفارش",  # with a zero-width non-joiner
        "پاسخ خودكار",  # Arabic kaf, as windows-1256 mail often has it
        "خارج از دفتر",
        "خارج از دفتر هستم",
        "خارج از اداره: پیگیری سفارش",
        "عدم حضور در دفتر",
    ],
)
def test_out_of_office_subjects(subject: str) -> None:
    result = kind_of_mail(mail(subject=subject))
    assert result.kind == "automatic", subject
    assert result.reason.startswith("auto-reply subject")


def test_out_of_office_phrases_are_written_case_folded() -> None:
    # The subject is case-folded before matching; a phrase that is not would never match.
    for phrase in OOF_PHRASES:
        assert phrase == phrase.casefold(), phrase


def test_read_receipt_is_automatic_and_names_the_message() -> None:
    parsed = report(
        "disposition-notification",
        "message/disposition-notification",
        "Reporting-UA: pc.example.com; Mail 1.0\n"
        "Final-Recipient: rfc822; customer@example.net\n"
        "Original-Message-ID: <reply-77.1@example.org>\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n",
        sender="Customer <customer@example.net>",
        subject="Read: Re: [#77] Refund",
    )
    result = kind_of_mail(parsed)
    assert result.kind == "automatic"
    assert "MDN" in result.reason
    assert result.original_message_id == "reply-77.1@example.org"


def test_abuse_complaint_is_automatic() -> None:
    parsed = report(
        "feedback-report",
        "message/feedback-report",
        "Feedback-Type: abuse\nUser-Agent: Feedback/1.0\nVersion: 1\n",
        sender="Feedback Loop <fbl@isp.example.net>",
        subject="Abuse report",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("automatic", ())
    assert "ARF" in result.reason


def test_success_dsn_is_automatic_not_bounce() -> None:
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; customer@example.net\nAction: delivered\nStatus: 2.0.0\n",
        subject="Delivery Status Notification (Success)",
    )
    result = kind_of_mail(parsed)
    assert result.kind == "automatic"
    assert result.reason == "DSN multipart/report: delivered customer@example.net"


# --- bounces -------------------------------------------------------------------------


def test_dsn_failure_names_the_original_recipient() -> None:
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Original-Recipient: rfc822;Customer@Example.NET\n"
        "Final-Recipient: rfc822; customer.real@mailhost.example.net\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n"
        "Final-Recipient: rfc822; <second@example.net>\nAction: delayed\nStatus: 4.4.1\n\n"
        "Final-Recipient: rfc822; third@example.net\nAction: failed\nStatus: 5.2.2\n",
    )
    result = kind_of_mail(parsed, own_addresses=[SUPPORT])
    assert result.kind == "bounce"
    assert result.failed_recipients == ("customer@example.net", "third@example.net")
    assert result.reason == (
        "DSN multipart/report: failed customer@example.net, third@example.net (5.1.1, 5.2.2)"
    )
    assert result.original_message_id == "reply-77.1@example.org"


def test_dsn_delay_is_a_bounce_without_failed_recipients() -> None:
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; slow@example.net\nAction: delayed\nStatus: 4.4.7\n",
        subject="Delayed Mail (still being retried)",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("bounce", ())
    assert "delayed for slow@example.net" in result.reason


def test_dsn_without_action_uses_the_status_class() -> None:
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; gone@example.net\n"
        "Status: 5.1.1\n",
    )
    assert kind_of_mail(parsed).failed_recipients == ("gone@example.net",)


def test_global_dsn_with_utf8_address() -> None:
    parsed = report(
        "global-delivery-status",
        "message/global-delivery-status",
        "Reporting-MTA: dns; mx.example.ir\n\n"
        "Final-Recipient: utf-8; \\x{639}\\x{644}\\x{6CC}@example.ir\n"
        "Action: failed\nStatus: 5.1.1\n",
        notice="پیام شما به نشانی زیر تحویل داده نشد.\n",
        subject="تحویل ناموفق: پیگیری سفارش",
    )
    result = kind_of_mail(parsed)
    assert result.kind == "bounce"
    assert result.failed_recipients == ("علی@example.ir",)


def test_persian_bounce_with_a_dsn() -> None:
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mail.example.ir\n\n"
        "Final-Recipient: rfc822; reza@example.ir\nAction: failed\nStatus: 5.2.2\n",
        notice="پیام شما به reza@example.ir تحویل داده نشد: صندوق پستی پر است.\n",
        sender="سامانه تحویل نامه <MAILER-DAEMON@mail.example.ir>",
        subject="پیام قابل تحویل نیست: پیگیری سفارش",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("bounce", ("reza@example.ir",))


def test_persian_bounce_without_a_dsn() -> None:
    parsed = mail(
        "Return-Path: <>",
        "X-Failed-Recipients: maryam@example.ir",
        sender="Postmaster <postmaster@example.ir>",
        subject="پیام قابل تحویل نیست",
        body="نامه شما به maryam@example.ir تحویل داده نشد.\n",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("bounce", ("maryam@example.ir",))
    assert result.reason.startswith("X-Failed-Recipients")


_RETURNED = (
    f"Return-Path: <{SUPPORT}>\nFrom: Support <{SUPPORT}>\nTo: other@example.com\n"
    "Message-ID: <reply-77.1@example.org>\nSubject: Re: [#77] Refund\n\nYour refund...\n"
)

NON_DSN_BOUNCES = {
    "exim": (
        "Mail Delivery System <Mailer-Daemon@mx.example.org>",
        "Mail delivery failed: returning message to sender",
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  lost.customer@example.net\n"
        "    host mx.example.net [192.0.2.7]\n"
        "    SMTP error from remote mail server after RCPT TO:<lost.customer@example.net>:\n"
        "    550 5.1.1 No such user here\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n" + _RETURNED,
        ("lost.customer@example.net",),
    ),
    "postfix": (
        "MAILER-DAEMON@mx.example.org (Mail Delivery System)",
        "Undelivered Mail Returned to Sender",
        "This is the mail system at host mx.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        "<gone@example.net>: host mx.example.net[192.0.2.9] said: 550 5.1.1\n"
        "    <gone@example.net>: Recipient address rejected: User unknown (in reply to\n"
        "    RCPT TO command)\n\n" + _RETURNED,
        ("gone@example.net",),
    ),
    "qmail": (
        "MAILER-DAEMON@mail.example.net",
        "failure notice",
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<first@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "<second@example.net>:\nThis mailbox is over quota. (#5.2.2)\n\n"
        "--- Below this line is a copy of the message.\n\n" + _RETURNED,
        ("first@example.net", "second@example.net"),
    ),
    "gmail": (
        "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        "Delivery Status Notification (Failure)",
        "Delivery to the following recipient failed permanently:\n\n"
        "     nobody.here@example.net\n\n"
        "Technical details of permanent failure:\n"
        "550 5.1.1 <nobody.here@example.net>: Recipient address rejected\n\n"
        "----- Original message -----\n\n" + _RETURNED,
        ("nobody.here@example.net",),
    ),
    "office365": (
        "Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.org>",
        "Undeliverable: Re: [#77] Refund",
        "Your message to Nobody@Example.net couldn’t be delivered.\n\n"
        "nobody wasn't found at example.net.\n\nAction Required\n"
        "Unknown To address\n\nOriginal Message Headers\n\n" + _RETURNED,
        ("nobody@example.net",),
    ),
    "sendmail": (
        "Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>",
        "Returned mail: see transcript for details",
        "The original message was received at Mon, 4 Mar 2024 10:00:00 +0100\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<bad@example.net>\n    (reason: 550 5.1.1 User unknown)\n\n"
        "   ----- Transcript of session follows -----\n"
        "... while talking to mx.example.net.:\n>>> RCPT To:<bad@example.net>\n"
        "<<< 550 5.1.1 User unknown\n<other@example.net>... Deferred\n",
        ("bad@example.net",),
    ),
    "yahoo": (
        "MAILER-DAEMON@yahoo.example.com",
        "Failure Notice",
        "Sorry, we were unable to deliver your message to the following address.\n\n"
        "<closed@yahoo.example.com>:\n"
        "Remote host said: 554 delivery error: This user doesn't have an account\n\n"
        "--- Below this line is a copy of the message.\n\n" + _RETURNED,
        ("closed@yahoo.example.com",),
    ),
    "terse": (
        '"Postmaster" <postmaster@example.net>',
        "Undeliverable Mail",
        "Delivery failed 3 attempts: info@example.net\n\nOriginal message follows.\n\n" + _RETURNED,
        ("info@example.net",),
    ),
}


@pytest.mark.parametrize("name", sorted(NON_DSN_BOUNCES))
def test_bounce_texts_without_a_dsn(name: str) -> None:
    sender, subject, body, expected = NON_DSN_BOUNCES[name]
    # As delivered: the receiving server records the null envelope sender of a bounce.
    result = kind_of_mail(mail("Return-Path: <>", sender=sender, subject=subject, body=body))
    assert result.kind == "bounce", result
    assert result.failed_recipients == expected
    assert ", ".join(expected) in result.reason


def test_delay_warning_without_a_dsn_names_nobody() -> None:
    parsed = mail(
        "Return-Path: <>",
        sender="Mail Delivery System <Mailer-Daemon@mx.example.org>",
        subject="Warning: message 1rABCD-0001 delayed 24 hours",
        body="This message was created automatically by mail delivery software.\n"
        "A message that you sent has not yet been delivered to one or more of its\n"
        "recipients after more than 24 hours on the queue on mx.example.org.\n\n"
        "The address(es) which have not yet been delivered are:\n\n"
        "  slow.server@example.net\n    Connection timed out\n\n"
        "No action is required on your part.\n",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("bounce", ())
    assert result.reason.endswith("delivery delayed (warning only)")


def test_x_failed_recipients_header() -> None:
    parsed = mail(
        "Return-Path: <MAILER-DAEMON@mx.example.org>",
        "X-Failed-Recipients: One@example.net, two@example.net",
        sender="Mail Delivery System <Mailer-Daemon@mx.example.org>",
        subject="Mail delivery failed: returning message to sender",
        body="A message that you sent could not be delivered.\n",
    )
    result = kind_of_mail(parsed)
    assert result.failed_recipients == ("one@example.net", "two@example.net")
    assert result.reason == "X-Failed-Recipients: failed one@example.net, two@example.net"


@pytest.mark.parametrize(
    "sender", ["MAILER-DAEMON@mx.example.org", "MAILER DAEMON <>", "Mail Delivery System <>"]
)
def test_mailer_daemon_sender_with_a_null_envelope_is_a_bounce(sender: str) -> None:
    result = kind_of_mail(
        mail(
            "Return-Path: <>", sender=sender, subject="Warning: could not send message for 4 hours"
        )
    )
    assert (result.kind, result.failed_recipients) == ("bounce", ())


@pytest.mark.parametrize(
    "extra",
    [
        # Anyone can write these: a customer's (or a stranger's) ordinary mail.
        ("X-Failed-Recipients: agent@example.org, jane@example.com",),
        ("Return-Path: <mallory@example.net>", "X-Failed-Recipients: agent@example.org"),
        # A forged Return-Path below the one the receiving server put on top.
        ("Return-Path: <mallory@example.net>", "Return-Path: <>", "X-Failed-Recipients: a@b.c"),
    ],
)
def test_bounce_signs_anyone_can_write_make_no_bounce(extra: tuple[str, ...]) -> None:
    result = kind_of_mail(
        mail(
            *extra,
            sender="Mail Delivery System <mailer-daemon@example.net>",
            subject="Undeliverable: Refund",
            body="Delivery to the following recipient failed permanently:\n\n  a@example.org\n",
        )
    )
    assert result.kind == "automatic"
    assert result.failed_recipients == ()
    assert "neither a delivery-status report nor a null or MAILER-DAEMON" in result.reason


def test_a_delivery_status_report_needs_no_envelope() -> None:
    """The RFC 3464 structure is a bounce whatever the envelope (a forwarded one too);
    whom it may mark is then checked against what we sent (tests/test_bounces.py)."""
    parsed = report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n",
    )
    assert kind_of_mail(parsed).failed_recipients == ("gone@example.net",)


def test_bounce_scan_never_reports_our_own_or_the_returned_addresses() -> None:
    body = (
        "Delivery to the following recipient failed permanently:\n\n"
        f"     {SUPPORT}\n     real.failure@example.net\n\n"
        "----- Original message -----\n\nFrom: Support <support@example.org>\n"
        "To: real.failure@example.net, cc.person@example.net\n"
    )
    parsed = mail(
        "Return-Path: <>",
        sender="mailer-daemon@googlemail.com",
        subject="Delivery failure",
        body=body,
    )
    assert kind_of_mail(parsed).failed_recipients == ("real.failure@example.net",)


def test_failure_subject_from_a_machine_sender_is_a_bounce() -> None:
    parsed = mail(
        "Return-Path: <>",
        "Auto-Submitted: auto-replied",
        sender="Mail System <system@mx.example.net>",
        subject="Undeliverable: Re: [#77] Refund",
        body="Your message was not delivered to x@example.net because the mailbox is full.\n",
    )
    result = kind_of_mail(parsed)
    assert (result.kind, result.failed_recipients) == ("bounce", ("x@example.net",))


# --- own -----------------------------------------------------------------------------


def test_our_loop_header_is_own_even_when_automatic() -> None:
    parsed = mail("Auto-Submitted: auto-replied", "x-postdesk-loop: support@example.org")
    assert kind_of_mail(parsed) == KindOfMail("own", "our loop header X-Postdesk-Loop")
    other = mail("X-Helpdesk-Loop: 1")
    assert kind_of_mail(other, loop_header="X-Helpdesk-Loop").kind == "own"


def test_our_message_id_is_own() -> None:
    seen: list[str] = []

    def ours(message_id: str) -> bool:
        seen.append(message_id)
        return message_id.endswith("@mail.example.com")

    result = kind_of_mail(mail(), own_message_ids=ours)
    assert result == KindOfMail("own", "Message-ID <c1.4821@mail.example.com> is one we sent")
    assert seen == ["c1.4821@mail.example.com"]
    assert kind_of_mail(mail(), own_message_ids=lambda _: False).kind == "human"


def test_from_our_own_address_is_own() -> None:
    parsed = mail(sender="Support <Support@Example.org>")
    assert kind_of_mail(parsed, own_addresses=[SUPPORT]).reason == f"From our own address {SUPPORT}"
    # An agent writing in is a person: agents are not passed as own addresses.
    agent = mail(sender="Sara <sara@example.org>")
    assert kind_of_mail(agent, own_addresses=[SUPPORT]).kind == "human"


def test_classification_is_frozen() -> None:
    result = kind_of_mail(mail())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.kind = "own"  # type: ignore[misc]


# --- public corpora ------------------------------------------------------------------

FLANKER_BOUNCES = {
    "bounce/broken-mime.eml": ("info@example.net",),
    "bounce/delayed-broken.eml": ("demo@example.com",),
    "bounce/delayed.eml": ("foo@example.com",),
    "bounce/gmail-invalid-address.eml": ("awfawfawfawfawfaw@someserverhere.com",),
    "bounce/gmail-no-dns.eml": ("user@example.comm",),
    "bounce/mailbox-full.eml": ("user@aol.com",),
    "bounce/no-mx.eml": (),  # a delay warning (Action: delayed): nobody is bouncing yet
    "bounce/office365.eml": ("noname@example.com",),
    "bounce/zed.eml": ("asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com",),
}


def _classified(paths: list[tuple[str, Path]]) -> dict[str, KindOfMail | str]:
    """Each message's classification, or the ParseError that kept it from being parsed."""
    results: dict[str, KindOfMail | str] = {}
    for name, path in paths:
        try:
            parsed = parse_message(path.read_bytes())
        except ParseError as error:
            results[name] = str(error)
            continue
        results[name] = kind_of_mail(parsed, own_addresses=[SUPPORT])
    return results


@pytest.fixture(scope="module")
def flanker() -> dict[str, KindOfMail | str]:
    root = require_corpus("mime-flanker")
    paths = [(str(path.relative_to(root)), path) for path in sorted(root.rglob("*.eml"))]
    assert len(paths) >= 48
    return _classified(paths)


@pytest.fixture(scope="module")
def cpython() -> dict[str, KindOfMail | str]:
    data = require_cpython_email_data()
    return _classified([(path.name, path) for path in sorted(data.glob("msg_*.txt"))])


def _kind(result: KindOfMail | str) -> str:
    return result.kind if isinstance(result, KindOfMail) else "unparsed"


def test_every_flanker_message_is_classified(flanker: dict[str, KindOfMail | str]) -> None:
    # long-header.eml's 200 KB Subject is over [limits] max_header_bytes: not parsed.
    assert flanker["long-header.eml"] == (
        "too large: header block of 209,871 bytes, the limit is 102,400 ([limits] max_header_bytes)"
    )
    assert all(
        isinstance(result, KindOfMail)
        for name, result in flanker.items()
        if name != "long-header.eml"
    )


@pytest.mark.parametrize("name", sorted(FLANKER_BOUNCES))
def test_flanker_bounces(flanker: dict[str, KindOfMail | str], name: str) -> None:
    result = flanker[name]
    assert isinstance(result, KindOfMail)
    assert result.kind == "bounce", result
    assert result.failed_recipients == FLANKER_BOUNCES[name]


def test_flanker_has_no_other_bounces(flanker: dict[str, KindOfMail | str]) -> None:
    bounces = {name for name, result in flanker.items() if _kind(result) == "bounce"}
    assert bounces == set(FLANKER_BOUNCES)


@pytest.mark.parametrize(
    "name", ["complaints/aol.eml", "complaints/yahoo.eml", "disposition-notification.eml"]
)
def test_flanker_reports_are_automatic(flanker: dict[str, KindOfMail | str], name: str) -> None:
    # ARF abuse complaints and read receipts are machine reports: never a customer's ticket.
    assert _kind(flanker[name]) == "automatic"


def test_flanker_ordinary_mail_stays_human(flanker: dict[str, KindOfMail | str]) -> None:
    plain = ["iphone.eml", "text-only.eml", "bilingual-simple.eml", "signed.eml", "torture.eml"]
    assert [_kind(flanker[name]) for name in plain] == ["human"] * len(plain)


def test_every_cpython_message_is_classified(cpython: dict[str, KindOfMail | str]) -> None:
    unparsed = {name: result for name, result in cpython.items() if isinstance(result, str)}
    # Only messages that are not mail at all may fail to parse (ParseError, never more).
    assert all(reason.startswith("no header block") for reason in unparsed.values()), unparsed
    assert len(cpython) - len(unparsed) >= 45


def test_cpython_bounces(cpython: dict[str, KindOfMail | str]) -> None:
    ucla = cpython["msg_16.txt"]
    assert isinstance(ucla, KindOfMail)
    assert (ucla.kind, ucla.failed_recipients) == ("bounce", ("jangel1@cougar.noc.ucla.edu",))
    banned = cpython["msg_43.txt"]
    assert isinstance(banned, KindOfMail) and banned.kind == "bounce"
    assert banned.failed_recipients[0] == "xxxxxxx@dot.ca.gov"
    bounces = {name for name, result in cpython.items() if _kind(result) == "bounce"}
    # msg_42 is only a "Mail Delivery Subsystem" From line: no report, no envelope.
    assert bounces == {"msg_05.txt", "msg_16.txt", "msg_25.txt", "msg_43.txt"}
    assert _kind(cpython["msg_42.txt"]) == "automatic"
