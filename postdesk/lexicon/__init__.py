"""Phrase tables of mail, one module per concern, shared by every module that needs them.

Mail clients, autoresponders and mail servers write the same few phrases in many
languages: reply and forward prefixes (`prefixes`), the lines that introduce quoted or
forwarded history (`quoting`), sign-offs and "Sent from my …" footers (`signatures`),
out-of-office subjects (`autoreply`) and delivery-failure subjects (`bounces`). Each
table lives here once, so reading mail (ingest/) and writing it (notify/) agree on
them, and a language added for one reader is known to all.

The modules hold data and nothing that matches: the patterns are built by the modules
that use them. They import nothing from postdesk, so any layer may use them.

Tables of plain phrases are lower-case and turned into a pattern with `any_phrase`; a few
tables whose phrases vary inside (optional words, a following name) are regular
expression fragments, which their module says. Either way a phrase never contains a
nested or unbounded repetition that could overlap its neighbours: hostile mail reaches
every pattern built from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["ZWNJ", "any_phrase", "phrase_pattern"]

# In a phrase, the zero-width non-joiner stands for "a space, a ZWNJ or nothing": Persian
# writers join "پیام‌هدایت" with a ZWNJ, a space, or not at all.
ZWNJ: Final = "\u200c"
_PIECES: Final = re.compile(r"( +|\u200c|['’])")


def phrase_pattern(phrase: str) -> str:
    """A regular expression matching `phrase` as mail writes it (case is the caller's flag).

    Spaces match any run of whitespace, a ZWNJ matches any run of spaces and ZWNJs or
    nothing, and an apostrophe matches both ' and ’; everything else is literal.
    """
    out: list[str] = []
    for piece in _PIECES.split(phrase):
        if not piece:
            continue
        if piece.startswith(" "):
            out.append(r"\s+")
        elif piece == ZWNJ:
            out.append(r"[\s\u200c]*")
        elif piece in ("'", "’"):
            out.append("['’]")
        else:
            out.append(re.escape(piece))
    return "".join(out)


def any_phrase(phrases: Iterable[str]) -> str:
    """A non-capturing group matching any of `phrases` (longest first, see phrase_pattern)."""
    unique = sorted(set(phrases), key=lambda phrase: (-len(phrase), phrase))
    return "(?:" + "|".join(phrase_pattern(phrase) for phrase in unique) + ")"
