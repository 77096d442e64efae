"""Unit tests for the parsing layer: charsets, HTML to text, attachment names and store, parse."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from postdesk.errors import ParseError
from postdesk.ingest.attachments import (
    MAX_FILENAME_BYTES,
    AttachmentStore,
    sanitize_filename,
)
from postdesk.ingest.charset import decode_base64, decode_bytes, decode_header_value
from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.parse import (
    MAX_REFERENCES,
    Address,
    header_summary,
    message_id_list,
    normalize_message_id,
    parse_message,
)

PERSIAN = "سلام، سفارش من هنوز نرسیده است. لطفا پیگیری کنید."
# windows-1256 has no Persian yeh (U+06CC); Windows writes the Arabic yeh (U+064A) instead.
PERSIAN_1256 = PERSIAN.replace("ی", "ي")


def b64(text: str, charset: str = "utf-8") -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


def message(headers: str, body: bytes | str = b"Hello.\n", *, crlf: bool = False) -> bytes:
    """A message from header lines (LF-separated) and a body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = headers.strip("\n") + "\n\n"
    raw = head.encode("utf-8") + body
    return raw.replace(b"\n", b"\r\n") if crlf else raw


BASIC = "From: Jane <jane@example.com>\nTo: support@example.org\nSubject: Help"


# --- charset ------------------------------------------------------------------------


def test_decode_bytes_declared_charset_is_used_when_it_fits() -> None:
    assert decode_bytes(PERSIAN_1256.encode("cp1256"), "windows-1256") == PERSIAN_1256


def test_decode_bytes_valid_utf8_beats_a_wrong_single_byte_label() -> None:
    assert decode_bytes("Grüße, سلام".encode(), "iso-8859-1") == "Grüße, سلام"


def test_decode_bytes_us_ascii_label_with_8bit_content() -> None:
    assert decode_bytes("café".encode(), "us-ascii") == "café"
    assert decode_bytes("café".encode("cp1252"), "us-ascii") == "café"


@pytest.mark.parametrize(
    ("text", "codec", "label"),
    [
        ("您好，我的订单还没有收到，请帮我查询一下。", "gbk", "gb2312"),
        ("주문 문의드립니다", "cp949", "ks_c_5601-1987"),
        ("שלום עולם", "iso-8859-8", "iso-8859-8-i"),
        ("Привет, мир", "mac-cyrillic", "x-mac-cyrillic"),
        ("“quoted” – dash", "cp1252", "iso-8859-1"),
        ("naïve", "utf-8", "utf8"),
    ],
)
def test_decode_bytes_aliases_for_labels_mail_carries(text: str, codec: str, label: str) -> None:
    assert decode_bytes(text.encode(codec), label) == text


def test_decode_bytes_strips_utf8_bom() -> None:
    assert decode_bytes(b"\xef\xbb\xbfhello", "utf-8") == "hello"
    assert decode_bytes(b"\xef\xbb\xbfh\xc3\xa9", None) == "hé"


def test_decode_bytes_unknown_labels_fall_back_to_detection() -> None:
    assert decode_bytes("café au lait".encode(), "unknown-8bit") == "café au lait"
    assert decode_bytes("café au lait".encode(), "x-no-such-charset") == "café au lait"


def test_decode_bytes_arabic_script_windows_1256_without_label() -> None:
    assert decode_bytes(PERSIAN_1256.encode("cp1256"), None) == PERSIAN_1256
    assert decode_bytes("فاکتور خرید".replace("ی", "ي").encode("cp1256"), None) == ("فاکتور خريد")


def test_decode_bytes_drops_only_a_truncated_final_utf8_character() -> None:
    data = "Картинка".encode()[:-1]
    assert decode_bytes(data, None) == "Картинк"


def test_decode_bytes_refuses_codecs_that_are_not_charsets() -> None:
    assert decode_bytes(b"\\u0041", "unicode_escape") == "\\u0041"


def test_decode_bytes_never_returns_replacement_characters() -> None:
    rng = random.Random(7)
    for _ in range(200):
        data = rng.randbytes(rng.randint(1, 64))
        for label in (None, "utf-8", "us-ascii", "gb2312", "windows-1256", "bogus"):
            assert "\ufffd" not in decode_bytes(data, label)


def test_decode_header_value_persian_b_encoding() -> None:
    value = f"=?UTF-8?B?{b64('پیگیری سفارش')}?="
    assert decode_header_value(value) == "پیگیری سفارش"


def test_decode_header_value_multibyte_character_split_across_words() -> None:
    data = "سلام".encode()
    first, second = (base64.b64encode(half).decode() for half in (data[:3], data[3:]))
    value = f"=?utf-8?B?{first}?=\n =?utf-8?B?{second}?="
    assert decode_header_value(value) == "سلام"


def test_decode_header_value_whitespace_rules() -> None:
    # Between two encoded-words whitespace vanishes; next to plain text it stays.
    assert decode_header_value("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"
    assert decode_header_value("Re: =?utf-8?q?caf=C3=A9?= ok") == "Re: café ok"
    assert decode_header_value("Re:=?utf-8?q?caf=C3=A9?=ok") == "Re:caféok"
    assert decode_header_value("a\r\n\tb   c") == "a b c"
    assert decode_header_value("=?utf-8?q?with_underscores?=") == "with underscores"


def test_decode_header_value_raw_8bit_surrogates() -> None:
    value = "Re: سفارش".encode().decode("ascii", "surrogateescape")
    assert decode_header_value(value) == "Re: سفارش"
    legacy = "سفارش".encode("cp1256").decode("ascii", "surrogateescape")
    assert decode_header_value(legacy, "windows-1256") == "سفارش"


def test_decode_header_value_malformed_words_do_not_raise() -> None:
    assert decode_header_value("=?utf-8?B?2LPZhNin2YU?=") == "سلام"  # missing padding
    assert decode_header_value("=?utf-8?Q?broken=ZZ?=") == "broken=ZZ"
    assert decode_header_value("=?utf-8?X?nonsense?=") == "=?utf-8?X?nonsense?="
    assert decode_header_value("a\x00b") == "ab"


def test_decode_base64_repairs_padding_and_skips_junk() -> None:
    assert decode_base64(b"YWJjZA") == b"abcd"
    assert decode_base64(b"YW*Jj\nZA==") == b"abcd"
    assert decode_base64(b"YWJjZ") == b"abc"


# --- html_to_text -------------------------------------------------------------------


def test_html_to_text_layout() -> None:
    html = """<html><head><title>T</title><style>p{color:red}</style></head><body>
    <script>alert(1)</script><p>First <b>para</b>graph.</p><p>Second&nbsp;one.</p>
    <ul><li>apples</li><li>pears</li></ul>
    <table><tr><td>Order</td><td>Total</td></tr><tr><td>48213</td><td>9.00</td></tr></table>
    <span style="display:none">preheader</span></body></html>"""
    text = html_to_text(html)
    assert "First paragraph.\n\nSecond one." in text
    assert "* apples" in text and "* pears" in text
    assert "Order" in text and "48213" in text
    lines = text.splitlines()
    assert any("48213" in line and "9.00" in line for line in lines)  # a row stays a row
    for hidden in ("alert", "color:red", "preheader", "T\n"):
        assert hidden not in text


def test_html_to_text_persian_keeps_zwnj() -> None:
    assert html_to_text('<div dir="rtl"><p>می\u200cخواهم</p></div>') == "می\u200cخواهم"


def test_html_to_text_collapses_blank_lines() -> None:
    text = html_to_text("<p>a</p>" + "<br>" * 10 + "<p>b</p>")
    assert "\n\n\n\n" not in text
    assert text.startswith("a") and text.endswith("b")


@pytest.mark.parametrize(
    "html",
    ["", "   ", "<!-- only a comment -->", "<html></html>", "<div>" * 5000, "\x00<p", "<?xml?>"],
)
def test_html_to_text_survives_broken_html(html: str) -> None:
    assert isinstance(html_to_text(html), str)


def test_html_to_text_xml_declaration_and_nul() -> None:
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>hi\x00 there</p>') == "hi there"


# --- sanitize_filename --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("C:\\Users\\jane\\invoice.pdf", "invoice.pdf"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
        ("com1.tar.gz", "_com1.tar.gz"),
        ('a<b>c:d"e|f?g*h.txt', "abcdefgh.txt"),
        ("  ..hidden file.. ", "hidden file"),
        ("tab\there.txt", "tab here.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("می\u200cخواهم.pdf", "می\u200cخواهم.pdf"),
        ("e\u0301te\u0301.doc", "été.doc"),
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name, "application/octet-stream", 1) == expected


@pytest.mark.parametrize("name", [None, "", "   ", "...", "???", "\x00\x01"])
def test_sanitize_filename_empty_gets_a_generated_name(name: str | None) -> None:
    assert sanitize_filename(name, "application/pdf", 3) == "attachment-3.pdf"
    assert sanitize_filename(name, "image/jpeg", 4) == "attachment-4.jpg"
    assert sanitize_filename(name, "application/x-unheard-of", 5) == "attachment-5"


def test_sanitize_filename_long_persian_name_keeps_extension() -> None:
    name = "فاکتور" * 40 + ".pdf"  # 480 bytes of UTF-8 before the extension
    assert len(name.encode()) > 400
    result = sanitize_filename(name, "application/pdf", 1)
    assert len(result.encode()) <= MAX_FILENAME_BYTES
    assert result.endswith(".pdf")
    assert result.startswith("فاکتور")
    assert result.encode().decode() == result  # cut on a character boundary


def test_sanitize_filename_is_idempotent() -> None:
    for name in ("../x/CON.txt", "فاکتور" * 50 + ".pdf", "", " a . b . "):
        once = sanitize_filename(name, "text/plain", 2)
        assert sanitize_filename(once, "text/plain", 2) == once


# --- AttachmentStore ----------------------------------------------------------------


def test_store_is_content_addressed(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path)
    stored = store.save(b"%PDF-1.4 test")
    digest = hashlib.sha256(b"%PDF-1.4 test").hexdigest()
    assert stored.sha256 == digest
    assert stored.size == len(b"%PDF-1.4 test")
    assert stored.relpath == f"sha256/{digest[:2]}/{digest}"
    assert (tmp_path / stored.relpath).read_bytes() == b"%PDF-1.4 test"


def test_store_keeps_each_content_once_and_does_not_rewrite(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path)
    first = store.save(b"data")
    path = tmp_path / first.relpath
    inode = path.stat().st_ino
    second = store.save(b"data")
    assert second == first
    assert path.stat().st_ino == inode
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]


def test_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path)
    payloads = [os.urandom(2048) for _ in range(4)]

    def writer() -> None:
        for data in payloads:
            store.save(data)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert sorted(path.name for path in files) == sorted(
        hashlib.sha256(data).hexdigest() for data in payloads
    )
    for data in payloads:
        assert store.save(data).size == len(data)
    assert not [path for path in tmp_path.rglob(".tmp-*")]


# --- Message-IDs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<ABC.def@Example.COM>", "ABC.def@Example.COM"),
        ("  <abc@x>  (added by postmaster)", "abc@x"),
        ("abc@x", "abc@x"),
        ("<abc\r\n @x>", "abc@x"),
        ("(comment) abc@x", "abc@x"),
        ("<a\x00b@x>", "ab@x"),
        ("<>", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_message_id(value: str | None, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


def test_message_id_list_takes_ids_from_junk() -> None:
    assert message_id_list('Your message of "Mon, 4 Mar 2024" <a@x>') == ("a@x",)
    assert message_id_list("<a@x> <b@x>") == ("a@x", "b@x")
    assert message_id_list("<a@x>\r\n\t<b@x>\r\n <c@x>") == ("a@x", "b@x", "c@x")
    assert message_id_list("a@x, b@x") == ("a@x", "b@x")
    assert message_id_list("<a@x> <b@x> <a@x>") == ("b@x", "a@x")
    assert message_id_list(None) == ()


def test_message_id_list_caps_absurd_references_keeping_the_newest() -> None:
    value = " ".join(f"<id{n}@x>" for n in range(5000))
    ids = message_id_list(value)
    assert len(ids) == MAX_REFERENCES
    assert ids[-1] == "id4999@x"
    assert ids[0] == f"id{5000 - MAX_REFERENCES}@x"


# --- parse_message: headers ----------------------------------------------------------


def test_parse_basic_fields() -> None:
    raw = message(
        "From: =?utf-8?q?Jane_Doe?= <Jane.Doe@Example.COM>\n"
        'To: support@example.org, "Ops, Team" <ops@example.org>, not-an-address\n'
        "Cc: undisclosed-recipients:;\n"
        "Reply-To: <replies@example.com>\n"
        "Subject: Re: [#1234]\n  order\tstatus\n"
        "Date: Mon, 4 Mar 2024 10:00:00 +0330\n"
        "Message-ID: <m1@example.com>\n"
        "In-Reply-To: <p1@example.org>\n"
        "References: <p0@example.org>\n <p1@example.org>\n"
    )
    parsed = parse_message(raw)
    assert parsed.from_ == Address(email="jane.doe@example.com", name="Jane Doe")
    assert parsed.to == (
        Address("support@example.org", ""),
        Address("ops@example.org", "Ops, Team"),
    )
    assert parsed.cc == ()
    assert parsed.reply_to == (Address("replies@example.com", ""),)
    assert parsed.sender is None
    assert parsed.subject == "Re: [#1234] order status"
    assert parsed.date == datetime(2024, 3, 4, 6, 30, tzinfo=UTC)
    assert parsed.message_id == "m1@example.com"
    assert parsed.in_reply_to == ("p1@example.org",)
    assert parsed.references == ("p0@example.org", "p1@example.org")


def test_parse_headers_mapping_keeps_every_header_in_order_decoded() -> None:
    raw = message(
        BASIC + "\nReceived: from a\nReceived: from b\n"
        "X-Subject-Copy: =?utf-8?b?" + b64("سلام") + "?=\nAuto-Submitted: auto-replied\n"
    )
    headers = parse_message(raw).headers
    assert headers["received"] == ("from a", "from b")
    assert headers["x-subject-copy"] == ("سلام",)
    assert headers["auto-submitted"] == ("auto-replied",)
    assert "Received" not in headers
    with pytest.raises(TypeError):
        headers["new"] = ("x",)  # type: ignore[index]


def test_parse_persian_subject_rfc2047_base64() -> None:
    raw = message(f"From: a@example.com\nSubject: =?UTF-8?B?{b64('درخواست بازپرداخت')}?=")
    assert parse_message(raw).subject == "درخواست بازپرداخت"


def test_parse_raw_8bit_utf8_headers() -> None:
    raw = message(
        "From: علی رضایی <ali@example.com>\nSubject: سفارش شماره ۱۲\n"
        "Content-Type: text/plain; charset=utf-8",
        "متن",
    )
    parsed = parse_message(raw)
    assert parsed.subject == "سفارش شماره ۱۲"
    assert parsed.from_ == Address("ali@example.com", "علی رضایی")
    assert parsed.headers["subject"] == ("سفارش شماره ۱۲",)


def test_parse_raw_8bit_legacy_header_uses_body_charset() -> None:
    head = "From: a@example.com\nContent-Type: text/plain; charset=windows-1256\nSubject: "
    raw = head.encode() + "سفارش".encode("cp1256") + b"\n\n" + "متن".encode("cp1256")
    assert parse_message(raw).subject == "سفارش"


def test_parse_dates() -> None:
    def date_of(value: str) -> datetime | None:
        return parse_message(message(f"From: a@example.com\nDate: {value}")).date

    assert date_of("Tue, 5 Mar 2024 23:30:00 -0500") == datetime(2024, 3, 6, 4, 30, tzinfo=UTC)
    assert date_of("5 Mar 2024 12:00:00 -0000") == datetime(2024, 3, 5, 12, tzinfo=UTC)
    assert date_of("not a date") is None
    assert date_of("Mon, 99 Foo 20244 99:99:99 +9999") is None
    assert parse_message(message("From: a@example.com")).date is None


def test_parse_without_any_sender_is_not_an_error() -> None:
    parsed = parse_message(message("To: support@example.org\nSubject: anonymous"))
    assert parsed.from_ is None and parsed.sender is None and parsed.reply_to == ()
    assert parsed.subject == "anonymous"


def test_parse_whole_address_header_encoded_as_one_word() -> None:
    encoded = b64('"Jane" <jane@example.com>')
    parsed = parse_message(message(f"From: =?utf-8?B?{encoded}?="))
    assert parsed.from_ == Address("jane@example.com", "Jane")


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n\r\n", bytes(range(256)) * 4, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"]
)
def test_parse_rejects_what_is_not_a_message(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_message(raw)


def test_parse_skips_leading_blank_lines_and_mbox_from_line() -> None:
    parsed = parse_message(b"\n\nFrom jane@example.com Mon Mar  4 10:00:00 2024\n" + message(BASIC))
    assert parsed.subject == "Help"
    assert parsed.from_ is not None


# --- parse_message: bodies -----------------------------------------------------------


def test_parse_windows_1256_body_declared_and_undeclared() -> None:
    body = PERSIAN_1256.encode("cp1256")
    declared = message(BASIC + "\nContent-Type: text/plain; charset=windows-1256", body)
    undeclared = message(BASIC + "\nContent-Type: text/plain", body)
    assert parse_message(declared).text == PERSIAN_1256
    assert parse_message(undeclared).text == PERSIAN_1256


def test_parse_wrong_declared_charset_is_repaired_and_recorded() -> None:
    raw = message(BASIC + "\nContent-Type: text/plain; charset=iso-8859-1", "Grüße ✓")
    parsed = parse_message(raw)
    assert parsed.text == "Grüße ✓"
    assert any("did not fit" in defect for defect in parsed.defects)


def test_parse_gb2312_body() -> None:
    text = "您好，我的订单还没有收到。"
    raw = message(BASIC + "\nContent-Type: text/plain; charset=gb2312", text.encode("gbk"))
    assert parse_message(raw).text == text


def test_parse_missing_content_type_is_text_plain() -> None:
    parsed = parse_message(message(BASIC, "Just text.\r\nSecond line.\r\n"))
    assert parsed.text == "Just text.\nSecond line."
    assert parsed.html is None and parsed.attachments == ()


def test_parse_quoted_printable_soft_breaks() -> None:
    body = "This line is long and was wrapped=\nby the sender=E2=80=99s client.\nNext=3D line.\n"
    raw = message(
        BASIC + "\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable",
        body,
    )
    assert parse_message(raw).text == (
        "This line is long and was wrappedby the sender’s client.\nNext= line."
    )


def test_parse_base64_with_garbage() -> None:
    encoded = base64.encodebytes(PERSIAN.encode()).decode()
    body = encoded[:20] + "!" + encoded[20:] + "\n--\nList footer added by a list server.\n"
    raw = message(
        BASIC + "\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
        body,
    )
    parsed = parse_message(raw)
    assert parsed.text == PERSIAN
    assert "junk in base64 payload ignored" in parsed.defects


def test_parse_base64_label_on_plain_text_keeps_the_text() -> None:
    raw = message(
        BASIC + "\nContent-Type: text/plain\nContent-Transfer-Encoding: base64",
        "This is not base64 at all, sorry.\n",
    )
    assert parse_message(raw).text == "This is not base64 at all, sorry."


def test_parse_unknown_transfer_encoding_keeps_payload() -> None:
    raw = message(BASIC + "\nContent-Transfer-Encoding: x-weird", "plain words")
    parsed = parse_message(raw)
    assert parsed.text == "plain words"
    assert any("unknown transfer encoding" in defect for defect in parsed.defects)


def test_parse_nul_bytes_are_cleaned() -> None:
    raw = message(BASIC + "\nContent-Type: text/plain; charset=utf-8", b"he\x00llo\x00")
    parsed = parse_message(raw)
    assert parsed.text == "hello"
    assert "NUL characters removed from body" in parsed.defects


def test_parse_format_flowed() -> None:
    raw = message(
        BASIC + "\nContent-Type: text/plain; charset=utf-8; format=flowed",
        "This is a soft \nwrapped line.\n> quoted soft \n> wrap\n-- \nsig\n",
    )
    assert parse_message(raw).text == "This is a soft wrapped line.\n> quoted soft wrap\n-- \nsig"


ALTERNATIVE = (
    BASIC + '\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="alt"\n',
    "--alt\nContent-Type: text/plain; charset=utf-8\n\nPlain version.\n"
    "--alt\nContent-Type: text/html; charset=utf-8\n\n<p>HTML <b>version</b>.</p>\n"
    "--alt--\n",
)


def test_parse_multipart_alternative_prefers_plain_and_keeps_html() -> None:
    parsed = parse_message(message(*ALTERNATIVE))
    assert parsed.text == "Plain version."
    assert parsed.html is not None and "<b>version</b>" in parsed.html
    assert parsed.attachments == ()


def test_parse_alternative_with_empty_plain_uses_html() -> None:
    headers, body = ALTERNATIVE
    parsed = parse_message(message(headers, body.replace("Plain version.", "  ")))
    assert parsed.text == "HTML version."


def test_parse_html_only() -> None:
    html = "<html><body><p>Dear support,</p><ul><li>one</li><li>two</li></ul></body></html>"
    raw = message(
        BASIC + "\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64",
        base64.encodebytes(html.encode()),
    )
    parsed = parse_message(raw)
    assert parsed.html == html
    assert parsed.text.startswith("Dear support,")
    assert "* one" in parsed.text and "* two" in parsed.text


def test_parse_html_meta_charset_when_header_has_none() -> None:
    html = '<html><head><meta charset="windows-1256"></head><body>سلام</body></html>'
    raw = message(BASIC + "\nContent-Type: text/html", html.encode("cp1256"))
    assert parse_message(raw).text == "سلام"


def test_parse_inline_image_and_cid_reference() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    raw = message(
        BASIC + '\nContent-Type: multipart/related; boundary="rel"',
        "--rel\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>Screenshot:</p><img src="cid:shot1@example.com">\n'
        "--rel\nContent-Type: image/png\nContent-ID: <shot1@example.com>\n"
        "Content-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(png).decode()
        + "--rel\nContent-Type: image/gif; name=unused.gif\nContent-ID: <other@x>\n"
        "Content-Disposition: attachment\n\nGIF89a\n--rel--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "Screenshot:"
    shot, unused = parsed.attachments
    assert shot.content_id == "shot1@example.com"
    assert shot.inline is True
    assert shot.data == png
    assert shot.content_type == "image/png"
    assert shot.filename == "attachment-1.png"
    assert unused.inline is False and unused.filename == "unused.gif"


def test_parse_filename_rfc2231_and_rfc2047() -> None:
    parts = [
        # RFC 2231 with charset and continuations (Persian name).
        "Content-Type: application/pdf\nContent-Disposition: attachment;\n"
        " filename*0*=UTF-8''%D9%81%D8%A7%DA%A9;\n filename*1*=%D8%AA%D9%88%D8%B1.pdf\n",
        # RFC 2047 inside a quoted name (Outlook, Gmail).
        'Content-Type: application/pdf; name="=?utf-8?B?' + b64("رسید.pdf") + '?="\n'
        "Content-Disposition: attachment\n",
        # Both forms present: the extended one wins.
        "Content-Type: application/octet-stream\nContent-Disposition: attachment;"
        " filename=\"plain.txt\"; filename*=utf-8''r%C3%A9sum%C3%A9.txt\n",
        # Path traversal in a name.
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="../../x.sh"\n',
    ]
    body = "".join(f"--b\n{headers}\ndata{i}\n" for i, headers in enumerate(parts)) + "--b--\n"
    raw = message(BASIC + '\nContent-Type: multipart/mixed; boundary="b"', body)
    names = [attachment.filename for attachment in parse_message(raw).attachments]
    assert names == ["فاکتور.pdf", "رسید.pdf", "résumé.txt", "x.sh"]


def test_parse_raw_8bit_filename() -> None:
    head = BASIC + '\nContent-Type: multipart/mixed; boundary="b"'
    part = (
        '--b\nContent-Type: image/png; name="عکس.png"\nContent-Disposition: attachment;'
        ' filename="عکس.png"\n\nPNG\n--b--\n'
    )
    attachment = parse_message(message(head, part)).attachments[0]
    assert attachment.filename == "عکس.png"
    assert attachment.content_type == "image/png"


def test_parse_octet_stream_type_is_guessed_from_name() -> None:
    raw = message(
        BASIC + '\nContent-Type: multipart/mixed; boundary="b"',
        '--b\nContent-Type: ; name="face.jpg"\nContent-Transfer-Encoding: base64\n\n'
        "/9j/4AAQ\n--b--\n",
    )
    attachment = parse_message(raw).attachments[0]
    assert attachment.content_type == "image/jpeg"
    assert attachment.data == base64.b64decode("/9j/4AAQ")


def test_parse_forwarded_message_rfc822() -> None:
    inner = (
        "From: Customer <c@example.net>\nSubject: =?utf-8?q?Original_problem?=\n"
        "Content-Type: text/plain\n\nThe printer is on fire.\n"
    )
    raw = message(
        BASIC + '\nContent-Type: multipart/mixed; boundary="outer"',
        "--outer\nContent-Type: text/plain\n\nSee the forwarded mail.\n"
        "--outer\nContent-Type: message/rfc822\n\n" + inner + "--outer--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "See the forwarded mail."
    (forwarded,) = parsed.attachments
    assert forwarded.filename == "Original problem.eml"
    assert forwarded.content_type == "message/rfc822"
    again = parse_message(forwarded.data)
    assert again.subject == "Original problem"
    assert again.text == "The printer is on fire."
    assert again.from_ == Address("c@example.net", "Customer")


def test_parse_forwarded_8bit_message_keeps_its_bytes() -> None:
    inner = "From: c@example.net\nSubject: سفارش\n\n".encode() + PERSIAN_1256.encode("cp1256")
    raw = message(
        BASIC + '\nContent-Type: multipart/mixed; boundary="o"',
        b"--o\nContent-Type: message/rfc822\n\n" + inner + b"\n--o--\n",
    )
    (forwarded,) = parse_message(raw).attachments
    assert forwarded.data == inner
    assert forwarded.filename == "سفارش.eml"
    assert parse_message(forwarded.data).text == PERSIAN_1256


def test_parse_forwarded_message_without_subject() -> None:
    raw = message(
        BASIC + '\nContent-Type: multipart/mixed; boundary="o"',
        "--o\nContent-Type: message/rfc822\n\nFrom: x@example.net\n\nbody\n--o--\n",
    )
    assert parse_message(raw).attachments[0].filename == "forwarded.eml"


def test_parse_calendar_part_is_an_attachment() -> None:
    headers, body = ALTERNATIVE
    calendar = (
        "--alt\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\n\n"
        "BEGIN:VCALENDAR\nEND:VCALENDAR\n--alt--\n"
    )
    parsed = parse_message(message(headers, body.replace("--alt--\n", calendar)))
    assert parsed.text == "Plain version."
    (invite,) = parsed.attachments
    assert invite.content_type == "text/calendar"
    assert invite.filename == "attachment-1.ics"
    assert invite.data.startswith(b"BEGIN:VCALENDAR")


def test_parse_inline_text_parts_of_mixed_are_joined() -> None:
    raw = message(
        BASIC + '\nContent-Type: multipart/mixed; boundary="m"',
        "--m\nContent-Type: text/plain\n\nFirst part.\n"
        "--m\nContent-Type: application/pdf; name=a.pdf\n\n%PDF\n"
        "--m\nContent-Type: text/plain\nContent-Disposition: inline\n\nSecond part.\n--m--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "First part.\n\nSecond part."
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]


def test_parse_multipart_without_boundary_is_read_as_text() -> None:
    raw = message(BASIC + "\nContent-Type: multipart/mixed", "Text after all.\n")
    parsed = parse_message(raw)
    assert parsed.text == "Text after all."
    assert any("without parts" in defect for defect in parsed.defects)


def test_parse_depth_limit_keeps_deep_parts_as_opaque_attachment() -> None:
    body = ""
    for level in range(1, 15):
        body += f"--b{level - 1}\nContent-Type: multipart/mixed; boundary=b{level}\n\n"
    body += "--b14\nContent-Type: text/plain\n\ndeep text\n"
    parsed = parse_message(message(BASIC + "\nContent-Type: multipart/mixed; boundary=b0", body))
    assert len(parsed.attachments) == 1
    assert b"deep text" in parsed.attachments[0].data
    assert any("nesting deeper" in defect for defect in parsed.defects)


def test_parse_extreme_nesting_is_not_an_error() -> None:
    raw = message(BASIC, "innermost\n")
    for _ in range(3000):
        raw = b"From: a@example.com\nContent-Type: message/rfc822\n\n" + raw
    parsed = parse_message(raw)
    assert parsed.from_ == Address("a@example.com", "")
    assert len(parsed.attachments) == 1


def test_parse_part_limit() -> None:
    parts = "".join(f"--z\nContent-Type: text/plain\n\npart {n}\n" for n in range(1200))
    raw = message(BASIC + "\nContent-Type: multipart/mixed; boundary=z", parts + "--z--\n")
    parsed = parse_message(raw)
    assert "part 0" in parsed.text and "part 98" in parsed.text and "part 100" not in parsed.text
    assert len(parsed.attachments) == 1
    # Parts past [limits] max_parts (100) are one attachment, up to ten boundary lines a
    # part; the rest is left in the raw message, unparsed.
    assert b"part 998" in parsed.attachments[0].data
    assert b"part 1000" not in parsed.attachments[0].data
    assert "more than 100 parts: the rest kept as one attachment" in parsed.defects
    assert any(defect.startswith("more than 1,000 boundary lines") for defect in parsed.defects)


def test_parse_mutated_messages_raise_nothing_but_parse_error() -> None:
    headers, body = ALTERNATIVE
    seed = message(headers + "Content-Transfer-Encoding: 8bit\n", body + PERSIAN, crlf=True)
    rng = random.Random(1234)
    for _ in range(300):
        mutated = bytearray(seed)
        for _ in range(rng.randint(1, 12)):
            position = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.4:
                mutated[position] = rng.randrange(256)
            elif choice < 0.7:
                del mutated[position : position + rng.randint(1, 20)]
            else:
                mutated[position:position] = rng.choice(
                    [b"\n", b"=?", b"?=", b"--alt", b";", b'"', b"\x00", b"=\n", b"<", b"\r"]
                )
        try:
            parse_message(bytes(mutated))
        except ParseError as error:
            assert not str(error).startswith("internal error"), error
        header_summary(bytes(mutated))


# --- header_summary -----------------------------------------------------------------


ORIGINAL = (
    "From: Jane <jane@example.com>\nTo: support@example.org, sales@example.org\n"
    "Subject: Refund\nDate: Mon, 4 Mar 2024 10:00:00 +0100\nMessage-ID: <r1@example.com>\n"
    "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
)


def test_header_summary_fields() -> None:
    summary = header_summary(message(ORIGINAL, "Please refund.\n"))
    assert summary.message_id == "r1@example.com"
    assert summary.date == datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
    assert len(summary.digest) == 64


def test_header_summary_digest_is_delivery_independent() -> None:
    first = message(
        "Return-Path: <jane@example.com>\nDelivered-To: support@example.org\n"
        "Received: from mx1 by mail; Mon, 4 Mar 2024 10:00:01 +0100\n" + ORIGINAL,
        "Please refund.\n",
    )
    second = message(
        "Delivered-To: sales@example.org\nX-Original-To: sales@example.org\n"
        "Received: from mx2 by mail; Mon, 4 Mar 2024 10:00:03 +0100\n"
        "Received: from mx3 by mail; Mon, 4 Mar 2024 10:00:02 +0100\n"
        "Authentication-Results: mail; dkim=pass\nX-Spam-Score: 0.1\n"
        + ORIGINAL.replace("Subject: Refund", "Subject:\n Refund"),
        "Please refund.\n\n\n   ",
        crlf=True,
    )
    assert header_summary(first).digest == header_summary(second).digest


def test_header_summary_digest_distinguishes_content() -> None:
    base = header_summary(message(ORIGINAL, "Please refund.\n")).digest
    assert header_summary(message(ORIGINAL, "Please refund twice.\n")).digest != base
    other_subject = ORIGINAL.replace("Subject: Refund", "Subject: Refund!")
    assert header_summary(message(other_subject, "Please refund.\n")).digest != base
    two_to = ORIGINAL + "To: extra@example.org\n"
    assert header_summary(message(two_to, "Please refund.\n")).digest != base


def test_header_summary_reads_only_the_header_block() -> None:
    raw = message("Message-ID: <h@x>", "Message-ID: <body@x>\n")
    assert header_summary(raw).message_id == "h@x"


@pytest.mark.parametrize("raw", [b"", b"\x00\xff" * 100, b"no headers at all"])
def test_header_summary_never_raises(raw: bytes) -> None:
    summary = header_summary(raw)
    assert summary.message_id is None and summary.date is None
