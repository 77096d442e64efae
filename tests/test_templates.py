"""The mail templates: every kind in both languages, escaping, one-line subjects, overrides."""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from postdesk.errors import PostdeskError
from postdesk.notify.language import language_of
from postdesk.notify.reply import signed_by
from postdesk.notify.templates import (
    HTML_KINDS,
    KINDS,
    LANGUAGES,
    SAMPLES,
    TemplateError,
    Templates,
)

ROOT = Path(__file__).resolve().parents[1]
PERSIAN_DIGITS = re.compile("[۰-۹]")


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def sample(kind: str, **changes: Any) -> dict[str, Any]:
    return {**SAMPLES[kind], **changes}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_in_every_language(
    templates: Templates, kind: str, language: str
) -> None:
    rendered = templates.render(kind, language, **sample(kind, ticket_number=4321))
    assert "[#4321]" in rendered.subject
    assert "\n" not in rendered.subject
    assert rendered.text.strip() and rendered.text.endswith("\n")
    # What customers get is signed by the team.
    assert ("Example Support" in rendered.text) == (kind in HTML_KINDS)
    assert (rendered.html is not None) == (kind in HTML_KINDS)
    if language == "fa":
        # Numbers people read are Persian; the tag machines read stays ASCII.
        assert "۴۳۲۱" in rendered.text
        assert "۴۳۲۱" not in rendered.subject
    else:
        assert "4321" in rendered.text
        assert not PERSIAN_DIGITS.search(rendered.text)


def test_check_passes_on_the_packaged_templates(templates: Templates) -> None:
    templates.check()


@pytest.mark.parametrize("kind", sorted(HTML_KINDS))
def test_persian_html_is_right_to_left(templates: Templates, kind: str) -> None:
    html = templates.render(kind, "fa", **sample(kind, customer_name="مریم"))
    assert html.html is not None
    assert '<html lang="fa" dir="rtl">' in html.html
    # Repeated on a wrapper because webmail drops <html>'s attributes.
    assert '<div lang="fa" dir="rtl"' in html.html
    assert "۱۲۳۴" in html.html
    english = templates.render(kind, "en", **SAMPLES[kind]).html
    assert english is not None and 'dir="ltr"' in english and "rtl" not in english


def test_persian_text_keeps_its_zero_width_non_joiner(templates: Templates) -> None:
    text = templates.render("acknowledgement", "fa", **SAMPLES["acknowledgement"]).text
    assert "می\u200cدهند" in text


def test_persian_survey_accepts_persian_digits(templates: Templates) -> None:
    text = templates.render("survey", "fa", **SAMPLES["survey"]).text
    assert "۱" in text and "۵" in text


def test_html_escapes_the_customers_text(templates: Templates) -> None:
    hostile = "<script>alert('x')</script> & <b>bold</b>\nsecond line"
    for language in LANGUAGES:
        rendered = templates.render(
            "reply", language, **sample("reply", text=hostile, customer_name="<img src=x>")
        )
        assert rendered.html is not None
        assert "<script>" not in rendered.html and "<b>" not in rendered.html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;" in rendered.html
        # Line breaks survive as <br>; the plain-text body is not escaped at all.
        assert "&lt;/b&gt;bold" not in rendered.html
        assert "<br>\nsecond line" in rendered.html
        assert hostile in rendered.text


def test_an_html_subject_is_escaped_in_the_title(templates: Templates) -> None:
    html = templates.render("survey", "en", **sample("survey", subject="</title><script>")).html
    assert html is not None and "<script>" not in html


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_subject_with_line_breaks_stays_one_line(templates: Templates, language: str) -> None:
    for hostile in ("Hi\r\nBcc: victim@example.com", "a\nb\rc\x0bd\x0ce\x85f\u2028g\u2029h\x00i"):
        for kind in KINDS:
            subject = templates.render(kind, language, **sample(kind, subject=hostile)).subject
            assert not re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", subject), subject
    subject = templates.render(
        "acknowledgement", language, **sample("acknowledgement", subject="Hi\r\nBcc: x")
    ).subject
    assert subject == "[#1234] Hi Bcc: x"


def test_the_tag_is_ascii_even_for_a_persian_ticket_number(templates: Templates) -> None:
    rendered = templates.render("survey", "fa", **sample("survey", ticket_number="۷۷"))
    assert "[#77]" in rendered.subject and "۷۷" in rendered.text


def test_a_missing_variable_is_an_error_not_an_empty_string(templates: Templates) -> None:
    context = sample("acknowledgement")
    del context["customer_name"]
    with pytest.raises(TemplateError, match="customer_name"):
        templates.render("acknowledgement", "en", **context)


def test_unknown_kind_or_language_is_a_clear_error(templates: Templates) -> None:
    with pytest.raises(PostdeskError, match="unknown kind of mail 'welcome'"):
        templates.render("welcome", "en", **SAMPLES["survey"])
    with pytest.raises(PostdeskError, match="unknown mail language 'de'"):
        templates.render("survey", "de", **SAMPLES["survey"])
    with pytest.raises(PostdeskError, match="ticket_number must be a number"):
        templates.render("survey", "en", **sample("survey", ticket_number="x"))


def test_an_override_replaces_one_template_and_the_rest_fall_back(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "acknowledgement.text.txt").write_text(
        "Dear {{ customer_name }}, ticket {{ ticket_number }} is ours now.\n", encoding="utf-8"
    )
    templates = Templates(tmp_path)
    templates.check()
    rendered = templates.render("acknowledgement", "en", **SAMPLES["acknowledgement"])
    assert rendered.text == "Dear Jane Doe, ticket 1234 is ours now.\n"
    assert rendered.subject == "[#1234] Printer does not print"  # packaged default
    assert rendered.html is not None and "Thank you for writing" in rendered.html
    persian = templates.render("acknowledgement", "fa", **SAMPLES["acknowledgement"])
    assert "۱۲۳۴" in persian.text


def test_an_override_may_replace_the_shared_html_frame(tmp_path: Path) -> None:
    (tmp_path / "fa").mkdir()
    (tmp_path / "fa" / "layout.html").write_text(
        '<div dir="rtl" class="brand">{% block content %}{% endblock %}</div>\n', encoding="utf-8"
    )
    html = Templates(tmp_path).render("survey", "fa", **SAMPLES["survey"]).html
    assert html is not None and html.startswith('<div dir="rtl" class="brand">')


def test_a_broken_override_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "fa").mkdir()
    broken = tmp_path / "fa" / "survey.text.txt"
    broken.write_text("سلام\n{% if customer_name %}\nno endif\n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).check()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{broken}:")
    assert "endif" in message or "end of template" in message


def test_an_override_using_an_unknown_variable_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    path = tmp_path / "en" / "reply.html"
    path.write_text("<p>{{ text }}</p>\n<p>{{ agent_nmae }}</p>\n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).check()
    assert str(caught.value) == f"{path}:2: 'agent_nmae' is undefined"


def test_a_misspelt_override_is_refused(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "acknowledgment.text.txt").write_text("hi\n", encoding="utf-8")
    (tmp_path / "en" / "footer.txt").write_text("the operator's own include\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"did you mean 'en/acknowledgement\.text\.txt'"):
        Templates(tmp_path).check()


def test_a_subject_override_must_keep_the_ticket_tag(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "reply.subject.txt").write_text("Re: {{ subject }}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"reply\.subject\.txt: the subject must contain"):
        Templates(tmp_path).check()


def test_a_missing_override_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="templates folder not found"):
        Templates(tmp_path / "nope")


def test_the_templates_are_package_data() -> None:
    # importlib.resources finds them (as an installed wheel would), and the package-data
    # globs in pyproject.toml cover every file, so none is left out of the wheel.
    folder = importlib.resources.files("postdesk.notify") / "templates"
    names = [
        f"{language.name}/{file.name}"
        for language in folder.iterdir()
        if language.is_dir()
        for file in language.iterdir()
    ]
    for language in LANGUAGES:
        for kind in KINDS:
            assert f"{language}/{kind}.subject.txt" in names
            assert f"{language}/{kind}.text.txt" in names
            assert (f"{language}/{kind}.html" in names) == (kind in HTML_KINDS)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-data"]["postdesk"]
    for name in names:
        path = PurePosixPath("notify/templates") / name
        assert any(path.match(glob) for glob in globs), f"{path} is not in package-data"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello, my printer does not work.", "en"),
        ("سلام، چاپگر من کار نمی‌کند.", "fa"),
        ("سلام، من از iPhone 14 Pro استفاده می‌کنم و شارژ نمی‌شود.", "fa"),
        ("Hi, my name is مریم and the app crashes on start.", "en"),
        ("", "en"),
        ("   \n\t", "en"),
        ("12345 ۱۲۳۴۵ !!!", "en"),
        ("ممنون", "fa"),
        ("شكرا لك", "fa"),  # Arabic letters: Arabic script, answered as Persian mail is
    ],
)
def test_language_of(text: str, language: str) -> None:
    assert language_of(text) == language


def test_language_of_is_linear_on_large_text() -> None:
    assert language_of("سلام " * 200_000 + "hello " * 10) == "fa"


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_reply_signed_in_its_text_does_not_repeat_the_agents_name(
    templates: Templates, language: str
) -> None:
    """An agent's sign-off ("Thanks,\\nSam") already names them: the signature below it
    keeps only the team; an unsigned reply gets the name as well."""
    signed = templates.render(
        "reply", language, **sample("reply", text="Done.\n\nThanks,\nSam Agent", signed=True)
    )
    unsigned = templates.render("reply", language, **sample("reply", signed=False))
    assert signed.text.count("Sam Agent") == 1
    assert unsigned.text.count("Sam Agent") == 1
    assert signed.html is not None and unsigned.html is not None
    assert signed.html.count("Sam Agent") == 1
    assert unsigned.html.count("Sam Agent") == 1
    for rendered in (signed, unsigned):
        assert "Example Support" in rendered.text
        assert "\n\n\n" not in rendered.text


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("Done.\n\nThanks,\nSam", "Sam Agent", True),
        ("Done.\n\nBest regards,\nSam Agent", "Sam Agent", True),
        ("Done.\n\nCheers, sam!", "Sam Agent", True),
        ("Done.\n\n— Sam", "Sam Agent", True),
        ("Done.\nSam\n\n\n", "Sam Agent", True),
        ("سفارش شما ارسال شد.\n\nبا احترام،\nسارا", "سارا احمدی", True),
        ("سفارش شما ارسال شد.\nبا احترام، سارا احمدی", "سارا احمدی", True),
        ("Done.\n\nThanks", "Sam Agent", False),
        ("Ask Samantha about it.", "Sam Agent", False),  # a longer word is not the name
        (
            "I asked Sam and the refund is on its way to you, it takes a few days to arrive "
            "on your card, Sam",
            "Sam Agent",
            False,
        ),  # a sentence, not a sign-off
        ("Sam said hello.\nThe parcel is late.\nRegards", "Sam Agent", False),
        ("Done.", "", False),
    ],
)
def test_signed_by(text: str, name: str, expected: bool) -> None:
    assert signed_by(text, name) is expected
