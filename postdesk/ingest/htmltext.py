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
_TRAILING_SPACE: Final = re.compile(r"[ \t]+$", re.MULTILINE)
_EXTRA_BLANK_LINES: Final = re.compile(r"\n{4,}")
# NBSP is layout in mail HTML (Outlook indents and pads with it), never content.
_SPACE_LIKE: Final = str.maketrans({"\xa0": " ", "\x00": None, "\r": None})


def html_to_text(html: str) -> str:
    """Render an HTML mail body as plain text; "" for empty or hopelessly broken HTML.

    Runs of three or more blank lines become two, trailing spaces are dropped and the
    result has no leading or trailing blank lines.
    """
    if not html or html.isspace():
        return ""
    try:
        tree = _parse(html)
        if tree is None:
            return ""
        _prune(tree)
        text: str = Inscriptis(tree, _config()).get_text()
    except Exception:
        # Whatever inscriptis or libxml2 cannot digest is not worth failing a message
        # over; the caller keeps the HTML itself.
        return ""
    text = text.translate(_SPACE_LIKE)
    text = _TRAILING_SPACE.sub("", text)
    text = _EXTRA_BLANK_LINES.sub("\n\n\n", text)
    return text.strip("\n")


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
