"""The visible reply of an inbound message, and an agent's reply to relay: new text, no history.

Mail clients append the conversation so far to a reply, and people sign their mail; an
agent reading a ticket, and anything that classifies it, wants only the new text. This
module finds it in the plain-text body, and in the HTML body when the plain text cannot
show it (HTML-only mail, or clients whose plain part lost the quote markers). The HTML is
rendered to lines with '>' for each <blockquote> level and a separator line before
Outlook's reply header (divRplyFwdMsg, the border-top header div), then read by the same
rules as plain text.

How it decides, in order:

1. History that runs to the end of the message is cut off at its first line: an
   "-----Original Message-----" separator (Outlook, Android), a "From: … Sent: … To: …"
   header block (Outlook desktop, web and mobile, Windows Mail; localized) or Hotmail's
   "Date: … Subject: … From: … To: …", or an attribution line ("On … wrote:", "Am …
   schrieb …:", "Le … a écrit :", "El … escribió:", "Op … schreef …:", "… пользователь …
   написал:", "… şunu yazdı:", "… كتب …:", "در تاریخ … نوشت:" and others, wrapped over up
   to three lines) that is not followed by '>'-quoted lines. A cut with no new text above
   it is not made: that is a forwarded or pasted message, and it is the content.
2. '>'-quoted lines, with the attribution line that introduces them, are quoted history.
3. From the end, quoted lines, '-- ' signatures, "Sent from my …" and "Get Outlook for …"
   footers, mailing-list footers under a rule, "-Name" closings and a sign-off ("Regards,",
   "Mit freundlichen Grüßen", "با احترام", …) followed by a few short lines are dropped,
   repeatedly.
4. What remains is one block of new text (top- or bottom-posting: that block is the
   reply) or several blocks between quotes (an inline reply: kept whole, quotes included,
   because the answers mean nothing without the questions). If nothing remains, the whole
   text is returned rather than an empty message.

Forwarded messages ("---------- Forwarded message ---------", "Begin forwarded message:")
are kept: what a customer forwards to support is the request.

`reply_text` reads an agent's reply the same way but, since its text goes to the customer
verbatim, keeps the sign-off and closing name and removes only a "-- " signature, device
footers and trailing rules in step 3; it cuts history with nothing above it, and returns
"" when nothing is left.

No library is used for the plain-text rules. Measured on the upstream-asserted fixtures of
../shared/data/reply-* (see tests/test_quotes.py and bench/quotes.py): email-reply-parser
0.5.12 (unmaintained since 2020) is fast but English-only, and keeps only the answers of
an inline reply; mail-parser-reply 1.36 is multilingual but more than fifteen times slower
than this module, keeps Outlook's separator line and takes a bulleted list for a signature;
quotequail 0.5.4 removes neither signatures nor Outlook header blocks. None knows Persian
or Outlook's HTML. The HTML path uses lxml, which postdesk already depends on through
inscriptis.

Pure and I/O-free; never raises for any str input.
"""

from __future__ import annotations

import re
from typing import Any, Final

import lxml.etree  # type: ignore[import-untyped, unused-ignore]
import lxml.html  # type: ignore[import-untyped, unused-ignore]

from postdesk.lexicon import any_phrase
from postdesk.lexicon.quoting import (
    ATTRIBUTION_OPENERS,
    ATTRIBUTION_VERBS,
    ATTRIBUTION_VERBS_UNSPACED,
    FORWARD_MARKERS,
    HEADER_FIELDS,
    INLINE_HEADER_FIELDS,
    ORIGINAL_MESSAGE_MARKERS,
)
from postdesk.lexicon.signatures import MAIL_FOOTER_PHRASES, MOBILE_FOOTERS, SIGN_OFFS

__all__ = ["reply_text", "visible_text"]

# Line kinds.
_TEXT: Final = 0
_BLANK: Final = 1
_QUOTED: Final = 2

# Direction and zero-width marks that Persian and Arabic mail puts around lines; they are
# invisible and must not hide a '>' or a trailing ':' from the tests below.
_MARKS: Final = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_STRIP_MARKS: Final = str.maketrans("", "", _MARKS)
_ANY_MARK: Final = re.compile(f"[{_MARKS}]")

# Attribution verbs and openers, separators, header fields and forward markers: see
# lexicon/quoting.py.
# How an attribution wrapped over several lines starts: an opener word or a date.
_ATTRIBUTION_OPENER: Final = re.compile(
    rf"(?:{any_phrase(ATTRIBUTION_OPENERS)}\b|\d)", re.IGNORECASE
)
_DIGIT: Final = re.compile(r"\d")
# The verb may be followed by the author's name and address ("schrieb Jan <j@x>:").
_VERB_TO_COLON: Final = 160
_MAX_ATTRIBUTION: Final = 400

_ORIGINAL_MESSAGE: Final = re.compile(
    rf"[\s\-_=*]*{any_phrase(ORIGINAL_MESSAGE_MARKERS)}[\s\-_=*:]*", re.IGNORECASE
)

_FIELD_NAMES: Final = "|".join(
    sorted((re.escape(name).replace(r"\ ", r"[\s\u200c]*") for name in HEADER_FIELDS), key=len)[
        ::-1
    ]
)
# "(?:\*\s*)?" rather than "\*?\s*": two adjacent whitespace runs make a long run of
# spaces cost quadratic time.
_HEADER_FIELD: Final = re.compile(
    rf"\s*(?:\*\s*)?({_FIELD_NAMES})\s*(?:\*\s*)?[:：]", re.IGNORECASE
)
# Outlook's one-line variant: "From: A Sent: Monday … To: B Subject: C".
_INLINE_FIELD: Final = re.compile(
    r"\s\*?(" + "|".join(map(re.escape, INLINE_HEADER_FIELDS)) + r")\*?\s*:", re.IGNORECASE
)
_HEADER_LOOKAHEAD: Final = 8
_BLOCK_STARTS: Final = frozenset({"from", "sent", "subject"})

_FORWARD_MARKER: Final = re.compile(any_phrase(FORWARD_MARKERS), re.IGNORECASE)

_RULE: Final = re.compile(r"[-_=*~—–]{3,}")
_SIGNATURE_RULE: Final = re.compile(r"[-_—–]{5,}")
_SIGNATURE_DELIMITER: Final = re.compile(r"--|-- \S+(?: \S+){0,2}")
_FOOTER_MAX_LINES: Final = 8

_FOOTER_MAX_CHARS: Final = 120
# Windows Mail writes its footer with the link inside: "Sent from Mail<https://…> for
# Windows 10"; the link is dropped before the footer is matched.
_FOOTER_LINK: Final = re.compile(r"<[^<>\s]{1,2000}>")
_MOBILE_FOOTER: Final = re.compile(
    r"(?:" + "|".join(MOBILE_FOOTERS) + r")[.!]?(?:\s*<[^<>\s]+>|\s*\[[^\[\]\s]+\])?",
    re.IGNORECASE,
)

_SIGN_OFF: Final = re.compile(
    r"(?:" + "|".join(map(re.escape, SIGN_OFFS)) + r")\s*[,.!،:]?", re.IGNORECASE
)
_SIGN_OFF_MAX_LINES: Final = 6
_SIGN_OFF_MAX_CHARS: Final = 32
_NAME_LINE_MAX_CHARS: Final = 60
_NAME_LINE_MAX_WORDS: Final = 8
_POSTSCRIPT: Final = re.compile(r"p\.?\s?p?\.?\s?s\b", re.IGNORECASE)
_DASH_NAME: Final = re.compile(r"[-~/–—]\w[\w.'’\-]*(?:\s+[\w.'’\-]+){0,3}")

# What mail systems add after the quoted history: legal disclaimers, list footers.
_FOOTER_TEXT: Final = re.compile("|".join(MAIL_FOOTER_PHRASES), re.IGNORECASE)
# A gateway's warning above the message ("CAUTION: This email originated from outside…").
_BANNER: Final = re.compile(
    r"\[?(?:caution|warning|external(?:\s+(?:e-?mail|sender|message))?|attention|notice)\]?"
    r"\s*[:!\-]",
    re.IGNORECASE,
)
_BANNER_TOPIC: Final = re.compile(r"outside|external|extern|links?\b|attachments?", re.I)
_BANNER_MAX_CHARS: Final = 500
_FOOTER_MAX_BLOCK: Final = 20  # lines
_DELIMITER_WINDOW: Final = 30

# HTML: markers of quoted history and signatures that clients put in their markup.
_HTML_HINT: Final = re.compile(
    r"<blockquote|gmail_quote|divRplyFwdMsg|yahoo_quoted|moz-cite-prefix|OutlookMessageHeader"
    r"|OLK_SRC_BODY_SECTION|border-top:\s*solid\s*#(?:E1E1E1|B5C4DF)|gmail_signature"
    r"|moz-signature|appendonsend",
    re.IGNORECASE,
)
_BLOCKQUOTE: Final = re.compile(r"<blockquote", re.IGNORECASE)
_OUTLOOK_HEADER_STYLE: Final = re.compile(r"border-top:\s*solid\s*#(?:E1E1E1|B5C4DF)", re.I)
_HTML_HIDDEN_STYLE: Final = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.IGNORECASE)
_HTML_SKIP: Final = frozenset(
    {"head", "script", "style", "title", "meta", "link", "template", "noscript"}
)
_HTML_BLOCKS: Final = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_HTML_PARAGRAPHS: Final = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})
# Yahoo's quote container, whose class and id Yahoo (and webmail showing Yahoo mail)
# prefix with a per-message token: "ydp98e98598yahoo_quoted".
_HTML_QUOTE_CLASS_SUFFIX: Final = "yahoo_quoted"
_HTML_SIGNATURE_CLASSES: Final = frozenset({"gmail_signature", "moz-signature"})
_HTML_SIGNATURE_IDS: Final = frozenset({"signature", "ms-outlook-mobile-signature"})
# Outlook on the web and new Outlook put an empty <div id="appendonsend"> where the quoted
# message starts, above the rule and the divRplyFwdMsg header.
_HTML_HEADER_IDS: Final = frozenset({"divrplyfwdmsg", "olk_src_body_section", "appendonsend"})
_HTML_HEADER_CLASSES: Final = frozenset({"outlookmessageheader"})
_XML_DECLARATION: Final = re.compile(r"^\s*<\?xml[^>]*>")
# The rendered HTML marks each line with one "> " per <blockquote> level, but only up to
# this many: the rules need to know a line is quoted, not how deep, and 250 nested quotes
# around many <br>s would otherwise make each short line 500 characters long.
_MAX_QUOTE_PREFIX: Final = 8
# What the HTML may render to, in characters; the rest is not read. The message's HTML is
# capped by [limits] max_html_chars, and a line costs at most its text plus the prefix,
# so this is only reached by HTML made of little but line breaks.
_RENDER_BUDGET: Final = 8_000_000
_ELEMENT_BUDGET: Final = 20_000


def visible_text(text: str, html: str | None = None) -> str:
    """The new text of a message: its body without quoted history and without signature.

    `text` is the plain-text body and `html` the HTML body, if any. The HTML is read only
    when the plain text is blank, or shows no quoting while the HTML has quote markup
    (<blockquote>, Gmail, Outlook, Yahoo, Thunderbird), or has no '>' lines while the
    HTML has <blockquote>s (HTML-only mail flattened to text loses the markers that tell an
    inline reply from top-posting). Line endings become "\\n", trailing spaces are
    dropped, and the result has no leading or trailing blank lines.
    """
    return _read(text, html, relay=False)


def reply_text(text: str, html: str | None = None) -> str:
    """What an agent wrote in a reply by mail, to relay to the customer as it is.

    The quoted history is found as by `visible_text` (plain text first, the HTML when the
    plain text cannot show it), but of what follows the agent's text only this is
    removed: a signature under a "-- " delimiter (RFC 3676; also "--" without the space),
    "Sent from my …", "Get Outlook for …" and other device footers, and rules and quoted
    lines left at the end. The sign-off ("Thanks, Sara", "Best regards,\nSara",
    "با سپاس، سارا") and a "-Name" closing stay: the customer is meant to read them,
    where `visible_text` drops them as noise for reading and classifying.

    Two more differences, because relaying something the agent did not write is worse
    than relaying nothing: history is cut even when nothing was written above it
    (`visible_text` keeps it as forwarded or pasted content), and when nothing is left
    the result is "" rather than the whole text. A reply of only a signature or only
    history thus relays nothing; the caller decides what to do then. An inline reply
    (answers between quotes) is returned whole, quotes included, as by `visible_text`.
    """
    return _read(text, html, relay=True)


def _read(text: str, html: str | None, relay: bool) -> str:
    """The reply in the plain text, or in the HTML when the plain text cannot show it."""
    reply, quoted, marked = _extract(text, relay)
    if html and (
        not reply
        or (not quoted and _HTML_HINT.search(html))
        # Without '>' markers in the plain text an inline reply cannot be told from
        # top-posting there; the HTML's <blockquote>s can tell.
        or (not marked and _BLOCKQUOTE.search(html))
    ):
        from_html, html_quoted, _ = _extract(_html_lines(html), relay)
        if from_html and (html_quoted or not reply):
            return from_html
    return reply


def _extract(text: str, relay: bool = False) -> tuple[str, bool, bool]:
    """The reply in `text`, whether it had quoted history, whether '>' lines.

    `relay` selects reply_text's reading (see there) over visible_text's.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    count = len(lines)
    stripped = [line.strip() for line in lines]
    if _ANY_MARK.search(text):
        stripped = [
            bare.translate(_STRIP_MARKS).strip()
            if bare and (bare[0] in _MARKS or bare[-1] in _MARKS)
            else bare
            for bare in stripped
        ]
    kinds = bytearray(
        [_BLANK if not bare else _QUOTED if bare[0] == ">" else _TEXT for bare in stripped]
    )
    marked = _QUOTED in kinds
    if "=\n" in text:
        for index in range(1, count):
            # The rest of a quoted line that a quoted-printable soft break ("=" at the end)
            # left undecoded, so it lost its '>'.
            if (
                kinds[index] == _TEXT
                and kinds[index - 1] == _QUOTED
                and stripped[index - 1][-1] == "="
            ):
                kinds[index] = _QUOTED

    _drop_banner(stripped, kinds)
    cut = _find_cut(stripped, kinds, relay)
    quoted = cut < count or _QUOTED in kinds[:cut]
    trim = _trim_relay_tail if relay else _trim_tail
    end = trim(stripped, kinds, cut)
    blocks = _text_blocks(kinds, end)
    while len(blocks) > 1 and _is_footer(stripped, *blocks[-1]):
        # A disclaimer or list footer below the quoted history is not an inline answer.
        end = trim(stripped, kinds, blocks[-1][0])
        # Trimming only shortens from the end, so the blocks before `end` stay as they
        # were; recounting them each time would make many footers cost quadratic time.
        blocks.pop()
        while blocks and blocks[-1][0] >= end:
            blocks.pop()
        if blocks and blocks[-1][1] > end:
            blocks[-1] = (blocks[-1][0], end)
    if not blocks:
        return ("" if relay else _join(lines, 0, count)), quoted, marked
    if len(blocks) == 1:
        start, stop = blocks[0]
        return _join(lines, start, stop), quoted, marked
    # An inline reply: everything up to the last answer, from the first line shown.
    first = next(line for line in range(end) if kinds[line] != _BLANK)
    return _join(lines, first, end), quoted, marked


def _drop_banner(stripped: list[str], kinds: bytearray) -> None:
    """Treat a gateway's external-sender warning at the top as blank."""
    first = kinds.find(_TEXT)
    if first < 0 or not _BANNER.match(stripped[first]):
        return
    stop = first
    while stop < len(kinds) and kinds[stop] == _TEXT:
        stop += 1
    paragraph = " ".join(stripped[first:stop])
    if len(paragraph) <= _BANNER_MAX_CHARS and _BANNER_TOPIC.search(paragraph):
        kinds[first:stop] = bytes([_BLANK]) * (stop - first)


def _is_footer(stripped: list[str], start: int, stop: int) -> bool:
    if stop - start > _FOOTER_MAX_BLOCK:
        return False
    return any(_FOOTER_TEXT.search(stripped[line], 0, 2000) for line in range(start, stop))


def _find_cut(stripped: list[str], kinds: bytearray, relay: bool = False) -> int:
    """Where history that runs to the end starts; marks attributions of quotes as quoted.

    With `relay`, history with nothing above it is cut too (see reply_text).
    """
    count = len(stripped)
    first_text = -1  # the first line of new text, not counting skipped history headers
    index = 0
    while index < count:
        if kinds[index] != _TEXT:
            index += 1
            continue
        bare = stripped[index]
        block_end = -1  # last line of a history header that starts at `start`
        start = index
        if bare[0] in "-_=*" and _ORIGINAL_MESSAGE.fullmatch(bare):
            block_end = index
        elif ":" in bare or "：" in bare:
            if bare[-1] in ":：":
                attribution = _attribution_start(stripped, kinds, index)
                if attribution is not None:
                    start = attribution
                    if first_text >= start:
                        first_text = -1
                    if _next_is_quoted(kinds, index + 1):
                        # An attribution introducing '>' lines belongs to the quote.
                        for line in range(start, index + 1):
                            kinds[line] = _QUOTED
                        index += 1
                        continue
                    block_end = index
            if block_end < 0:
                block_end = _header_block_end(stripped, kinds, index)
                if block_end >= 0 and _next_is_quoted(kinds, block_end + 1):
                    # "From: … / Date: …" introducing '>' lines is an attribution.
                    for line in range(index, block_end + 1):
                        kinds[line] = _QUOTED
                    index = block_end + 1
                    continue
        if block_end < 0:
            if first_text < 0:
                first_text = index
            index += 1
            continue
        if relay or 0 <= first_text < start:
            return start
        # Nothing new above it: a forwarded or pasted message, which is the content.
        index = block_end + 1
    return count


def _attribution_start(stripped: list[str], kinds: bytearray, end: int) -> int | None:
    """First line of an attribution ("On … wrote:") ending at `end`, wrapped or not."""
    found = None
    candidate = ""
    for start in range(end, max(end - 3, -1), -1):
        if kinds[start] != _TEXT:
            break
        piece = stripped[start]
        if start == end:
            candidate = piece
        elif piece[-1] in ".!?;。":
            break  # a sentence of the message, not the start of a wrapped attribution
        elif piece.endswith("="):
            # A quoted-printable soft line break left in by a broken client.
            candidate = piece[:-1] + candidate
        else:
            candidate = piece + " " + candidate
        if len(candidate) > _MAX_ATTRIBUTION:
            break
        opener = _ATTRIBUTION_OPENER.match(piece) is not None
        if (start == end or opener) and _is_attribution(candidate):
            found = start
            if opener:
                break
            # Look further up: "John <j@x> wrote:" may continue "On Tue, 1 Jun 2010 10:00".
    return found


def _is_attribution(candidate: str) -> bool:
    if "@" not in candidate and not _DIGIT.search(candidate):
        return False
    if _HEADER_FIELD.match(candidate):
        return False
    # The verb must be near the end; names and addresses may follow it.
    tail = candidate[-_VERB_TO_COLON - 12 :].lower()
    for verb in ATTRIBUTION_VERBS:
        at = tail.rfind(verb)
        if at >= 0 and (at == 0 or not tail[at - 1].isalpha()):
            return True
    if any(verb in tail for verb in ATTRIBUTION_VERBS_UNSPACED):
        return True
    # No verb (Japanese and some webmail): "<date> <name> <address>:".
    body = candidate[:-1].rstrip()
    return body.endswith(">") and "@" in body and _DIGIT.search(body) is not None


def _next_is_quoted(kinds: bytearray, index: int) -> bool:
    count = len(kinds)
    while index < count and kinds[index] == _BLANK:
        index += 1
    return index < count and kinds[index] == _QUOTED


def _header_block_end(stripped: list[str], kinds: bytearray, index: int) -> int:
    """Last line of an Outlook-style "From: / Sent: / To: / Subject:" block at `index`."""
    match = _HEADER_FIELD.match(stripped[index])
    if match is None:
        return -1
    first = _field_kind(match.group(1))
    # Outlook starts with From:; Hotmail and Windows Live Mail with Date: or Subject:
    # ("Date: … / Subject: … / From: … / To: …").
    if first not in _BLOCK_STARTS or _forwarded_above(stripped, kinds, index):
        return -1
    if first == "from":
        inline = {_field_kind(found.group(1)) for found in _INLINE_FIELD.finditer(stripped[index])}
        if len(inline - {"from"}) >= 2:
            return index
    seen: set[str] = set()
    last = index
    count = len(stripped)
    for line in range(index + 1, min(count, index + 1 + _HEADER_LOOKAHEAD)):
        if kinds[line] != _TEXT:
            break
        field = _HEADER_FIELD.match(stripped[line])
        if field is not None:
            kind = _field_kind(field.group(1))
            if kind == first:
                break  # the next block starts
            seen.add(kind)
            last = line
    if first != "from":
        # Without From: first, a block must still name the sender, and one more field.
        if "from" not in seen:
            return -1
        seen.discard("from")
    if len(seen) >= 2 or (seen and _next_is_quoted(kinds, last + 1)):
        return last
    return -1


def _field_kind(name: str) -> str:
    key = " ".join(name.replace("\u200c", " ").split()).lower()
    return HEADER_FIELDS.get(key, "")


def _forwarded_above(stripped: list[str], kinds: bytearray, index: int) -> bool:
    line = index - 1
    while line >= 0 and kinds[line] == _BLANK:
        line -= 1
    return line >= 0 and _FORWARD_MARKER.search(stripped[line]) is not None


def _trim_tail(stripped: list[str], kinds: bytearray, end: int) -> int:
    """Drop quotes, rules, footers and signatures from the end, until none is left."""
    while True:
        while end > 0 and kinds[end - 1] != _TEXT:
            end -= 1
        if end == 0:
            return 0
        last = stripped[end - 1]
        if (
            (last[0] in "-_=*~—–" and _RULE.fullmatch(last))
            or _is_mobile_footer(last)
            # A sign-off left waiting for the name that a rule or footer cut away.
            or (last[-1] in ",،" and end > 1 and _SIGN_OFF.fullmatch(last))
        ):
            end -= 1
            continue
        start = _signature_start(stripped, kinds, end)
        if start is None:
            return end
        end = start


def _is_mobile_footer(line: str) -> bool:
    """Whether `line` is a "Sent from my …" or "Get Outlook for …" footer."""
    if len(line) > _FOOTER_MAX_CHARS * 4:
        return False
    if "<" in line:
        line = _FOOTER_LINK.sub("", line)
    return len(line) <= _FOOTER_MAX_CHARS and _MOBILE_FOOTER.fullmatch(line) is not None


def _trim_relay_tail(stripped: list[str], kinds: bytearray, end: int) -> int:
    """reply_text's _trim_tail: drop quotes, rules, device footers and a '-- ' signature.

    Sign-offs, names and "-Name" closings are the agent's and stay.
    """
    while True:
        while end > 0 and kinds[end - 1] != _TEXT:
            end -= 1
        if end == 0:
            return 0
        last = stripped[end - 1]
        if (last[0] in "-_=*~—–" and _RULE.fullmatch(last)) or _is_mobile_footer(last):
            end -= 1
            continue
        start = _delimiter_start(stripped, kinds, end)
        if start is None:
            return end
        end = start


def _delimiter_start(stripped: list[str], kinds: bytearray, end: int) -> int | None:
    """The first "-- " signature delimiter among the last lines before `end`, or None.

    The first, not the nearest: under RFC 3676 everything below the delimiter is
    signature, "--" lines inside it included.
    """
    found = None
    nonblank = 0
    line = end - 1
    while line >= 0 and nonblank < _DELIMITER_WINDOW:
        kind = kinds[line]
        if kind == _QUOTED:
            break
        if kind == _TEXT:
            nonblank += 1
            if stripped[line] == "--":
                found = line
        line -= 1
    return found


def _signature_start(stripped: list[str], kinds: bytearray, end: int) -> int | None:
    """First line of a signature that ends at `end`, or None."""
    found: int | None = None
    nonblank = 0
    last = end - 1
    line = last
    while line >= 0 and nonblank < _DELIMITER_WINDOW:
        kind = kinds[line]
        if kind == _QUOTED:
            break
        if kind == _TEXT:
            nonblank += 1
            bare = stripped[line]
            if bare[0] in "-_~/–—":
                if (
                    (bare.startswith("--") and _SIGNATURE_DELIMITER.fullmatch(bare))
                    or (nonblank <= _FOOTER_MAX_LINES + 1 and _SIGNATURE_RULE.fullmatch(bare))
                    or (
                        # "-Name" closing the message, set apart by a blank line.
                        nonblank == 1
                        and line > 0
                        and kinds[line - 1] == _BLANK
                        and _DASH_NAME.fullmatch(bare)
                    )
                ):
                    found = line
            elif (
                1 < nonblank <= _SIGN_OFF_MAX_LINES + 1
                and len(bare) <= _SIGN_OFF_MAX_CHARS
                and _SIGN_OFF.fullmatch(bare)
                and _names_only(stripped, kinds, line + 1, end)
            ):
                found = line
        line -= 1
    return found


def _names_only(stripped: list[str], kinds: bytearray, start: int, end: int) -> bool:
    """Whether the lines after a sign-off look like a name, title and phone number."""
    for line in range(start, end):
        if kinds[line] != _TEXT:
            continue
        bare = stripped[line]
        if len(bare) > _NAME_LINE_MAX_CHARS or bare[-1] in "?؟" or _POSTSCRIPT.match(bare):
            return False
        spaces = bare.count(" ")
        if spaces >= _NAME_LINE_MAX_WORDS:
            return False
        if spaces >= 3 and bare[-1] in ".!" and not bare.rsplit(" ", 1)[-1][:1].isupper():
            return False  # a sentence ("… tomorrow."), not a title ("… Example Ltd.")
    return True


def _text_blocks(kinds: bytearray, end: int) -> list[tuple[int, int]]:
    """Runs of new text before `end` that quoted lines separate, as [start, stop) pairs."""
    blocks: list[tuple[int, int]] = []
    start = -1
    stop = -1
    for line in range(end):
        kind = kinds[line]
        if kind == _TEXT:
            if start < 0:
                start = line
            stop = line + 1
        elif kind == _QUOTED and start >= 0:
            blocks.append((start, stop))
            start = -1
    if start >= 0:
        blocks.append((start, stop))
    return blocks


def _join(lines: list[str], start: int, stop: int) -> str:
    return "\n".join(line.rstrip() for line in lines[start:stop]).strip("\n")


# --- HTML ---------------------------------------------------------------------------------


def _html_lines(html: str) -> str:
    """The HTML body as plain text in which quoted history is marked the way plain text is.

    Each line inside a <blockquote> (or Yahoo's quote container) gets one '>' per level,
    an Outlook reply header (divRplyFwdMsg, the border-top header div of Outlook desktop)
    is preceded by an "-----Original Message-----" line, and a signature container by a
    "-- " line, so the plain-text rules apply unchanged.

    Only the first _ELEMENT_BUDGET elements and _RENDER_BUDGET characters are read: the
    new text is at the top, and an HTML body of half a million <br>s would otherwise
    cost seconds here.
    """
    try:
        root = _parse_html(html)
    except (ValueError, lxml.etree.LxmlError):
        return ""
    if root is None:
        return ""
    out = _HtmlText()
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    skipped: list[Any] = []
    budget = _ELEMENT_BUDGET
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""
        tag = tag.lower()
        if event == "start":
            budget -= 1
            if budget < 0 or out.size > _RENDER_BUDGET:
                break
            if tag in _HTML_SKIP or _HTML_HIDDEN_STYLE.search(element.get("style") or ""):
                skipped.append(element)
                walker.skip_subtree()
                continue
            _html_open(out, element, tag)
            if element.text:
                out.add(element.text)
        else:
            if skipped and skipped[-1] is element:
                skipped.pop()
            else:
                _html_close(out, element, tag)
            if element.tail:
                out.add(element.tail)
    return out.finish()


def _parse_html(html: str) -> Any:
    html = _XML_DECLARATION.sub("", html, count=1).replace("\x00", "")
    if not html.strip():
        return None
    parser = lxml.html.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
    )
    try:
        return lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
    except lxml.etree.ParserError:
        return None


def _html_open(out: _HtmlText, element: Any, tag: str) -> None:
    classes = set((element.get("class") or "").lower().split())
    ident = (element.get("id") or "").lower()
    if tag == "br":
        out.newline(force=True)
        return
    if tag in _HTML_BLOCKS:
        out.newline()
    if tag in _HTML_PARAGRAPHS and not _is_word_line(element):
        out.blank()
    if (
        ident in _HTML_HEADER_IDS
        or classes & _HTML_HEADER_CLASSES
        or (tag == "div" and _OUTLOOK_HEADER_STYLE.search(element.get("style") or ""))
    ):
        out.newline()
        out.line("-----Original Message-----")
    if classes & _HTML_SIGNATURE_CLASSES or ident in _HTML_SIGNATURE_IDS:
        out.newline()
        out.line("-- ")
    if tag == "blockquote" or any(name.endswith(_HTML_QUOTE_CLASS_SUFFIX) for name in classes):
        out.newline()
        out.depth += 1
        element.set("data-postdesk-quote", "1")
    if tag == "pre":
        out.pre += 1


def _html_close(out: _HtmlText, element: Any, tag: str) -> None:
    if tag in _HTML_BLOCKS:
        out.newline()
    if tag in _HTML_PARAGRAPHS and not _is_word_line(element):
        out.blank()
    if element.get("data-postdesk-quote"):
        out.newline()
        out.depth -= 1
    if tag == "pre":
        out.pre -= 1


def _is_word_line(element: Any) -> bool:
    """Whether `element` is one of Outlook desktop's <p class=MsoNormal>, one per line.

    Word's MsoNormal paragraph has no margin: each is a line, as Outlook's own plain
    text shows it, not a paragraph with a blank line around it.
    """
    return "msonormal" in (element.get("class") or "").lower().split()


class _HtmlText:
    """Lines of rendered HTML text, each prefixed with its blockquote depth in '>'."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.parts: list[str] = []
        self.depth = 0
        self.pre = 0
        self.size = 0

    def add(self, text: str) -> None:
        if self.pre:
            pieces = text.split("\n")
            for piece in pieces[:-1]:
                self.parts.append(piece)
                self.newline(force=True)
            self.parts.append(pieces[-1])
        else:
            self.parts.append(text)

    def newline(self, force: bool = False) -> None:
        joined = "".join(self.parts)
        self.parts.clear()
        content = joined.rstrip() if self.pre else " ".join(joined.split())
        if content or force:
            self.line(content)
        elif "\xa0" in joined:
            # A line of only &nbsp; is how Outlook and Word write an empty line.
            self.blank()

    def blank(self) -> None:
        if self.lines and self.lines[-1].strip(" >"):
            self.line("")

    def line(self, content: str) -> None:
        if self.size > _RENDER_BUDGET:
            return
        prefix = "> " * min(self.depth, _MAX_QUOTE_PREFIX)
        line = (prefix + content).rstrip()
        self.size += len(line) + 1
        self.lines.append(line)

    def finish(self) -> str:
        self.newline()
        return "\n".join(self.lines)
