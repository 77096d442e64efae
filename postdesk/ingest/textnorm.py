"""Text normalization for matching, search and classification (never for display).

- `normalize_persian`: one spelling for text that Persian writers type many ways.
  Arabic yeh and kaf (ي ى ك, what Arabic keyboards and windows-1256 produce) become
  Persian ی and ک; Persian and Arabic-Indic digits become ASCII; the zero-width
  non-joiner and its look-alikes are removed, so "می‌خواهم" and "میخواهم" match;
  tatweel and short-vowel marks are dropped (the table is lexicon/persian.py, which the
  search index applies too). The original text is always what people see.
- `subject_key`: a subject without reply/forward prefixes in the common languages, ticket
  tags and list tags, case-folded, for "same subject" comparisons.
- `is_generic_subject`: subjects that say nothing ("help", "سوال", empty), which must
  never be used to join mail to a ticket.
"""

from __future__ import annotations

import re
import unicodedata

from postdesk.lexicon.persian import FOLDING
from postdesk.lexicon.prefixes import FORWARD_PREFIXES, REPLY_PREFIXES

_PERSIAN_MAP = str.maketrans({char: folded or None for char, folded in FOLDING.items()})


def normalize_persian(text: str) -> str:
    """`text` with Persian spelling variants unified (see the module docstring)."""
    return text.translate(_PERSIAN_MAP)


def to_ascii_digits(text: str) -> str:
    """Persian and Arabic-Indic digits as ASCII digits; nothing else changes."""
    return text.translate(_DIGITS_ONLY)


_DIGITS_ONLY = str.maketrans(
    {
        **{chr(0x06F0 + i): str(i) for i in range(10)},
        **{chr(0x0660 + i): str(i) for i in range(10)},
    }
)

# Reply and forward prefixes (lexicon/prefixes.py). Latin ones are matched case-insensitively.
# No two whitespace runs are adjacent in these patterns ("\s*\[2\]?\s*" would be), so a
# subject of spaces costs linear time.
_WORDS = sorted({*REPLY_PREFIXES, *FORWARD_PREFIXES}, key=len, reverse=True)
_PREFIX = re.compile(
    r"^\s*(?:"
    + "|".join(re.escape(w) for w in _WORDS)
    + r")\s*(?:(?:\[\d+\]|\(\d+\))\s*)?[:：]\s*",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"^\s*(?:"
    + "|".join(re.escape(w) for w in sorted(FORWARD_PREFIXES, key=len, reverse=True))
    + r")\s*(?:(?:\[\d+\]|\(\d+\))\s*)?[:：]",
    re.IGNORECASE,
)
_REPLY = re.compile(
    r"^\s*(?:"
    + "|".join(re.escape(w) for w in sorted(REPLY_PREFIXES, key=len, reverse=True))
    + r")\s*(?:(?:\[\d+\]|\(\d+\))\s*)?[:：]",
    re.IGNORECASE,
)
# Ticket tags [#12], list tags [support-list], and (fwd)-style trailers.
_TAGS = re.compile(r"\[\s*(?:#\s*)?[\w.\-۰-۹٠-٩ ]{1,40}\]|\(\s*fwd\s*\)", re.IGNORECASE)
_LEADING_TAG = re.compile(r"^\s*\[[^\]]{0,60}\]\s*")
_SPACE = re.compile(r"\s+")


def strip_prefixes(subject: str) -> str:
    """`subject` without leading reply/forward prefixes and tags (``Re: [#5] AW: Fwd:``)."""
    text = subject
    while True:
        shorter = _PREFIX.sub("", _LEADING_TAG.sub("", text, count=1), count=1)
        if shorter == text:
            return text.strip()
        text = shorter


def subject_key(subject: str) -> str:
    """The part of a subject that stays the same across a conversation, case-folded."""
    text = _TAGS.sub(" ", strip_prefixes(subject))
    text = normalize_persian(unicodedata.normalize("NFKC", text))
    return _SPACE.sub(" ", text).strip(" .:-").casefold()


def is_forward(subject: str) -> bool:
    """Whether `subject` starts with a forward prefix (``Fwd:``, ``WG:``, ``هدایت:`` ...)."""
    return _FORWARD.match(_TAGS.sub(" ", subject).strip()) is not None


def is_reply(subject: str) -> bool:
    """Whether `subject` starts with a reply prefix (``Re:``, ``AW:``, ``پاسخ:`` ...),
    tags such as ``[#12]`` or ``[list]`` before it ignored."""
    return _REPLY.match(_TAGS.sub(" ", subject).strip()) is not None


_GENERIC = {
    normalize_persian(w).casefold()
    for w in [
        "",
        "help",
        "help me",
        "help!",
        "question",
        "questions",
        "a question",
        "quick question",
        "hi",
        "hello",
        "hey",
        "hi there",
        "hello there",
        "support",
        "support request",
        "problem",
        "issue",
        "urgent",
        "important",
        "request",
        "inquiry",
        "enquiry",
        "info",
        "information",
        "no subject",
        "(no subject)",
        "untitled",
        "test",
        "contact",
        "contact form",
        "feedback",
        "complaint",
        "query",
        "order",
        "my order",
        "account",
        "hilfe",
        "frage",
        "anfrage",
        "problème",
        "question urgente",
        "ayuda",
        "pregunta",
        "vraag",
        "hulp",
        "سلام",
        "سلام و وقت بخیر",
        "کمک",
        "سوال",
        "سؤال",
        "یک سوال",
        "مشکل",
        "درخواست",
        "فوری",
        "پشتیبانی",
        "بدون موضوع",
        "پیگیری",
        "شکایت",
        "انتقاد",
        "پیشنهاد",
        "سفارش",
        "حساب کاربری",
    ]
}


def is_generic_subject(subject: str) -> bool:
    """Whether a subject is too generic to say two messages are about the same thing."""
    key = subject_key(subject).strip(" !?؟.")
    return key in _GENERIC or len(key) < 3
