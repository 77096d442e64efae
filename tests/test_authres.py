"""Authentication-Results (RFC 8601): parsed by a one-pass reader, only our server's
topmost header believed, and the From domain judged by DMARC, else aligned SPF/DKIM."""

from __future__ import annotations

from pathlib import Path

import pytest

from postdesk.daemon import Service
from postdesk.ingest.authres import MAX_HEADER, aligned, check_domain, parse, trusted
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.tickets import show_ticket


def test_a_typical_header_is_read_with_comments_quotes_and_versions() -> None:
    found = parse(
        "mx.example.com 1; spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com;\r\n"
        ' dkim/1=pass (good signature) header.d=example.com header.s="sel;1";'
        " dmarc=pass (p=reject dis=none) header.from=example.com"
    )
    assert found is not None and found.authserv_id == "mx.example.com"
    assert [(r.method, r.result) for r in found.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]
    assert found.results[1].properties == {"header.d": "example.com", "header.s": "sel;1"}


def test_a_quoted_semicolon_cannot_smuggle_in_a_result() -> None:
    """The envelope sender is the attacker's to choose; quoted, it stays one value."""
    found = parse('mx.example.com; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.example')
    assert found is not None
    assert [(r.method, r.result) for r in found.results] == [("spf", "fail")]


def test_none_and_garbage_give_no_results_and_no_error() -> None:
    assert parse("mx.example.com; none") == parse("mx.example.com; none")
    assert parse("mx.example.com; none").results == ()  # type: ignore[union-attr]
    assert parse("") is None and parse("; dkim=pass") is None
    broken = parse("mx.example.com; dkim=; =pass; spf pass; (unclosed dmarc=pass")
    assert broken is not None and broken.results == ()


def test_only_the_topmost_header_of_our_server_is_believed() -> None:
    values = [
        "mx.other.example; dmarc=pass header.from=example.com",
        "mx.example.com; dmarc=fail header.from=example.com",
        "mx.example.com; dmarc=pass header.from=example.com",  # the sender's forgery
    ]
    found = trusted(values, {"mx.example.com"})
    assert found is not None and not check_domain(found, "sara@example.com").passed
    assert trusted(values[:1], {"mx.example.com"}) is None


@pytest.mark.parametrize(
    ("results", "passed"),
    [
        ("dmarc=pass header.from=example.com", True),
        ("dmarc=fail header.from=example.com; dkim=pass header.d=example.com", False),
        ("dmarc=pass header.from=other.example", False),  # about another domain
        ("spf=pass smtp.mailfrom=bounce@mail.example.com", True),
        ("spf=pass smtp.mailfrom=example.com.evil.example", False),
        ("dkim=pass header.d=notexample.com", False),
        ("dkim=pass header.i=@example.com", True),
        ("spf=softfail smtp.mailfrom=example.com; dkim=fail header.d=example.com", False),
        ("dkim=pass header.d=a.example.com", True),
    ],
)
def test_the_from_domain_passes_by_dmarc_or_aligned_spf_or_dkim(results: str, passed: bool) -> None:
    found = parse(f"mx.example.com; {results}")
    assert found is not None
    verdict = check_domain(found, "sara@example.com")
    assert verdict.passed is passed and "example.com" in verdict.why


def test_alignment_is_relaxed_but_never_sideways() -> None:
    assert aligned("example.com", "mail.example.com") and aligned(
        "support.example.com", "example.com"
    )
    assert not aligned("a.example.com", "b.example.com") and not aligned("example.com", "")
    assert not aligned("example.com", "badexample.com")


def test_hostile_headers_are_read_in_one_pass_or_skipped() -> None:
    """Deep comments, long escapes and many parts are each one pass over at most
    MAX_HEADER characters (the reader has no regex and no nested loop over the text;
    and longer input is never read at all)."""
    assert parse("mx.example.com; " + "(" * (MAX_HEADER - 20)).results == ()  # type: ignore[union-attr]
    many = parse("mx.example.com; " + "dkim=pass; " * (MAX_HEADER // 12))
    assert many is not None and len(many.results) == MAX_HEADER // 12
    escaped = parse('mx.example.com; dkim="' + "\\" * (MAX_HEADER // 2 - 30))
    assert escaped is not None and all(r.result != "pass" for r in escaped.results)
    assert parse("mx.example.com; dkim=pass" + " " * MAX_HEADER) is None


def test_each_message_records_the_trusted_topmost_header(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """The pipeline keeps the topmost Authentication-Results from the configured server on
    the message (tickets show --json: authentication_results); look-alikes from other ids
    and headers below it are not what is kept, and without one it is null."""
    settings = settings_for(
        tmp_path, db_url, '[authentication]\nauthserv_id = "mx.support.example"\n'
    )
    service = Service(settings, db)
    ours = (
        "mx.support.example; spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=example.com"
    )
    forged_above = "mx.evil.example; dmarc=pass header.from=example.com"
    forged_below = "mx.support.example; dmarc=pass header.from=bank.example"
    raw = mail("a1@x", sender="Alice <alice@example.com>", subject="Invoice")
    signed = (
        f"Authentication-Results: {forged_above}\r\n"
        f"Authentication-Results: {ours}\r\n"
        f"Authentication-Results: {forged_below}\r\n"
    ).encode() + raw
    ingest(service, signed, mail("b1@x", sender="Bob <bob@example.org>", subject="Other"))

    first = show_ticket(db, ticket_of(db, "a1@x"))["messages"][0]
    assert first["authentication_results"] == ours
    second = show_ticket(db, ticket_of(db, "b1@x"))["messages"][0]
    assert second["authentication_results"] is None
