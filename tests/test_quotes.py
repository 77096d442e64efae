"""The visible reply: new text without quoted history or signature (postdesk.ingest.quotes).

Two kinds of evidence. The public reply fixtures in ../shared/data, scored against what
their upstream test suites assert; and messages written here in the layout of each mail
client the product must handle, in English, Persian, German, French, Spanish and Dutch.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.quotes import visible_text
from postdesk.testing.corpora import require_corpus

# --- the public fixtures -------------------------------------------------------------------

THRESHOLD = 0.95


def normalized(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Fixture:
    """One fixture and what an upstream test asserts about its visible reply."""

    corpus: str
    name: str
    text: str
    equals: str | None = None  # the whole visible reply
    contains: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)

    def misses(self, got: str) -> list[str]:
        seen = normalized(got)
        found = []
        if self.equals is not None and seen != normalized(self.equals):
            found.append(f"expected {self.equals!r}")
        found += [f"lacks {s!r}" for s in self.contains if normalized(s) not in seen]
        found += [f"keeps {s!r}" for s in self.excludes if normalized(s) in seen]
        return found


def email_reply_parser_fixtures(root: Path) -> list[Fixture]:
    """GitHub's and Zapier's fixtures, with `upstream_assertions` from expected.json.

    The visible reply is pinned by `reply_equals`, `reply_strip_equals` or
    `fragment0_equals`; by per-fragment `hidden` flags (the visible reply is then the
    non-hidden fragments joined, as GitHub's parser defines it, with fragment text from the
    Python port, which passes those assertions); or by `n_fragments == 1` (nothing is split
    off, so the whole text is the reply). `reply_contains` and `reply_not_contains` are
    checked as such. Files whose assertions are only a fragment count above one or a time
    limit pin nothing about the visible reply and are left out (timing is tested below).
    """
    fixtures = []
    for variant in ("github", "zapier"):
        folder = root / variant
        expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
        for name, entry in sorted(expected.items()):
            asserted = entry.get("upstream_assertions") or {}
            port_passes = entry.get("python_port_passes_assertions") is True
            text = (folder / name).read_text(encoding="utf-8")
            fixture = Fixture("reply-email-reply-parser", f"{variant}/{name}", text)
            for key in ("reply_equals", "reply_strip_equals", "fragment0_equals"):
                if key in asserted:
                    fixture.equals = asserted[key]
                    break
            else:
                if "hidden" in asserted and port_passes:
                    fragments = entry["python_port_fragments"]
                    assert [f["hidden"] for f in fragments] == asserted["hidden"]
                    fixture.equals = "\n".join(f["content"] for f in fragments if not f["hidden"])
                elif asserted.get("n_fragments") == 1 and port_passes:
                    fixture.equals = text
            fixture.contains = list(asserted.get("reply_contains", []))
            fixture.excludes = list(asserted.get("reply_not_contains", []))
            if fixture.equals is not None or fixture.contains or fixture.excludes:
                fixtures.append(fixture)
    return fixtures


# reply-mail-parser-reply's expected.json is the reference implementation's output, not
# upstream truth, so the assertions of its upstream test (test/test_email_reply_parser.py,
# read at a later commit whose 34 tests on these files are the 34 SOURCE.md counts) are
# transcribed here. For each file: "equals" marks an exact assertion on replies[0].body,
# whose value is read from expected.json (the upstream suite passes against the version
# that wrote it); "contains" strings are asserted in replies[0].body; "excludes" strings
# are asserted in replies[0].signatures, absent from replies[0].body, or in a later reply
# (quoted history), so the visible reply must not show them. Assertions that only count
# replies (email_1_5, email_1_8, email_3_1, multiline_on) pin nothing about the visible
# reply; "Hej", asserted in the quoted reply of email_danish_3 and _4, also begins the
# new text and is left out.
MAIL_PARSER_REPLY_ASSERTIONS: dict[str, dict[str, list[str]]] = {
    "begins_with_signature.txt": {"excludes": ["Regards,"]},
    "email_1_1.txt": {"excludes": ["riak-users"]},
    "email_1_3.txt": {
        "excludes": ["On 01/03/11 7:07 PM, Russell Brown wrote:", "-Abhishek Kona", "> Hi,"]
    },
    "email_1_4.txt": {"excludes": ["defunkt<reply@reply.github.com>"]},
    "email_1_6.txt": {"excludes": ["<reply@reply.github.com>"]},
    "email_1_7.txt": {"excludes": ["<notifications@github.com>wrote:"]},
    "email_2_1.txt": {
        "equals": [],
        "excludes": ["Google Apps Sync Team [mailto:mail-noreply@google.com]"],
    },
    "email_2_3.txt": {
        "equals": [],
        "excludes": ["Ei tale aliquam eum, at vel tale sensibus, an sit vero magna. Vis no veri"],
    },
    "email_danish_1.txt": {
        "contains": ["Hej Peter,"],
        "excludes": ["Med venlig hilsen\nAnders Andersen", "Hej Anders,", "> Mvh\n> Peter"],
    },
    "email_danish_2.txt": {
        "contains": ["Jeg har modtaget filerne."],
        "excludes": ["Hilsen\nSøren", "Her er filerne du bad om.", "Mvh\nHanne"],
    },
    "email_danish_3.txt": {"contains": ["Svar."]},
    "email_danish_4.txt": {"contains": ["Svar."], "excludes": ["-----Oprindelig meddelelse-----"]},
    "email_danish_5.txt": {"contains": ["Svar."], "excludes": ["Kh\nPeter"]},
    "email_headers_no_delimiter.txt": {
        "equals": [],
        "excludes": ["A reply", "Sent from my iPhone", "This is a message.\nWith a second line."],
    },
    "email_ja_1_1.txt": {"contains": ["こんにちは"]},
    "email_ja_1_2.txt": {
        "contains": ["お世話になっております。織田です。", "それでは 11:00 にお待ちしております。"],
        "excludes": ["かしこまりました", "明日の 11:00 でお願いいたします"],
    },
    "email_nl_1_1.txt": {"excludes": ["riak-gebruikers"]},
    "email_nl_1_2.txt": {
        "equals": [],
        "excludes": ["Google Apps Sync Team [mailto:mail-noreply@google.com]"],
    },
    "email_pl_1_1.txt": {"contains": ["Czesc Anno"], "excludes": ["Pozdrawiam,\nJan"]},
    "email_pl_1_2.txt": {
        "excludes": [
            "Dnia 28 lutego 2023 14:00 Anna Nowak <anna.nowak@example.com>",
            "> Pozdrawiam,",
        ]
    },
    "email_pl_1_3.txt": {"excludes": ["Z powazaniem,\nJan"]},
    "email_sent_from_BlackBerry.txt": {"equals": [], "excludes": ["Sent from my BlackBerry"]},
    "email_sent_from_iPhone.txt": {"equals": [], "excludes": ["Sent from my iPhone"]},
    "email_sent_from_multi_word_mobile_device.txt": {
        "equals": [],
        "excludes": ["Sent from my Verizon Wireless BlackBerry"],
    },
    "email_sent_from_not_signature.txt": {"equals": []},
    "email_sv_anon_1.txt": {
        "contains": ["Berättar gärna."],
        "excludes": ["Kan inte se att det står något", "Jag har försökt få tag"],
    },
    "email_swedish_1.txt": {
        "contains": ["Ursäkta mitt sena svar!"],
        "excludes": ["Hej Person B,", "Med Vänlig Hälsning,"],
    },
    "email_swedish_2.txt": {"contains": ["Hello Anna,"], "excludes": ["/John"]},
}


def mail_parser_reply_fixtures(root: Path) -> list[Fixture]:
    expected = json.loads((root / "expected.json").read_text(encoding="utf-8"))
    fixtures = []
    for name, asserted in sorted(MAIL_PARSER_REPLY_ASSERTIONS.items()):
        assert expected[name]["languages_from_upstream_test"], name
        fixture = Fixture(
            "reply-mail-parser-reply",
            name,
            (root / name).read_text(encoding="utf-8"),
            contains=asserted.get("contains", []),
            excludes=asserted.get("excludes", []),
        )
        if "equals" in asserted:
            fixture.equals = expected[name]["replies"][0]["body"]
        fixtures.append(fixture)
    return fixtures


def test_upstream_asserted_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    """At least 95% of the fixtures with upstream assertions, both corpora together.

    Not every assertion can hold: email_2_1.txt is the same file in both corpora, and
    GitHub's and Zapier's tests expect "Outlook with a reply" while mail-parser-reply's
    expects the Outlook separator line ("-----…") after it. postdesk drops the separator,
    so that file and its Dutch translation email_nl_1_2.txt miss in reply-mail-parser-reply.
    """
    fixtures = email_reply_parser_fixtures(require_corpus("reply-email-reply-parser"))
    fixtures += mail_parser_reply_fixtures(require_corpus("reply-mail-parser-reply"))

    report = []
    misses: list[tuple[Fixture, list[str]]] = []
    for corpus in ("reply-email-reply-parser", "reply-mail-parser-reply"):
        chosen = [f for f in fixtures if f.corpus == corpus]
        exact = [f for f in chosen if f.equals is not None]
        failed = [(f, f.misses(visible_text(f.text))) for f in chosen]
        failed = [(f, why) for f, why in failed if why]
        misses += failed
        exact_failed = sum(1 for f, _ in failed if f.equals is not None)
        report.append(
            f"{corpus}: {len(chosen) - len(failed)}/{len(chosen)} upstream-asserted fixtures "
            f"correct ({len(exact) - exact_failed}/{len(exact)} with an exact visible reply)"
        )
    correct = len(fixtures) - len(misses)
    report.append(f"both: {correct}/{len(fixtures)} = {correct / len(fixtures):.1%}")
    report += [f"  miss {f.corpus}/{f.name}: {'; '.join(why)}" for f, why in misses]
    with capsys.disabled():
        print("\n" + "\n".join(report))

    assert correct / len(fixtures) >= THRESHOLD, "\n".join(report)


@pytest.mark.parametrize(
    ("variant", "name"), [("github", "email_long_quote.txt"), ("github", "pathological.txt")]
)
def test_upstream_time_limits(variant: str, name: str) -> None:
    # Upstream asserts these parse in under a second; they are built to make naive
    # regular expressions backtrack.
    text = (require_corpus("reply-email-reply-parser") / variant / name).read_text()
    started = time.perf_counter()
    visible_text(text)
    assert time.perf_counter() - started < 0.5


# --- messages in the style of each client --------------------------------------------------


def lines(*parts: str) -> str:
    return "\n".join(parts)


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    expected: str
    html: str | None = None


CASES = [
    Case(
        "gmail-top-posting",
        lines(
            "Thanks, that fixed it. The invoice now shows the right VAT number.",
            "",
            "On Mon, Mar 4, 2024 at 9:12 AM Support Team <support@example.com> wrote:",
            "",
            "> Hi Dana,",
            ">",
            "> Could you reload the invoice page and check again?",
            ">",
            "> Best,",
            "> Sara",
            ">",
        ),
        "Thanks, that fixed it. The invoice now shows the right VAT number.",
    ),
    Case(
        "gmail-attribution-over-two-lines",
        lines(
            "Works now, thank you!",
            "",
            "On Mon, Mar 4, 2024 at 9:12 AM Support Team via Helpdesk <",
            "support@example.com> wrote:",
            "",
            "> Please try again in a few minutes.",
        ),
        "Works now, thank you!",
    ),
    Case(
        "apple-attribution-over-three-lines",
        lines(
            "Great, thanks.",
            "",
            "On Mar 4, 2024, at 09:12, Support Team",
            "<support@example.com>",
            "wrote:",
            "",
            "> Your refund was issued today.",
        ),
        "Great, thanks.",
    ),
    Case(
        "gmail-unquoted-history",
        # Gmail's plain part of a reply to an HTML-only notification: no '>' markers.
        lines(
            "I confirm the address change.",
            "",
            "On Mon, Mar 4, 2024 at 9:12 AM Example Shop <noreply@shop.example>",
            "wrote:",
            "",
            "Your delivery address was changed. If this was not you, reply to this email.",
        ),
        "I confirm the address change.",
    ),
    Case(
        "outlook-desktop-header-block",
        lines(
            "Please see the attached screenshot.",
            "",
            "Regards,",
            "Omid Karimi",
            "IT Manager | Example Co.",
            "",
            "From: Support <support@example.com>",
            "Sent: Monday, March 4, 2024 9:12 AM",
            "To: Omid Karimi <omid@example.com>",
            "Subject: RE: [#42] Printer offline",
            "",
            "Hi Omid,",
            "",
            "Could you send us a screenshot of the error?",
        ),
        "Please see the attached screenshot.",
    ),
    Case(
        "outlook-original-message",
        lines(
            "I still cannot log in.",
            "",
            "-----Original Message-----",
            "From: Support [mailto:support@example.com]",
            "Sent: Monday, March 04, 2024 9:12 AM",
            "To: Bob Smith",
            "Subject: RE: Login",
            "",
            "Have you tried resetting your password?",
        ),
        "I still cannot log in.",
    ),
    Case(
        "outlook-web-rule-and-bold-header",
        lines(
            "Yes, please go ahead with the refund.",
            "",
            "________________________________",
            "*From:* Support Team <support@example.com>",
            "*Sent:* Monday, March 4, 2024 09:12",
            "*To:* Lee Chen <lee@example.com>",
            "*Subject:* Re: Refund",
            "",
            "Shall we refund the order?",
        ),
        "Yes, please go ahead with the refund.",
    ),
    Case(
        "outlook-one-line-header",
        lines(
            "Approved.",
            "",
            "From: Support <support@example.com> Sent: Monday, March 4, 2024 9:12 AM "
            "To: Lee <lee@example.com> Subject: Re: Refund",
            "Shall we refund the order?",
        ),
        "Approved.",
    ),
    Case(
        "outlook-ios",
        lines(
            "Approved, thanks.",
            "",
            "Get Outlook for iOS<https://aka.ms/o0ukef>",
            "________________________________",
            "From: Support <support@example.com>",
            "Sent: Monday, March 4, 2024 9:12:31 AM",
            "To: Lee <lee@example.com>",
            "Subject: Re: Refund",
            "",
            "Shall we refund the order?",
        ),
        "Approved, thanks.",
    ),
    Case(
        "outlook-android",
        lines(
            "On my way to the office, will check the router there.",
            "",
            "Get Outlook for Android<https://aka.ms/AAb9ysg>",
            "",
            "From: Support <support@example.com>",
            "Sent: Monday, March 4, 2024 9:12:31 AM",
            "To: Lee <lee@example.com>",
            "Subject: Re: Internet down",
        ),
        "On my way to the office, will check the router there.",
    ),
    Case(
        "apple-mail",
        lines(
            "Sure, Thursday works for me.",
            "",
            "> On Mar 4, 2024, at 09:12, Support Team <support@example.com> wrote:",
            "> ",
            "> Could we call on Thursday?",
        ),
        "Sure, Thursday works for me.",
    ),
    Case(
        "thunderbird-with-signature",
        lines(
            "Attached is the log file.",
            "",
            "On 04/03/2024 09:12, Support Team wrote:",
            "> Please send us the log file.",
            ">",
            "> -- ",
            "> Support Team",
            "",
            "-- ",
            "Jan Novak",
            "Example s.r.o.",
        ),
        "Attached is the log file.",
    ),
    Case(
        "yahoo-unquoted-indented-history",
        lines(
            "Thank you, received.",
            "",
            "Sent from Yahoo Mail on Android",
            "",
            "    On Monday, March 4, 2024 at 09:12:31 AM GMT+3:30, Support Team "
            "<support@example.com> wrote:  ",
            " ",
            "     Hello, your order has shipped.",
        ),
        "Thank you, received.",
    ),
    Case(
        "android-gmail",
        lines(
            "Ok thanks",
            "",
            "On Mon, 4 Mar 2024, 09:12 Support Team, <support@example.com> wrote:",
            "",
            "> Hi, your ticket was updated.",
        ),
        "Ok thanks",
    ),
    Case(
        "android-samsung-original-message",
        lines(
            "Ok thanks",
            "",
            "",
            "",
            "Sent from my Galaxy",
            "",
            "",
            "-------- Original message --------",
            "From: Support Team <support@example.com> ",
            "Date: 3/4/24 09:12 (GMT+03:30) ",
            "To: customer@example.com ",
            "Subject: Re: [#42] Refund ",
            "",
            "Hi, your refund is on its way.",
        ),
        "Ok thanks",
    ),
    Case(
        "ios-mail",
        lines(
            "Yes, that is the right order number.",
            "",
            "Sent from my iPhone",
            "",
            "> On Mar 4, 2024, at 9:12 AM, Support Team <support@example.com> wrote:",
            "> ",
            "> Is your order number 1234?",
        ),
        "Yes, that is the right order number.",
    ),
    Case(
        "bottom-posting",
        lines(
            "On Mon, Mar 4, 2024 at 9:12 AM Support <support@example.com> wrote:",
            "> Which browser do you use?",
            ">",
            "",
            "Firefox 123 on Windows 11.",
            "",
            "Dana",
        ),
        "Firefox 123 on Windows 11.\n\nDana",
    ),
    Case(
        "sent-from-my-iphone",
        lines("The parcel arrived today, all good.", "", "Sent from my iPhone"),
        "The parcel arrived today, all good.",
    ),
    Case(
        "sent-from-my-not-a-footer",
        lines("Here is the report.", "", "Sent from my desk, which is faster than the phone."),
        "Here is the report.\n\nSent from my desk, which is faster than the phone.",
    ),
    Case(
        "dash-dash-space-signature",
        lines(
            "The export works again.",
            "",
            "-- ",
            "Maria Rossi",
            "Acme Ltd. | +39 000 000 0000",
        ),
        "The export works again.",
    ),
    Case(
        "dashes-inside-a-sentence-are-not-a-signature",
        lines("Step two -- the import -- fails with error 17.", "", "Maria"),
        "Step two -- the import -- fails with error 17.\n\nMaria",
    ),
    Case(
        "crlf-line-endings",
        "Done.\r\n\r\nOn Mon, Mar 4, 2024 at 9:12 AM Support <support@example.com> wrote:\r\n"
        "> Is it done?\r\n",
        "Done.",
    ),
    Case(
        "forwarded-message-is-kept",
        lines(
            "Please see the bank's message below.",
            "",
            "---------- Forwarded message ---------",
            "From: Bank <noreply@bank.example>",
            "Date: Mon, Mar 4, 2024 at 9:12 AM",
            "Subject: Payment failed",
            "To: <dana@example.com>",
            "",
            "Your payment of 40 EUR failed.",
        ),
        lines(
            "Please see the bank's message below.",
            "",
            "---------- Forwarded message ---------",
            "From: Bank <noreply@bank.example>",
            "Date: Mon, Mar 4, 2024 at 9:12 AM",
            "Subject: Payment failed",
            "To: <dana@example.com>",
            "",
            "Your payment of 40 EUR failed.",
        ),
    ),
    Case(
        "history-with-nothing-above-is-kept",
        lines(
            "From: Anna Nowak <anna@example.com>",
            "Sent: Monday, March 4, 2024 9:12 AM",
            "To: Support <support@example.com>",
            "Subject: Broken lamp",
            "",
            "The lamp I ordered arrived broken.",
        ),
        lines(
            "From: Anna Nowak <anna@example.com>",
            "Sent: Monday, March 4, 2024 9:12 AM",
            "To: Support <support@example.com>",
            "Subject: Broken lamp",
            "",
            "The lamp I ordered arrived broken.",
        ),
    ),
    Case(
        "only-quotes-keeps-everything",
        lines(
            "On Mon, Mar 4, 2024 at 9:12 AM Support <support@example.com> wrote:",
            "> Is the issue solved?",
        ),
        lines(
            "On Mon, Mar 4, 2024 at 9:12 AM Support <support@example.com> wrote:",
            "> Is the issue solved?",
        ),
    ),
    Case(
        "external-sender-banner",
        lines(
            "CAUTION: This email originated from outside of the organization. Do not click "
            "links or open attachments unless you recognize the sender.",
            "",
            "Hello, the VPN drops every ten minutes.",
        ),
        "Hello, the VPN drops every ten minutes.",
    ),
    Case(
        "disclaimer-after-the-quote",
        lines(
            "Please cancel order 5521.",
            "",
            "On Mon, Mar 4, 2024 at 9:12 AM Support <support@example.com> wrote:",
            "> Do you want to cancel the order?",
            "",
            "This e-mail and any attachments are confidential and intended solely for the",
            "addressee.",
        ),
        "Please cancel order 5521.",
    ),
    # German, French, Spanish and Dutch attribution lines and Outlook headers.
    Case(
        "german-gmail",
        lines(
            "Danke, jetzt funktioniert es.",
            "",
            "Am Mo., 4. März 2024 um 09:12 Uhr schrieb Support Team <support@example.com>:",
            "",
            "> Bitte versuchen Sie es erneut.",
        ),
        "Danke, jetzt funktioniert es.",
    ),
    Case(
        "german-thunderbird-two-lines",
        lines(
            "Die Rechnung ist angekommen.",
            "",
            "Am 04.03.24 um 09:12 schrieb Support Team",
            "<support@example.com>:",
            "> Wir haben die Rechnung erneut gesendet.",
        ),
        "Die Rechnung ist angekommen.",
    ),
    Case(
        "german-outlook",
        lines(
            "Bitte stornieren Sie die Bestellung.",
            "",
            "Mit freundlichen Grüßen",
            "Jana Müller",
            "",
            "Von: Support <support@example.com>",
            "Gesendet: Montag, 4. März 2024 09:12",
            "An: Jana Müller <jana@example.com>",
            "Betreff: AW: Bestellung 5521",
            "",
            "Sollen wir die Bestellung stornieren?",
        ),
        "Bitte stornieren Sie die Bestellung.",
    ),
    Case(
        "french-gmail",
        lines(
            "Merci, c'est réglé.",
            "",
            "Le lun. 4 mars 2024 à 09:12, Support Team <support@example.com> a écrit :",
            "",
            "> Pouvez-vous réessayer ?",
        ),
        "Merci, c'est réglé.",
    ),
    Case(
        "french-outlook",
        lines(
            "Voici la facture demandée.",
            "",
            "Cordialement,",
            "Jean Dupont",
            "",
            "De : Support <support@example.com>",
            "Envoyé : lundi 4 mars 2024 09:12",
            "À : Jean Dupont <jean@example.com>",
            "Objet : RE: Facture",
            "",
            "Pouvez-vous nous envoyer la facture ?",
        ),
        "Voici la facture demandée.",
    ),
    Case(
        "spanish-gmail",
        lines(
            "Gracias, ya funciona.",
            "",
            "El lun, 4 mar 2024 a las 9:12, Support Team (<support@example.com>) escribió:",
            "",
            "> ¿Puede intentarlo de nuevo?",
        ),
        "Gracias, ya funciona.",
    ),
    Case(
        "spanish-outlook",
        lines(
            "Adjunto la factura.",
            "",
            "De: Support <support@example.com>",
            "Enviado: lunes, 4 de marzo de 2024 9:12",
            "Para: Lucía García <lucia@example.com>",
            "Asunto: RE: Factura",
            "",
            "¿Nos puede enviar la factura?",
        ),
        "Adjunto la factura.",
    ),
    Case(
        "dutch-gmail",
        lines(
            "Bedankt, het werkt nu.",
            "",
            "Op ma 4 mrt 2024 om 09:12 schreef Support Team <support@example.com>:",
            "",
            "> Kunt u het opnieuw proberen?",
        ),
        "Bedankt, het werkt nu.",
    ),
    Case(
        "dutch-apple-mail",
        lines(
            "Dat klopt.",
            "",
            "Verstuurd vanaf mijn iPhone",
            "",
            "> Op 4 mrt 2024 om 09:12 heeft Support Team <support@example.com> het volgende "
            "geschreven:",
            "> ",
            "> Is dit uw bestelnummer?",
        ),
        "Dat klopt.",
    ),
    Case(
        "dutch-outlook",
        lines(
            "Zie bijlage.",
            "",
            "Van: Support <support@example.com>",
            "Verzonden: maandag 4 maart 2024 09:12",
            "Aan: Daan de Vries <daan@example.com>",
            "Onderwerp: RE: Factuur",
            "",
            "Kunt u de factuur sturen?",
        ),
        "Zie bijlage.",
    ),
    # Persian.
    Case(
        "persian-gmail",
        lines(
            "سلام، مشکل هنوز برطرف نشده است.",
            "",
            "در تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Support Team <support@example.com> نوشت:",
            "",
            "> سلام،",
            "> لطفاً دوباره امتحان کنید.",
        ),
        "سلام، مشکل هنوز برطرف نشده است.",
    ),
    Case(
        "persian-gmail-with-direction-marks",
        lines(
            "\u200fسفارش من هنوز نرسیده است.\u200f",
            "",
            "\u200fدر تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ پشتیبانی <support@example.com>"
            " نوشت:\u200f",
            "",
            "> سفارش شما ارسال شد.",
        ),
        "\u200fسفارش من هنوز نرسیده است.\u200f",
    ),
    Case(
        "persian-attribution-over-two-lines",
        lines(
            "ممنون، درست شد.",
            "",
            "در تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Support Team <",
            "support@example.com> نوشت:",
            "",
            "> لطفاً مرورگر را دوباره باز کنید.",
        ),
        "ممنون، درست شد.",
    ),
    Case(
        "persian-outlook-and-sign-off",
        lines(
            "لطفاً فاکتور را دوباره ارسال کنید.",
            "",
            "با سپاس،",
            "علی رضایی",
            "",
            "از: Support <support@example.com>",
            "ارسال شده: دوشنبه، ۴ مارس ۲۰۲۴ ۰۹:۱۲",
            "به: علی رضایی <ali@example.com>",
            "موضوع: RE: فاکتور",
            "",
            "فاکتور پیوست شد.",
        ),
        "لطفاً فاکتور را دوباره ارسال کنید.",
    ),
    Case(
        "persian-sent-from-my-iphone-and-signature",
        lines(
            "رمز عبور من کار نمی‌کند.",
            "",
            "-- ",
            "مریم احمدی",
            "",
            "Sent from my iPhone",
        ),
        "رمز عبور من کار نمی‌کند.",
    ),
    Case(
        "persian-bottom-posting",
        lines(
            "در تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Support <support@example.com> نوشت:",
            "> از کدام مرورگر استفاده می‌کنید؟",
            "",
            "فایرفاکس نسخه ۱۲۳",
        ),
        "فایرفاکس نسخه ۱۲۳",
    ),
]

INTERLEAVED = lines(
    "Hi Sara,",
    "",
    "On Mon, Mar 4, 2024 at 9:12 AM Sara <support@example.com> wrote:",
    "> Which browser do you use?",
    "",
    "Firefox 123.",
    "",
    "> Does it also happen in a private window?",
    "",
    "Yes, there too.",
)

PERSIAN_INTERLEAVED = lines(
    "> شماره سفارش شما چیست؟",
    "۵۵۲۱",
    "> آیا کالا آسیب دیده است؟",
    "بله، جعبه شکسته بود.",
)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_client_layouts(case: Case) -> None:
    assert visible_text(case.text, case.html) == case.expected


@pytest.mark.parametrize("text", [INTERLEAVED, PERSIAN_INTERLEAVED], ids=["english", "persian"])
def test_inline_reply_interleaved_with_quotes_is_kept_whole(text: str) -> None:
    assert visible_text(text) == text


def test_inline_reply_loses_only_its_trailing_signature_and_history() -> None:
    text = lines(
        INTERLEAVED,
        "",
        "Thanks,",
        "Dana",
        "",
        "> Best,",
        "> Sara",
    )
    assert visible_text(text) == INTERLEAVED


# --- HTML ----------------------------------------------------------------------------------

GMAIL_HTML = (
    '<div dir="ltr">Thanks, it works now!</div><br><div class="gmail_quote">'
    '<div dir="ltr" class="gmail_attr">On Mon, Mar 4, 2024 at 9:12 AM Support Team '
    "&lt;support@example.com&gt; wrote:<br></div>"
    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
    'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
    "<div>Please restart the app.</div></blockquote></div>"
)
OUTLOOK_WEB_HTML = (
    "<html><head><style>p{margin:0}</style></head><body>"
    '<div style="font-family:Calibri">Yes, please refund it.</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">'
    "<b>From:</b> Support &lt;support@example.com&gt;<br><b>Sent:</b> Monday, March 4, 2024 "
    "9:12 AM<br><b>To:</b> Lee<br><b>Subject:</b> Re: Refund</font><div>&nbsp;</div></div>"
    "<div><p>Shall we refund the order?</p></div></body></html>"
)
OUTLOOK_DESKTOP_HTML = (
    "<html><body lang=EN-US><div class=WordSection1><p class=MsoNormal>Done, thanks.<o:p></o:p>"
    "</p><p class=MsoNormal><o:p>&nbsp;</o:p></p><div><div style='border:none;border-top:"
    "solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in'><p class=MsoNormal><b>From:</b> Support "
    "&lt;support@example.com&gt; <br><b>Sent:</b> Monday, March 4, 2024 9:12 AM<br><b>To:</b>"
    " Lee &lt;lee@example.com&gt;<br><b>Subject:</b> RE: Refund<o:p></o:p></p></div></div>"
    "<p class=MsoNormal>Shall we refund the order?</p></div></body></html>"
)
APPLE_HTML = (
    '<html><body><div>Sure, Thursday works.</div><div><br><blockquote type="cite">'
    "<div>On Mar 4, 2024, at 09:12, Support Team &lt;support@example.com&gt; wrote:</div>"
    '<br class="Apple-interchange-newline"><div><div>Can we call on Thursday?</div></div>'
    "</blockquote></div></body></html>"
)
THUNDERBIRD_HTML = (
    "<html><body><p>Attached is the log file.</p>"
    '<pre class="moz-signature" cols="72">-- \nJan Novak\nExample s.r.o.</pre>'
    '<div class="moz-cite-prefix">On 04/03/2024 09:12, Support Team wrote:<br></div>'
    '<blockquote type="cite" cite="mid:abc@example.com">Please send us the log file.'
    "</blockquote></body></html>"
)
YAHOO_HTML = (
    '<html><body><div class="ydp1"><div>Thank you, received.</div></div>'
    '<div id="yahoo_quoted_1234" class="yahoo_quoted"><div style="font-size:13px">'
    "<div>On Monday, March 4, 2024 at 09:12:31 AM GMT+3:30, Support Team "
    "&lt;support@example.com&gt; wrote:</div><div><br></div>"
    "<div>Hello, your order has shipped.</div></div></div></body></html>"
)
PERSIAN_GMAIL_HTML = (
    '<div dir="rtl">سلام، هنوز پاسخی دریافت نکرده‌ام.</div><br><div class="gmail_quote">'
    '<div dir="rtl" class="gmail_attr">\u200fدر تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ پشتیبانی '
    "&lt;support@example.com&gt; نوشت:\u200f<br></div>"
    '<blockquote class="gmail_quote"><div dir="rtl">درخواست شما ثبت شد.</div></blockquote></div>'
)
INTERLEAVED_HTML = (
    "<div>Hi Sara,</div><blockquote><div>Which browser do you use?</div></blockquote>"
    "<div>Firefox 123.</div><blockquote><div>Private window too?</div></blockquote>"
    "<div>Yes, there too.</div>"
)

HTML_CASES = [
    ("gmail", GMAIL_HTML, "Thanks, it works now!"),
    ("outlook-web-divRplyFwdMsg", OUTLOOK_WEB_HTML, "Yes, please refund it."),
    ("outlook-desktop", OUTLOOK_DESKTOP_HTML, "Done, thanks."),
    ("apple-mail-blockquote", APPLE_HTML, "Sure, Thursday works."),
    ("thunderbird", THUNDERBIRD_HTML, "Attached is the log file."),
    ("yahoo", YAHOO_HTML, "Thank you, received."),
    ("persian-gmail", PERSIAN_GMAIL_HTML, "سلام، هنوز پاسخی دریافت نکرده‌ام."),
]


@pytest.mark.parametrize(
    ("html", "expected"),
    [(html, expected) for _, html, expected in HTML_CASES],
    ids=[name for name, _, _ in HTML_CASES],
)
def test_html_only_mail(html: str, expected: str) -> None:
    # What the pipeline passes for HTML-only mail: the HTML converted, and the HTML.
    assert visible_text(html_to_text(html), html) == expected
    assert visible_text("", html) == expected


def test_html_blockquotes_interleaved_with_answers_are_kept() -> None:
    got = visible_text("", INTERLEAVED_HTML)
    for part in ("Hi Sara,", "Which browser do you use?", "Firefox 123.", "Yes, there too."):
        assert part in got


def test_html_only_inline_reply_keeps_the_answers() -> None:
    # Flattened to text, a Gmail inline reply looks like a top-posted one ("Hi Sara, …"
    # above an unquoted "On … wrote:"); its <blockquote>s show where the answers are.
    html = (
        '<div dir="ltr">Hi Sara,<br><br>answers inline.</div><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">On Mon, Mar 4, 2024 at 9:12 AM Sara '
        "&lt;support@example.com&gt; wrote:<br></div>"
        '<blockquote class="gmail_quote"><div>Which browser do you use?</div></blockquote>'
        '<div>Firefox 123.</div><blockquote class="gmail_quote"><div>Private window too?</div>'
        "</blockquote><div>Yes, there too.</div></div>"
    )
    got = visible_text(html_to_text(html), html)
    for part in ("answers inline.", "Which browser do you use?", "Firefox 123.", "Yes, there too."):
        assert part in got


def test_html_is_not_needed_when_the_plain_text_shows_the_quote() -> None:
    text = lines(
        "Thanks, it works now!",
        "",
        "On Mon, Mar 4, 2024 at 9:12 AM Support Team <support@example.com> wrote:",
        "",
        "> Please restart the app.",
    )
    assert visible_text(text, GMAIL_HTML) == "Thanks, it works now!"


def test_html_fills_in_when_the_plain_part_lost_the_quote_markers() -> None:
    # Some clients send a plain part that is the HTML flattened with no '>' or attribution.
    text = "Sure, Thursday works.\n\nCan we call on Thursday?"
    assert visible_text(text, APPLE_HTML) == "Sure, Thursday works."


@pytest.mark.parametrize(
    "text",
    [
        "Please check.\n\nBest,\nJohn\n\nP.S. The invoice number is 123.",
        "Please check.\n\nThanks,\nI will call you again tomorrow.",
        "Please check.\n\nThanks,\nwhat is the status of order 5521?",
        "Thanks!",
        "Regards",
    ],
)
def test_content_after_a_sign_off_is_not_taken_for_a_signature(text: str) -> None:
    assert visible_text(text) == text


def test_arbitrary_input_never_raises() -> None:
    rng = random.Random(20240304)
    alphabet = "ab >-_:\n\r\t=@<>*#\u200f۱۲ سلام On wrote: From: Sent: To: Subject: -- "
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        html = "".join(rng.choice("<>/ab blockquote div=\"'") for _ in range(rng.randint(0, 80)))
        assert isinstance(visible_text(text, html), str)


def test_plain_text_without_quotes_is_returned_unchanged_but_trimmed() -> None:
    assert visible_text("  \n\nHello,\n\nmy printer is offline.  \n\n") == (
        "Hello,\n\nmy printer is offline."
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\n", ">", "--", "-- \n", "On wrote:"])
def test_degenerate_input(text: str) -> None:
    assert visible_text(text) == text.strip()


@pytest.mark.parametrize(
    "html", ["", "   ", "<html></html>", "<!-- only a comment -->", "<?xml version='1.0'?>"]
)
def test_degenerate_html(html: str) -> None:
    assert visible_text("", html) == ""
