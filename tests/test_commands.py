"""Agents' #commands: split from the reply, all checked before anything is applied."""

from __future__ import annotations

from postdesk.notify.commands import MAX_COMMANDS, parse_reply

LEVELS = ("low", "normal", "high", "urgent")


def test_commands_at_the_top_then_the_reply() -> None:
    parsed = parse_reply(
        "#solve\n\n#priority HIGH\n#category Billing refunds\n#assign me\n"
        "Hello Alice,\n#this line is text\nThanks, Sara",
        priorities=LEVELS,
    )
    assert [(c.name, c.value) for c in parsed.commands] == [
        ("status", "solved"),
        ("priority", "high"),
        ("category", "Billing refunds"),
        ("assign", "me"),
    ]
    assert parsed.errors == [] and not parsed.note
    assert parsed.text == "Hello Alice,\n#this line is text\nThanks, Sara"


def test_commands_only_leave_no_text() -> None:
    parsed = parse_reply("#close\n\n", priorities=LEVELS)
    assert [c.value for c in parsed.commands] == ["closed"] and parsed.text == ""


def test_note_makes_the_rest_a_note() -> None:
    parsed = parse_reply("#pending\n#note customer is a VIP\nsecond line", priorities=LEVELS)
    assert parsed.note and [c.name for c in parsed.commands] == ["status", "note"]
    assert parsed.text == "customer is a VIP\nsecond line"


def test_unknown_commands_and_values_are_errors_naming_the_line() -> None:
    parsed = parse_reply(
        "#priority whenever\n#frobnicate\n#close now\n#assign the team\n#category\nHi",
        priorities=LEVELS,
    )
    assert [line for line, _ in parsed.errors] == [
        "#priority whenever",
        "#frobnicate",
        "#close now",
        "#assign the team",
        "#category",
    ]
    assert "use one of low, normal, high, urgent" in parsed.errors[0][1]
    assert "unknown command #frobnicate" in parsed.errors[1][1]


def test_two_statuses_are_an_error() -> None:
    parsed = parse_reply("#close\n#open\n", priorities=LEVELS)
    assert parsed.errors == [("#open", "two different statuses in one reply")]


def test_a_reply_without_commands_is_all_text_and_headings_are_text() -> None:
    assert parse_reply("Hello\n#close", priorities=LEVELS).commands == []
    parsed = parse_reply("## Summary\nAll done", priorities=LEVELS)
    assert parsed.commands == [] and parsed.text == "## Summary\nAll done"


def test_hostile_input_is_bounded() -> None:
    many = "#close\n" * 100_000 + "text"
    parsed = parse_reply(many, priorities=LEVELS)
    assert len(parsed.commands) == MAX_COMMANDS
    long_line = parse_reply("#category " + "x" * 1_000_000, priorities=LEVELS)
    assert len(long_line.commands[0].value) < 500
