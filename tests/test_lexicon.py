"""The phrase tables of postdesk.lexicon, and the readers that share them agreeing.

Each concern has one table; these tests check the tables' form (lower-case, no
duplicates, patterns that stay fast on hostile text) and that every module using a table
knows every phrase in it: the threader's customer-forward rule and the visible-reply
reader both know each forward marker, in every language either knew before.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from postdesk.ingest.parse import parse_message
from postdesk.ingest.quotes import visible_text
from postdesk.ingest.textnorm import is_forward, strip_prefixes
from postdesk.ingest.threader import _is_customer_forward
from postdesk.lexicon import ZWNJ, any_phrase, phrase_pattern
from postdesk.lexicon.prefixes import FORWARD_PREFIXES, REPLY_PREFIXES
from postdesk.lexicon.quoting import (
    ATTRIBUTION_OPENERS,
    ATTRIBUTION_VERBS,
    FORWARD_MARKERS,
    HEADER_FIELDS,
    ORIGINAL_MESSAGE_MARKERS,
)
from postdesk.lexicon.signatures import SIGN_OFFS

PLAIN_TABLES = {
    "REPLY_PREFIXES": REPLY_PREFIXES,
    "FORWARD_PREFIXES": FORWARD_PREFIXES,
    "ATTRIBUTION_OPENERS": ATTRIBUTION_OPENERS,
    "ATTRIBUTION_VERBS": ATTRIBUTION_VERBS,
    "ORIGINAL_MESSAGE_MARKERS": ORIGINAL_MESSAGE_MARKERS,
    "FORWARD_MARKERS": FORWARD_MARKERS,
    "HEADER_FIELDS": tuple(HEADER_FIELDS),
    "SIGN_OFFS": SIGN_OFFS,
}


@pytest.mark.parametrize("name", sorted(PLAIN_TABLES))
def test_plain_tables_are_lower_case_and_without_duplicates(name: str) -> None:
    phrases = PLAIN_TABLES[name]
    assert all(phrase == phrase.lower() and phrase.strip() == phrase for phrase in phrases)
    assert len(set(phrases)) == len(phrases)


def test_header_fields_say_what_they_mean() -> None:
    assert set(HEADER_FIELDS.values()) == {"from", "sent", "to", "cc", "subject"}


def test_phrase_pattern_spaces_zwnj_and_apostrophes() -> None:
    pattern = re.compile(any_phrase(["message d'origine", f"پیام{ZWNJ}هدایت", "a.b"]), re.I)
    assert pattern.fullmatch("Message  d’origine")
    assert pattern.fullmatch("پیام هدایت")
    assert pattern.fullmatch("پیام\u200cهدایت")
    assert pattern.fullmatch("پیامهدایت")
    assert pattern.fullmatch("a.b") and not pattern.fullmatch("axb")
    assert phrase_pattern("w dniu") == r"w\s+dniu"


# Forward markers as clients write them: a rule of dashes, the marker, maybe more words.
FORWARD_LINES = {
    "en": "---------- Forwarded message ---------",
    "de": "---------- Weitergeleitete Nachricht ---------",
    "fr": "---------- Message transféré ---------",
    "es": "---------- Mensaje reenviado ---------",
    "nl": "---------- Doorgestuurd bericht ---------",
    "da": "---------- Videresendt meddelelse ----------",
    "no": "---------- Videresendt melding ---------",
    "sv": "---------- Vidarebefordrat meddelande ---------",
    "pl": "---------- Wiadomość przekazana dalej ---------",
    "it": "---------- Messaggio inoltrato ---------",
    "pt": "---------- Mensagem encaminhada ---------",
    "fa": "---------- پیام هدایت\u200cشده ---------",
    "fa-space": "---------- پیام بازارسال شده ---------",
    "outlook-de": "-----Ursprüngliche Nachricht-----",
    "outlook-it": "-----Messaggio originale-----",
}


def forward_mail(subject: str, body: str) -> bytes:
    return (
        "From: Alice <alice@example.com>\r\nTo: support@example.org\r\n"
        f"Subject: {subject}\r\nMessage-ID: <fw@example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace("\n", "\r\n")
    ).encode()


@pytest.mark.parametrize("language", sorted(FORWARD_LINES))
def test_threader_knows_every_forward_marker(language: str) -> None:
    body = f"Please look at this.\n\n{FORWARD_LINES[language]}\nFrom: Bob <bob@example.net>\nHi\n"
    assert _is_customer_forward(parse_message(forward_mail("Fwd: Invoice", body)))
    # Without a forward prefix in the subject, it is a reply quoting history, not a forward.
    assert not _is_customer_forward(parse_message(forward_mail("Re: Invoice", body)))


def test_threader_still_knows_apple_mail_and_ignores_marker_words_in_text() -> None:
    apple = "See below.\n\nBegin forwarded message:\n\nFrom: Bob <bob@example.net>\nHi\n"
    assert _is_customer_forward(parse_message(forward_mail("Fwd: Invoice", apple)))
    prose = "I forwarded message after message about this, please answer.\n"
    assert not _is_customer_forward(parse_message(forward_mail("Fwd: Invoice", prose)))


@pytest.mark.parametrize("language", [k for k in sorted(FORWARD_LINES) if "outlook" not in k])
def test_quotes_keep_a_forwarded_header_block_in_every_language(language: str) -> None:
    # The header block under a forward marker is the forwarded content, not history.
    body = (
        f"Please look at this.\n\n{FORWARD_LINES[language]}\n"
        "From: Bob <bob@example.net>\nDate: Mon, 2 Mar 2026\nSubject: Invoice\nTo: alice\n\n"
        "The invoice is attached.\n"
    )
    assert "The invoice is attached." in visible_text(body)


def test_prefix_tables_reach_subject_matching() -> None:
    for prefix in REPLY_PREFIXES:
        assert strip_prefixes(f"{prefix.upper()}: Order 5") == "Order 5", prefix
    for prefix in FORWARD_PREFIXES:
        assert is_forward(f"{prefix}: Order 5"), prefix


def test_threader_forward_pattern_reads_hostile_lines_as_no_forward() -> None:
    """Runs of dashes and spaces around a forward marker are no inline forward. (How long
    such lines take, against a tenth of their size, is `bench/quotes.py`'s to measure.)"""
    hostile = ("-" * 50_000 + " forwarded message" + " " * 50_000 + "x\n") * 4
    hostile += "پیام" + " " * 100_000 + "x\n"
    assert not _is_customer_forward(parse_message(forward_mail("Fwd: x", hostile)))


SPACES = " " * 100_000


@pytest.mark.parametrize(
    ("read", "hostile", "expected"),
    [
        (strip_prefixes, "Re" + SPACES + "x", "Re" + SPACES + "x"),
        (is_forward, "Fwd" + SPACES + "x", False),
        (strip_prefixes, "[" + SPACES + "x", "[" + SPACES + "x"),
        (visible_text, "Hi\n\nFrom" + SPACES + "x:\n", "Hi\n\nFrom" + SPACES + "x:"),
    ],
    ids=["reply-prefix", "forward-prefix", "tag", "header-field"],
)
def test_long_runs_of_spaces_are_no_prefix_tag_or_header(
    read: Callable[[str], object], hostile: str, expected: object
) -> None:
    """What lexicon patterns make of the input that once made them quadratic (each took
    seconds per 20,000 spaces); their time is measured in `bench/quotes.py`."""
    assert read(hostile) == expected


def test_a_forward_marker_followed_by_spaces_is_no_quote_header() -> None:
    text = "Hi\n\nپیام" + SPACES + "x\nFrom: a@b.example\nDate: 1\nTo: c\n"
    assert visible_text(text).startswith("Hi\n\nپیام" + SPACES + "x")
