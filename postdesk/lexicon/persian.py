"""How Persian text written many ways is folded to one spelling, for matching only.

`FOLDING` maps a character to what it becomes ("" removes it). Arabic yeh and kaf
(what Arabic keyboards and windows-1256 produce) become Persian ی and ک; Persian and
Arabic-Indic digits become ASCII; the zero-width non-joiner and its look-alikes, tatweel
and short-vowel marks are removed. ingest/textnorm.py applies it in Python; the search
index (tickets/search.py) applies the same table inside the database, so both agree.
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
