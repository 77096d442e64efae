"""Text from outside (mail, its headers, file names) made safe to print on a terminal.

Below every layer, so the ticket views, the command line and QA's transcript can all use
the one function; `postdesk.clikit` re-exports it for commands.
"""

from __future__ import annotations

import re

# Escape sequences as terminals read them, each matched in linear time: CSI (ESC [ or the
# one-byte 0x9b, parameters, a final byte: cursor moves, screen clears, colours), OSC,
# DCS, SOS, PM and APC strings (ESC ] / P / X / ^ / _ or their one-byte forms, up to BEL
# or ST: window titles, OSC 52 clipboard writes, OSC 8 links), and two-byte ESC forms.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)
# What is left of C0 and C1 controls and DEL, except tab and newline, and the explicit
# bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): mail
# could use those to reorder what a line shows ("Trojan Source"), or leave one open so it
# turns the columns after it around. The marks LRM, RLM and ALM and the Persian ZWNJ stay.
_UNSAFE = dict.fromkeys(
    [c for c in range(0x20) if c not in (0x09, 0x0A)]
    + list(range(0x7F, 0xA0))
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)


def terminal_safe(text: str) -> str:
    """`text` from mail (or anyone outside) made harmless to print on a terminal: escape
    sequences removed whole, other control characters and bidirectional overrides dropped,
    newlines and tabs kept; a CR-LF becomes a newline and a lone CR a newline too (a bare CR
    would let a line overwrite itself). Every command that prints mail content uses this."""
    if text.isprintable():
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ESCAPES.sub("", text).translate(_UNSAFE)
