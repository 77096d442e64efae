"""Behaviour on mail nobody here wrote: the mime-flanker corpus and CPython's email tests.

Every message must go through header_summary and parse_message raising nothing but
ParseError, and within a bounded time each. A few facts known about particular messages
are checked too. The counts of ParseError and their reasons are printed for the record.
"""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from postdesk.errors import ParseError
from postdesk.ingest.parse import ParsedMessage, header_summary, parse_message
from postdesk.testing.corpora import require_corpus, require_cpython_email_data

# Generous: the largest corpus message parses in well under a second. This catches hangs,
# it is not a benchmark (bench/parse_speed.py is).
PER_MESSAGE_SECONDS = 10


@dataclass
class Outcome:
    """What happened to one corpus message."""

    name: str
    seconds: float
    parsed: ParsedMessage | None = None
    parse_error: str | None = None
    unexpected: str | None = None


class Hang(Exception):
    """Raised by the alarm when one message takes longer than PER_MESSAGE_SECONDS."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Interrupt the block after `seconds` where SIGALRM exists; just run it elsewhere."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _run(name: str, raw: bytes) -> Outcome:
    start = time.perf_counter()
    outcome = Outcome(name=name, seconds=0.0)
    try:
        with time_limit(PER_MESSAGE_SECONDS):
            header_summary(raw)
            try:
                outcome.parsed = parse_message(raw)
            except ParseError as error:
                outcome.parse_error = str(error)
    except Exception as error:  # the point of the test: anything else is a failure
        outcome.unexpected = f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - start
    return outcome


def _messages(kind: str) -> list[tuple[str, bytes]]:
    if kind == "flanker":
        root = require_corpus("mime-flanker")
        paths = sorted(root.rglob("*.eml"))
        return [(str(path.relative_to(root)), path.read_bytes()) for path in paths]
    data = require_cpython_email_data()
    return [(f"cpython/{path.name}", path.read_bytes()) for path in sorted(data.glob("msg_*.txt"))]


@pytest.fixture(scope="module", params=["flanker", "cpython"])
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    messages = _messages(request.param)
    assert messages, f"the {request.param} corpus is empty"
    return {name: _run(name, raw) for name, raw in messages}


@pytest.fixture(scope="module")
def flanker() -> dict[str, ParsedMessage]:
    parsed: dict[str, ParsedMessage] = {}
    for name, raw in _messages("flanker"):
        try:
            parsed[name] = parse_message(raw)
        except ParseError:
            continue
    return parsed


def test_only_parse_error_and_bounded_time(
    outcomes: dict[str, Outcome], capsys: pytest.CaptureFixture[str]
) -> None:
    unexpected = {name: o.unexpected for name, o in outcomes.items() if o.unexpected}
    assert not unexpected, unexpected
    slow = {name: round(o.seconds, 2) for name, o in outcomes.items()}
    assert max(slow.values()) < PER_MESSAGE_SECONDS, slow

    reasons = collections.Counter(o.parse_error for o in outcomes.values() if o.parse_error)
    slowest = max(outcomes.values(), key=lambda o: o.seconds)
    with capsys.disabled():
        print(
            f"\n{len(outcomes)} messages, {sum(reasons.values())} ParseError; slowest "
            f"{slowest.name} {slowest.seconds * 1000:.0f} ms"
        )
        for reason, count in reasons.most_common():
            names = [name for name, o in outcomes.items() if o.parse_error == reason]
            print(f"  {count} x {reason}: {', '.join(names)}")
    # ParseError is for input that is not mail; a bug of ours must not hide behind it.
    assert not [reason for reason in reasons if reason.startswith("internal error")]


def test_parse_error_only_for_messages_without_headers(outcomes: dict[str, Outcome]) -> None:
    for outcome in outcomes.values():
        if outcome.parse_error is not None:
            # or over [limits] (flanker's long-header.eml: a 200 KB Subject)
            assert outcome.parse_error.startswith(("no header block", "empty message", "too large"))


def test_parsed_messages_are_clean(outcomes: dict[str, Outcome]) -> None:
    for name, outcome in outcomes.items():
        parsed = outcome.parsed
        if parsed is None:
            continue
        assert "\x00" not in parsed.text, name
        assert "\n" not in parsed.subject, name
        for attachment in parsed.attachments:
            assert attachment.filename and "/" not in attachment.filename, name
            assert attachment.content_type == attachment.content_type.lower(), name
        for address in (parsed.from_, parsed.sender, *parsed.to, *parsed.cc, *parsed.reply_to):
            if address is not None:
                assert "@" in address.email and address.email == address.email.lower(), name
        assert parsed.date is None or parsed.date.utcoffset() is not None, name


def test_russian_attachment_name_decodes_to_cyrillic(flanker: dict[str, ParsedMessage]) -> None:
    (attachment,) = flanker["russian-attachment-yahoo.eml"].attachments
    assert attachment.filename.startswith("Картинка с очень, очень длинным")
    assert attachment.content_type == "image/png"
    assert attachment.data.startswith(b"\x89PNG")


def test_bilingual_text_decodes(flanker: dict[str, ParsedMessage]) -> None:
    parsed = flanker["bilingual-simple.eml"]
    assert parsed.subject == "Simple text. How are you? Как ты поживаешь?"
    assert parsed.text == "This line is in English\nА эта линия по-русски."


def test_torture_yields_many_attachments(flanker: dict[str, ParsedMessage]) -> None:
    parsed = flanker["torture.eml"]
    assert len(parsed.attachments) >= 10
    assert sum(a.content_type == "message/rfc822" for a in parsed.attachments) >= 5
    assert parsed.from_ is not None and parsed.from_.email == "mrc@cac.washington.edu"


def test_known_structures(flanker: dict[str, ParsedMessage]) -> None:
    assert flanker["attached-pdf.eml"].attachments[0].filename == "test.pdf"
    assert flanker["attached-pdf.eml"].attachments[0].data.startswith(b"%PDF")
    assert flanker["spam/broken-ctype.eml"].attachments[0].content_type == "image/jpeg"
    assert flanker["encoded-header.eml"].from_ is not None
    assert flanker["encoded-header.eml"].from_.name == "Foo, Bar"
    assert flanker["no-ctype.eml"].text.startswith("Hello,\nI'm just testing")
    enclosed = flanker["enclosed-endless.eml"]
    assert [a.content_type for a in enclosed.attachments] == ["message/rfc822"]
    report = flanker["bounce/mailbox-full.eml"]
    assert "message/delivery-status" in [a.content_type for a in report.attachments]
    assert report.headers["content-type"][0].startswith("multipart/report")
