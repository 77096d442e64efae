"""The lines with which mail clients introduce quoted or forwarded history.

Plain, lower-case phrases, matched case-insensitively through `any_phrase` (a space is any
whitespace, a ZWNJ "a space, a ZWNJ or nothing", an apostrophe either apostrophe). A
phrase may be only the distinctive start of what clients write ("videresendt" for
"Videresendt meddelelse" and "Videresendt melding"); readers search lines for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# The verb that ends an attribution line: "On … Jane wrote:", "Am … schrieb Jan:".
ATTRIBUTION_VERBS: Final[tuple[str, ...]] = (
    # English
    "wrote",
    # German
    "schrieb",
    # Dutch
    "schreef",
    "geschreven",
    # Danish, Norwegian, Swedish
    "skrev",
    # Spanish
    "escribió",
    "escribio",
    # French ("a écrit")
    "écrit",
    "ecrit",
    # Polish
    "napisał",
    "napisal",
    # Italian ("ha scritto")
    "scritto",
    "scrisse",
    # Portuguese
    "escreveu",
    # Finnish
    "kirjoitti",
    # Persian
    "نوشت",
    # Russian ("написал:", "написал(а):", Thunderbird's "пишет:")
    "написал",
    "написала",
    "пишет",
    # Turkish ("şunu yazdı:"; "yazdi" is how str.lower() reads "YAZDI")
    "yazdı",
    "yazdi",
    # Arabic ("كتب Name <addr>:"; Gmail's "تمت كتابة ما يلي بواسطة Name <addr>:")
    "كتب",
    "تمت كتابة",
)
# Attribution verbs of scripts without spaces between words, so no word boundary applies.
ATTRIBUTION_VERBS_UNSPACED: Final[tuple[str, ...]] = (
    # Chinese (simplified, traditional)
    "写道",
    "寫道",
)
# The word an attribution wrapped over several lines starts with (a date is the other way).
ATTRIBUTION_OPENERS: Final[tuple[str, ...]] = (
    # English
    "on",
    # German
    "am",
    # French
    "le",
    # Spanish
    "el",
    # Dutch
    "op",
    # Danish, Norwegian, Swedish
    "den",
    "på",
    # Polish
    "dnia",
    "w dniu",
    # Portuguese
    "em",
    # Italian
    "il",
    # Persian
    "در",
    # Arabic
    "في",
    # Russian weekdays, with which Gmail's Russian attribution starts ("пн, 4 мар. 2024 г.")
    "пн",
    "вт",
    "ср",
    "чт",
    "пт",
    "сб",
    "вс",
)

# The separator line above a quoted message: "-----Original Message-----" (Outlook,
# Android and others), written between rules of dashes, underscores or equals signs.
ORIGINAL_MESSAGE_MARKERS: Final[tuple[str, ...]] = (
    # English
    "original message",
    # German
    "ursprüngliche nachricht",
    "originalnachricht",
    # French
    "message d'origine",
    # Spanish
    "mensaje original",
    # Dutch
    "oorspronkelijk bericht",
    # Danish
    "oprindelig meddelelse",
    # Norwegian
    "opprinnelig melding",
    # Swedish
    "ursprungligt meddelande",
    # Polish
    "wiadomość oryginalna",
    "oryginalna wiadomość",
    # Italian
    "messaggio originale",
    # Portuguese
    "mensagem original",
    # Persian
    "پیام اصلی",
    # Chinese
    "原始邮件",
    # Russian
    "исходное сообщение",
    # Turkish
    "özgün ileti",
    "orijinal mesaj",
    # Arabic
    "الرسالة الأصلية",
)

# What a client writes above a forwarded message ("---------- Forwarded message ---------",
# "Begin forwarded message:"); the start of the phrase where languages vary after it.
FORWARD_MARKERS: Final[tuple[str, ...]] = (
    # English (Gmail, Thunderbird; Apple Mail's "Begin forwarded message:")
    "forwarded message",
    "begin forwarded",
    # German
    "weitergeleitete nachricht",
    # French
    "message transféré",
    # Spanish
    "mensaje reenviado",
    # Dutch
    "doorgestuurd bericht",
    # Danish, Norwegian ("Videresendt meddelelse", "Videresendt melding")
    "videresendt",
    # Swedish ("Vidarebefordrat meddelande")
    "vidarebefordrat",
    # Polish ("Wiadomość przekazana dalej", "Przekazana wiadomość")
    "wiadomość przekazana",
    "przekazana wiadomość",
    # Italian
    "messaggio inoltrato",
    # Portuguese
    "mensagem encaminhada",
    # Persian ("پیام هدایت‌شده", "پیام بازارسال‌شده", …)
    "پیام\u200cهدایت",
    "پیام\u200cبازارسال",
    "پیام\u200cفوروارد",
    "پیام\u200cارسال\u200cشده",
)
# Forward markers written as a line of their own, with no rule around them, then a colon.
UNFRAMED_FORWARD_MARKERS: Final[tuple[str, ...]] = (
    # English (Apple Mail)
    "begin forwarded message",
)

# Header fields of an Outlook-style quoted header block ("From: … Sent: … To: …
# Subject: …"), localized, by what they mean: from, sent, to, cc or subject.
HEADER_FIELDS: Final[Mapping[str, str]] = {
    # English
    "from": "from",
    "sent": "sent",
    "date": "sent",
    "to": "to",
    "cc": "cc",
    "subject": "subject",
    # German
    "von": "from",
    "gesendet": "sent",
    "datum": "sent",
    "an": "to",
    "kopie": "cc",
    "betreff": "subject",
    # French
    "de": "from",  # also Spanish and Portuguese
    "envoyé": "sent",
    "à": "to",
    "objet": "subject",
    # Spanish, Portuguese
    "enviado": "sent",
    "enviada": "sent",
    "fecha": "sent",
    "para": "to",
    "asunto": "subject",
    "assunto": "subject",
    # Dutch
    "van": "from",
    "verzonden": "sent",
    "aan": "to",
    "onderwerp": "subject",
    # Danish, Norwegian, Swedish
    "fra": "from",
    "från": "from",
    "sendt": "sent",
    "dato": "sent",
    "skickat": "sent",
    "til": "to",
    "till": "to",
    "emne": "subject",
    "ämne": "subject",
    # Polish
    "od": "from",
    "wysłano": "sent",
    "do": "to",
    "temat": "subject",
    # Italian
    "da": "from",
    "data": "sent",
    "inviato": "sent",
    "a": "to",
    "oggetto": "subject",
    # Persian
    "از": "from",
    "ارسال شده": "sent",
    "ارسال": "sent",
    "تاریخ": "sent",
    "به": "to",
    "رونوشت": "cc",
    "موضوع": "subject",
    # Russian (Outlook: От:, Отправлено:, Кому:, Копия:, Тема:)
    "от": "from",
    "отправлено": "sent",
    "дата": "sent",
    "кому": "to",
    "копия": "cc",
    "тема": "subject",
    # Turkish (Outlook: Kimden:, Gönderildi:, Kime:, Bilgi:, Konu:)
    "kimden": "from",
    "gönderildi": "sent",
    "gönderilen": "sent",
    "tarih": "sent",
    "kime": "to",
    "bilgi": "cc",
    "konu": "subject",
    # Arabic (Outlook: من:, تم الإرسال:, إلى:, نسخة:, الموضوع:)
    "من": "from",
    "تم الإرسال": "sent",
    "التاريخ": "sent",
    "إلى": "to",
    "نسخة": "cc",
    "الموضوع": "subject",
}
# The fields Outlook's one-line header variant is recognised by, after its "From: A":
# "From: A Sent: Monday … To: B Subject: C".
INLINE_HEADER_FIELDS: Final[tuple[str, ...]] = (
    # English
    "sent",
    "date",
    "to",
    "subject",
    # German
    "gesendet",
    "an",
    "betreff",
    # French
    "envoyé",
    "objet",
    # Spanish
    "enviado",
    "asunto",
    # Dutch
    "verzonden",
    "aan",
    "onderwerp",
)
