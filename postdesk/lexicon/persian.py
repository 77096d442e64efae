"""How Persian text written many ways is folded to one spelling, for matching only.

`FOLDING` maps a character to what it becomes ("" removes it). Arabic yeh and kaf
(what Arabic keyboards and windows-1256 produce) become Persian ی and ک; Persian and
Arabic-Indic digits become ASCII; the zero-width non-joiner and its look-alikes, tatweel
and short-vowel marks are removed. ingest/textnorm.py applies it in Python; the search
index (tickets/search.py) applies the same table inside the database (in SQL, or on
SQLite by calling `index_text` below), so both agree.
"""

from __future__ import annotations

from typing import Final

ZERO_WIDTH_NON_JOINER: Final = "\u200c"

FOLDING: Final[dict[str, str]] = {
    "ي": "ی",  # ARABIC LETTER YEH
    "ى": "ی",  # ARABIC LETTER ALEF MAKSURA
    "ك": "ک",  # ARABIC LETTER KAF
    "ۀ": "ه",  # HEH WITH YEH ABOVE (Ezafe) - matched as plain heh
    "ة": "ه",  # TEH MARBUTA
    "ـ": "",  # TATWEEL (kashida)
    ZERO_WIDTH_NON_JOINER: "",
    "\u200d": "",  # ZERO WIDTH JOINER
    "\u200f": "",  # RIGHT-TO-LEFT MARK
    "\u200e": "",  # LEFT-TO-RIGHT MARK
    "\u00ad": "",  # SOFT HYPHEN (sometimes typed for ZWNJ)
    **{chr(0x06F0 + i): str(i) for i in range(10)},  # Persian digits
    **{chr(0x0660 + i): str(i) for i in range(10)},  # Arabic-Indic digits
    **{chr(c): "" for c in range(0x064B, 0x0653)},  # harakat (short vowels etc.)
    "\u0670": "",  # superscript alef
}

_ZWNJ_UTF8: Final = ZERO_WIDTH_NON_JOINER.encode()
_FOLDING_UTF8: Final = tuple((char.encode(), folded.encode()) for char, folded in FOLDING.items())


def index_text(value: bytes | str | None) -> bytes | None:
    """Text as the search index holds it (tickets/search.py), in UTF-8: where it has a
    ZWNJ, followed by a space and a copy with each ZWNJ made a space (so words written
    with one are found joined and split), then folded with `FOLDING`.

    This is SQLite's `postdesk_fold` function (postdesk/models/db.py registers it on
    every connection postdesk opens): it gives, byte for byte, what the SQL expression
    of tickets/search.py's `indexed_rows` gives (instr() in a CASE, then one replace()
    per entry of `FOLDING`, in order), by doing the same: on valid UTF-8 the replace()
    calls work on whole characters, as str.replace does here; bytes that are not valid
    UTF-8 are replaced as bytes, as SQLite's replace() does. The triggers pass
    `CAST(... AS BLOB)` and cast the result back to text: given text, Python's sqlite3
    module would fail the statement on bytes that are not UTF-8 before calling this.
    NULL stays NULL.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif value.isascii():  # none of the folded characters, which are all beyond ASCII
        return value
    else:
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return _index_bytes(value)
    if ZERO_WIDTH_NON_JOINER in text:
        text = text + " " + text.replace(ZERO_WIDTH_NON_JOINER, " ")
    for char, folded in FOLDING.items():
        if char in text:  # most are not: the test is cheaper than a copy
            text = text.replace(char, folded)
    return text.encode()


def _index_bytes(data: bytes) -> bytes:
    """`index_text` of bytes that are not valid UTF-8, replaced as bytes as SQLite does
    (slower than characters: searching two-byte sequences in Persian UTF-8 is)."""
    if _ZWNJ_UTF8 in data:
        data = data + b" " + data.replace(_ZWNJ_UTF8, b" ")
    for char, folded in _FOLDING_UTF8:
        data = data.replace(char, folded)
    return data
