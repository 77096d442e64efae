"""Hostile mail: messages built to cost a mail system time or memory, or to confuse it.

A support address is public, so anyone can send it anything. `hostile_mail()` returns one
message per known attack or accident, each as the raw bytes a mail server would deliver:
the small mails that used to cost minutes or gigabytes (a wide HTML table, a <pre> of
spaces, a long X-Failed-Recipients header, deeply nested <blockquote>s with many <br>s, a
big HTML mail), mail over the size limits, and deep MIME nesting, many parts, huge headers
and header floods, long lines without newlines, many encoded-words, broken charsets and
base64, repetitive content that compresses like a zip bomb, terminal escape sequences and
look-alike letters in addresses.

`scale` sizes the big cases: 1.0 is the size each attack was found at (tens of megabytes
in all, for bench/hostile.py); the import test uses a small scale and lowered [limits] so
that the same cases stay cheap to run. `write_folder()` writes them as .eml files, ready
for `postdesk import`.

Every message has From, To, Date, Message-ID and Subject, so what postdesk makes of it is
its content's doing, not a missing header's.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TO = "support@example.org"
_DATE = "Mon, 01 Dec 2025 10:00:00 +0000"


@dataclass(frozen=True)
class HostileMail:
    """One hostile message: a short name (the file name), what it tries, and its bytes."""

    name: str
    attack: str
    raw: bytes


def _head(name: str, *extra: str, subject: str | None = None, sender: str | None = None) -> str:
    lines = [
        f"From: {sender or f'Mallory <mallory+{name}@example.net>'}",
        f"To: {TO}",
        f"Subject: {subject if subject is not None else f'hostile: {name}'}",
        f"Date: {_DATE}",
        f"Message-ID: <{name}@hostile.example.net>",
        "MIME-Version: 1.0",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n"


def _html_mail(name: str, html: str) -> bytes:
    head = _head(name, "Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: 8bit")
    return (head + "\r\n" + html + "\r\n").encode("utf-8")


def _text_mail(name: str, text: str, *extra: str, subject: str | None = None) -> bytes:
    head = _head(
        name,
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        *extra,
        subject=subject,
    )
    return (head + "\r\n" + text + "\r\n").encode("utf-8")


def _n(count: int, scale: float, least: int = 1) -> int:
    return max(least, int(count * scale))


def wide_table(scale: float) -> bytes:
    """One 5,000-character cell in a 1,000-row table (34 KB): columns padded to its width."""
    rows = "".join(f"<tr><td>row {i}</td><td>x</td></tr>" for i in range(_n(1000, scale, 50)))
    cell = "w" * 5000
    return _html_mail("wide-table", f"<table><tr><td>{cell}</td><td>y</td></tr>{rows}</table>")


def pre_spaces(scale: float) -> bytes:
    """A <pre> holding a run of 40,000 spaces followed by a letter."""
    return _html_mail("pre-spaces", "<pre>" + " " * _n(40_000, scale, 5000) + "x</pre>")


def failed_recipients(scale: float) -> bytes:
    """A 60 KB X-Failed-Recipients header of address characters with no "@"."""
    value = "a" * _n(60_000, scale, 5000)
    head = _head("failed-recipients", f"X-Failed-Recipients: {value}")
    return (head + "Content-Type: text/plain\r\n\r\nDelivery failed.\r\n").encode("ascii")


def nested_blockquotes(scale: float, megabytes: float = 1.2) -> bytes:
    """250 nested <blockquote>s around many <br>s: each line prefixed by its depth."""
    depth = 250
    opening = "<blockquote>" * depth
    closing = "</blockquote>" * depth
    brs = max(1000, int(megabytes * scale * 1_000_000) // 4)
    return _html_mail(f"nested-blockquotes-{megabytes:g}mb", opening + "<br>" * brs + closing)


def big_html(scale: float, megabytes: float = 20) -> bytes:
    """An HTML mail of many paragraphs (a newsletter gone wrong), under the size limit."""
    paragraph = "<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit.</p>\n"
    count = max(100, int(megabytes * scale * 1_000_000) // len(paragraph))
    return _html_mail(f"big-html-{megabytes:g}mb", "<html><body>" + paragraph * count)


def oversized(limit: int) -> bytes:
    """A message one kilobyte over `limit` bytes: stored, quarantined, never parsed."""
    head = _head("oversized", "Content-Type: text/plain; charset=us-ascii")
    line = "x" * 998 + "\r\n"
    body = line * (limit // len(line) + 2)
    return (head + "\r\n" + body).encode("ascii")


def huge_header(limit: int) -> bytes:
    """A header block (Received lines) over `limit` bytes, with a small body."""
    line = "Received: from relay.example.net by mx.example.org; " + _DATE + "\r\n"
    received = line * (limit // len(line) + 2)
    head = _head("huge-header") + received
    return (head + "Content-Type: text/plain\r\n\r\nHello\r\n").encode("ascii")


def header_flood(scale: float) -> bytes:
    """Thousands of distinct header fields, still under the header limit (~90 KB)."""
    flood = "".join(f"X-Flood-{i}: {i}\r\n" for i in range(_n(4000, scale, 500)))
    return (_head("header-flood") + flood + "Content-Type: text/plain\r\n\r\nHi\r\n").encode()


def deep_mime(scale: float) -> bytes:
    """multipart/mixed nested 2,000 levels deep around one text part."""
    depth = _n(2000, scale, 200)
    head = _head("deep-mime", 'Content-Type: multipart/mixed; boundary="b0"')
    parts = []
    for level in range(1, depth):
        parts.append(
            f'--b{level - 1}\r\nContent-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'
        )
    parts.append(f"--b{depth - 1}\r\nContent-Type: text/plain\r\n\r\nthe bottom\r\n")
    for level in reversed(range(depth)):
        parts.append(f"--b{level}--\r\n")
    return (head + "\r\n" + "".join(parts)).encode("ascii")


def many_parts(scale: float) -> bytes:
    """20,000 tiny attachments in one multipart/mixed."""
    count = _n(20_000, scale, 600)
    head = _head("many-parts", 'Content-Type: multipart/mixed; boundary="p"')
    body = ["--p\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n"]
    for i in range(count):
        body.append(
            "--p\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="f{i}.bin"\r\n\r\n{i}\r\n'
        )
    body.append("--p--\r\n")
    return (head + "\r\n" + "".join(body)).encode("ascii")


def long_line(scale: float) -> bytes:
    """A 5 MB body on one line: no newline anywhere."""
    return _text_mail("long-line", "word " * _n(1_000_000, scale, 20_000))


def encoded_words(scale: float) -> bytes:
    """A Subject of thousands of encoded-words (B and Q, several charsets), ~90 KB."""
    words = []
    for i in range(_n(3000, scale, 300)):
        if i % 3 == 0:
            words.append("=?utf-8?B?" + base64.b64encode("سلام ".encode()).decode() + "?=")
        elif i % 3 == 1:
            words.append("=?iso-8859-1?Q?caf=E9_?=")
        else:
            words.append("=?x-unknown?Q?=FF=FE?=")
    subject = "\r\n ".join(words)
    return _text_mail("encoded-words", "See the subject.", subject=subject)


def broken_charsets(scale: float) -> bytes:
    """Parts with lying and unknown charsets, bad base64 and invalid UTF-8."""
    head = _head("broken-charsets", 'Content-Type: multipart/mixed; boundary="c"')
    junk = bytes(range(256)) * _n(200, scale, 20)
    parts = [
        b"--c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + junk + b"\r\n",
        b'--c\r\nContent-Type: text/plain; charset="x-no-such-charset"\r\n\r\n'
        + b"\xe4\xf6\xfc" * 1000
        + b"\r\n",
        b"--c\r\nContent-Type: text/plain; charset=utf-16\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"!!!not base64 at all===\r\n" * 200,
        b"--c\r\nContent-Type: text/html; charset=iso-2022-jp\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8=====xx\r\n" + b"A" * 1001 + b"\r\n",
        b"--c\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + b"=ZZ=\r\n=4" * 5000 + b"\r\n",
        b"--c--\r\n",
    ]
    return head.encode("ascii") + b"\r\n" + b"".join(parts)


def repetitive(scale: float) -> bytes:
    """Zip-bomb-like content: 15 MB of one letter in base64, and a zip of zeros."""
    size = _n(15_000_000, scale, 100_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * _n(100_000_000, scale, 1_000_000))
    text = base64.encodebytes(b"A" * size)
    archive_b64 = base64.encodebytes(buffer.getvalue())
    head = _head("repetitive", 'Content-Type: multipart/mixed; boundary="z"')
    return (
        head.encode("ascii")
        + b"\r\n--z\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + text
        + b"\r\n--z\r\nContent-Type: application/zip\r\n"
        + b'Content-Disposition: attachment; filename="bomb.zip"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + archive_b64
        + b"\r\n--z--\r\n"
    )


def terminal_escapes(scale: float) -> bytes:
    """OSC 52 clipboard writes, a screen clear and OSC 8 links in the name, subject, body."""
    osc52 = "\x1b]52;c;" + base64.b64encode(b"rm -rf ~").decode() + "\x07"
    clear = "\x1b[2J\x1b[H"
    link = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    body = f"Hello{osc52}{clear}\r\nSee {link}\r\n\x9b31mC1 CSI\r\n" * _n(10, scale)
    sender = f'"Eve{clear}" <eve@example.net>'
    head = _head(
        "terminal-escapes",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        subject=f"Invoice{osc52}",
        sender=sender,
    )
    return (head + "\r\n" + body).encode("utf-8")


def lookalike_addresses(scale: float) -> bytes:
    """Look-alike letters: U+017F (long s) in a reply token, Cyrillic letters in From."""
    sender = "Pаypal <support@pаypal.com>"  # both "а" are U+0430
    head = _head(
        "lookalike-addresses",
        "Cc: support+t1-" + "\u017f" * 12 + "@example.org",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        sender=sender,
    )
    return (head + "\r\nPlease verify your account.\r\n").encode("utf-8")


def many_addresses(scale: float) -> bytes:
    """A To header of thousands of addresses (~90 KB)."""
    addresses = ",\r\n ".join(f"user{i}@example.com" for i in range(_n(4000, scale, 400)))
    head = _head("many-addresses", f"Cc: {addresses}")
    return (head + "Content-Type: text/plain\r\n\r\nHi all\r\n").encode("ascii")


def deep_plain_quotes(scale: float) -> bytes:
    """Plain text quoted 5,000 levels deep, on many lines."""
    line = ">" * _n(5000, scale, 500) + " old text\n"
    return _text_mail("deep-plain-quotes", "My answer.\n\nOn Monday Bob wrote:\n" + line * 200)


def many_short_lines(scale: float) -> bytes:
    """Two million short lines of signature-like and quote-like text."""
    lines = ["--", "> x", "Regards,", "Sent from my phone", ""] * _n(400_000, scale, 4000)
    return _text_mail("many-short-lines", "\n".join(lines))


def nested_html_elements(scale: float) -> bytes:
    """100,000 unclosed nested <div><table><td> elements."""
    count = _n(100_000, scale, 2000)
    return _html_mail("nested-html", "<div><table><tr><td>" * count + "bottom")


def many_encoded_filenames(scale: float) -> bytes:
    """RFC 2231 filename continuations in the thousands on one attachment."""
    pieces = "".join(
        f";\r\n filename*{i}*=utf-8''%D8%B3%D9%84%D8%A7%D9%85" for i in range(_n(2000, scale, 200))
    )
    head = _head("rfc2231-flood", 'Content-Type: multipart/mixed; boundary="f"')
    body = (
        "--f\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
        f"--f\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment{pieces}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--f--\r\n"
    )
    return (head + "\r\n" + body).encode("ascii")


@dataclass(frozen=True)
class _Case:
    name: str
    attack: str
    build: Callable[[float], bytes]


_CASES: tuple[_Case, ...] = (
    _Case("wide-table", "HTML table padded to its widest cell", wide_table),
    _Case("pre-spaces", "a run of spaces not ending its line", pre_spaces),
    _Case("failed-recipients", "a long X-Failed-Recipients header", failed_recipients),
    _Case("nested-blockquotes", "250 nested quotes, many <br>s", nested_blockquotes),
    _Case(
        "nested-blockquotes-9mb",
        "the same, 9 MB",
        lambda scale: nested_blockquotes(scale, megabytes=9),
    ),
    _Case("big-html", "a 20 MB HTML body", big_html),
    _Case("header-flood", "thousands of header fields", header_flood),
    _Case("deep-mime", "multipart nested 2,000 deep", deep_mime),
    _Case("many-parts", "20,000 parts", many_parts),
    _Case("long-line", "a 5 MB line", long_line),
    _Case("encoded-words", "thousands of encoded-words", encoded_words),
    _Case("broken-charsets", "lying charsets, bad base64 and QP", broken_charsets),
    _Case("repetitive", "zip-bomb-like repetitive content", repetitive),
    _Case("terminal-escapes", "terminal escape sequences", terminal_escapes),
    _Case("lookalike-addresses", "look-alike letters in addresses", lookalike_addresses),
    _Case("many-addresses", "thousands of Cc addresses", many_addresses),
    _Case("deep-plain-quotes", "plain text quoted 5,000 deep", deep_plain_quotes),
    _Case("many-short-lines", "two million short lines", many_short_lines),
    _Case("nested-html", "100,000 unclosed nested elements", nested_html_elements),
    _Case("rfc2231-flood", "thousands of filename continuations", many_encoded_filenames),
)


def hostile_mail(
    scale: float = 1.0,
    *,
    max_message_bytes: int = 25 * 1024 * 1024,
    max_header_bytes: int = 100 * 1024,
) -> list[HostileMail]:
    """Every hostile case at `scale`, plus one message over each of the two size limits.

    The big-HTML case at scale 1.0 is 20 MB, under the default message limit; a 30 MB
    HTML mail, as found, is the "oversized" case's business.
    """
    found = [HostileMail(case.name, case.attack, case.build(scale)) for case in _CASES]
    found.append(
        HostileMail("oversized", "a message over max_message_bytes", oversized(max_message_bytes))
    )
    found.append(
        HostileMail("huge-header", "a header over max_header_bytes", huge_header(max_header_bytes))
    )
    return found


def write_folder(directory: Path, mails: list[HostileMail]) -> list[Path]:
    """Write each message as `<name>.eml` in `directory` (created); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for mail in mails:
        path = directory / f"{mail.name}.eml"
        path.write_bytes(mail.raw)
        paths.append(path)
    return paths
