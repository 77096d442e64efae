"""Out-of-office and automatic-reply phrases, as autoresponders write them in subjects.

Regular expression fragments, written already case-folded (str.casefold), for short
optional parts ("automatische (?:antwort|rückantwort)"); every repetition in them is
bounded. Readers put the phrases and the subject through the same folding before
matching (Arabic yeh and kaf as Persian ones, a ZWNJ as a space), so a phrase is
written once, in either spelling.
"""

from __future__ import annotations

from typing import Final

# Subjects an autoresponder starts with: "Automatic reply: …", "Abwesenheitsnotiz".
OOF_PHRASES: Final[tuple[str, ...]] = (
    # English
    r"auto(?:matic|mated)?[- ]?(?:reply|response|answer|responder)",
    r"out[- ]of[- ](?:the[- ])?office(?: (?:auto[- ]?reply|reply|notice|message|notification))?",
    r"away from (?:the|my) (?:office|desk|mail|e-?mail)",
    r"vacation (?:auto[- ]?reply|reply|response|notice|message)",
    # German
    r"automatische (?:antwort|rückantwort|abwesenheitsnotiz)",
    r"abwesenheits(?:notiz|nachricht|meldung|benachrichtigung)",
    r"(?:ich bin )?nicht im (?:büro|buero)",
    r"(?:ich bin )?ausser (?:haus|hause|dienst)",
    # French
    r"r[ée]ponse automatique",
    r"absente? du bureau",
    r"absence du bureau",
    r"message d'absence",
    # Spanish
    r"respuesta autom[aá]tica",
    r"fuera de (?:la )?oficina",
    r"ausente de la oficina",
    r"(?:mensaje|respuesta) de ausencia",
    # Dutch
    r"automatisch (?:antwoord|bericht)",
    r"afwezigheids(?:bericht|melding|notitie)",
    r"niet (?:aanwezig|op kantoor)",
    r"buiten kantoor",
    # Italian, Portuguese
    r"risposta automatica",
    r"fuori (?:ufficio|sede)",
    r"resposta autom[aá]tica",
    r"(?:fora|ausente) do escrit[oó]rio",
    # Scandinavian, Finnish
    r"autosvar",
    r"automatiskt? svar",
    r"automaattinen vastaus",
    r"poissa toimistolta",
    # Polish, Czech, Hungarian, Romanian, Greek
    r"automatyczna odpowied[źz]",
    r"poza biurem",
    r"automatick[áa] odpov[ěe][ďd]",
    r"mimo kancel[áa][řr]",
    r"automatikus v[áa]lasz",
    r"r[ăa]spuns automat",
    r"αυτόματη απάντηση",
    # Russian, Ukrainian, Turkish
    r"автоматический ответ",
    r"автоответ",
    r"вне офиса",
    r"автоматична відповідь",
    r"otomatik (?:yan[ıi]t|cevap)",
    r"ofis d[ıi][şs][ıi]nda",
    # Arabic, Hebrew
    r"(?:ال)?رد (?:ال)?تلقائي",
    r"خارج المكتب",
    r"תשובה אוטומטית",
    r"מחוץ למשרד",
    # Persian (after _fold: Persian yeh and kaf, ZWNJ as a space)
    r"پاسخ (?:خودکار|اتوماتیک)",
    r"پیام خودکار",
    r"خارج از (?:دفتر|اداره|محل کار)(?: هستم| هستیم)?",
    r"عدم حضور در (?:دفتر|اداره|محل کار)",
    # Chinese, Japanese, Korean
    r"自动回复",
    r"自动答复",
    r"自動回覆",
    r"自動回復",
    r"自動応答",
    r"自動返信",
    r"자동 ?회신",
    r"자동 ?응답",
)

# Sentences a vacation script writes into the subject: "Jane Doe is out of the office".
OOF_SENTENCES: Final[tuple[str, ...]] = (
    # English
    r"(?:is|am) (?:currently )?out of (?:the )?office",
    # German
    r"ist (?:zurzeit |derzeit )?(?:nicht im (?:büro|buero)|abwesend|ausser haus)",
    # French
    r"est absente?(?: du bureau)?",
    # Spanish
    r"está fuera de (?:la )?oficina",
    # Dutch
    r"is afwezig",
)

# Words that continue such a subject with a date: "Out of office until 3 June".
OOF_UNTIL_WORDS: Final[tuple[str, ...]] = (
    # English
    "until",
    "till",
    # German
    "bis",
    # French ("jusqu'au")
    "jusqu",
    # Spanish
    "hasta",
    # Dutch
    "tot",
    # Italian
    "fino",
)
