"""Normalization for matching: Persian spelling variants, subject keys, generic subjects."""

from __future__ import annotations

import pytest

from postdesk.ingest.textnorm import (
    is_forward,
    is_generic_subject,
    normalize_persian,
    strip_prefixes,
    subject_key,
    to_ascii_digits,
)


def test_persian_variants_become_one_spelling() -> None:
    typed_on_arabic_keyboard = "مشكل در ورود به حساب كاربري"
    typed_on_persian_keyboard = "مشکل در ورود به حساب کاربری"
    assert normalize_persian(typed_on_arabic_keyboard) == typed_on_persian_keyboard
    assert normalize_persian("می‌خواهم") == normalize_persian("میخواهم")
    assert normalize_persian("سفارش ۱۲۳ و ٤٥٦") == "سفارش 123 و 456"
    assert normalize_persian("كـــتاب") == "کتاب"  # tatweel
    assert normalize_persian("مُحَمَّد") == "محمد"  # short vowels
    assert normalize_persian("plain English") == "plain English"


def test_ascii_digits_only_touches_digits() -> None:
    assert to_ascii_digits("تیکت ۴۲ ٧") == "تیکت 42 7"


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("Re: AW: Fwd: Order 123 missing", "order 123 missing"),
        ("RE[2]: Invoice wrong", "invoice wrong"),
        ("Re: [#12] Re: printer broken", "printer broken"),
        ("[support-list] Re: printer broken (fwd)", "printer broken"),
        ("SV: VS: Tilaus", "tilaus"),
        ("Antw: Rif: R: bestelling", "bestelling"),
        ("WG: TR: Enc: pedido", "pedido"),
        ("回复：订单问题", "订单问题"),
        ("پاسخ: سفارش ۴۵۶۷ [#۳]", "سفارش 4567"),
        ("رد: هدایت: مشكل پرداخت", "مشکل پرداخت"),
        ("  Order   123  ", "order 123"),
        ("Ref: invoice 9", "ref: invoice 9"),  # "Ref" is a word here, not a prefix
    ],
)
def test_subject_key(subject: str, key: str) -> None:
    assert subject_key(subject) == key


def test_strip_prefixes_keeps_the_original_text() -> None:
    assert strip_prefixes("Re: Fwd: Bestellung Nr. 5") == "Bestellung Nr. 5"


@pytest.mark.parametrize(
    ("subject", "forward"),
    [
        ("Fwd: invoice", True),
        ("FW: invoice", True),
        ("WG: Rechnung", True),
        ("هدایت: فاکتور", True),
        ("[#3] Fwd: invoice", True),
        ("Re: Fwd: invoice", False),
        ("Forward planning", False),
        ("invoice", False),
    ],
)
def test_is_forward(subject: str, forward: bool) -> None:
    assert is_forward(subject) is forward


@pytest.mark.parametrize(
    "subject",
    ["", "Help", "Re: help!", "question", "(no subject)", "سلام", "Re: سوال", "سؤال", "مشكل", "hi"],
)
def test_generic_subjects(subject: str) -> None:
    assert is_generic_subject(subject)


@pytest.mark.parametrize(
    "subject", ["Refund for order 123", "Cannot log in", "مشکل ورود به حساب", "订单问题"]
)
def test_specific_subjects(subject: str) -> None:
    assert not is_generic_subject(subject)
