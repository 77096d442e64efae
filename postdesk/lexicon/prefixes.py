"""Subject prefixes that mail clients put before a reply's or a forward's subject.

Plain, lower-case words (matched case-insensitively), without the colon that follows
them. A prefix may belong to both tables: clients in different languages use the same
letters for different things ("VS:" is a Finnish reply and a Norwegian forward).
"""

from __future__ import annotations

from typing import Final

REPLY_PREFIXES: Final[tuple[str, ...]] = (
    # Latin "in re": English and most clients in any language
    "re",
    # German
    "aw",
    "antwort",
    # Dutch and German
    "antw",
    # Danish, Norwegian, Swedish
    "sv",
    # Finnish (vastaus)
    "vs",
    # Italian
    "r",
    "rif",
    # Polish
    "odp",
    # Spanish and Portuguese "RV:" (reenviado) is a forward; some clients put it on
    # replies, so it was listed here too
    "rv",
    # Turkish (yanıt)
    "ynt",
    # Portuguese (resposta)
    "res",
    # Latvian (atbilde)
    "atb",
    # Hungarian (válasz)
    "vá",
    # Greek
    "απ",
    "σχετ",
    # Russian
    "отв",
    # Chinese (simplified, traditional)
    "回复",
    "答复",
    "回覆",
    # Korean
    "답장",
    # Japanese
    "返信",
    # Persian
    "پاسخ",
    "جواب",
    "ج",
    # Arabic
    "رد",
)

FORWARD_PREFIXES: Final[tuple[str, ...]] = (
    # English
    "fwd",
    "fw",
    # German (weitergeleitet)
    "wg",
    # French (transféré)
    "tr",
    # Portuguese (encaminhado)
    "enc",
    # Italian (inoltrato)
    "i",
    # Polish (przekazane dalej)
    "pd",
    # Dutch (doorgestuurd)
    "doorst",
    # Finnish (välitetty)
    "vl",
    # Norwegian (videresendt)
    "vs",
    # Spanish (reenviado)
    "rv",
    # Turkish: "YNT:" is a reply (yanıt); it has been read as a forward too
    "ynt",
    # Hungarian
    "továbbítás",
    # Greek
    "προώθ",
    # Russian
    "пересл",
    # Chinese (simplified, traditional)
    "转发",
    "轉寄",
    # Korean
    "전달",
    # Japanese
    "転送",
    # Persian
    "هدایت",
    "بازارسال",
    "باز ارسال",
    "ارسال مجدد",
    "فوروارد",
    "فوروارد شده",
)
