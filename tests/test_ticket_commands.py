"""`postdesk tickets note / set / reply`: the support workflow from the command line, through
the lifecycle and the outbox, with the real CLI on SQLite and PostgreSQL and a real SMTP
server (aiosmtpd on loopback) receiving the reply."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from postdesk.cli import main
from postdesk.config import load_settings
from postdesk.daemon import Service
from postdesk.ingest.tokens import ReplyTokens, load_key
from postdesk.testing.cli import CLEAN_ENV, Cli, assert_one_line_error
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail
from postdesk.testing.smtpsink import SmtpSink

SUPPORT = "support@support.example"
SARA = "sara@agents.example"
REZA = "reza@agents.example"
AGENTS = (
    f'[[agent]]\nemail = "{SARA}"\nname = "Sara"\n\n[[agent]]\nemail = "{REZA}"\nname = "Reza"\n'
)


def mailbox(name: str = "support", address: str = SUPPORT, team: str = "Support") -> str:
    return (
        f'[[mailbox]]\nname = "{name}"\naddress = "{address}"\n'
        'host = "127.0.0.1"\nport = 1\nsecurity = "none"\n'  # never fetched here
        f'username = "u"\npassword = "p"\nteam = "{team}"\n'
    )


def smtp(sink: SmtpSink) -> str:
    return f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def cli(tmp_path: Path, db_url: str, sink: SmtpSink) -> Cli:
    """An initialised postdesk with one mailbox, two agents and the SMTP sink."""
    runner = Cli(write_config(tmp_path, db_url, mailbox(), smtp(sink), AGENTS))
    runner("init")
    return runner


def customer_mail(
    mid: str,
    *,
    sender: str = "Alice <alice@example.com>",
    subject: str = "Broken lid",
    body: str = "My order arrived with a cracked lid.",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    minute: int = 0,
) -> bytes:
    return bytes(
        Mail(
            sender=sender,
            to=SUPPORT,
            subject=subject,
            body=body,
            date=datetime(2026, 3, 1, 9, minute, tzinfo=UTC),
            message_id=mid,
            in_reply_to=in_reply_to,
            references=references,
        )
    )


def imported(cli: Cli, tmp_path: Path, *raws: bytes, mailbox_name: str = "support") -> list[int]:
    """Import `raws` (as history received by the mailbox); the ticket numbers, oldest first."""
    folder = tmp_path / f"mail{len(list(tmp_path.glob('mail*')))}"
    folder.mkdir()
    for i, raw in enumerate(raws):
        (folder / f"{i}.eml").write_bytes(raw)
    args = ["import", str(folder)] + (["--mailbox", mailbox_name] if mailbox_name else [])
    cli(*args)
    return sorted({row["number"] for row in cli.json("tickets", "list")})


def invoke(cli: Cli, *args: str, stdin: bytes | None = None, code: int = 0) -> Result:
    """Like `cli(*args)`, with `stdin` as the command's standard input."""
    result = cli.runner.invoke(main, ["-c", str(cli.config), *args], input=stdin, env=CLEAN_ENV)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    if code == 1:
        assert_one_line_error(result.stderr)
    return result


def send_outbox(cli: Cli) -> None:
    """What `postdesk run --once` does after fetching: drain the outbox through SMTP."""
    db = cli.database()
    try:
        Service(load_settings(cli.config), db).outbox_sender().drain()
    finally:
        db.dispose()


def received(sink: SmtpSink) -> list[EmailMessage]:
    return [
        email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
        for m in sink.messages
    ]


def events(cli: Cli, number: int) -> list[tuple[str, str, Any]]:
    shown = cli.json("tickets", "show", str(number))
    return [(e["kind"], e["actor"], e["data"]) for e in shown["events"]]


def test_a_lead_works_a_ticket_from_note_to_reply(cli: Cli, tmp_path: Path, sink: SmtpSink) -> None:
    [number] = imported(cli, tmp_path, customer_mail("c1@example.com"))
    assert sink.messages == []  # imported history is not acknowledged

    out = cli("tickets", "note", str(number), "Customer called too; VIP.", "--as", REZA).stdout
    assert f"#{number}" in out
    out = cli(
        "tickets", "set", str(number), "--status", "open", "--priority", "high",
        "--category", "billing", "--assign", REZA, "--as", REZA,
    ).stdout  # fmt: skip
    assert "status open" in out and "priority high" in out and f"assigned to {REZA}" in out

    shown = cli.json("tickets", "show", str(number))
    assert shown["status"] == "open"
    assert shown["assignee"]["email"] == REZA
    assert (shown["priority"], shown["triage"]["priority"]["source"]) == ("high", "human")
    assert (shown["category"], shown["triage"]["category"]["source"]) == ("billing", "human")
    kinds = [(kind, actor) for kind, actor, _ in events(cli, number)]
    assert kinds[1:] == [
        ("note", REZA),
        ("status", REZA),
        ("priority", REZA),
        ("category", REZA),
        ("assigned", REZA),
    ]
    assert events(cli, number)[1][2] == {"text": "Customer called too; VIP."}

    # The reply: text on stdin, --as defaults to the first configured agent (Sara).
    reply = "Hello Alice,\n\nA new lid is on its way.\n"
    out = invoke(cli, "tickets", "reply", str(number), stdin=reply.encode()).stdout
    assert "queued reply #" in out and "`postdesk run --once` sends it" in out
    send_outbox(cli)
    [mail] = received(sink)
    assert sink.messages[0].rcpt_tos == ("alice@example.com",)
    assert mail["From"] == f"Sara via Support <{SUPPORT}>"
    assert mail["In-Reply-To"] == "<c1@example.com>"
    assert f"[#{number}]" in mail["Subject"]
    assert mail["Auto-Submitted"] is None  # a person wrote it
    assert ReplyTokens(load_key(load_settings(cli.config))).find([str(mail["Reply-To"])]) == number
    assert SARA.encode() not in sink.messages[0].data
    assert b"sara@" not in sink.messages[0].data.lower()
    body = mail.get_body(("plain",))
    assert body is not None and "A new lid is on its way." in body.get_content()
    assert "Sara" in body.get_content()
    assert mail["Content-Language"] == "en"

    shown = cli.json("tickets", "show", str(number))
    assert shown["status"] == "pending"  # answered: waiting for the customer
    assert shown["queue"] == "support" and shown["solved_at"] is None
    # The note reads with the conversation, in time order, marked as never sent.
    assert [m["direction"] for m in shown["messages"]] == ["in", "note", "out"]
    assert shown["messages"][1]["text"] == "Customer called too; VIP."
    sent = shown["messages"][2]
    assert sent["message_id"] == str(mail["Message-ID"]).strip("<>")
    assert sent["outbox"]["kind"] == "reply" and sent["outbox"]["state"] == "sent"
    # The first response is when the reply was written, not when the outbox sent it.
    assert shown["first_response_at"] == sent["received_at"]
    assert events(cli, number)[-1][:2] == ("status", SARA)
    assert "Customer called too; VIP." in cli("tickets", "show", str(number)).stdout


def test_a_persian_ticket_is_answered_in_persian_in_the_latest_thread(
    cli: Cli, tmp_path: Path, sink: SmtpSink
) -> None:
    first = customer_mail(
        "fa1@example.com",
        sender="مریم <maryam@example.ir>",
        subject="سفارش ناقص",
        body="سلام، سفارش من ناقص رسید. لطفا بررسی کنید.",
    )
    again = customer_mail(
        "fa2@example.com",
        sender="مریم <maryam@example.ir>",
        subject="Re: سفارش ناقص",
        body="OK",  # an English word does not switch the ticket's language
        in_reply_to="fa1@example.com",
        references=("fa1@example.com",),
        minute=5,
    )
    [number] = imported(cli, tmp_path, first, again)
    text_file = tmp_path / "reply.txt"
    text_file.write_text("سلام مریم،\nقطعهٔ جا افتاده فردا ارسال می‌شود.", encoding="utf-8")
    cli("tickets", "reply", str(number), "--file", str(text_file), "--as", REZA)
    send_outbox(cli)
    [mail] = received(sink)
    assert mail["Content-Language"] == "fa"
    assert mail["From"] == f"Reza via Support <{SUPPORT}>"
    assert mail["In-Reply-To"] == "<fa2@example.com>"
    assert "<fa1@example.com>" in mail["References"]
    body = mail.get_body(("plain",))
    assert body is not None
    assert "قطعهٔ جا افتاده فردا ارسال می‌شود." in body.get_content()
    assert "درخواست شمارهٔ" in body.get_content()
    assert b"reza@" not in sink.messages[0].data.lower()


def _state(cli: Cli, number: int) -> tuple[Any, Any]:
    return cli.json("tickets", "show", str(number)), cli.json("outbox", "list")


def test_invalid_input_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    [number] = imported(cli, tmp_path, customer_mail("c1@example.com"))
    before = _state(cli, number)
    n = str(number)
    bad_runs: list[tuple[tuple[str, ...], str]] = [
        (("tickets", "set", n, "--priority", "high", "--status", "wait"), "unknown ticket status"),
        (("tickets", "set", n, "--status", "open", "--priority", "hgh"), "unknown priority 'hgh'"),
        (("tickets", "set", n, "--status", "open", "--assign", "alice@example.com"), "not an"),
        (("tickets", "set", n, "--status", "open", "--assign", "nobody@x.example"), "not an agent"),
        (("tickets", "set", n), "nothing to set"),
        (("tickets", "set", "999", "--status", "open"), "no ticket #999"),
        (("tickets", "note", n, "   "), "empty"),
        (("tickets", "note", "999", "hello"), "no ticket #999"),
        (("tickets", "reply", n, " \n "), "empty"),
        (("tickets", "reply", n, "hi", "--status", "waiting"), "unknown ticket status"),
        (("tickets", "reply", n, "hi", "--as", "alice@example.com"), "not an agent"),
        (("tickets", "reply", "999", "hi"), "no ticket #999"),
        (("tickets", "reply", n, "hi", "--file", str(tmp_path / "missing.txt")), "both"),
    ]  # fmt: skip
    for args, message in bad_runs:
        line = assert_one_line_error(cli(*args, code=1).stderr)
        assert message in line, (args, line)
    assert "not UTF-8" in invoke(cli, "tickets", "note", n, stdin=b"\xff\xfe", code=1).stderr
    assert "empty" in invoke(cli, "tickets", "reply", n, stdin=b"  \n", code=1).stderr
    assert _state(cli, number) == before


def test_reply_needs_an_agent_smtp_and_a_mailbox_to_send_from(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    no_agents = Cli(write_config(tmp_path, sqlite_url, mailbox(), smtp(sink)))
    no_agents("init")
    [number] = imported(no_agents, tmp_path, customer_mail("c1@example.com"))
    line = assert_one_line_error(no_agents("tickets", "reply", str(number), "hi", code=1).stderr)
    assert "--as" in line
    assert "--as" in no_agents("tickets", "note", str(number), "hi", code=1).stderr

    no_smtp_dir = tmp_path / "no-smtp"
    no_smtp_dir.mkdir()
    no_smtp = Cli(write_config(no_smtp_dir, sqlite_url, mailbox(), AGENTS))
    assert "[smtp]" in no_smtp("tickets", "reply", str(number), "hi", code=1).stderr

    # Imported without --mailbox, with two mailboxes configured: no address to guess.
    two_dir = tmp_path / "two"
    two_dir.mkdir()
    two = Cli(
        write_config(
            two_dir,
            sqlite_url,
            mailbox(),
            mailbox("sales", "sales@support.example", "Sales"),
            smtp(sink),
            AGENTS,
        )
    )
    two("init")
    orphan_mail = customer_mail("o1@example.com", sender="eve@example.com", subject="Hi")
    [_, orphan] = imported(two, tmp_path, orphan_mail, mailbox_name="")
    assert "no mailbox" in two("tickets", "reply", str(orphan), "hi", code=1).stderr
    assert two.json("outbox", "list") == []


def test_reply_status_and_assignment_choices(cli: Cli, tmp_path: Path, sink: SmtpSink) -> None:
    [first, second] = imported(
        cli,
        tmp_path,
        customer_mail("c1@example.com"),
        customer_mail("c2@example.com", sender="bob@example.com", subject="Refund"),
    )
    cli("tickets", "reply", str(first), "Done, refunded.", "--status", "solved")
    solved = cli.json("tickets", "show", str(first))
    assert solved["status"] == "solved" and solved["solved_at"] is not None
    # A last word on a solved ticket does not unsolve it, nor move the first response.
    cli("tickets", "reply", str(first), "PS: the receipt follows.")
    again = cli.json("tickets", "show", str(first))
    assert again["status"] == "solved" and again["solved_at"] == solved["solved_at"]
    assert again["first_response_at"] == solved["first_response_at"] is not None
    # Closing keeps when it was solved; reopening clears it.
    cli("tickets", "set", str(first), "--status", "closed")
    assert cli.json("tickets", "show", str(first))["solved_at"] == solved["solved_at"]
    cli("tickets", "set", str(first), "--status", "open")
    assert cli.json("tickets", "show", str(first))["solved_at"] is None
    cli("tickets", "set", str(first), "--status", "closed")
    closed = cli.json("tickets", "show", str(first))
    assert closed["solved_at"] == closed["closed_at"] is not None  # closed unsolved: now

    cli("tickets", "set", str(second), "--assign", SARA.upper())
    assert cli.json("tickets", "show", str(second))["assignee"]["email"] == SARA
    assert "nothing changed" in cli("tickets", "set", str(second), "--assign", SARA).stdout
    assert "unassigned" in cli("tickets", "set", str(second), "--assign", "none").stdout
    assert cli.json("tickets", "show", str(second))["assignee"] is None
    send_outbox(cli)
    # The two replies, and the survey asked when the first reply solved the ticket.
    assert len(sink.messages) == 3
    kinds = [row["kind"] for row in cli.json("outbox", "list")]
    assert sorted(kinds) == ["reply", "reply", "survey"]


def test_imported_agent_mail_is_the_first_response(cli: Cli, tmp_path: Path) -> None:
    """History written by an agent (imported, so taken as written) answers the customer:
    its Date is the ticket's first response, the earliest one even when imported later."""
    question = customer_mail("c1@example.com", minute=0)
    late = customer_mail(
        "a2@example.com", sender=f"Sara <{SARA}>", in_reply_to="c1@example.com", minute=40
    )
    early = customer_mail(
        "a1@example.com", sender=f"Reza <{REZA}>", in_reply_to="c1@example.com", minute=25
    )
    [number] = imported(cli, tmp_path, question, late)
    shown = cli.json("tickets", "show", str(number))
    assert shown["first_response_at"] == "2026-03-01T09:40:00+00:00"
    assert shown["status"] == "new"  # an agent's mail does not reopen or move it
    imported(cli, tmp_path, early)
    assert cli.json("tickets", "show", str(number))["first_response_at"] == (
        "2026-03-01T09:25:00+00:00"
    )
