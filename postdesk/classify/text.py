"""Text as the classifier's features see it (never what people see).

One spelling for what people type many ways: Unicode compatibility forms folded (NFKC),
Persian variants unified (`normalize_persian`: Arabic yeh/kaf, ZWNJ, Persian digits),
case folded, every digit written as 0 (ticket and order numbers say nothing about the
category, their shape sometimes does), and addresses and links replaced by a word. A
very long message is cut: its opening says what it is about, and the cut keeps one
prediction well under the pipeline's time budget.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from postdesk.ingest.textnorm import normalize_persian

MAX_CHARS = 4000

_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DIGIT = re.compile(r"\d")
_SPACE = re.compile(r"\s+")


def prepare_text(text: str) -> str:
    """`text` normalized for n-gram features (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS])
    text = normalize_persian(text).casefold()
    text = _URL.sub(" _url_ ", text)
    text = _EMAIL.sub(" _email_ ", text)
    text = _DIGIT.sub("0", text)
    return _SPACE.sub(" ", text).strip()


def ticket_matrix(
    subjects: list[str] | tuple[str, ...], bodies: list[str] | tuple[str, ...]
) -> NDArray[Any]:
    """What every model takes as input: one row per ticket, columns (subject, body)."""
    rows = np.empty((len(subjects), 2), dtype=object)
    rows[:, 0] = list(subjects)
    rows[:, 1] = list(bodies)
    return rows


def join_subject_body(rows: NDArray[Any]) -> list[str]:
    """Subject and body as one text per row (what the plain baseline model reads)."""
    return [f"{subject} {body}" for subject, body in rows]
