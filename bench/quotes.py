"""Benchmark: visible_text and reply_text (postdesk.ingest.quotes), against baselines in one run.

visible_text runs on every inbound message, so it is timed in microseconds per message
and set against, in the same run:

- the floor: normalizing line endings, splitting into lines and joining them again, which
  any line-based reader of the body pays at least;
- the reply-parsing libraries considered for the job, when they are importable
  (email-reply-parser, mail-parser-reply, quotequail; none is a postdesk dependency, so
  install them into another folder and put it on PYTHONPATH to include them);
- for HTML-only mail, postdesk's own html_to_text, which the parse step already runs.

Messages: the plain-text fixtures of ../shared/data/reply-email-reply-parser and
reply-mail-parser-reply (the 767 KB email_long_quote.txt timed on its own), generated
support replies in the layout of common clients, in English and Persian, and hostile
input: 200 KB texts built to make quadratic code show (a long run of spaces, 25,000
"From:" lines, a 200,000-character line of "написал", …), each timed alone and at a
tenth of the size, so that a ratio far above 10 points at something non-linear; the
same for the lexicon's subject-prefix, tag and forward patterns.

    .venv/bin/python bench/quotes.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import time
from collections.abc import Callable
from pathlib import Path

from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.quotes import reply_text, visible_text
from postdesk.ingest.textnorm import is_forward, strip_prefixes
from postdesk.ingest.threader import _INLINE_FORWARD

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LONG_QUOTE = "email_long_quote.txt"
LANGUAGES = ["en", "de", "nl", "fr", "es", "da", "sv", "pl", "ja"]


def floor(text: str) -> str:
    return "\n".join(text.replace("\r\n", "\n").split("\n")).strip()


def ours(text: str) -> str:
    return visible_text(text)


def hostile(size: int) -> dict[str, str]:
    """Texts of about `size` characters that a careless line reader or pattern chokes on."""
    return {
        "spaces": " " * size,
        "From: lines": "From: x\n" * (size // 8),
        "Date:/Subject: lines": "Date: 1\nSubject: x\n" * (size // 19),
        "one line of написал": "написал" * (size // 7),
        "attribution lines": "1 пользователь написал:\n" * (size // 24),
        "footers between quotes": "confidential\n> q\n" * (size // 17),
        "delimiters and blanks": ("--\n" + "\n" * 20) * (size // 23),
        "inline header words": "From: a Sent: b To: c " * (size // 22),
        "footer links": ("Sent from Mail<" + "x" * 100 + "> for Windows\n") * (size // 130),
    }


def report_hostile(size: int) -> None:
    """Milliseconds per hostile text for both readers, with the ratio to a tenth the size."""
    print(f"\nhostile input, {size:,} characters each (ratio: time / time at a tenth the size)")
    small = hostile(size // 10)
    for name, text in hostile(size).items():
        cells = []
        for reader in (visible_text, reply_text):
            timings = []
            for sample in (small[name], text):
                start = time.perf_counter()
                reader(sample)
                timings.append(time.perf_counter() - start)
            ratio = timings[1] / max(timings[0], 1e-9)
            cells.append(f"{timings[1] * 1e3:8.1f} ms ({ratio:5.1f}x)")
        print(f"  {name:24} visible_text {cells[0]}   reply_text {cells[1]}")


def subject_and_forward_cases(size: int) -> dict[str, tuple[Callable[[str], object], str]]:
    """Input that once made the lexicon's subject and forward patterns quadratic."""
    spaces = " " * size
    dashes = "-" * (size // 2)
    return {
        "reply prefix + spaces": (strip_prefixes, "Re" + spaces + "x"),
        "forward prefix + spaces": (is_forward, "Fwd" + spaces + "x"),
        "tag + spaces": (strip_prefixes, "[" + spaces + "x"),
        "header field + spaces": (visible_text, "Hi\n\nFrom" + spaces + "x:\n"),
        "forward marker + spaces": (
            visible_text,
            "Hi\n\nپیام" + spaces + "x\nFrom: a@b.example\nDate: 1\nTo: c\n",
        ),
        "inline forward line": (
            lambda text: _INLINE_FORWARD.search(text),
            dashes + " forwarded message" + spaces[: size // 2] + "x\n",
        ),
    }


def report_patterns(size: int) -> None:
    """Milliseconds per case, with the ratio to a tenth the size (about 10: linear)."""
    print(f"\nsubject and forward patterns, {size:,} characters (ratio as above)")
    small = subject_and_forward_cases(size // 10)
    for name, (read, text) in subject_and_forward_cases(size).items():
        timings = []
        for sample in (small[name][1], text):
            start = time.perf_counter()
            read(sample)
            timings.append(time.perf_counter() - start)
        ratio = timings[1] / max(timings[0], 1e-9)
        print(f"  {name:26} {timings[1] * 1e3:8.1f} ms ({ratio:5.1f}x)")


def libraries() -> dict[str, Callable[[str], object]]:
    """The candidate libraries that are importable here, as text -> reply functions."""
    found: dict[str, Callable[[str], object]] = {}
    with contextlib.suppress(ImportError):
        erp = importlib.import_module("email_reply_parser")
        found["email-reply-parser"] = erp.EmailReplyParser.parse_reply
    with contextlib.suppress(ImportError):
        mpr = importlib.import_module("mailparser_reply")
        found["mail-parser-reply"] = mpr.EmailReplyParser(languages=LANGUAGES).parse_reply
    with contextlib.suppress(ImportError):
        found["quotequail"] = importlib.import_module("quotequail").quote
    return found


def fixtures() -> tuple[list[str], list[str]]:
    """(fixture bodies, the long-quote stress file), both empty without ../shared/data."""
    folders = [
        SHARED_DATA / "reply-email-reply-parser" / "github",
        SHARED_DATA / "reply-email-reply-parser" / "zapier",
        SHARED_DATA / "reply-mail-parser-reply",
    ]
    texts: list[str] = []
    long: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.txt")):
            text = path.read_text(encoding="utf-8")
            (long if path.name == LONG_QUOTE else texts).append(text)
    return texts, long


_ENGLISH = (
    "Hello, I was charged twice for my subscription this month and I would like a refund\n"
    "for the second charge. The order number is 48213 and the card ends in 4242.\n"
)
_PERSIAN = (
    "سلام، من دیروز سفارش دادم ولی هنوز به دستم نرسیده است. لطفاً پیگیری کنید.\n"
    "شماره سفارش ۴۸۲۱۳ است و مبلغ دو بار از حساب من کم شده است.\n"
)


def generated() -> tuple[list[str], list[str]]:
    """(plain-text replies, HTML-only replies) in common client layouts."""
    quoted = "".join(f"> {line}\n" for line in (_ENGLISH * 6).splitlines())
    history = _ENGLISH * 6
    plain = [
        # Gmail, top-posted.
        f"{_ENGLISH}\nThanks,\nJane\n\nOn Mon, Mar 4, 2024 at 9:12 AM Support "
        f"<support@example.org> wrote:\n\n{quoted}",
        # Outlook desktop.
        f"{_ENGLISH}\nRegards,\nJane Doe\n\nFrom: Support <support@example.org>\n"
        "Sent: Monday, March 4, 2024 9:12 AM\nTo: Jane Doe <jane@example.com>\n"
        f"Subject: RE: [#1234] Double charge\n\n{history}",
        # iOS Mail.
        f"{_ENGLISH}\nSent from my iPhone\n\n> On Mar 4, 2024, at 9:12 AM, Support "
        f"<support@example.org> wrote:\n> \n{quoted}",
        # Persian Gmail with a two-line attribution.
        f"{_PERSIAN}\nبا سپاس،\nعلی\n\nدر تاریخ دوشنبه ۴ مارس ۲۰۲۴ ساعت ۹:۱۲ Support <\n"
        "support@example.org> نوشت:\n\n" + "".join(f"> {line}\n" for line in _PERSIAN.split("\n")),
        # No quote at all.
        _ENGLISH * 3 + "\n-- \nJane Doe\nExample Ltd.\n",
        # Inline reply.
        "On Mon, Mar 4, 2024 at 9:12 AM Support <support@example.org> wrote:\n"
        "> Which card?\n\nThe one ending in 4242.\n\n> Which order?\n\n48213.\n",
    ]
    blockquote = "".join(f"<div>{line}</div>" for line in (_ENGLISH * 6).splitlines())
    html = [
        f'<div dir="ltr">{_ENGLISH}</div><div class="gmail_quote"><div class="gmail_attr">'
        "On Mon, Mar 4, 2024 at 9:12 AM Support &lt;support@example.org&gt; wrote:<br></div>"
        f'<blockquote class="gmail_quote">{blockquote}</blockquote></div>',
        f"<html><body><div>{_ENGLISH}</div><hr><div id=divRplyFwdMsg><b>From:</b> Support"
        "<br><b>Sent:</b> Monday, March 4, 2024 9:12 AM<br><b>To:</b> Jane<br><b>Subject:</b>"
        f" RE: Double charge</div><div>{blockquote}</div></body></html>",
        f'<div dir="rtl">{_PERSIAN}</div><blockquote type="cite">{blockquote}</blockquote>',
    ]
    return plain, html


def measure(function: Callable[[str], object], texts: list[str], repeat: int) -> float:
    """Best-of-repeat microseconds per message over `texts`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            function(text)
        best = min(best, time.perf_counter() - start)
    return best / len(texts) * 1e6


def report(
    group: str, texts: list[str], runners: dict[str, Callable[[str], object]], repeat: int
) -> None:
    if not texts:
        print(f"\n{group}: no messages (../shared/data absent?)")
        return
    size = sum(len(text) for text in texts) / len(texts)
    print(f"\n{group}: {len(texts)} messages, {size:,.0f} characters on average")
    timings = {name: measure(function, texts, repeat) for name, function in runners.items()}
    mine = timings["postdesk visible_text"]
    for name, micros in timings.items():
        ratio = "" if micros == mine else f"  ({micros / mine:6.2f}x postdesk)"
        print(f"  {name:28} {micros:12.1f} µs/msg{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes per group (best kept)")
    args = parser.parse_args()

    found = libraries()
    missing = {"email-reply-parser", "mail-parser-reply", "quotequail"} - set(found)
    if missing:
        print("not importable, left out: " + ", ".join(sorted(missing)))
    texts, long = fixtures()
    plain, html = generated()
    runners: dict[str, Callable[[str], object]] = {
        "postdesk visible_text": ours,
        "postdesk reply_text": reply_text,
        "floor (split and join lines)": floor,
        **found,
    }
    for text in texts + plain:  # warm up regex and import caches
        for function in runners.values():
            function(text)

    report("reply fixtures (plain text)", texts, runners, args.repeat)
    report("generated replies (plain text)", plain, runners, args.repeat)
    report(f"{LONG_QUOTE} (stress)", long, runners, max(1, args.repeat // 10))
    html_runners: dict[str, Callable[[str], object]] = {
        "postdesk visible_text": lambda page: visible_text(html_to_text(page), page),
        "html_to_text alone": html_to_text,
    }
    report("generated HTML-only replies (html_to_text + visible_text)", html, html_runners, 20)
    report_hostile(200_000)
    report_patterns(100_000)


if __name__ == "__main__":
    main()
