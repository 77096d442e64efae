"""The log formats of `postdesk run`: JSON fields, and the mask over configured secrets."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from postdesk.config import load_settings
from postdesk.logs import MASK, JsonFormatter, TextFormatter, secrets_of
from postdesk.testing.config import write_config


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("postdesk.test", logging.ERROR, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_event_fields_and_mask_secrets() -> None:
    formatter = JsonFormatter()
    formatter.set_secrets({"hunter2-secret", "abc"})  # "abc" is too short to search for
    try:
        raise RuntimeError("server said: bad password hunter2-secret")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = _record(
        "mailbox %s: login failed: %s",
        "support",
        "LOGIN x hunter2-secret",
        mailbox="support",
        uid=7,
        message_id="m1@example.com",
        ticket=12,
        detail={"said": ["hunter2-secret"]},
    )
    record.exc_info = exc_info
    entry = json.loads(formatter.format(record))
    assert entry["message"] == f"mailbox support: login failed: LOGIN x {MASK}"
    assert entry["level"] == "ERROR" and entry["logger"] == "postdesk.test"
    assert entry["time"].endswith("+00:00")
    assert (entry["mailbox"], entry["uid"], entry["message_id"], entry["ticket"]) == (
        "support",
        7,
        "m1@example.com",
        12,
    )
    assert entry["detail"] == {"said": [MASK]}
    assert "hunter2-secret" not in json.dumps(entry) and "RuntimeError" in entry["exception"]
    assert "abc" in TextFormatter().format(_record("abc"))


def test_text_lines_mask_the_longest_secret_whole() -> None:
    formatter = TextFormatter()
    formatter.set_secrets({"pass", "password123"})
    line = formatter.format(_record("sent password123 and pass"))
    assert line.endswith(f"sent {MASK} and {MASK}")


def test_secrets_of_a_config(tmp_path: Path) -> None:
    """Inline, file and database-URL passwords are collected; a missing file is skipped."""
    (tmp_path / "smtp-password").write_text("smtp-secret-9\n")
    config = write_config(
        tmp_path,
        "postgresql+psycopg://postdesk:db-secret-7@127.0.0.1/postdesk",
        '[[mailbox]]\nname = "a"\naddress = "a@example.com"\nhost = "127.0.0.1"\n'
        'username = "a"\npassword = "imap-secret-1"\n',
        '[[mailbox]]\nname = "b"\naddress = "b@example.com"\nhost = "127.0.0.1"\n'
        'username = "b"\npassword_file = "/nonexistent/postdesk-test"\n',
        f'[smtp]\nhost = "127.0.0.1"\n'
        f'username = "u"\npassword_file = "{tmp_path / "smtp-password"}"\n',
    )
    assert secrets_of(load_settings(config)) == {"imap-secret-1", "smtp-secret-9", "db-secret-7"}
