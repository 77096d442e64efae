"""The agent's reply to relay (postdesk.ingest.quotes.reply_text), and the quote formats it needs.

Each message is written the way its mail client lays out a reply (the client, its
language, top-posted with the history below), and pins two things: `reply_text` returns
exactly the agent's text with the sign-off, and `visible_text` still finds the same
history (it also drops the sign-off). Header formats that visible_text missed before
(Russian Android, Turkish, Arabic, Hotmail, Windows Mail, localized Outlook blocks)
are among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.quotes import reply_text, visible_text


def lines(*parts: str) -> str:
    return "\n".join(parts)


@dataclass(frozen=True)
class Case:
    """A reply as a client writes it, the text to relay, and what visible_text shows."""

    id: str
    text: str
    reply: str
    visible: str


EN_BODY = "Hi Dana,\n\nYour refund was issued today; it reaches your card in 3-5 days."
FA_BODY = "سلام دانا،\n\nمبلغ امروز به کارت شما بازگردانده شد و تا ۳ روز دیگر می‌رسد."
RU_BODY = "Здравствуйте, Дана!\n\nВозврат оформлен сегодня, деньги придут за 3-5 дней."
TR_BODY = "Merhaba Dana,\n\nİadeniz bugün yapıldı, 3-5 gün içinde kartınıza geçer."
AR_BODY = "مرحبا دانا،\n\nتم إصدار المبلغ المسترد اليوم وسيصل خلال 3-5 أيام."
DE_BODY = "Hallo Dana,\n\ndie Erstattung wurde heute veranlasst."
FR_BODY = "Bonjour Dana,\n\nle remboursement a été effectué aujourd'hui."
ES_BODY = "Hola Dana:\n\nel reembolso se ha emitido hoy."
NL_BODY = "Hallo Dana,\n\nde terugbetaling is vandaag verwerkt."

QUOTED_EN = ["> Where is my refund? I returned the parcel two weeks ago.", ">"]
HISTORY_EN = ["Where is my refund? I returned the parcel two weeks ago."]
HISTORY_FA = ["بازپرداخت من کجاست؟ دو هفته پیش بسته را پس فرستادم."]


def case(id: str, body: str, sign_off: str, *below: str) -> Case:
    """A top-posted reply: body, sign-off, then what the client adds below.

    visible_text drops a sign-off with the name under it, not one on a line with the name.
    """
    reply = f"{body}\n\n{sign_off}"
    return Case(
        id, lines(body, "", sign_off, "", *below), reply, reply if "\n" not in sign_off else body
    )


CASES = [
    # --- Gmail -------------------------------------------------------------------------
    case(
        "gmail-en",
        EN_BODY,
        "Best regards,\nSara",
        "On Mon, Mar 4, 2024 at 9:12 AM Dana Lee <dana@example.com> wrote:",
        "",
        *QUOTED_EN,
    ),
    case(
        "gmail-en-signature-and-two-line-attribution",
        EN_BODY,
        "Thanks,\nSara",
        "-- ",
        "Sara Ahmadi",
        "Customer Support, Example Co.",
        "+1 555 0100",
        "",
        "On Mon, Mar 4, 2024 at 9:12 AM Dana Lee via Example Shop Orders <",
        "dana@example.com> wrote:",
        "",
        *QUOTED_EN,
    ),
    case(
        "gmail-fa-direction-marks",
        FA_BODY,
        "با سپاس،\nسارا",
        "\u202bدر تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ \u202aDana Lee\u202c\u200f <\u202a"
        "dana@example.com\u202c\u200f> نوشت:\u202c",
        "",
        *(f"> {line}" for line in HISTORY_FA),
    ),
    case(
        "gmail-fa-two-lines",
        FA_BODY,
        "با سپاس، سارا",
        "در تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Dana Lee <",
        "dana@example.com> نوشت:",
        "",
        *(f"> {line}" for line in HISTORY_FA),
    ),
    case(
        "gmail-ru-no-verb",
        RU_BODY,
        "С уважением,\nСара",
        "пн, 4 мар. 2024 г. в 09:12, Dana Lee <dana@example.com>:",
        "",
        "> Где мой возврат?",
    ),
    case(
        "gmail-ru-two-lines",
        RU_BODY,
        "С уважением,\nСара",
        "пн, 4 мар. 2024 г. в 09:12, Dana Lee через Example Shop <",
        "dana@example.com>:",
        "",
        "> Где мой возврат?",
    ),
    case(
        "gmail-tr",
        TR_BODY,
        "Saygılarımla,\nSara",
        "Dana Lee <dana@example.com>, 4 Mar 2024 Pzt, 09:12 tarihinde şunu yazdı:",
        "",
        "> İadem nerede?",
    ),
    case(
        "gmail-tr-two-lines",
        TR_BODY,
        "Saygılarımla,\nSara",
        "4 Mar 2024 Pzt, saat 09:12 tarihinde Dana Lee <dana@example.com> şunu",
        "yazdı:",
        "",
        "> İadem nerede?",
    ),
    case(
        "gmail-ar",
        AR_BODY,
        "مع التحية،\nسارة",
        "\u202bفي الاثنين، 4 مارس 2024 في 9:12 ص تمت كتابة ما يلي بواسطة \u202aDana Lee"
        "\u202c\u200f <\u202adana@example.com\u202c\u200f>:\u202c",
        "",
        "> أين المبلغ المسترد؟",
    ),
    case(
        "gmail-ar-two-lines",
        AR_BODY,
        "مع التحية،\nسارة",
        "في الاثنين، 4 مارس 2024 في 9:12 ص تمت كتابة ما يلي بواسطة Dana Lee <",
        "dana@example.com>:",
        "",
        "> أين المبلغ المسترد؟",
    ),
    case(
        "gmail-de-two-lines",
        DE_BODY,
        "Viele Grüße\nSara",
        "Am Mo., 4. März 2024 um 09:12 Uhr schrieb Dana Lee <",
        "dana@example.com>:",
        "",
        "> Wo bleibt meine Erstattung?",
    ),
    case(
        "gmail-fr",
        FR_BODY,
        "Cordialement,\nSara",
        "Le lun. 4 mars 2024 à 09:12, Dana Lee <dana@example.com> a écrit :",
        "",
        "> Où est mon remboursement ?",
    ),
    case(
        "gmail-es-two-lines",
        ES_BODY,
        "Saludos,\nSara",
        "El lun, 4 mar 2024 a las 9:12, Dana Lee (<dana@example.com>)",
        "escribió:",
        "",
        "> ¿Dónde está mi reembolso?",
    ),
    case(
        "gmail-nl",
        NL_BODY,
        "Met vriendelijke groet,\nSara",
        "Op ma 4 mrt 2024 om 09:12 schreef Dana Lee <dana@example.com>:",
        "",
        "> Waar blijft mijn terugbetaling?",
    ),
    # --- Outlook -------------------------------------------------------------------------
    case(
        "outlook-desktop-en",
        EN_BODY,
        "Kind regards,\nSara Ahmadi\nCustomer Support | Example Co.",
        "From: Dana Lee <dana@example.com>",
        "Sent: Monday, March 4, 2024 9:12 AM",
        "To: Support <support@example.com>",
        "Subject: RE: [#42] Refund",
        "",
        *HISTORY_EN,
    ),
    case(
        "outlook-web-en",
        EN_BODY,
        "Thanks,\nSara",
        "________________________________",
        "From: Dana Lee <dana@example.com>",
        "Sent: Monday, March 4, 2024 09:12",
        "To: Support <support@example.com>",
        "Subject: Re: [#42] Refund",
        "",
        *HISTORY_EN,
    ),
    case(
        "outlook-ios",
        EN_BODY,
        "Thanks, Sara",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "________________________________",
        "From: Dana Lee <dana@example.com>",
        "Sent: Monday, March 4, 2024 9:12:31 AM",
        "To: Support <support@example.com>",
        "Subject: Re: [#42] Refund",
        "",
        *HISTORY_EN,
    ),
    case(
        "outlook-android",
        EN_BODY,
        "Thanks, Sara",
        "Get Outlook for Android<https://aka.ms/AAb9ysg>",
        "",
        "From: Dana Lee <dana@example.com>",
        "Sent: Monday, March 4, 2024 9:12:31 AM",
        "To: Support <support@example.com>",
        "Subject: Re: [#42] Refund",
        "",
        *HISTORY_EN,
    ),
    case(
        "outlook-original-message",
        EN_BODY,
        "Regards,\nSara",
        "-----Original Message-----",
        "From: Dana Lee [mailto:dana@example.com]",
        "Sent: Monday, March 04, 2024 9:12 AM",
        "To: Support",
        "Subject: RE: Refund",
        "",
        *HISTORY_EN,
    ),
    case(
        "outlook-de",
        DE_BODY,
        "Mit freundlichen Grüßen\nSara Ahmadi",
        "Von: Dana Lee <dana@example.com>",
        "Gesendet: Montag, 4. März 2024 09:12",
        "An: Support <support@example.com>",
        "Betreff: AW: Erstattung",
        "",
        "Wo bleibt meine Erstattung?",
    ),
    case(
        "outlook-fr",
        FR_BODY,
        "Cordialement,\nSara Ahmadi",
        "De : Dana Lee <dana@example.com>",
        "Envoyé : lundi 4 mars 2024 09:12",
        "À : Support <support@example.com>",
        "Objet : RE: Remboursement",
        "",
        "Où est mon remboursement ?",
    ),
    case(
        "outlook-es",
        ES_BODY,
        "Saludos cordiales,\nSara Ahmadi",
        "De: Dana Lee <dana@example.com>",
        "Enviado: lunes, 4 de marzo de 2024 9:12",
        "Para: Support <support@example.com>",
        "Asunto: RE: Reembolso",
        "",
        "¿Dónde está mi reembolso?",
    ),
    case(
        "outlook-nl",
        NL_BODY,
        "Met vriendelijke groet,\nSara Ahmadi",
        "Van: Dana Lee <dana@example.com>",
        "Verzonden: maandag 4 maart 2024 09:12",
        "Aan: Support <support@example.com>",
        "Onderwerp: RE: Terugbetaling",
        "",
        "Waar blijft mijn terugbetaling?",
    ),
    case(
        "outlook-fa",
        FA_BODY,
        "با احترام،\nسارا احمدی",
        "از: Dana Lee <dana@example.com>",
        "ارسال شده: دوشنبه، ۴ مارس ۲۰۲۴ ۰۹:۱۲",
        "به: Support <support@example.com>",
        "موضوع: RE: بازپرداخت",
        "",
        *HISTORY_FA,
    ),
    case(
        "outlook-ru",
        RU_BODY,
        "С уважением,\nСара Ахмади",
        "От: Dana Lee <dana@example.com>",
        "Отправлено: 4 марта 2024 г. 9:12",
        "Кому: Support <support@example.com>",
        "Тема: RE: Возврат",
        "",
        "Где мой возврат?",
    ),
    case(
        "outlook-tr",
        TR_BODY,
        "Saygılarımla,\nSara Ahmadi",
        "Kimden: Dana Lee <dana@example.com>",
        "Gönderildi: 4 Mart 2024 Pazartesi 09:12",
        "Kime: Support <support@example.com>",
        "Konu: YNT: İade",
        "",
        "İadem nerede?",
    ),
    case(
        "outlook-ar",
        AR_BODY,
        "مع التحية،\nسارة أحمدي",
        "من: Dana Lee <dana@example.com>",
        "تم الإرسال: الاثنين، 4 مارس 2024 09:12 ص",
        "إلى: Support <support@example.com>",
        "الموضوع: رد: استرداد",
        "",
        "أين المبلغ المسترد؟",
    ),
    # --- Hotmail and Windows Mail ---------------------------------------------------------
    case(
        "hotmail-date-subject-from-to",
        EN_BODY,
        "Thanks,\nSara",
        "________________________________",
        "Date: Mon, 4 Mar 2024 09:12:31 +0000",
        "Subject: Re: [#42] Refund",
        "From: dana@example.com",
        "To: support@example.com",
        "",
        *HISTORY_EN,
    ),
    case(
        "hotmail-date-subject-from-to-without-rule",
        FA_BODY,
        "با سپاس،\nسارا",
        "Date: Mon, 4 Mar 2024 09:12:31 +0000",
        "Subject: Re: [#42] بازپرداخت",
        "From: dana@example.com",
        "To: support@example.com",
        "",
        *HISTORY_FA,
    ),
    case(
        "windows-mail",
        EN_BODY,
        "Thanks,\nSara",
        "Sent from Mail<https://go.microsoft.com/fwlink/?LinkId=550986> for Windows 10",
        "",
        "From: Dana Lee<mailto:dana@example.com>",
        "Sent: Monday, March 4, 2024 9:12 AM",
        "To: Support<mailto:support@example.com>",
        "Cc: Orders<mailto:orders@example.com>",
        "Subject: Re: [#42] Refund",
        "",
        *HISTORY_EN,
    ),
    # --- Apple Mail, iOS, Thunderbird, Yahoo, Android -------------------------------------
    case(
        "apple-mail",
        EN_BODY,
        "Thanks,\nSara",
        "> On 4 Mar 2024, at 09:12, Dana Lee <dana@example.com> wrote:",
        "> ",
        *QUOTED_EN,
    ),
    case(
        "ios-mail-en",
        EN_BODY,
        "Thanks,\nSara",
        "Sent from my iPhone",
        "",
        "> On Mar 4, 2024, at 9:12 AM, Dana Lee <dana@example.com> wrote:",
        "> ",
        *QUOTED_EN,
    ),
    case(
        "ios-mail-fa",
        FA_BODY,
        "با سپاس، سارا",
        "ارسال شده از آیفون من",
        "",
        "> در ۴ مارس ۲۰۲۴، ساعت ۹:۱۲، Dana Lee <dana@example.com> نوشت:",
        "> ",
        *(f"> {line}" for line in HISTORY_FA),
    ),
    case(
        "ios-mail-ru",
        RU_BODY,
        "Спасибо,\nСара",
        "Отправлено с iPhone",
        "",
        "> 4 марта 2024 г., в 9:12, Dana Lee <dana@example.com> написал(а):",
        "> ",
        "> Где мой возврат?",
    ),
    case(
        "ios-mail-tr",
        TR_BODY,
        "Teşekkürler,\nSara",
        "iPhone'umdan gönderildi",
        "",
        "> 4 Mar 2024 tarihinde 09:12 saatinde, Dana Lee <dana@example.com> şunları yazdı:",
        "> ",
        "> İadem nerede?",
    ),
    case(
        "ios-mail-ar",
        AR_BODY,
        "شكرا،\nسارة",
        "أُرسلت من الـ iPhone",
        "",
        "> في 4 مارس 2024، الساعة 9:12 ص، كتب Dana Lee <dana@example.com>:",
        "> ",
        "> أين المبلغ المسترد؟",
    ),
    case(
        "thunderbird-signature-above-quote",
        EN_BODY,
        "Best,\nSara",
        "-- ",
        "Sara Ahmadi | Example Co.",
        "",
        "On 04/03/2024 09:12, Dana Lee wrote:",
        *QUOTED_EN,
    ),
    case(
        "thunderbird-ru",
        RU_BODY,
        "Спасибо,\nСара",
        "04.03.2024 9:12, Dana Lee пишет:",
        "> Где мой возврат?",
    ),
    case(
        "yahoo",
        EN_BODY,
        "Thanks, Sara",
        "Sent from Yahoo Mail on Android",
        "",
        "    On Mon, Mar 4, 2024 at 9:12, Dana Lee<dana@example.com> wrote:   ",
        " ",
        "     Where is my refund?",
    ),
    case(
        "android-gmail",
        EN_BODY,
        "Thanks, Sara",
        "On Mon, 4 Mar 2024, 09:12 Dana Lee, <dana@example.com> wrote:",
        "",
        *QUOTED_EN,
    ),
    case(
        "android-samsung",
        EN_BODY,
        "Thanks\nSara",
        "",
        "",
        "Sent from my Galaxy",
        "",
        "",
        "-------- Original message --------",
        "From: Dana Lee <dana@example.com> ",
        "Date: 3/4/24 09:12 (GMT+03:30) ",
        "To: support@example.com ",
        "Subject: Re: [#42] Refund ",
        "",
        *HISTORY_EN,
    ),
    case(
        "android-samsung-ru",
        RU_BODY,
        "Спасибо,\nСара",
        "Отправлено с устройства Galaxy",
        "",
        "-------- Исходное сообщение --------",
        "От: Dana Lee <dana@example.com> ",
        "Дата: 04.03.2024 09:12 (GMT+03:00) ",
        "Кому: support@example.com ",
        "Тема: Re: Возврат ",
        "",
        "Где мой возврат?",
    ),
    case(
        "android-ru-name-then-user",
        RU_BODY,
        "С уважением,\nСара",
        "4 марта 2024 г., 09:12, Dana Lee пользователь <dana@example.com> написал:",
        "",
        "> Где мой возврат?",
    ),
    case(
        "android-ru-user-then-name",
        RU_BODY,
        "С уважением,\nСара",
        "4 мар. 2024 г. 9:12 пользователь Dana Lee <dana@example.com> написал:",
        "",
        "> Где мой возврат?",
    ),
    case(
        "android-ru-two-lines",
        RU_BODY,
        "С уважением,\nСара",
        "4 марта 2024 г., 09:12, Dana Lee пользователь <",
        "dana@example.com> написал:",
        "",
        "> Где мой возврат?",
    ),
    case(
        "android-ru-unquoted-history",
        RU_BODY,
        "С уважением,\nСара",
        "04.03.2024, 09:12 пользователь Dana Lee написал:",
        "",
        "Где мой возврат?",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reply_text_keeps_the_sign_off(case: Case) -> None:
    assert reply_text(case.text) == case.reply


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_visible_text_finds_the_same_history(case: Case) -> None:
    assert visible_text(case.text) == case.visible


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        # RFC 3676's delimiter, and "--" without its space (trimmed by many clients).
        ("Done.\n\nSara\n-- \nSara Ahmadi\nExample Co.", "Done.\n\nSara"),
        ("Done.\n\nSara\n--\nSara Ahmadi\nExample Co.", "Done.\n\nSara"),
        # Everything below the first delimiter is signature.
        ("Done.\n\nThanks,\nSara\n-- \nSara Ahmadi\n--\nExample Co.", "Done.\n\nThanks,\nSara"),
        # A footer below the signature, and a signature below the footer.
        ("Done.\n\nSara\n-- \nSara Ahmadi\n\nSent from my iPhone", "Done.\n\nSara"),
        ("Done.\n\nSara\n\nSent from my iPhone\n-- \nSara Ahmadi", "Done.\n\nSara"),
        ("Done.\n\nسارا\n\nارسال شده از آیفون من", "Done.\n\nسارا"),
        ("Done.\n\nسارا\n\nدریافت Outlook برای Android", "Done.\n\nسارا"),
        ("Done.\n\nSara\n\nGet Outlook for iOS", "Done.\n\nSara"),
        # Closings that visible_text drops are the agent's and stay.
        ("Done.\n\n-Sara", "Done.\n\n-Sara"),
        (
            "Done.\n\nBest regards,\nSara Ahmadi\nSupport Lead",
            "Done.\n\nBest regards,\nSara Ahmadi\nSupport Lead",
        ),
        # "-- Sara" is a closing, not a delimiter; dashes inside sentences are prose.
        ("Done.\n\n-- Sara", "Done.\n\n-- Sara"),
        ("Step two -- the import -- works now.", "Step two -- the import -- works now."),
        # Not footers: a sentence that starts like one.
        ("Sent from my desk, which is faster.", "Sent from my desk, which is faster."),
        ("Paketiniz gönderildi", "Paketiniz gönderildi"),
    ],
)
def test_what_reply_text_removes_below_the_reply(text: str, reply: str) -> None:
    assert reply_text(text) == reply


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  \n\n",
        "-- \nSara Ahmadi\nExample Co.",
        "Sent from my iPhone",
        # Only history: relaying it would send the customer their own mail back.
        "On Mon, Mar 4, 2024 at 9:12 AM Dana Lee <dana@example.com> wrote:\n> Refund?",
        "From: Dana Lee <dana@example.com>\nSent: Monday, March 4, 2024 9:12 AM\n"
        "To: Support <support@example.com>\nSubject: Refund\n\nWhere is my refund?",
        "\n\nSent from my iPhone\n\n> On Mar 4, 2024, at 9:12 AM, Dana wrote:\n> Refund?",
    ],
)
def test_reply_text_is_empty_when_nothing_was_written(text: str) -> None:
    assert reply_text(text) == ""


def test_visible_text_keeps_what_reply_text_empties() -> None:
    history = (
        "From: Dana Lee <dana@example.com>\nSent: Monday, March 4, 2024 9:12 AM\n"
        "To: Support <support@example.com>\nSubject: Refund\n\nWhere is my refund?"
    )
    assert visible_text(history) == history
    assert visible_text("-- \nSara Ahmadi") == "--\nSara Ahmadi"


def test_forwarded_message_is_relayed() -> None:
    text = lines(
        "Here is the carrier's confirmation.",
        "",
        "Thanks,",
        "Sara",
        "",
        "---------- Forwarded message ---------",
        "From: Carrier <noreply@carrier.example>",
        "Date: Mon, Mar 4, 2024 at 9:12 AM",
        "Subject: Delivered",
        "To: <support@example.com>",
        "",
        "Your parcel was delivered.",
    )
    assert reply_text(text) == text


def test_inline_reply_is_relayed_whole_without_the_signature() -> None:
    inline = lines(
        "Hi Dana,",
        "",
        "On Mon, Mar 4, 2024 at 9:12 AM Dana Lee <dana@example.com> wrote:",
        "> Which card was charged?",
        "",
        "The one ending in 4242.",
        "",
        "> When will I get the money?",
        "",
        "Within 3-5 days.",
        "",
        "Thanks,",
        "Sara",
    )
    assert reply_text(lines(inline, "-- ", "Sara Ahmadi", "", "> Thanks")) == inline


def test_crlf_and_trailing_spaces() -> None:
    text = "Done.  \r\n\r\nThanks,\r\nSara\r\n-- \r\nSara Ahmadi\r\n\r\n> Refund?\r\n"
    assert reply_text(text) == "Done.\n\nThanks,\nSara"


# --- HTML ----------------------------------------------------------------------------------

GMAIL_HTML = (
    '<div dir="ltr"><div>Hi Dana,</div><div><br></div><div>Your refund was issued today.</div>'
    "<div><br></div><div>Best regards,</div><div>Sara</div><div><br></div>"
    '<span class="gmail_signature_prefix">-- </span><br><div dir="ltr" '
    'class="gmail_signature"><div dir="ltr">Sara Ahmadi<div>Customer Support, Example Co.'
    '</div></div></div></div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
    "On Mon, Mar 4, 2024 at 9:12 AM Dana Lee &lt;dana@example.com&gt; wrote:<br></div>"
    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
    'rgb(204,204,204);padding-left:1ex"><div dir="ltr">Where is my refund?</div></blockquote>'
    "</div>"
)
OUTLOOK_WEB_HTML = (
    '<html><head><style type="text/css" style="display:none;"> P {margin-top:0;'
    'margin-bottom:0;} </style></head><body dir="ltr"><div class="elementToProof" '
    'style="font-family: Aptos, sans-serif; font-size: 12pt;">Hi Dana,</div>'
    '<div class="elementToProof"><br></div><div class="elementToProof">Your refund was issued '
    'today.</div><div class="elementToProof"><br></div><div class="elementToProof">Thanks,'
    '</div><div class="elementToProof">Sara</div><div id="appendonsend"></div>'
    '<hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" '
    'dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">'
    "<b>From:</b> Dana Lee &lt;dana@example.com&gt;<br><b>Sent:</b> Monday, March 4, 2024 "
    "9:12 AM<br><b>To:</b> Support &lt;support@example.com&gt;<br><b>Subject:</b> Re: Refund"
    '</font><div>&nbsp;</div></div><div><div dir="ltr">Where is my refund?</div></div>'
    "</body></html>"
)
OUTLOOK_DESKTOP_HTML = (
    "<html><body lang=EN-US><div class=WordSection1><p class=MsoNormal>Hi Dana,<o:p></o:p></p>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Your refund was issued today."
    "<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Kind regards,"
    "<o:p></o:p></p><p class=MsoNormal>Sara<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p>"
    "</p><div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in "
    "0in'><p class=MsoNormal><b>From:</b> Dana Lee &lt;dana@example.com&gt; <br><b>Sent:</b> "
    "Monday, March 4, 2024 9:12 AM<br><b>To:</b> Support &lt;support@example.com&gt;<br>"
    "<b>Subject:</b> RE: Refund<o:p></o:p></p></div></div><p class=MsoNormal>Where is my "
    "refund?<o:p></o:p></p></div></body></html>"
)
APPLE_HTML = (
    '<html><body style="overflow-wrap: break-word;"><div>Hi Dana,</div><div><br></div>'
    "<div>Your refund was issued today.</div><div><br></div><div>Thanks,</div><div>Sara</div>"
    '<div><br><blockquote type="cite"><div>On 4 Mar 2024, at 09:12, Dana Lee '
    '&lt;dana@example.com&gt; wrote:</div><br class="Apple-interchange-newline"><div>'
    "<div>Where is my refund?</div></div></blockquote></div><br></body></html>"
)
YAHOO_HTML = (
    '<html><body><div class="ydp5e3c2a1byahoo-style-wrap"><div>Hi Dana,</div><div><br></div>'
    "<div>Your refund was issued today.</div><div><br></div><div>Thanks,</div><div>Sara</div>"
    '</div><div id="ydp98e98598yahoo_quoted_1775407810" class="ydp98e98598yahoo_quoted">'
    "<div style=\"font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;font-size:13px;"
    'color:#26282a;"><div>On Monday, March 4, 2024 at 09:12:31 AM GMT+3:30, Dana Lee '
    "&lt;dana@example.com&gt; wrote:</div><div><br></div><div><br></div>"
    "<div><div>Where is my refund?</div></div></div></div></body></html>"
)
THUNDERBIRD_HTML = (
    "<html><body><p>Hi Dana,</p><p>Your refund was issued today.</p><p>Best,<br>Sara</p>"
    '<div class="moz-cite-prefix">On 04/03/2024 09:12, Dana Lee wrote:<br></div>'
    '<blockquote type="cite" cite="mid:abc@example.com">Where is my refund?</blockquote>'
    '<pre class="moz-signature" cols="72">-- \nSara Ahmadi\nExample Co.</pre></body></html>'
)
PERSIAN_GMAIL_HTML = (
    '<div dir="rtl"><div>سلام دانا،</div><div><br></div><div>مبلغ امروز بازگردانده شد.</div>'
    '<div><br></div><div>با سپاس، سارا</div></div><br><div class="gmail_quote"><div dir="rtl" '
    'class="gmail_attr">\u202bدر تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Dana Lee '
    "&lt;dana@example.com&gt; نوشت:\u202c<br></div>"
    '<blockquote class="gmail_quote"><div dir="rtl">بازپرداخت من کجاست؟</div></blockquote></div>'
)

EN_HTML_REPLY = "Hi Dana,\n\nYour refund was issued today.\n\n"
HTML_CASES = [
    ("gmail-signature", GMAIL_HTML, EN_HTML_REPLY + "Best regards,\nSara"),
    ("outlook-web-appendonsend", OUTLOOK_WEB_HTML, EN_HTML_REPLY + "Thanks,\nSara"),
    ("outlook-desktop-border-top", OUTLOOK_DESKTOP_HTML, EN_HTML_REPLY + "Kind regards,\nSara"),
    ("apple-blockquote-cite", APPLE_HTML, EN_HTML_REPLY + "Thanks,\nSara"),
    ("yahoo-prefixed-class", YAHOO_HTML, EN_HTML_REPLY + "Thanks,\nSara"),
    ("thunderbird-moz-cite-prefix", THUNDERBIRD_HTML, EN_HTML_REPLY + "Best,\nSara"),
    (
        "persian-gmail",
        PERSIAN_GMAIL_HTML,
        "سلام دانا،\n\nمبلغ امروز بازگردانده شد.\n\nبا سپاس، سارا",
    ),
]


@pytest.mark.parametrize(
    ("html", "reply"),
    [(html, reply) for _, html, reply in HTML_CASES],
    ids=[name for name, _, _ in HTML_CASES],
)
def test_html_only_replies(html: str, reply: str) -> None:
    assert reply_text("", html) == reply
    # What the pipeline passes for HTML-only mail: the HTML converted, and the HTML. The
    # converter may space paragraphs differently (Outlook desktop's MsoNormal lines).
    got = reply_text(html_to_text(html), html)
    assert [line for line in got.splitlines() if line] == [
        line for line in reply.splitlines() if line
    ]
    # visible_text finds the same history.
    assert "refund?" not in visible_text("", html) and "کجاست" not in visible_text("", html)


# --- hostile input -------------------------------------------------------------------------

HOSTILE_SIZE = 200_000
HOSTILE = {
    "spaces": " " * HOSTILE_SIZE,
    "from-lines": "From: x\n" * (HOSTILE_SIZE // 8),
    "hotmail-date-lines": "Date: 1\nSubject: x\n" * (HOSTILE_SIZE // 19),
    "написал-line": "написал" * (HOSTILE_SIZE // 7),
    "attribution-lines": "1 пользователь написал:\n" * (HOSTILE_SIZE // 24),
    "footers-between-quotes": "confidential\n> q\n" * (HOSTILE_SIZE // 17),
    "delimiters-and-blanks": ("--\n" + "\n" * 20) * (HOSTILE_SIZE // 23),
    "inline-header-words": "From: a Sent: b To: c " * (HOSTILE_SIZE // 22),
    "footer-links": ("Sent from Mail<" + "x" * 100 + "> for Windows\n") * (HOSTILE_SIZE // 130),
    "html-yahoo": '<div class="ydpyahoo_quoted"><div id="appendonsend">' * (HOSTILE_SIZE // 50),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_completes(name: str) -> None:
    # A support address receives anything. The patterns are linear by construction
    # (anchored, bounded repeats, no overlapping alternatives under a repeat) and the line
    # loops look back or ahead a bounded number of lines; bench/quotes.py times these
    # inputs. Here they only have to finish and give text.
    text = HOSTILE[name]
    html = text if name.startswith("html") else None
    assert isinstance(reply_text(text, html), str)
    assert isinstance(visible_text(text, html), str)
