"""Config files for tests: postdesk.toml pointing at the test servers and databases."""

from __future__ import annotations

import json
from pathlib import Path

from postdesk.config import Settings, load_settings
from postdesk.testing.dovecot import Dovecot, MailUser


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML ones)."""
    return json.dumps(value, ensure_ascii=False)


def mailbox_toml(
    dovecot: Dovecot,
    user: MailUser,
    *,
    name: str = "support",
    security: str = "none",
    processed_folder: str = "",
    batch_size: int = 200,
    extra: str = "",
) -> str:
    """A [[mailbox]] block for `user` on the test Dovecot (plain, starttls or ssl)."""
    port = dovecot.ssl_port if security == "ssl" else dovecot.port
    lines = [
        "[[mailbox]]",
        f"name = {toml_str(name)}",
        f"address = {toml_str(user.email)}",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"security = {toml_str(security)}",
        f"username = {toml_str(user.email)}",
        f"password = {toml_str(user.password)}",
        f"processed_folder = {toml_str(processed_folder)}",
        f"batch_size = {batch_size}",
    ]
    if security != "none":
        lines.append(f"ca_file = {toml_str(str(dovecot.ca_file))}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def import_mailbox_toml(address: str, name: str = "support") -> str:
    """A [[mailbox]] block naming the support address, for runs that only import (its
    server is never connected to): postdesk then knows which address is its own."""
    lines = [
        "[[mailbox]]",
        f"name = {toml_str(name)}",
        f"address = {toml_str(address)}",
        'host = "127.0.0.1"',
        f"username = {toml_str(address)}",
        'password = "unused"',
    ]
    return "\n".join(lines) + "\n"


def write_config(directory: Path, db_url: str, *blocks: str, top: str = "") -> Path:
    """Write postdesk.toml in `directory` with the database and the given blocks."""
    path = directory / "postdesk.toml"
    # `top` (top-level keys or whole tables) goes before [database], after data_dir.
    text = f'data_dir = "data"\n{top}\n\n[database]\nurl = {toml_str(db_url)}\n\n' + "\n".join(
        blocks
    )
    path.write_text(text, encoding="utf-8")
    return path


def settings_for(directory: Path, db_url: str, *blocks: str) -> Settings:
    """Write a config like write_config() and load it."""
    return load_settings(write_config(directory, db_url, *blocks))
