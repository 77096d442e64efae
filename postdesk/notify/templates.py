"""The words of every mail postdesk sends, in English and Persian, from Jinja2 templates.

Why Jinja2: the mails need conditions (no name, no category, new ticket or follow-up),
shared pieces (the #commands help, the HTML frame), escaping that is on by default for
HTML, and an error for a misspelt variable instead of an empty greeting
(StrictUndefined); str.format or string.Template offer none of that. Mako is already
installed (Alembic uses it) but embeds arbitrary Python and escapes only when told to;
Jinja2's syntax is the one operators know from Ansible, Salt and Django-like tools, and
it is small and pure Python (plus MarkupSafe).

Layout, under `templates/<language>/` (and the same under an operator's folder):
    <kind>.subject.txt   the subject; it always comes out as one line
    <kind>.text.txt      the plain-text body
    <kind>.html          the HTML body, for the kinds customers receive (HTML_KINDS)
    layout.html          the HTML frame those extend: lang, dir, fonts
    commands.txt         the #commands help, included by notification and command_error
One file per part, not one file per kind with blocks, because Jinja2 decides escaping
per template from the file name: .html files are escaped, .txt files are not, and nobody
has to remember an `{% autoescape %}` block. It also lets an operator replace just the
part they care about.

Overrides: `Templates(folder)` looks in the operator's folder first and falls back to
the packaged file for every name it does not find there. Templates are read once per
process; call `check()` at start-up so that a broken override stops the service with
one line naming the file, instead of failing a mail later.

Context. `render` adds `ticket_tag`, the `[#123]` tag in ASCII digits that subjects
carry (the threader reads Persian digits too, but ASCII survives every mail client and
gateway); Persian bodies show numbers with the `persian_digits` filter. Each kind gets:
    every kind       ticket_number: int; subject: str (the ticket's subject, may be "");
                     team: str (the support team's name, signs the mail)
    acknowledgement  customer_name: str ("" when the mail had no display name)
    notification     follow_up: bool (False: a new ticket); requester: str ("Name <addr>");
                     category: str | None; priority: str | None (low, normal, high,
                     urgent); text: str (what the customer wrote, quotes removed);
                     warning: str ("", or why mail from an agent's address was taken
                     as a customer's: see ingest/author.py)
    reply            customer_name: str; agent_name: str; text: str (the agent's reply);
                     signed: bool (the text's last lines already sign it with the
                     agent's name, "Thanks,\nSam": the signature leaves it out)
    survey           customer_name: str
    command_error    agent_name: str; command: str (the line as the agent wrote it);
                     reason: str (why it cannot be applied)
    sla_at_risk,     agent_name: str; requester: str; priority: str (the one the ticket
    sla_breach       is held to); clock: "first_response" or "resolution"; due: datetime
                     (aware, UTC); timezone: str (the calendar's zone, e.g. "Asia/Tehran")
Dates: `{{ due|local_time(timezone) }}` is the local time with its zone ("Thu 10 Dec
2026 08:30 (Asia/Tehran)"); `{{ due|jalali(timezone) }}` the same in the Solar Hijri
calendar with Persian names and digits ("پنج‌شنبه ۱۹ آذر ۱۴۰۵، ۰۸:۳۰"), for Persian
templates. Stored times stay UTC; only the words change.
`SAMPLES` holds one full context per kind; `check()` renders with them.

Text from mail (customers' and agents') is only ever a value given to a template, never
a template itself: the operator's files are trusted, mail is not.
"""

from __future__ import annotations

import difflib
import traceback
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import jdatetime
import jinja2
from markupsafe import Markup, escape

from postdesk.errors import PostdeskError

KINDS: Final = (
    "acknowledgement",
    "notification",
    "reply",
    "survey",
    "command_error",
    "sla_at_risk",
    "sla_breach",
)
LANGUAGES: Final = ("en", "fa")
# Agents get plain text only: their replies quote it, and quotes.py separates a reply
# from a plain-text quote most reliably.
HTML_KINDS: Final = frozenset({"acknowledgement", "reply", "survey"})

SAMPLES: Final[Mapping[str, Mapping[str, Any]]] = {
    "acknowledgement": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "customer_name": "Jane Doe",
    },
    "notification": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "follow_up": False,
        "requester": "Jane Doe <jane@example.com>",
        "category": "hardware",
        "priority": "high",
        "text": "Since this morning the printer on floor 2 prints nothing.\nIt says: ready.",
        "warning": "",
    },
    "reply": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "customer_name": "Jane Doe",
        "agent_name": "Sam Agent",
        "text": "Hello Jane,\n\nwe replaced the toner; please try again.",
        "signed": False,
    },
    "survey": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "customer_name": "Jane Doe",
    },
    "command_error": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "agent_name": "Sam Agent",
        "command": "#priority hgh",
        "reason": "unknown priority 'hgh'; use low, normal, high or urgent",
    },
    "sla_at_risk": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "agent_name": "Sam Agent",
        "requester": "Jane Doe <jane@example.com>",
        "priority": "urgent",
        "clock": "first_response",
        "due": datetime(2026, 12, 10, 5, 0, tzinfo=UTC),
        "timezone": "Asia/Tehran",
    },
    "sla_breach": {
        "ticket_number": 1234,
        "subject": "Printer does not print",
        "team": "Example Support",
        "agent_name": "Sam Agent",
        "requester": "Jane Doe <jane@example.com>",
        "priority": "normal",
        "clock": "resolution",
        "due": datetime(2026, 12, 10, 5, 0, tzinfo=UTC),
        "timezone": "Asia/Tehran",
    },
}


class TemplateError(PostdeskError):
    """A mail template is missing, broken or given the wrong context; one line, naming the file."""


@dataclass(frozen=True)
class Rendered:
    """One mail's words: a one-line subject, a plain-text body and, for customers, HTML."""

    subject: str
    text: str
    html: str | None


class Templates:
    """The mail templates: an operator's folder first, then the packaged defaults."""

    def __init__(self, override_dir: Path | None = None) -> None:
        if override_dir is not None and not override_dir.is_dir():
            raise TemplateError(f"{override_dir}: templates folder not found")
        self.override_dir = override_dir
        self._defaults = jinja2.PackageLoader("postdesk.notify", "templates")
        self._overrides = (
            jinja2.FileSystemLoader(override_dir) if override_dir is not None else None
        )
        loaders: list[jinja2.BaseLoader] = [self._defaults]
        if self._overrides is not None:
            loaders.insert(0, self._overrides)
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # What check() read is what is sent; edits take effect at the next start.
            auto_reload=False,
        )
        self._env.filters["persian_digits"] = persian_digits
        self._env.filters["lines_html"] = lines_html
        self._env.filters["local_time"] = local_time
        self._env.filters["jalali"] = jalali

    def render(self, kind: str, language: str, **context: Any) -> Rendered:
        """The subject and bodies of one mail of `kind` in `language` (see the module doc)."""
        if kind not in KINDS:
            raise TemplateError(
                f"unknown kind of mail {kind!r}; expected one of {', '.join(KINDS)}"
            )
        if language not in LANGUAGES:
            raise TemplateError(
                f"unknown mail language {language!r}; expected one of {', '.join(LANGUAGES)}"
            )
        if "ticket_number" in context:
            try:
                # int() also reads Persian digits; the tag is always written in ASCII.
                context["ticket_tag"] = f"[#{int(context['ticket_number'])}]"
            except (TypeError, ValueError):
                raise TemplateError(
                    f"{kind}: ticket_number must be a number, not {context['ticket_number']!r}"
                ) from None
        subject = one_line(self._render(f"{language}/{kind}.subject.txt", context))
        text = self._render(f"{language}/{kind}.text.txt", context).strip("\n") + "\n"
        html = self._render(f"{language}/{kind}.html", context) if kind in HTML_KINDS else None
        return Rendered(subject=subject, text=text, html=html)

    def check(self) -> None:
        """Render every kind in every language with SAMPLES; raise TemplateError if one fails.

        Also refused: an override whose name is close to a default's but replaces none
        (a misspelt file would be ignored without a word), and a subject without the
        ticket tag (replies from clients that drop threading headers would be lost).
        """
        self._check_override_names()
        for language in LANGUAGES:
            for kind in KINDS:
                sample = SAMPLES[kind]
                rendered = self.render(kind, language, **sample)
                if f"[#{sample['ticket_number']}]" not in rendered.subject:
                    name = f"{language}/{kind}.subject.txt"
                    raise TemplateError(
                        f"{self._filename(name)}: the subject must contain {{{{ ticket_tag }}}}"
                    )

    def _check_override_names(self) -> None:
        if self._overrides is None:
            return
        defaults = set(self._defaults.list_templates())
        for name in self._overrides.list_templates():
            if name in defaults:
                continue
            # Files that resemble no default are the operator's own includes: allowed.
            close = difflib.get_close_matches(name, sorted(defaults), n=1, cutoff=0.8)
            if close:
                raise TemplateError(
                    f"{self.override_dir}/{name}: replaces no template; did you mean {close[0]!r}?"
                )

    def _filename(self, name: str) -> str:
        return self._env.get_template(name).filename or name

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            return self._env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or exc.name or name}:{exc.lineno}"
            raise TemplateError(one_line(f"{where}: {exc.message}")) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(one_line(f"{name}: template {exc.name!r} not found")) from exc
        except Exception as exc:
            # An operator's template can fail at run time in any way ({{ 1 / 0 }}); the
            # line and file are what they need, and the chain keeps the rest for a bug.
            problem = str(exc) if isinstance(exc, jinja2.TemplateError) else repr(exc)
            raise TemplateError(one_line(f"{_where(exc, name)}: {problem}")) from exc


def _where(exc: BaseException, fallback: str) -> str:
    """file:line of the template line that raised `exc`, or `fallback`.

    Jinja2 rewrites a rendering error's traceback so that template code appears as
    frames whose file name is the template's; the innermost such frame is the culprit.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    in_templates = [frame for frame in frames if not frame.filename.endswith(".py")]
    if not in_templates:
        return fallback
    return f"{in_templates[-1].filename}:{in_templates[-1].lineno}"


_PERSIAN_DIGITS: Final = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def persian_digits(value: object) -> str:
    """`value` as text with ASCII digits written as Persian digits (the filter of that name)."""
    return str(value).translate(_PERSIAN_DIGITS)


def _local(value: object, zone: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"expected an aware datetime, got {value!r}")
    return value.astimezone(ZoneInfo(zone))


def local_time(value: object, zone: str = "UTC") -> str:
    """An aware datetime in `zone`, with the zone named: "Thu 10 Dec 2026 08:30 (Asia/Tehran)"
    (the `local_time` filter)."""
    return f"{_local(value, zone):%a %d %b %Y %H:%M} ({zone})"


def jalali(value: object, zone: str = "Asia/Tehran") -> str:
    """An aware datetime in `zone`, in the Solar Hijri calendar with Persian names and
    digits: "پنج‌شنبه ۱۹ آذر ۱۴۰۵، ۰۸:۳۰" (the `jalali` filter; jdatetime does the calendar)."""
    local = jdatetime.datetime.fromgregorian(datetime=_local(value, zone), locale="fa_IR")
    return persian_digits(str(local.strftime("%A %d %B %Y، %H:%M")))


def lines_html(value: object) -> Markup:
    """Plain text as HTML: escaped, with its line breaks kept (the `lines_html` filter).

    `<br>` rather than CSS white-space, which Outlook's Word-based renderer ignores.
    """
    return Markup("<br>\n").join(escape(line) for line in str(value).splitlines())


def one_line(text: str) -> str:
    """`text` as one line safe for a mail header: no CR, LF or other line breaks.

    Control characters and Unicode line and paragraph separators become spaces, and
    runs of white space one space, so a customer's subject "x\\r\\nBcc: y" cannot start
    a header of its own. Format characters (the Persian ZWNJ) are kept.
    """
    spaced = "".join(
        " " if unicodedata.category(char) in {"Cc", "Zl", "Zp"} else char for char in text
    )
    return " ".join(spaced.split())
