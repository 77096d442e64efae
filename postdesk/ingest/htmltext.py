"""Plain text from the HTML body of a message, for HTML-only mail and for reading by models.

inscriptis does the layout (paragraphs, lists, tables as aligned columns). Before it runs,
the lxml tree is pruned of what is never text (head, scripts, styles, comments, elements
hidden with display:none such as marketing preheaders) and of purely inline formatting
wrappers, which do not change plain-text layout but make up half the elements of mail
written by Outlook or Word and dominate the conversion time.
"""

from __future__ import annotations

import re
from typing import Any, Final

# lxml ships no type information; unused-ignore keeps this quiet once pyproject.toml
# lists lxml.* with ignore_missing_imports like inscriptis.
import lxml.etree  # type: ignore[import-untyped, unused-ignore]
import lxml.html  # type: ignore[import-untyped, unused-ignore]
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

# Elements whose whole subtree is never shown as text.
_INVISIBLE: Final = ("head", "script", "style", "title", "meta", "link", "template", "noscript")

# Inline formatting wrappers: unwrapping them keeps their text and changes no layout in
# the strict CSS profile. <a> is among them because link targets are not shown.
_INLINE_WRAPPERS: Final = (
    "a",
    "abbr",
    "acronym",
    "b",
    "bdi",
    "big",
    "cite",
    "code",
    "del",
    "dfn",
    "em",
    "font",
    "i",
    "ins",
    "kbd",
    "label",
    "mark",
    "nobr",
    "o:p",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "time",
    "tt",
    "u",
    "var",
)

_HIDDEN_STYLE: Final = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.IGNORECASE)
_XML_DECLARATION: Final = re.compile(r"^\s*<\?xml[^>]*>")
_EXTRA_BLANK_LINES: Final = re.compile(r"\n{4,}")
# Spaces and tabs before a line end, matched only from the start of their run: without the
# lookbehind, a run that does not end its line (40,000 spaces, then a letter) is rescanned
# from each of its spaces, the square of its length.
_TRAILING_SPACE: Final = re.compile(r"(?<![ \t])[ \t]+(?=\n|\Z)")
_SPACES: Final = re.compile(r"\s+")
_MARK_WITH_SPACES: Final = re.compile(" ?\ue000 ?")
# NBSP is layout in mail HTML (Outlook indents and pads with it), never content.
_SPACE_LIKE: Final = str.maketrans({"\xa0": " ", "\x00": None, "\r": None})


def html_to_text(html: str, max_chars: int | None = None) -> str:
    """Render an HTML mail body as plain text; "" for empty or hopelessly broken HTML.

    Runs of three or more blank lines become two, trailing spaces are dropped and the
    result has no leading or trailing blank lines. With `max_chars`, the text is cut to
    that many characters (a table pads every row to its widest cell, so a few kilobytes
    of HTML can render as megabytes of spaces).

    Linear in the size of the HTML and of inscriptis' output (see _TRAILING_SPACE).
    """
    if not html or html.isspace():
        return ""
    try:
        if html.count("<") > 2 * _ELEMENT_BUDGET:
            text = _without_layout(html)
        else:
            tree = _parse(html)
            if tree is None:
                return ""
            _prune(tree)
            if tree.xpath("count(//*)") > _ELEMENT_BUDGET:
                text = _without_layout(html)
            else:
                _flatten_huge_tables(tree, max_chars)
                text = Inscriptis(tree, _config()).get_text()
    except Exception:
        # Whatever inscriptis or libxml2 cannot digest is not worth failing a message
        # over; the caller keeps the HTML itself.
        return ""
    text = text.translate(_SPACE_LIKE)
    text = _TRAILING_SPACE.sub("", text)
    text = _EXTRA_BLANK_LINES.sub("\n\n\n", text)
    text = text.strip("\n")
    return text if max_chars is None else text[:max_chars]


def _parse(html: str) -> Any:
    # Bytes in, declared encoding fixed: lxml refuses str input that carries an XML
    # encoding declaration and would otherwise honour a <meta charset> that lies.
    html = _XML_DECLARATION.sub("", html, count=1).replace("\x00", "")
    if not html.strip():
        return None
    parser = lxml.html.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
    )
    try:
        return lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
    except lxml.etree.ParserError:
        # Raised for documents that parse to nothing (only whitespace or comments).
        return None


def _prune(tree: Any) -> None:
    lxml.etree.strip_elements(tree, *_INVISIBLE, lxml.etree.Comment, with_tail=False)
    for element in tree.xpath("//*[@style]"):
        if _HIDDEN_STYLE.search(element.get("style", "")) and element.getparent() is not None:
            _drop_keeping_tail(element)
    lxml.etree.strip_elements(tree, "img", "wbr", with_tail=False)
    lxml.etree.strip_tags(tree, *_INLINE_WRAPPERS)


# What a table may render to, at most, in characters per character of the cap, before
# its cells are laid out one under the other instead of as aligned columns.
_TABLE_BUDGET_FACTOR: Final = 4
_FLAT_TAGS: Final = {"table": "div", "tbody": "div", "thead": "div", "tfoot": "div", "tr": "div"}


def _flatten_huge_tables(tree: Any, max_chars: int | None) -> None:
    """Lay tables out as blocks when their columns could render larger than allowed.

    inscriptis pads every row to the widest cell of each column, so one 5,000-character
    cell in a 1,000-row table renders as 5 MB of spaces. The rendering is at most (rows)
    x (text of the document) characters; when that bound is over the budget, every cell
    becomes a line of its own, which costs no more than the text itself.
    """
    if max_chars is None:
        return
    rows = int(tree.xpath("count(//tr)"))
    if not rows or rows * len(tree.xpath("string()")) <= _TABLE_BUDGET_FACTOR * max_chars:
        return
    for element in tree.iter("table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption"):
        element.tag = _FLAT_TAGS.get(element.tag, "p")


# inscriptis spends some 50 microseconds an element; past this many (a typical mail has a
# few thousand once inline wrappers are gone) the text is taken without layout.
_ELEMENT_BUDGET: Final = 30_000
# The tags that start a line in the fallback: anchored on "<", a fixed word, then one
# character of lookahead, so linear.
_LINE_BREAKING_TAG: Final = re.compile(
    r"(?=<(?:br|p|div|blockquote|li|tr|table|pre|h[1-6]|hr|ul|ol|dd|dt)[\s/>])", re.IGNORECASE
)
_LINE_MARK: Final = "\ue000"


def _without_layout(html: str) -> str:
    """The text of `html`, a line per block element or <br>, whitespace collapsed.

    The fallback for HTML too big to lay out: no columns, indents or list bullets, in
    time linear in the HTML with a small constant (a mark is put before each tag that
    starts a line, and libxml2 joins the text).
    """
    tree = _parse(_LINE_BREAKING_TAG.sub(_LINE_MARK, html.replace(_LINE_MARK, "")))
    if tree is None:
        return ""
    _prune(tree)
    text: str = tree.xpath("string()")
    return _MARK_WITH_SPACES.sub("\n", _SPACES.sub(" ", text))


def _drop_keeping_tail(element: Any) -> None:
    parent = element.getparent()
    tail = element.tail
    if tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(element)


def _config() -> ParserConfig:
    # The strict profile: the relaxed default indents nested <div>s, and Gmail nests them
    # deeply enough to push the text far to the right. A fresh config per call keeps
    # inscriptis' mutable state private to the call.
    return ParserConfig(css=CSS_PROFILES["strict"], display_links=False, display_images=False)
