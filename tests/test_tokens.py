"""Signed reply tokens in Reply-To addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postdesk.errors import ConfigError
from postdesk.ingest.tokens import KEY_FILE, ReplyTokens, load_key
from postdesk.testing.config import settings_for


def test_token_round_trip_and_tamper_resistance() -> None:
    tokens = ReplyTokens(b"k" * 32)
    address = tokens.address("support@example.com", 1234)
    assert address.startswith("support+t1234-") and address.endswith("@example.com")
    assert tokens.find(["someone@else.example", address]) == 1234
    # Mail servers may change the case of the local part.
    assert tokens.find([address.upper()]) == 1234
    # Editing the number, or guessing a signature, names no ticket.
    assert tokens.find([address.replace("t1234-", "t1235-")]) is None
    forged = address.split("-", 1)[0] + "-aaaaaaaaaaaa@example.com"
    assert tokens.find([forged]) is None
    # Another key's token is worthless.
    assert ReplyTokens(b"x" * 32).find([address]) is None
    # An existing +detail on the mailbox address is replaced, not nested.
    assert tokens.address("support+sales@example.com", 7).startswith("support+t7-")


def test_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'db'}")
    first = load_key(settings)
    path = settings.data_dir / KEY_FILE
    assert len(first) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_key(settings) == first
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no scratch files left


def test_configured_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    strong = settings_for(
        tmp_path, "sqlite:///x.db", '[threading]\nsecret = "0123456789abcdef-long-enough"\n'
    )
    assert load_key(strong) == load_key(strong)
    assert not (strong.data_dir / KEY_FILE).exists()
    weak = settings_for(tmp_path, "sqlite:///x.db", '[threading]\nsecret = "short"\n')
    with pytest.raises(ConfigError, match=r"threading\.secret: is too short"):
        load_key(weak)


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "sqlite:///x.db")
    settings.data_dir.mkdir()
    (settings.data_dir / KEY_FILE).write_text("not hex at all\n")
    with pytest.raises(ConfigError, match="delete it to make a new one"):
        load_key(settings)


@pytest.mark.parametrize(
    ("original", "lookalike"),
    [("s", "\u017f"), ("k", "\u212a"), ("1", "\u06f1")],  # long s, Kelvin sign, Persian one
)
def test_lookalike_characters_are_no_token_and_no_error(original: str, lookalike: str) -> None:
    """Case-insensitive matching alone lets U+017F pass for s and U+212A for k; comparing
    such a signature used to raise TypeError (non-ASCII str in hmac.compare_digest)."""
    tokens = ReplyTokens(b"k" * 32)

    def forge(address: str) -> str:
        local, _, rest = address.partition("+")
        return f"{local}+{rest.replace(original, lookalike)}"

    # A ticket whose token has the letter (or digit) to imitate.
    number = next(n for n in range(1, 10_000) if original in tokens.token(n))
    address = tokens.address("support@example.com", number)
    assert tokens.find([address]) == number
    assert forge(address) != address
    assert tokens.find([forge(address)]) is None
    agent = next(
        tokens.agent_address("support@example.com", number, a)
        for a in range(1, 10_000)
        if original in tokens.agent_address("support@example.com", number, a).partition("+")[2]
    )
    assert tokens.find_agent([agent]) is not None
    assert tokens.find_agent([forge(agent)]) is None
