"""Decoding the bytes mail carries into text, whatever charset it claims or fails to claim.

Mail in a support mailbox lies about its charset often enough that a strict decode with the
declared name is only the first guess. The order of fallbacks is fixed so that the same
bytes always give the same text: declared charset, UTF-8, a confident statistical guess,
windows-1256 for bytes that are plainly Arabic-script (Persian mail from old Outlook),
and windows-1252 / latin-1, which cannot fail. No step ever substitutes U+FFFD for bytes
some tried codec could decode.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

import charset_normalizer

# Names mail really carries, mapped to the Python codec that decodes what those senders
# actually meant. Supersets are chosen on purpose: a message labelled gb2312 or
# ks_c_5601-1987 was written by software that emitted GBK/GB18030 or cp949, and
# iso-8859-1 from Windows software routinely holds windows-1252 quotes in 0x80-0x9F
# (the WHATWG encoding standard makes the same mapping). None means "no charset at all":
# go straight to the fallbacks.
_ALIASES: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        "utf8": "utf-8",
        "utf-8": "utf-8",
        "x-utf8": "utf-8",
        "x-utf-8": "utf-8",
        "utf-8-sig": "utf-8",
        "unicode-1-1-utf-8": "utf-8",
        "us-ascii": "ascii",
        "ascii": "ascii",
        "ansi_x3.4-1968": "ascii",
        "iso646-us": "ascii",
        "us": "ascii",
        "iso-8859-1": "cp1252",
        "iso8859-1": "cp1252",
        "iso_8859-1": "cp1252",
        "iso-8859-1:1987": "cp1252",
        "latin1": "cp1252",
        "latin-1": "cp1252",
        "l1": "cp1252",
        "iso-8859-9": "cp1254",
        "iso8859-9": "cp1254",
        "latin5": "cp1254",
        "iso-8859-11": "cp874",
        "tis-620": "cp874",
        "windows-874": "cp874",
        "iso-8859-8-i": "iso8859-8",
        "iso-8859-8-e": "iso8859-8",
        "iso_8859-8-i": "iso8859-8",
        "logical": "iso8859-8",
        "visual": "iso8859-8",
        "iso-8859-6-i": "iso8859-6",
        "iso-8859-6-e": "iso8859-6",
        "windows-1256": "cp1256",
        "x-cp1256": "cp1256",
        "cp-1256": "cp1256",
        "gb2312": "gb18030",
        "gb_2312-80": "gb18030",
        "csgb2312": "gb18030",
        "euc-cn": "gb18030",
        "x-euc-cn": "gb18030",
        "gbk": "gb18030",
        "x-gbk": "gb18030",
        "cp936": "gb18030",
        "windows-936": "gb18030",
        "chinese": "gb18030",
        "ks_c_5601-1987": "cp949",
        "ks_c_5601-1989": "cp949",
        "ks_c_5601": "cp949",
        "ksc5601": "cp949",
        "ksc_5601": "cp949",
        "korean": "cp949",
        "euc-kr": "cp949",
        "x-euc-kr": "cp949",
        "windows-949": "cp949",
        "x-windows-949": "cp949",
        "big5": "big5hkscs",
        "x-big5": "big5hkscs",
        "big5-hkscs": "big5hkscs",
        "cn-big5": "big5hkscs",
        "shift_jis": "cp932",
        "shift-jis": "cp932",
        "sjis": "cp932",
        "x-sjis": "cp932",
        "ms_kanji": "cp932",
        "windows-31j": "cp932",
        "csshiftjis": "cp932",
        "iso-2022-jp": "iso2022_jp_ext",
        "csiso2022jp": "iso2022_jp_ext",
        "x-mac-roman": "mac-roman",
        "macintosh": "mac-roman",
        "mac": "mac-roman",
        "x-mac-cyrillic": "mac-cyrillic",
        "x-mac-ukrainian": "mac-cyrillic",
        "x-mac-greek": "mac-greek",
        "x-mac-turkish": "mac-turkish",
        "x-mac-ce": "mac-latin2",
        "x-mac-centraleurroman": "mac-latin2",
        "x-mac-icelandic": "mac-iceland",
        "x-mac-croatian": "mac-croatian",
        "x-mac-romanian": "mac-romanian",
        "x-mac-arabic": "mac-arabic",
        "x-mac-farsi": "mac-farsi",
        "x-mac-japanese": "cp932",
        "x-mac-chinesetrad": "big5hkscs",
        "x-mac-chinesesimp": "gb18030",
        "x-mac-korean": "cp949",
        "unknown-8bit": None,
        "unknown": None,
        "x-unknown": None,
        "x-user-defined": None,
        "default": None,
        "charset": None,
        "none": None,
        "8bit": None,
        "7bit": None,
        "binary": None,
    }
)

# Python text codecs that are not charsets: a message must not be able to make us run
# escape-sequence interpreters or IDNA over its body by naming them.
_REFUSED_CODECS: Final = frozenset(
    {
        "unicode-escape",
        "raw-unicode-escape",
        "idna",
        "punycode",
        "undefined",
        "charmap",
        "mbcs",
        "oem",
    }
)

# Codecs under which pure-ASCII bytes do not mean the same ASCII text.
_NOT_ASCII_COMPATIBLE: Final = frozenset(
    {
        "utf-7",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
        "iso2022_jp",
        "iso2022_jp_1",
        "iso2022_jp_2",
        "iso2022_jp_2004",
        "iso2022_jp_3",
        "iso2022_jp_ext",
        "iso2022_kr",
        "hz",
    }
)

_UNICODE_CODECS: Final = frozenset({"utf-8"}) | {
    name for name in _NOT_ASCII_COMPATIBLE if name.startswith("utf")
}

_WINDOWS_CODEPAGE: Final = re.compile(r"(?:x-)?(?:windows|win|cp|ms)[-_ ]?(\d{3,4})")
_CHARSET_TOKEN: Final = re.compile(r"[a-z0-9_.:+\-]+")

# Encodings a statistical guess may choose from. Without the restriction the detector
# happily answers with EBCDIC or obscure DOS code pages for short strings.
_PLAUSIBLE: Final = (
    "cp1252",
    "iso8859_15",
    "cp1250",
    "iso8859_2",
    "cp1251",
    "koi8_r",
    "koi8_u",
    "iso8859_5",
    "cp1256",
    "iso8859_6",
    "cp1253",
    "iso8859_7",
    "cp1254",
    "cp1255",
    "iso8859_8",
    "cp1257",
    "gb18030",
    "big5",
    "shift_jis",
    "euc_jp",
    "euc_kr",
    "cp949",
    "cp874",
)
_MULTIBYTE_GUESSES: Final = frozenset({"gb18030", "big5", "shift_jis", "euc_jp", "euc_kr", "cp949"})
# Detection reads only a prefix: its verdict is checked by a strict decode of everything.
_DETECTION_SAMPLE: Final = 65536
_MIN_CJK_SAMPLE: Final = 32

_ARABIC_SCRIPT: Final = re.compile(
    r"[\u0600-\u06ff\u0750-\u077f\u200c-\u200f\ufb50-\ufdff\ufe70-\ufeff]"
)
_NON_ASCII_VISIBLE: Final = re.compile(r"[^\x00-\x7f\s]")
_ARABIC_SAMPLE: Final = 8192

_ENCODED_WORD: Final = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?]*)\?=")
_CONTROL_CHARS: Final = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_BASE64_JUNK: Final = re.compile(rb"[^A-Za-z0-9+/]")
_HIGH_BYTES: Final = bytes(range(0x80, 0x100))


class DecodedText(NamedTuple):
    """Text decoded from bytes, the codec that produced it, and whether it was a guess."""

    text: str
    charset: str
    guessed: bool


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Decode mail bytes to text, trusting `declared` only as far as the bytes agree."""
    return decode_bytes_detail(data, declared).text


def decode_bytes_detail(data: bytes, declared: str | None) -> DecodedText:
    """Like decode_bytes, also saying which codec won and whether the label was overruled.

    `guessed` is true whenever the result does not come from the declared charset, so the
    caller can record the fallback.
    """
    codec = codec_for(declared)
    if not data:
        return DecodedText("", codec or "ascii", False)
    if data.isascii() and codec not in _NOT_ASCII_COMPATIBLE:
        return DecodedText(data.decode("ascii"), codec or "ascii", False)

    if data.startswith(codecs.BOM_UTF8):
        text = _try_decode(data, "utf-8-sig")
        if text is not None:
            return DecodedText(text, "utf-8", codec not in (None, "utf-8"))
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and not data.startswith(
        codecs.BOM_UTF32_LE
    ):
        text = _try_decode(data, "utf-16")
        if text is not None:
            return DecodedText(text, "utf-16", codec not in (None, "utf-16"))

    tried_utf8 = False
    if codec is not None:
        if codec not in _UNICODE_CODECS and not data.isascii():
            # Valid multi-byte UTF-8 practically never happens by accident in text of any
            # other charset, while "iso-8859-1" labels on UTF-8 bodies are common.
            tried_utf8 = True
            text = _try_decode(data, "utf-8")
            if text is not None:
                return DecodedText(text, "utf-8", True)
        # A Western single-byte label is what the sender's software used; the five bytes
        # windows-1252 leaves undefined are read as latin-1 rather than starting to guess.
        text = _decode_single_byte(data) if codec == "cp1252" else _try_decode(data, codec)
        if text is not None:
            return DecodedText(text, codec, False)
    if not tried_utf8:
        text = _try_decode(data, "utf-8")
        if text is not None:
            return DecodedText(text, "utf-8", codec is not None)
    text = _decode_mostly_utf8(data)
    if text is not None:
        return DecodedText(text, "utf-8", True)
    guess = _detect(data)
    if guess is not None:
        return DecodedText(guess[0], guess[1], True)
    text = _decode_if_arabic_script(data)
    if text is not None:
        return DecodedText(text, "cp1256", True)
    return DecodedText(_decode_single_byte(data), "cp1252", True)


def codec_for(declared: str | None) -> str | None:
    """The Python codec for a charset label from a message, or None if it names none we use."""
    if not declared:
        return None
    # Labels arrive quoted, with trailing junk ("utf-8;"), or with an RFC 2231 language
    # suffix ("utf-8*en").
    label = declared.strip().strip("\"'").lower().split("*", 1)[0]
    token = _CHARSET_TOKEN.match(label)
    if token is None:
        return None
    label = token.group(0)
    if label in _ALIASES:
        return _ALIASES[label]
    codepage = _WINDOWS_CODEPAGE.fullmatch(label)
    if codepage is not None:
        label = "cp" + codepage.group(1)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if info.name in _REFUSED_CODECS or not info._is_text_encoding:
        return None
    return info.name


def decode_header_value(value: str, fallback_charset: str | None = None) -> str:
    """Decode a header value as the compat32 parser returns it into one line of text.

    Handles RFC 2047 encoded-words (also malformed, glued to text, or splitting a
    multi-byte character across words) and raw 8-bit bytes, which the stdlib carries as
    surrogate escapes; those are recovered and decoded, trying `fallback_charset` (the
    message's own body charset, the best hint there is) after UTF-8. Folding is undone,
    whitespace collapsed and control characters dropped.
    """
    if not value:
        return ""
    if "=?" not in value and value.isascii():
        return _tidy(value)
    out: list[str] = []
    # Adjacent encoded-words in one charset are decoded together: senders split words by
    # bytes, so one character may straddle two of them.
    word_charset: str | None = None
    word_chunks: list[bytes] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        literal = value[pos : match.start()]
        pos = match.end()
        charset = match.group(1).lower().split("*", 1)[0]
        payload = _decode_word_payload(match.group(2), match.group(3))
        # RFC 2047: whitespace between two encoded-words is not part of the text.
        if literal and not (literal.isspace() and word_charset is not None):
            if word_charset is not None:
                out.append(_decode_word(word_chunks, word_charset, fallback_charset))
                word_charset = None
            out.append(recover_surrogates(literal, fallback_charset))
        if word_charset != charset:
            if word_charset is not None:
                out.append(_decode_word(word_chunks, word_charset, fallback_charset))
            word_charset, word_chunks = charset, []
        word_chunks.append(payload)
    if word_charset is not None:
        out.append(_decode_word(word_chunks, word_charset, fallback_charset))
    out.append(recover_surrogates(value[pos:], fallback_charset))
    return _tidy("".join(out))


def recover_surrogates(value: str, fallback_charset: str | None = None) -> str:
    """Turn surrogate-escaped raw bytes in a header value back into decoded text."""
    if value.isascii():
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), fallback_charset)


def decode_base64(data: bytes) -> bytes:
    """Decode base64 the way a forgiving mail reader does, never raising.

    Characters outside the alphabet are skipped and text after the final padding is
    ignored (list servers append footers to encoded bodies); broken padding is repaired
    and a dangling single character dropped, so a mangled end costs at most three bytes.
    """
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    cleaned = _BASE64_JUNK.sub(b"", data)
    usable = len(cleaned) - len(cleaned) % 4
    tail = cleaned[usable:]
    if len(tail) == 1:
        tail = b""
    elif tail:
        tail += b"=" * (4 - len(tail))
    try:
        return binascii.a2b_base64(cleaned[:usable] + tail)
    except binascii.Error:
        return b""


def _decode_word(chunks: list[bytes], charset: str, fallback_charset: str | None) -> str:
    return decode_bytes(b"".join(chunks), charset or fallback_charset)


def _decode_word_payload(encoding: str, text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        return decode_base64(raw)
    return binascii.a2b_qp(raw, header=True)


def _tidy(text: str) -> str:
    collapsed = " ".join(text.split())
    if not collapsed.isprintable():
        collapsed = collapsed.translate(_CONTROL_CHARS)
    return collapsed


def _try_decode(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


def _decode_mostly_utf8(data: bytes) -> str | None:
    """Decode text that is UTF-8 except for a few damaged bytes or a truncated last character.

    Such text comes from senders that cut a string by bytes (filenames, subjects) or
    pasted a stray windows-1252 character into a UTF-8 body. Damaged bytes are read as
    windows-1252; a multi-byte character cut off at the very end is dropped. Returns
    None unless the valid UTF-8 clearly outweighs the damage.
    """
    max_errors = 8
    pieces: list[str] = []
    damaged = 0
    truncated = 0
    errors = 0
    pos = 0
    while pos < len(data):
        try:
            pieces.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            start = pos + exc.start
            pieces.append(data[pos:start].decode("utf-8"))
            if exc.reason == "unexpected end of data":
                truncated = len(data) - start
                break
            errors += 1
            if errors > max_errors:
                return None
            end = pos + exc.end
            damaged += end - start
            pieces.append(_decode_single_byte(data[start:end]))
            pos = end
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    valid_high = high - damaged - truncated
    if valid_high < 2 or valid_high < 4 * damaged:
        return None
    return "".join(pieces)


def _detect(data: bytes) -> tuple[str, str] | None:
    """A statistical guess, returned only when it is unambiguous; (text, codec) or None."""
    sample = data[:_DETECTION_SAMPLE]
    try:
        matches = charset_normalizer.from_bytes(sample, cp_isolation=list(_PLAUSIBLE))
        best = matches.best()
        if best is None or best.chaos > 0.1:
            return None
        rivals = [m for m in matches if m is not best and m.chaos <= best.chaos + 0.05]
        if best.coherence >= 0.2:
            best_text = str(best)
            if any(m.coherence >= best.coherence - 0.1 and str(m) != best_text for m in rivals):
                return None
        elif best.encoding in _MULTIBYTE_GUESSES and len(sample) >= _MIN_CJK_SAMPLE:
            if any(m.encoding in _MULTIBYTE_GUESSES for m in rivals):
                return None
        else:
            return None
        codec = best.encoding
    except Exception:  # a detector bug must not make a message unreadable
        return None
    codec = codec_for(codec) or codec
    text = _try_decode(data, codec)
    return None if text is None else (text, codec)


def _decode_if_arabic_script(data: bytes) -> str | None:
    """Decode as windows-1256 when nearly every non-ASCII character comes out Arabic-script.

    Real Persian/Arabic windows-1256 text decodes to Arabic letters only; text in other
    8-bit charsets decodes to a mix with Latin accents and symbols and fails the test.
    """
    text = data.decode("cp1256")
    sample = text[:_ARABIC_SAMPLE]
    visible = len(_NON_ASCII_VISIBLE.findall(sample))
    if visible < 3:
        return None
    arabic = len(_ARABIC_SCRIPT.findall(sample))
    return text if arabic >= 0.95 * visible else None


def _decode_single_byte(data: bytes) -> str:
    text = _try_decode(data, "cp1252")
    return text if text is not None else data.decode("latin-1")
