"""What people and their mail programs write below the message: sign-offs and footers.

`SIGN_OFFS` are plain, lower-case phrases. `MOBILE_FOOTERS` and `MAIL_FOOTER_PHRASES` are
regular expression fragments (matched case-insensitively): a footer names the device or
app after a fixed start ("Sent from my " + up to five words), which a plain phrase cannot
say. Every repetition in them is bounded, and words are separated by whitespace.
"""

from __future__ import annotations

from typing import Final

# The closing line above a name: "Regards,", "Mit freundlichen Grüßen", "با احترام".
SIGN_OFFS: Final[tuple[str, ...]] = (
    # English
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "warmest regards",
    "best wishes",
    "all the best",
    "many thanks",
    "thanks",
    "thank you",
    "thanks again",
    "thanks in advance",
    "thank you in advance",
    "thx",
    "cheers",
    "best",
    "sincerely",
    "yours sincerely",
    "sincerely yours",
    "yours truly",
    "yours",
    "respectfully",
    "take care",
    "with thanks",
    # German
    "grüße",
    "gruß",
    "viele grüße",
    "liebe grüße",
    "beste grüße",
    "herzliche grüße",
    "schöne grüße",
    "freundliche grüße",
    "mit freundlichen grüßen",
    "mit freundlichem gruß",
    "mit besten grüßen",
    "vielen dank",
    "danke",
    "lg",
    "vg",
    "mfg",
    # French
    "cordialement",
    "bien cordialement",
    "bien à vous",
    "merci",
    "merci beaucoup",
    "amicalement",
    "salutations",
    "sincères salutations",
    "bonne journée",
    # Spanish
    "saludos",
    "un saludo",
    "saludos cordiales",
    "atentamente",
    "cordialmente",
    "gracias",
    "muchas gracias",
    "un abrazo",
    # Dutch
    "met vriendelijke groet",
    "met vriendelijke groeten",
    "vriendelijke groet",
    "vriendelijke groeten",
    "hartelijke groet",
    "hartelijke groeten",
    "groeten",
    "groet",
    "mvg",
    "bedankt",
    "alvast bedankt",
    # Danish, Norwegian
    "med venlig hilsen",
    "venlig hilsen",
    "med vennlig hilsen",
    "vennlig hilsen",
    "hilsen",
    "mvh",
    "vh",
    "kh",
    # Swedish
    "med vänlig hälsning",
    "vänliga hälsningar",
    "vänlig hälsning",
    "hälsningar",
    "tack",
    # Polish
    "pozdrawiam",
    "serdecznie pozdrawiam",
    "z poważaniem",
    "z powazaniem",
    # Persian
    "با احترام",
    "با سپاس",
    "با تشکر",
    "با سپاس فراوان",
    "با احترام و سپاس",
    "سپاس",
    "سپاسگزارم",
    "ممنون",
    "ممنونم",
    "متشکرم",
    "ارادتمند",
    "قربان شما",
    # Russian
    "с уважением",
    "с наилучшими пожеланиями",
    "всего доброго",
    "всего хорошего",
    "спасибо",
    "заранее спасибо",
    # Turkish
    "saygılarımla",
    "saygılar",
    "teşekkürler",
    "teşekkür ederim",
    "iyi çalışmalar",
    # Arabic
    "مع التحية",
    "مع خالص التحية",
    "تحياتي",
    "شكرا",
    "شكراً",
    "مع الشكر",
)

# A word of a device or app name: "iPhone", "Samsung Galaxy S21", "Outlook.com".
_WORD: Final = r"[\w'’.&+\-]+"


def _words(most: int) -> str:
    return rf"{_WORD}(?:\s+{_WORD}){{0,{most - 1}}}"


# "Sent from my iPhone", "Get Outlook for Android": the whole footer line.
MOBILE_FOOTERS: Final[tuple[str, ...]] = (
    # English ("Sent from a …" is a sentence, not a footer)
    rf"sent\s+from\s+(?!an?\s)(?:my\s+)?{_words(5)}",
    rf"sent\s+(?:with|via|using)\s+{_words(5)}",
    r"get\s+outlook\s+for\s+(?:ios|android)",
    # German
    rf"(?:von\s+meinem|gesendet\s+von(?:\s+meinem)?|gesendet\s+mit)\s+{_words(4)}",
    r"holen\s+sie\s+sich\s+outlook\s+für\s+(?:ios|android)",
    # French
    rf"envoyé\s+(?:de|depuis|avec)\s+(?:mon\s+|ma\s+)?{_words(4)}",
    r"obtenir\s+outlook\s+pour\s+(?:ios|android)",
    # Spanish
    rf"enviado\s+(?:desde|con)\s+(?:mi\s+)?{_words(4)}",
    r"obtener\s+outlook\s+para\s+(?:ios|android)",
    # Dutch
    rf"(?:verzonden|verstuurd)\s+(?:vanaf|met|van|via)\s+(?:mijn\s+)?{_words(4)}",
    r"outlook\s+voor\s+(?:ios|android)\s+downloaden",
    # Danish, Norwegian, Swedish
    rf"(?:sendt|skickat)\s+fr(?:a|å)n?\s+(?:min\s+)?{_words(4)}",
    # Polish
    rf"wysłane\s+z\s+(?:mojego\s+)?{_words(4)}",
    # Persian ("ارسال شده از آیفون من"; Outlook's "دریافت Outlook برای Android")
    r"(?:ارسال|فرستاده)[\s\u200c]*شده\s+(?:از|با)\s+[^\n]{1,40}",
    r"دریافت\s+outlook\s+برای\s+(?:ios|android)",
    # Russian ("Отправлено с iPhone", "Отправлено из мобильной Почты Mail.ru")
    rf"отправлено\s+(?:с|со|из)\s+{_words(4)}",
    r"получить\s+outlook\s+для\s+(?:ios|android)",
    # Turkish ("iPhone'umdan gönderildi", "Samsung cihazımdan gönderildi"): the word before
    # the verb says "from my …", so "Paketiniz gönderildi" (your parcel was sent) is no footer.
    rf"(?:{_WORD}\s+){{0,3}}[\w'’]*m(?:dan|den)\s+gönderildi",
    # Arabic (iOS: "أُرسلت من الـ iPhone الخاص بي"); only with the device named, because
    # "أرسلت من …" is also how a sentence starts.
    r"(?:أُرسلت|أرسلت)\s+من\s+(?:الـ\s*)?(?:iphone|ipad)[^\n]{0,30}",
)

# Words of what mail systems add below a message: legal disclaimers, list footers.
MAIL_FOOTER_PHRASES: Final[tuple[str, ...]] = (
    # English
    r"confidential",
    r"intended\s+(?:solely|only|recipient)",
    r"privileged",
    r"disclaimer",
    r"unsubscribe",
    r"virus",
    r"you\s+are\s+receiving\s+this",
    r"reply\s+to\s+this\s+email",
    r"view\s+it\s+on",
    r"mailing\s+list",
    # German
    r"vertraulich",
    # French
    r"confidentiel",
    # Spanish, Portuguese
    r"confidencial",
    # Dutch
    r"vertrouwelijk",
    # Persian
    r"محرمانه",
)
