"""Which language to answer a person in, guessed from what they wrote: "fa" or "en".

Only letters vote: digits, punctuation, URLs' slashes and emoji say nothing about the
language, and a Persian mail quoting an English product name is still Persian. Text with
no letters at all (empty, "12345") is "en", the default. One pass over the text, no
regular expressions, so a huge or hostile body costs linear time.
"""

from __future__ import annotations

from typing import Final

# Arabic-script blocks: Arabic, Arabic Supplement, Arabic Extended-A, and the two
# presentation-form blocks that old software and some PDFs-to-text produce. Persian
# letters (پ چ ژ گ ی ک) live in the first block.
_ARABIC_SCRIPT: Final = (
    (0x0600, 0x06FF),
    (0x0750, 0x077F),
    (0x08A0, 0x08FF),
    (0xFB50, 0xFDFF),
    (0xFE70, 0xFEFF),
)


def _is_arabic_script(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _ARABIC_SCRIPT)


def language_of(text: str) -> str:
    """The language to answer `text` in: "fa" when most of its letters are Arabic script."""
    persian = other = 0
    for char in text:
        if char.isalpha():
            if _is_arabic_script(char):
                persian += 1
            else:
                other += 1
    return "fa" if persian > other else "en"
