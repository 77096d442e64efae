"""Linear time on hostile input, checked without a clock.

Two checks, both deterministic:

- The regexes of postdesk/ingest and postdesk/lexicon are read with the stdlib's own
  regex parser. None may nest an unbounded quantifier inside another unless the inner one
  is cut off by a character the outer one must consume (listed below with that reason),
  and none may start with an unbounded repeat unless its use anchors it (fullmatch,
  match at a line's start) or the repeat cannot fail after it: an unanchored search for
  `[ \\t]+$` retries from every space of a run, the square of the run's length. A new
  pattern of either shape fails the test until someone looks at it.
- Each text transform is fed a pathological input of size n and 4n, and the Python lines
  executed (counted with sys.settrace, in postdesk and in the libraries it calls) may grow
  at most ~4 times, with slack, where a quadratic transform grows 16 times; the output
  must stay within a constant factor of the input.

Times are bench/hostile.py's business (it prints the scaling of the same transforms).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from collections.abc import Callable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from types import FrameType
from typing import Any

import pytest

import postdesk.ingest
import postdesk.lexicon
from postdesk.ingest.automatic import kind_of_mail
from postdesk.ingest.charset import decode_header_value
from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.parse import message_id_list, parse_message
from postdesk.ingest.quotes import reply_text, visible_text
from postdesk.ingest.textnorm import subject_key
from postdesk.testing.hostile import deep_mime

# Nested unbounded quantifiers that cannot backtrack into each other.
NESTED_OK = {
    "postdesk.ingest.automatic._ADDRESS": "domain labels (?:\\.[\\w-]+)+ each begin with a dot",
    "postdesk.ingest.automatic._LISTED_ADDRESS": "the same address; anchored at a line start",
    "postdesk.ingest.automatic._INLINE_FAILURE": "the same address after literal words",
    "postdesk.ingest.parse._LEADING_BLANK_LINES": "\\A, and each line ends with a newline",
}
# Patterns starting with an unbounded repeat, and why that is linear where they are used.
LEADING_OK = {
    "postdesk.ingest.automatic._NULL_PATH": "fullmatch",
    "postdesk.ingest.charset._CHARSET_TOKEN": "match at position 0",
    "postdesk.ingest.htmltext._EXTRA_BLANK_LINES": "a run shorter than 4 fails within 4",
    "postdesk.ingest.htmltext._SPACES": "a run always matches",
    "postdesk.ingest.parse._FIELD_LINE": "match at a line's start",
    "postdesk.ingest.parse._FOLDING": "the second branch takes any run the first rejects",
    "postdesk.ingest.parse._ID_SEPARATORS": "split: a run always matches",
    "postdesk.ingest.parse._CONTENT_TYPE": "fullmatch",
    "postdesk.ingest.quotes._ORIGINAL_MESSAGE": "fullmatch on one line",
    "postdesk.ingest.quotes._HEADER_FIELD": "match at a line's start",
    "postdesk.ingest.quotes._RULE": "fullmatch",
    "postdesk.ingest.quotes._SIGNATURE_RULE": "fullmatch",
    "postdesk.ingest.textnorm._SPACE": "a run always matches",
}

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def _patterns() -> dict[str, re.Pattern[Any]]:
    found: dict[str, re.Pattern[Any]] = {}
    for package in (postdesk.ingest, postdesk.lexicon):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, value in vars(module).items():
                if isinstance(value, re.Pattern):
                    found[f"{module.__name__}.{name}"] = value
    return found


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-sequences of one parsed regex item (groups, branches, lookarounds)."""
    if op == sre.SUBPATTERN:
        return [av[-1]]
    if op == sre.BRANCH:
        return list(av[1])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    return []


def _nested_unbounded(items: Any, inside: bool = False) -> bool:
    for op, av in items:
        if op in _REPEATS:
            unbounded = av[1] == sre.MAXREPEAT
            if (unbounded and inside) or _nested_unbounded(av[2], inside or unbounded):
                return True
        elif any(_nested_unbounded(child, inside) for child in _children(op, av)):
            return True
    return False


def _leading_unbounded(items: Any) -> bool:
    for op, av in items:
        if op in _REPEATS:
            return bool(av[1] == sre.MAXREPEAT)
        if op == sre.SUBPATTERN:
            return _leading_unbounded(av[-1])
        if op == sre.BRANCH:
            return any(_leading_unbounded(branch) for branch in av[1])
        return False
    return False


def test_the_audit_sees_the_patterns() -> None:
    patterns = _patterns()
    assert len(patterns) > 40
    assert set(NESTED_OK) | set(LEADING_OK) <= set(patterns), "a listed pattern is gone"
    # The shapes it is for: the old trailing-space strip and the old address scan.
    assert _leading_unbounded(sre_parse.parse(r"[ \t]+$", re.MULTILINE))
    assert _nested_unbounded(sre_parse.parse(r"(?:a+b?)+"))


def test_no_unreviewed_nested_or_leading_unbounded_quantifier() -> None:
    nested, leading = [], []
    for name, pattern in _patterns().items():
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
        if _nested_unbounded(list(tree)) and name not in NESTED_OK:
            nested.append(name)
        if _leading_unbounded(list(tree)) and name not in LEADING_OK:
            leading.append(name)
    assert nested == [], "nested unbounded quantifiers"
    assert leading == [], "unanchored leading unbounded repeats"


# --- transforms -----------------------------------------------------------------------


def _lines_executed(call: Callable[[], object]) -> tuple[int, object]:
    """How many Python lines `call` executes (all modules), and what it returns."""
    count = 0

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def global_(frame: FrameType, event: str, arg: object) -> Any:
        return local

    sys.settrace(global_)
    try:
        result = call()
    finally:
        sys.settrace(None)
    return count, result


def _size(result: object) -> int:
    if isinstance(result, str):
        return len(result)
    if isinstance(result, tuple):
        return sum(_size(item) for item in result)
    return len(str(result))


def _mail(head: str, body: str, content_type: str = "text/plain") -> bytes:
    return (
        f"From: m@example.net\nTo: s@example.org\nSubject: x\n{head}"
        f"Content-Type: {content_type}; charset=utf-8\n\n{body}\n"
    ).encode()


def _nested_quotes(n: int) -> str:
    return "<blockquote>" * 250 + "<br>" * n + "</blockquote>" * 250


def _parts(n: int) -> bytes:
    parts = "".join(f"--b\nContent-Type: text/plain\n\npart {i}\n" for i in range(n))
    return _mail("", parts + "--b--", 'multipart/mixed; boundary="b"')


# (name, transform of n, n); a transform's input grows linearly with n.
TRANSFORMS: list[tuple[str, Callable[[int], object], int]] = [
    ("html_to_text <pre> spaces", lambda n: html_to_text("<pre>" + " " * n + "x</pre>"), 2000),
    (
        "html_to_text wide table",
        lambda n: html_to_text(
            "<table><tr><td>" + "w" * 500 + "</td></tr>" + "<tr><td>r</td></tr>" * n + "</table>",
            100_000,
        ),
        100,
    ),
    ("visible_text nested quotes", lambda n: visible_text("", _nested_quotes(n)), 500),
    (
        "visible_text quotes and signatures",
        lambda n: visible_text("Hi\n" + "> old\n--\nRegards,\nSent from my phone\n\n" * n),
        200,
    ),
    ("reply_text long quote", lambda n: reply_text("Answer\n" + ">" * n + " q\n" * 50), 1000),
    ("parse_message many parts", lambda n: parse_message(_parts(n)), 50),
    (
        "parse_message encoded words",
        lambda n: parse_message(_mail("X-Words: " + "=?utf-8?q?caf=C3=A9?= " * n + "\n", "b")),
        100,
    ),
    (
        "kind_of_mail X-Failed-Recipients",
        lambda n: kind_of_mail(
            parse_message(_mail(f"X-Failed-Recipients: {'a' * n}\n", "failed")),
            own_addresses=["s@example.org"],
        ),
        5000,
    ),
    ("decode_header_value", lambda n: decode_header_value("=?utf-8?b?2LPZhNin2YU=?= " * n), 100),
    ("message_id_list", lambda n: message_id_list("<a@b> " * n + "(" * n), 200),
    ("subject_key", lambda n: subject_key("Re: " * n + "[#1] " * n + "hello"), 200),
]


@pytest.mark.parametrize(
    ("transform", "n"), [(t, n) for _, t, n in TRANSFORMS], ids=[name for name, _, _ in TRANSFORMS]
)
def test_transform_work_grows_linearly(transform: Callable[[int], object], n: int) -> None:
    small_work, small = _lines_executed(lambda: transform(n))
    large_work, large = _lines_executed(lambda: transform(4 * n))
    # Linear is 4x; fixed costs make it less. Quadratic would be 16x.
    assert large_work <= 6 * small_work + 1000, (small_work, large_work)
    assert _size(large) <= 6 * max(_size(small), 1) + 10_000, (_size(small), _size(large))


def test_quote_prefix_does_not_multiply_the_text() -> None:
    """250 nested <blockquote>s: each line is marked quoted, not 250 levels deep."""
    html = _nested_quotes(2000)
    visible = visible_text("", html)
    assert visible.startswith("> ")
    # Was 125 times the HTML ("> " * depth on each <br>'s line).
    assert len(visible) <= 5 * len(html)


def test_wide_table_renders_without_padding_every_row() -> None:
    """One wide cell in a long table: the cells are laid out as lines when columns would blow up."""
    html = "<table><tr><td>" + "w" * 5000 + "</td><td>y</td></tr>"
    html += "".join(f"<tr><td>row {i}</td><td>x</td></tr>" for i in range(1000)) + "</table>"
    text = html_to_text(html, 100_000)
    assert "row 999" in text
    assert len(text) <= 3 * len(html)
    # A small table keeps its columns.
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>", 100_000) == "a  b"


def test_parse_stops_at_too_many_boundaries() -> None:
    """2,000 nested multiparts: the stdlib parser sees the first 50 boundaries only."""
    parsed = parse_message(deep_mime(1.0))
    assert any(d.startswith("more than 50 multipart boundaries") for d in parsed.defects)
    assert "nesting deeper than 10: kept as opaque attachments" in parsed.defects
    # The word in text, or a boundary parameter under the limit, cuts nothing.
    text = "boundary = here\n" * 100
    assert parse_message(_mail("", text)).text == text.rstrip("\n")
