"""Raw RFC 5322 bytes to a typed ParsedMessage: the pure parsing step of ingestion.

The input is whatever arrives in a support mailbox, so this module prefers a usable
approximation plus a note in `defects` to an exception. It raises ParseError only for
input that is not a message at all (empty, or no header block). It does no I/O and keeps
no state between calls.

Speed matters here: every inbound message passes through once. The stdlib parser runs
with the compat32 policy, which keeps header values as strings instead of building header
objects; headers, parameters and payloads are then decoded here, only as far as needed.
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import email.utils
import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from types import MappingProxyType
from typing import Final

from postdesk.config import LimitSettings
from postdesk.errors import ParseError
from postdesk.ingest.attachments import content_type_for, sanitize_filename
from postdesk.ingest.charset import (
    codec_for,
    decode_base64,
    decode_bytes_detail,
    decode_header_value,
    recover_surrogates,
)
from postdesk.ingest.htmltext import html_to_text

# Nesting and part-count limits: deeper or further parts are kept as opaque attachments
# (the part count is [limits] max_parts).
MAX_DEPTH: Final = 10
# The stdlib parser tests every line against the boundary of each enclosing multipart,
# so nesting costs lines x depth; past this many boundary declarations the rest of a
# message is not parsed (it stays in the raw message).
MAX_BOUNDARIES: Final = 50
DEFAULT_LIMITS: Final = LimitSettings()
# A References header is a thread's whole ancestry; the newest ids are the useful ones.
MAX_REFERENCES: Final = 100

# The originator fields that make up a message's identity across deliveries. Trace fields
# added per delivery (Received, Return-Path, Delivered-To, DKIM/ARC, X-Spam-*) are absent
# by construction.
_DIGEST_FIELDS: Final = (
    "from",
    "sender",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)

# The same header-line test the stdlib feed parser applies, so both agree on where the
# header block ends.
_FIELD_LINE: Final = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_FOLDING: Final = re.compile(rb"[ \t]*\r?\n[ \t]*|[ \t]+")
_ANGLE_ID: Final = re.compile(r"<([^<>]*)>")
_COMMENT: Final = re.compile(r"\([^()]*\)")
# Control characters are never part of an id and NUL is not storable in PostgreSQL text.
_ID_JUNK: Final = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_ID_SEPARATORS: Final = re.compile(r"[\s,;]+")
_CONTENT_TYPE: Final = re.compile(r"[a-z0-9!#$&^_.+\-]+/[a-z0-9!#$&^_.+\-]+")
_BASE64_CHARS: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n\x0b\x0c"
)
_BASE64_OUTSIDER: Final = re.compile(rb"[^A-Za-z0-9+/=]")
_HTML_META_CHARSET: Final = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:+\-]+)""", re.IGNORECASE
)
_LEADING_BLANK_LINES: Final = re.compile(r"\A(?:[ \t]*\n)+")
_CID_REFERENCE: Final = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)
_BODY_TEXT: Final = frozenset({"text/plain", "text/html"})
_ENCLOSED_MESSAGES: Final = frozenset({"message/rfc822", "message/global", "message/news"})
_MIME_FIELDS: Final = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
)
_PARAMETER: Final = re.compile(r""";\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)""")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header."""

    email: str  # lower-cased addr-spec (local@domain); entries without one are dropped
    name: str  # decoded display name, "" if none

    def __reduce__(self) -> tuple[type[Address], tuple[str, str]]:
        # Pickled as a constructor call: the parse worker sends every message's
        # addresses, and a slots dataclass's default pickling goes field by field
        # through dataclasses.fields(), several times slower to load.
        return (Address, (self.email, self.name))


@dataclass(frozen=True, slots=True)
class Attachment:
    """A non-body part of a message, decoded."""

    filename: str  # sanitized (sanitize_filename), never empty
    content_type: str  # lower-case maintype/subtype
    data: bytes  # decoded payload
    inline: bool  # Content-Disposition inline, or an image the HTML refers to by cid:
    content_id: str | None  # without angle brackets

    def __reduce__(
        self,
    ) -> tuple[type[Attachment], tuple[str, str, bytes, bool, str | None]]:
        # A constructor call, as Address's.
        return (
            Attachment,
            (self.filename, self.content_type, self.data, self.inline, self.content_id),
        )


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    """The cheap header-only read the raw store needs to key and de-duplicate messages."""

    message_id: str | None  # normalized: no angle brackets or whitespace, case kept
    date: datetime | None  # aware, UTC
    digest: str  # sha256 hex over originator fields and normalized body (see header_summary)
    header_bytes: int = 0  # the size of the header block, up to the blank line


@dataclass(frozen=True)
class ParsedMessage:
    """Everything later steps read from a message, decoded and normalized."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str  # decoded, unfolded, whitespace collapsed
    from_: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None  # aware UTC; None if missing or unparseable
    text: str  # text/plain if present, else the HTML converted; inline parts joined
    html: str | None  # the HTML body if the message had one (decoded)
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, tuple[str, ...]]  # lower-case name -> decoded values, in order
    defects: tuple[str, ...]  # parser defects and fallbacks taken, for the record


def header_summary(raw: bytes) -> HeaderSummary:
    """Message-ID, date and delivery-independent digest, from the header block only.

    Never raises: the raw store records every message, even one parse_message will
    reject. `digest` is sha256 over the originator fields (raw values, unfolded,
    whitespace runs collapsed, names lower-cased, in a fixed order, repeats kept in
    order) and the body with line endings normalized to LF and trailing whitespace
    stripped, so the same message delivered to two of our addresses, through different
    relays or with different line endings, has the same digest.
    """
    fields, body_start = _scan_header_block(raw)
    first: dict[str, bytes] = {}
    for name, value in fields:
        first.setdefault(name, value)
    message_id = first.get("message-id")
    date = first.get("date")
    return HeaderSummary(
        message_id=normalize_message_id(_as_text(message_id)) if message_id else None,
        date=_parse_date(_as_text(date)) if date else None,
        digest=_digest(fields, raw[body_start:]),
        header_bytes=body_start,
    )


def too_large(size: int, header_bytes: int, limits: LimitSettings = DEFAULT_LIMITS) -> str | None:
    """Why a message of `size` bytes with a header block of `header_bytes` is not parsed.

    None when it is within [limits]; otherwise the one-line quarantine reason, with the
    size and the limit, like a mail server's "552 message size exceeds fixed limit".
    """
    if size > limits.max_message_bytes:
        return (
            f"too large: message of {size:,} bytes, the limit is "
            f"{limits.max_message_bytes:,} ([limits] max_message_bytes)"
        )
    if header_bytes > limits.max_header_bytes:
        return (
            f"too large: header block of {header_bytes:,} bytes, the limit is "
            f"{limits.max_header_bytes:,} ([limits] max_header_bytes)"
        )
    return None


def parse_message(raw: bytes, limits: LimitSettings = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one message; raises ParseError (one-line reason) only when it is unusable.

    Unusable means empty input, no header block at all (a binary file, say), or a message
    over the size limits of `limits` (see `too_large`; the raw store quarantines those
    before they get here, this is for a message replayed after the limits changed). A
    message without any sender address is still returned: whether that is acceptable is
    the caller's decision. What the text caps of `limits` cut is noted in `defects`.
    """
    if not raw or raw.isspace():
        raise ParseError("empty message")
    fields, body_start = _scan_header_block(raw)
    if not fields:
        raise ParseError("no header block: the data does not start with header fields")
    reason = too_large(len(raw), body_start, limits)
    if reason is not None:
        raise ParseError(reason)
    try:
        return _Parser(raw, limits).parse()
    except ParseError:
        raise
    except RecursionError as exc:
        raise ParseError("message structure nested too deeply to parse") from exc
    except Exception as exc:
        # The contract is ParseError only, so the caller can quarantine the message with
        # a reason; "internal error" marks our bug rather than the sender's.
        raise ParseError(f"internal error: {type(exc).__name__}: {exc}"[:300]) from exc


def normalize_message_id(value: str | None) -> str | None:
    """The bare id of a Message-ID header: no angle brackets, no whitespace, case kept."""
    if value is None:
        return None
    value = recover_surrogates(value).translate(_ID_JUNK)
    for candidate in _ANGLE_ID.findall(value):
        bare = "".join(candidate.split())
        if bare:
            return bare
    bare = "".join(_strip_comments(value).split()).strip("<>\"'")
    return bare or None


def message_id_list(value: str | None) -> tuple[str, ...]:
    """The ids in an In-Reply-To or References value, oldest first, the last 100 at most.

    Ids are taken from angle brackets, so text around them ("your message of ...") is
    ignored; without brackets, whitespace-separated tokens containing "@" are taken. A
    repeated id keeps its last position, which is the one that says who the parent is.
    """
    if not value:
        return ()
    value = recover_surrogates(value).translate(_ID_JUNK)
    ids = ["".join(found.split()) for found in _ANGLE_ID.findall(value)]
    ids = [found for found in ids if found]
    if not ids:
        tokens = _ID_SEPARATORS.split(_strip_comments(value))
        ids = [token.strip("<>\"'") for token in tokens if "@" in token]
    seen: set[str] = set()
    newest_first: list[str] = []
    for found in reversed(ids):
        if found not in seen:
            seen.add(found)
            newest_first.append(found)
            if len(newest_first) == MAX_REFERENCES:
                break
    return tuple(reversed(newest_first))


# --- header block -------------------------------------------------------------------


def _scan_header_block(raw: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """The header fields (lower-case name, raw value with folding) and where the body starts.

    Follows the stdlib feed parser: the block ends at the first empty line or at the
    first line that is neither a field nor a continuation; mbox "From " lines and
    continuation lines with no field to continue are skipped. Blank lines before the
    first field are skipped too (some exporters prepend one), as parse_message does.
    """
    fields: list[tuple[str, bytes]] = []
    size = len(raw)
    pos = _skip_leading_blank_lines(raw)
    name: str | None = None
    value_start = 0
    value_end = 0
    body_start = size
    while pos < size:
        newline = raw.find(b"\n", pos)
        line_end = size if newline == -1 else newline
        next_pos = size if newline == -1 else newline + 1
        content_end = line_end - 1 if line_end > pos and raw[line_end - 1] == 0x0D else line_end
        if content_end == pos:
            body_start = next_pos
            break
        first_byte = raw[pos]
        if first_byte in (0x20, 0x09):
            if name is not None:
                value_end = content_end
            pos = next_pos
            continue
        match = _FIELD_LINE.match(raw, pos, content_end)
        if match is None:
            if raw.startswith(b"From ", pos):
                pos = next_pos
                continue
            body_start = pos
            break
        if name is not None:
            fields.append((name, raw[value_start:value_end]))
        name = match.group(1).decode("ascii").lower()
        value_start = match.end()
        value_end = content_end
        pos = next_pos
    if name is not None:
        fields.append((name, raw[value_start:value_end]))
    return fields, body_start


def _skip_leading_blank_lines(raw: bytes) -> int:
    return len(raw) - len(raw.lstrip(b"\r\n"))


def _digest(fields: list[tuple[str, bytes]], body: bytes) -> str:
    by_name: dict[str, list[bytes]] = {}
    for name, value in fields:
        if name in _DIGEST_FIELDS:
            by_name.setdefault(name, []).append(_FOLDING.sub(b" ", value).strip())
    digest = hashlib.sha256()
    for name in _DIGEST_FIELDS:
        for value in by_name.get(name, ()):
            digest.update(name.encode("ascii") + b":" + value + b"\n")
    digest.update(b"\n")
    digest.update(body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip())
    return digest.hexdigest()


def _as_text(value: bytes) -> str:
    return value.decode("ascii", "surrogateescape")


def _strip_comments(value: str) -> str:
    # Nested comments are rare; a few passes undo them without a real tokenizer.
    for _ in range(4):
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    return value


def _parse_date(value: str) -> datetime | None:
    value = " ".join(value.split())
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # RFC 5322 "-0000": the zone is unknown; UTC is the only neutral reading.
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# --- the walk -----------------------------------------------------------------------

# A MIME parameter: plain (possibly with encoded-words or raw 8-bit, decoded later with
# the message's charset hint), or an RFC 2231 extended value as (charset, bytes).
_Param = str | tuple[str | None, bytes]


@dataclass(slots=True)
class _PartInfo:
    """The MIME headers of one part, read once from the raw values.

    The stdlib accessors (get, get_param, get_filename) turn a value with raw 8-bit bytes
    into U+FFFD replacement characters under compat32, so every value is read from
    raw_items() instead and decoded here.
    """

    content_type: str
    params: dict[str, _Param]
    disposition: str
    disposition_params: dict[str, _Param]
    transfer_encoding: str
    content_id: str | None

    @classmethod
    def read(cls, part: Message) -> _PartInfo:
        found: dict[str, str] = {}
        for name, value in part.raw_items():
            key = name.strip().lower()
            if key in _MIME_FIELDS and key not in found:
                found[key] = str(value)
        declared = found.get("content-type")
        main, params = _parse_parameters(declared) if declared is not None else ("", {})
        disposition, disposition_params = _parse_parameters(found.get("content-disposition", ""))
        content_id = found.get("content-id")
        return cls(
            content_type=_content_type(part, declared, main, params, disposition_params),
            params=params,
            disposition=disposition,
            disposition_params=disposition_params,
            transfer_encoding=_transfer_encoding(found.get("content-transfer-encoding")),
            content_id=normalize_message_id(content_id) if content_id else None,
        )

    def param(self, name: str) -> str:
        """A Content-Type parameter as lower-case ASCII text, for charset/format/delsp."""
        value = self.params.get(name)
        if isinstance(value, tuple):
            value = value[1].decode("ascii", "replace")
        return (value or "").strip().strip("\"'").lower()

    def raw_filename(self) -> _Param | None:
        for value in (self.disposition_params.get("filename"), self.params.get("name")):
            if value:
                return value
        return None


@dataclass(slots=True)
class _Body:
    """A piece of body in document order: its plain text, its HTML, or both (alternative)."""

    text: str | None
    html: str | None


@dataclass(slots=True)
class _PendingAttachment:
    name: str | None
    content_type: str
    data: bytes
    disposition: str
    content_id: str | None


@dataclass(slots=True)
class _Parser:
    """One parse: the state of a single walk over one message tree."""

    raw: bytes
    limits: LimitSettings = DEFAULT_LIMITS
    linesep: str = "\n"
    parts_seen: int = 0
    bodies: list[_Body] = field(default_factory=list)
    attachments: list[_PendingAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    charset_hint: str | None = None
    limit_noted: bool = False

    def parse(self) -> ParsedMessage:
        raw = self.raw[_skip_leading_blank_lines(self.raw) :]
        if len(raw) != len(self.raw):
            self._defect("blank lines before the header block skipped")
        first_line = raw[: raw.find(b"\n") + 1]
        self.linesep = "\r\n" if first_line.endswith(b"\r\n") else "\n"
        parser = email.parser.BytesParser(policy=email.policy.compat32)
        try:
            message = self._single_part(parser, raw) or parser.parsebytes(self._cut(raw))
        except RecursionError:
            # The stdlib parser recurses once per nesting level; thousands of levels are
            # an attack or a mail loop. Headers still parse; the body is kept whole.
            message = parser.parsebytes(raw, headersonly=True)
            self._defect("structure nested too deeply to parse: message kept as attachment")
            self.attachments.append(
                _PendingAttachment("original.eml", "message/rfc822", raw, "attachment", None)
            )
            return self._assemble(message)
        self.bodies = self._walk(message, 0, in_alternative=False)
        return self._assemble(message)

    def _single_part(self, parser: email.parser.BytesParser, raw: bytes) -> Message | None:
        """A message that is not multipart or message/*, parsed without its body's lines.

        The stdlib parser reads the body line by line in Python, a few seconds for a body
        of millions of short lines, only to join them again for a single part. Here only
        the header block goes through it and the body is set as the payload it would have
        stored (the text with raw bytes as surrogate escapes). None for any other message,
        or when the header block does not end with a blank line (the stdlib parser notes
        that as a defect, so it reads those itself).
        """
        fields, body_start = _scan_header_block(raw)
        head = raw[:body_start]
        if not head.endswith((b"\n\n", b"\n\r\n")):
            return None
        declared = next((value for name, value in fields if name == "content-type"), None)
        if declared is not None:
            main = _as_text(declared).split(";", 1)[0].strip().lower()
            if main.startswith(("multipart", "message")):
                return None
        message = parser.parsebytes(head, headersonly=True)
        if message.get_payload() or message.defects:
            return None
        message.set_payload(raw[body_start:].decode("ascii", "surrogateescape"))
        return message

    def _cut(self, raw: bytes) -> bytes:
        """`raw` up to where it would hold too many parts or boundaries to parse cheaply.

        The stdlib parser builds an object per part before the part limit can apply:
        20,000 tiny parts cost seconds. A multipart message has about two lines starting
        with "--" per part, so past ten per allowed part the rest is not parsed; nor past
        MAX_BOUNDARIES boundary declarations (nesting costs the parser lines x depth).
        The rest stays in the raw message, and a defect says where the parse stopped.
        """
        budget = 10 * self.limits.max_parts
        position = 0
        for _ in range(budget):
            position = raw.find(b"\n--", position)
            if position < 0:
                break
            position += 3
        else:
            self._defect(
                f"more than {budget:,} boundary lines: read up to byte {position - 2:,}, "
                "the rest only in the raw message ([limits] max_parts)"
            )
            raw = raw[: position - 2]
        # bytes.find on a lower-cased copy: a case-insensitive regex scans at a tenth of
        # the speed, a third of a second on a 20 MB message.
        lowered = raw.lower()
        position = 0
        count = 0
        while (position := lowered.find(b"boundary", position)) >= 0:
            start = position
            position += 8
            while lowered[position : position + 1] in (b" ", b"\t"):
                position += 1
            if lowered[position : position + 1] != b"=":
                continue
            count += 1
            if count > MAX_BOUNDARIES:
                end = raw.rfind(b"\n", 0, start) + 1
                self._defect(
                    f"more than {MAX_BOUNDARIES} multipart boundaries: read up to byte {end:,}, "
                    "the rest only in the raw message"
                )
                return raw[:end]
        return raw

    # parts

    def _walk(self, part: Message, depth: int, in_alternative: bool) -> list[_Body]:
        self.parts_seen += 1
        self._collect_defects(part)
        info = _PartInfo.read(part)
        self._note_charset(info)
        payload = _stored_payload(part)
        if isinstance(payload, list):
            if depth >= MAX_DEPTH or self.parts_seen > self.limits.max_parts:
                self._note_limit(depth)
                self._keep_opaque(part, info)
                return []
            if not info.content_type.startswith("multipart/"):
                self._keep_enclosed(info, payload)
                return []
            if info.content_type == "multipart/alternative":
                return self._alternative(payload, depth)
            bodies: list[_Body] = []
            children = [child for child in payload if isinstance(child, Message)]
            for index, child in enumerate(children):
                if self.parts_seen >= self.limits.max_parts:
                    self._note_limit(depth)
                    self._keep_remaining(part, info, children[index:])
                    break
                bodies.extend(self._walk(child, depth + 1, in_alternative=False))
            return bodies
        if self.parts_seen > self.limits.max_parts:
            self._note_limit(depth)
            self._keep_attachment(info, self._payload_bytes(info, payload))
            return []
        return self._leaf(info, payload, in_alternative)

    def _alternative(self, children: list[Message | str], depth: int) -> list[_Body]:
        # The last alternative is the sender's preferred rendering (RFC 2046); plain text
        # and HTML are taken from the last child offering each.
        plain: str | None = None
        html: str | None = None
        for child in children:
            if not isinstance(child, Message):
                continue
            pieces = self._walk(child, depth + 1, in_alternative=True)
            texts = [piece.text for piece in pieces if piece.text is not None]
            htmls = [piece.html for piece in pieces if piece.html is not None]
            if texts and any(text.strip() for text in texts):
                plain = "\n\n".join(texts)
            if htmls:
                html = "\n".join(htmls)
        return [_Body(plain, html)] if plain is not None or html is not None else []

    def _leaf(self, info: _PartInfo, payload: object, in_alternative: bool) -> list[_Body]:
        content_type = info.content_type
        data = self._payload_bytes(info, payload)
        if content_type.startswith("multipart/"):
            # No boundary found (or none declared): the stdlib left the body unsplit.
            # Reading it as text keeps whatever the sender wrote.
            self._defect(f"{content_type} without parts read as text/plain")
            return [_Body(self._decode_text(info, data, "text/plain"), None)]
        # A text part is body text unless it is marked as an attachment, or names a file
        # without saying inline (old-style attachments carry only a name= parameter).
        is_body = content_type in _BODY_TEXT and (
            info.disposition == "inline"
            or (info.disposition != "attachment" and info.raw_filename() is None)
        )
        if is_body:
            text = self._decode_text(info, data, content_type)
            if content_type == "text/html":
                return [_Body(None, text)]
            if info.param("format") == "flowed":
                text = _unflow(text, delsp=info.param("delsp") == "yes")
            return [_Body(text, None)]
        if in_alternative and content_type.startswith("text/") and content_type != "text/calendar":
            # Another rendering of the same content (text/enriched, AMP for email): not
            # something the customer attached.
            self._defect(f"alternative {content_type} part skipped")
            return []
        self._keep_attachment(info, data)
        return []

    def _keep_enclosed(self, info: _PartInfo, payload: list[Message | str]) -> None:
        """Keep a message/* part (forwarded mail, delivery report) as one attachment."""
        data = self._serialize_payload(payload)
        if info.transfer_encoding == "base64":
            # Not allowed for message/*, but senders do it; the stdlib parsed the encoded
            # text as if it were a message, so decode what it saw.
            data = decode_base64(data)
        elif info.transfer_encoding == "quotedprintable":
            data = binascii.a2b_qp(data)
        name: str | None = None
        if info.content_type in _ENCLOSED_MESSAGES:
            raw_subject = _first_field(data, "subject")
            subject = (
                decode_header_value(_as_text(raw_subject), self.charset_hint)
                if raw_subject is not None
                else ""
            )
            name = subject or self._filename(info) or "forwarded"
            if not name.lower().endswith(".eml"):
                name += ".eml"
        self._keep_attachment(info, data, name)

    def _keep_opaque(self, part: Message, info: _PartInfo) -> None:
        self.attachments.append(
            _PendingAttachment(
                name=f"part-{self.parts_seen}.eml",
                content_type=info.content_type,
                data=self._serialize(part),
                disposition="attachment",
                content_id=None,
            )
        )

    def _keep_remaining(self, part: Message, info: _PartInfo, children: list[Message]) -> None:
        """Keep the children past the part budget as one multipart attachment, not many."""
        nl = self.linesep
        boundary = part.get_boundary() or "postdesk-remaining-parts"
        head = "".join(f"{name}: {value}{nl}" for name, value in part.raw_items())
        chunks = [(head + nl).encode("utf-8", "surrogateescape")]
        for child in children:
            chunks.append(f"--{boundary}{nl}".encode("utf-8", "surrogateescape"))
            chunks.append(self._serialize(child) + nl.encode("ascii"))
        chunks.append(f"--{boundary}--{nl}".encode("utf-8", "surrogateescape"))
        self.attachments.append(
            _PendingAttachment(
                name=f"remaining-{len(children)}-parts.eml",
                content_type=info.content_type,
                data=b"".join(chunks),
                disposition="attachment",
                content_id=None,
            )
        )

    def _keep_attachment(self, info: _PartInfo, data: bytes, name: str | None = None) -> None:
        if name is None:
            name = self._filename(info)
        content_type = info.content_type
        if name is not None and content_type == "application/octet-stream":
            # Mail clients label anything octet-stream; the name is the better hint.
            content_type = content_type_for(name) or content_type
        self.attachments.append(
            _PendingAttachment(name, content_type, data, info.disposition, info.content_id)
        )

    # decoding

    def _payload_bytes(self, info: _PartInfo, payload: object) -> bytes:
        if not isinstance(payload, str):
            return b""
        raw = payload.encode("utf-8", "surrogateescape")
        encoding = info.transfer_encoding
        if encoding in ("", "7bit", "8bit", "binary"):
            return raw
        if encoding == "base64":
            return self._decode_base64_body(raw)
        if encoding == "quotedprintable":
            return binascii.a2b_qp(raw)
        if encoding in ("xuuencode", "uuencode", "xuue", "uue"):
            return _decode_uu(raw)
        self._defect(f"unknown transfer encoding {encoding!r}: payload kept as is")
        return raw

    def _decode_base64_body(self, raw: bytes) -> bytes:
        if not raw.translate(None, _BASE64_CHARS):
            return decode_base64(raw)
        # Junk in the payload: keep the leading run of lines that look like base64 and
        # drop what follows (list footers appended to an encoded body, say). If not even
        # the first line looks like base64, the label is wrong and the bytes are the text.
        lines: list[bytes] = []
        for line in raw.splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            outsiders = len(_BASE64_OUTSIDER.findall(stripped))
            if outsiders * 10 > len(stripped) or b" " in stripped:
                break
            lines.append(stripped)
        if not lines:
            self._defect("content labelled base64 is not base64: payload kept as is")
            return raw
        self._defect("junk in base64 payload ignored")
        return decode_base64(b"".join(lines))

    def _decode_text(self, info: _PartInfo, data: bytes, content_type: str) -> str:
        if content_type == "text/html":
            cap, what, key = self.limits.max_html_chars, "HTML part", "max_html_chars"
        else:
            cap, what, key = self.limits.max_text_chars, "text part", "max_text_chars"
        if len(data) > 4 * cap:
            # No charset takes more than four bytes a character: decode no more than the
            # cap can keep, cut where no UTF-8 sequence is split.
            end = 4 * cap
            while end > 0 and 0x80 <= data[end] < 0xC0:
                end -= 1
            data = data[:end]
        text = self._decode_bytes(info, data, content_type)
        if len(text) > cap:
            self._defect(f"{what} cut to {cap:,} characters ([limits] {key})")
            text = text[:cap]
        return text

    def _decode_bytes(self, info: _PartInfo, data: bytes, content_type: str) -> str:
        declared = info.param("charset") or None
        if declared is None and content_type == "text/html":
            meta = _HTML_META_CHARSET.search(data, 0, 4096)
            if meta is not None:
                declared = meta.group(1).decode("ascii")
        decoded = decode_bytes_detail(data, declared)
        if decoded.guessed and declared is not None:
            self._defect(f"charset {declared!r} did not fit: decoded as {decoded.charset}")
        text = decoded.text
        if "\x00" in text:
            self._defect("NUL characters removed from body")
            text = text.replace("\x00", "")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def _note_charset(self, info: _PartInfo) -> None:
        # The first declared charset is the best guess for raw 8-bit header values.
        if self.charset_hint is None and info.content_type.startswith("text/"):
            self.charset_hint = codec_for(info.param("charset"))

    def _filename(self, info: _PartInfo) -> str | None:
        value = info.raw_filename()
        if value is None:
            return None
        if isinstance(value, tuple):
            charset, data = value
            text = decode_bytes_detail(data, charset or self.charset_hint).text
            return " ".join(text.split()) or None
        return decode_header_value(value, self.charset_hint) or None

    # serialization of enclosed and opaque parts

    def _serialize_payload(self, payload: list[Message | str]) -> bytes:
        chunks = [self._serialize(item) for item in payload if isinstance(item, Message)]
        return self.linesep.encode("ascii").join(chunks)

    def _serialize(self, root: Message) -> bytes:
        """The bytes of a parsed (sub)message, close to the original.

        Iterative rather than recursive: enclosed messages can be nested thousands of
        levels deep, which would exhaust the stack of email.generator.
        """
        nl = self.linesep
        out: list[str] = []
        stack: list[Message | str] = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            for name, value in item.raw_items():
                out.append(f"{name}: {value}{nl}")
            out.append(nl)
            payload = _stored_payload(item)
            if isinstance(payload, str):
                out.append(payload)
                continue
            if not isinstance(payload, list):
                continue
            children = [child for child in payload if isinstance(child, Message)]
            pending: list[Message | str] = []
            boundary = item.get_boundary()
            if boundary is None:
                for index, child in enumerate(children):
                    if index:
                        pending.append(nl)
                    pending.append(child)
            else:
                if item.preamble is not None:
                    pending.append(item.preamble + nl)
                for child in children:
                    pending.append(f"--{boundary}{nl}")
                    pending.append(child)
                    pending.append(nl)
                pending.append(f"--{boundary}--{nl}")
                if item.epilogue:
                    pending.append(item.epilogue)
            stack.extend(reversed(pending))
        return "".join(out).encode("utf-8", "surrogateescape")

    # bookkeeping

    def _collect_defects(self, part: Message) -> None:
        for defect in part.defects:
            self._defect(f"part {self.parts_seen}: {type(defect).__name__}")

    def _note_limit(self, depth: int) -> None:
        if not self.limit_noted:
            self.limit_noted = True
            if depth >= MAX_DEPTH:
                self._defect(f"nesting deeper than {MAX_DEPTH}: kept as opaque attachments")
            else:
                self._defect(
                    f"more than {self.limits.max_parts} parts: the rest kept as one attachment"
                )

    def _defect(self, text: str) -> None:
        if text not in self.defects:
            self.defects.append(text)

    # result

    def _assemble(self, message: Message) -> ParsedMessage:
        hint = self.charset_hint
        raw_values: dict[str, list[str]] = {}
        for name, value in message.raw_items():
            raw_values.setdefault(name.strip().lower(), []).append(str(value))
        headers = {
            name: tuple(decode_header_value(value, hint) for value in values)
            for name, values in raw_values.items()
        }

        def first(name: str) -> str | None:
            values = raw_values.get(name)
            return values[0] if values else None

        text, html = self._body_text()
        subjects = headers.get("subject")
        date = first("date")
        return ParsedMessage(
            message_id=normalize_message_id(first("message-id")),
            in_reply_to=message_id_list(" ".join(raw_values.get("in-reply-to", ()))),
            references=message_id_list(" ".join(raw_values.get("references", ()))),
            subject=subjects[0] if subjects else "",
            from_=_first_address(self._addresses("from", raw_values)),
            sender=_first_address(self._addresses("sender", raw_values)),
            reply_to=self._addresses("reply-to", raw_values),
            to=self._addresses("to", raw_values),
            cc=self._addresses("cc", raw_values),
            date=_parse_date(date) if date else None,
            text=text,
            html=html,
            attachments=self._final_attachments(html),
            headers=MappingProxyType(headers),
            defects=tuple(self.defects),
        )

    def _body_text(self) -> tuple[str, str | None]:
        texts: list[str] = []
        htmls: list[str] = []
        for body in self.bodies:
            text = body.text
            if (text is None or not text.strip()) and body.html is not None:
                text = html_to_text(body.html, self.limits.max_text_chars)
            if text is not None and text.strip():
                texts.append(_LEADING_BLANK_LINES.sub("", text).rstrip())
            if body.html is not None:
                htmls.append(body.html)
        text = "\n\n".join(texts)
        cap = self.limits.max_text_chars
        if len(text) > cap:
            self._defect(f"text cut to {cap:,} characters ([limits] max_text_chars)")
            text = text[:cap]
        if not htmls:
            return text, None
        html = "\n".join(htmls)
        cap = self.limits.max_html_chars
        if len(html) > cap:
            self._defect(f"HTML cut to {cap:,} characters ([limits] max_html_chars)")
            html = html[:cap]
        return text, html

    def _addresses(self, name: str, raw_values: Mapping[str, list[str]]) -> tuple[Address, ...]:
        values = raw_values.get(name)
        if not values:
            return ()
        found = _parse_addresses(values, self.charset_hint)
        if not found:
            # Whole address lists sent as one encoded-word: decode first, then parse.
            decoded = [decode_header_value(value, self.charset_hint) for value in values]
            if decoded != values:
                found = _parse_addresses(decoded, self.charset_hint)
            if not found and any(value.strip() for value in values):
                self._defect(f"no usable address in {name}")
        return tuple(found)

    def _final_attachments(self, html: str | None) -> tuple[Attachment, ...]:
        referenced = {match.lower() for match in _CID_REFERENCE.findall(html)} if html else set()
        result: list[Attachment] = []
        for index, pending in enumerate(self.attachments, start=1):
            content_id = pending.content_id
            result.append(
                Attachment(
                    filename=sanitize_filename(pending.name, pending.content_type, index),
                    content_type=pending.content_type,
                    data=pending.data,
                    inline=pending.disposition == "inline"
                    or (content_id is not None and content_id.lower() in referenced),
                    content_id=content_id,
                )
            )
        return tuple(result)


# --- helpers ------------------------------------------------------------------------


def _stored_payload(part: Message) -> object:
    """The payload as the parser stored it: sub-parts, or text with raw bytes escaped.

    compat32's get_payload() decodes a text payload holding raw 8-bit bytes with the
    declared charset and errors="replace", so undeclared windows-1256 or a forwarded
    8-bit message would come back as U+FFFD. The stored value keeps those bytes as
    surrogate escapes, which is what decoding and re-serializing need.
    """
    stored = vars(part).get("_payload")
    return stored if stored is not None else part.get_payload()


def _parse_parameters(value: str) -> tuple[str, dict[str, _Param]]:
    """Split a Content-Type/-Disposition value into its lower-case token and parameters.

    RFC 2231 continuations (name*0, name*1*) are joined and extended values
    (name*=charset'lang'%XX) kept as bytes with their charset; when a parameter comes
    both plain and extended, the extended one wins, as its sender intended.
    """
    token, _, rest = value.partition(";")
    plain: dict[str, _Param] = {}
    pieces: dict[str, list[tuple[int, str, bool]]] = {}
    for match in _PARAMETER.finditer(";" + rest):
        key = match.group(1).lower()
        raw_value = _unquote(match.group(2).strip())
        if "*" not in key:
            plain.setdefault(key, raw_value)
            continue
        base, _, section = key.partition("*")
        encoded = section == "" or section.endswith("*")
        number = section.rstrip("*")
        pieces.setdefault(base, []).append(
            (int(number) if number.isdigit() else 0, raw_value, encoded)
        )
    for base, sections in pieces.items():
        sections.sort(key=lambda section: section[0])
        charset: str | None = None
        data = b""
        for index, (_, text, encoded) in enumerate(sections):
            if encoded and index == 0 and text.count("'") >= 2:
                charset, _, text = text.split("'", 2)
            chunk = text.encode("utf-8", "surrogateescape")
            data += urllib.parse.unquote_to_bytes(chunk) if encoded else chunk
        plain[base] = (charset or None, data)
    return " ".join(token.split()).lower(), plain


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value.strip('"')


def _content_type(
    part: Message,
    declared: str | None,
    main: str,
    params: Mapping[str, _Param],
    disposition_params: Mapping[str, _Param],
) -> str:
    if declared is None:
        return part.get_default_type()
    if _CONTENT_TYPE.fullmatch(main):
        return main
    if main.startswith(("multipart/", "message/")):
        return main.split()[0]
    # RFC 2045 says an invalid Content-Type means text/plain, but a part that names a
    # file is an attachment whatever its label; octet-stream lets the name decide.
    if params.get("name") or disposition_params.get("filename"):
        return "application/octet-stream"
    return "text/plain"


def _transfer_encoding(value: str | None) -> str:
    if value is None:
        return ""
    # "Base64 ", "base-64", "quoted_printable": the intent is clear enough.
    token = value.split(";", 1)[0].strip().strip("\"'").lower()
    return "".join(char for char in token if char.isalnum())


def _first_field(data: bytes, wanted: str) -> bytes | None:
    fields, _ = _scan_header_block(data)
    for name, value in fields:
        if name == wanted:
            return value
    return None


def _parse_addresses(values: Iterable[str], charset_hint: str | None) -> list[Address]:
    found: list[Address] = []
    seen: set[str] = set()
    for display, addr in email.utils.getaddresses(list(values)):
        addr = recover_surrogates(addr, charset_hint)
        addr = "".join(addr.split()).strip("<>").lower()
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or addr in seen:
            continue
        seen.add(addr)
        found.append(Address(email=addr, name=decode_header_value(display, charset_hint)))
    return found


def _first_address(addresses: tuple[Address, ...]) -> Address | None:
    return addresses[0] if addresses else None


def _decode_uu(data: bytes) -> bytes:
    out: list[bytes] = []
    started = False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            break
        if not line:
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Some encoders pad lines wrongly; decode just the length the line claims.
            length = ((line[0] - 32) & 63) * 4 + 5
            try:
                out.append(binascii.a2b_uu(line[: length // 3]))
            except binascii.Error:
                continue
    return b"".join(out) if started else data


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed soft line breaks, respecting quote depth."""
    out: list[str] = []
    buffer: str | None = None
    buffer_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if buffer is not None and depth != buffer_depth:
            out.append(_quoted(buffer, buffer_depth))
            buffer = None
        buffer = content if buffer is None else buffer + content
        buffer_depth = depth
        if not flowed:
            out.append(_quoted(buffer, buffer_depth))
            buffer = None
    if buffer is not None:
        out.append(_quoted(buffer, buffer_depth))
    return "\n".join(out)


def _quoted(text: str, depth: int) -> str:
    return (">" * depth + " " + text) if depth else text
