"""The configuration file: typed settings, and one-line errors naming file and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postdesk.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Settings,
    config_path,
    load_settings,
)
from postdesk.errors import ConfigError

DB = '[database]\nurl = "sqlite:///postdesk.db"\n'

MAILBOX = """
[[mailbox]]
name = "support"
address = "Support@Example.com"
host = "imap.example.com"
username = "support@example.com"
password = "hunter2"
"""

FULL = """
data_dir = "files"

[database]
url = "sqlite:///db/postdesk.db"

[[mailbox]]
name = "support"
address = "Support@Example.com"
host = "imap.example.com"
port = 1993
security = "ssl"
username = "support@example.com"
password_file = "secrets/imap"
folder = "Support"
processed_folder = "Support/Done"
ca_file = "ca.pem"
tls_verify = false
batch_size = 50
batch_bytes = 1000000
timeout = 5

[[mailbox]]
name = "billing"
address = "billing@example.com"
host = "imap.example.com"
security = "starttls"
username = "billing@example.com"
password_env = "BILLING_PW"

[smtp]
host = "smtp.example.com"
security = "starttls"
username = "support@example.com"
password_env = "POSTDESK_SMTP_PASSWORD"

[[agent]]
email = "Sara@Example.com"
name = "Sara"

[[agent]]
email = "omid@example.com"

[run]
poll_interval = 15
"""


def write(tmp_path: Path, text: str, name: str = "postdesk.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Settings:
    return load_settings(write(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    error = excinfo.value
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert error.path == str(path)
    return error


def assert_names(error: ConfigError, key: str, *expected: str) -> None:
    """The error is about `key` and its text contains every one of `expected`."""
    message = str(error)
    assert error.key == key, message
    assert f": {key}: " in message, message
    for part in expected:
        assert part in message, message


# --- the happy path ------------------------------------------------------------------------


def test_full_config_is_loaded_into_typed_settings(tmp_path: Path) -> None:
    s = load(tmp_path, FULL)
    base = tmp_path.resolve()
    assert s.path == tmp_path / "postdesk.toml"
    assert s.data_dir == base / "files"
    assert s.database.url == f"sqlite:///{base / 'db' / 'postdesk.db'}"

    support, billing = s.mailboxes
    assert support.name == "support"
    assert support.address == "support@example.com"  # lower-cased
    assert (support.host, support.port, support.security) == ("imap.example.com", 1993, "ssl")
    assert support.folder == "Support"
    assert support.processed_folder == "Support/Done"
    assert support.ca_file == base / "ca.pem"
    assert support.tls_verify is False
    assert (support.batch_size, support.batch_bytes) == (50, 1_000_000)
    assert support.timeout == 5.0 and isinstance(support.timeout, float)
    assert support.password.source == "file"
    assert support.password.value == str(base / "secrets" / "imap")

    assert billing.security == "starttls" and billing.port == 143
    assert billing.folder == "INBOX" and billing.processed_folder == ""
    assert billing.password.source == "env" and billing.password.value == "BILLING_PW"
    assert s.mailbox("billing") is billing

    assert s.smtp is not None
    assert (s.smtp.host, s.smtp.port, s.smtp.security) == ("smtp.example.com", 587, "starttls")
    assert s.smtp.password.source == "env"

    assert [(a.email, a.name) for a in s.agents] == [
        ("sara@example.com", "Sara"),
        ("omid@example.com", ""),
    ]
    assert s.run.poll_interval == 15.0


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, DB)
    assert s.data_dir == tmp_path.resolve() / "postdesk-data"
    assert s.mailboxes == () and s.agents == () and s.smtp is None
    assert s.run.poll_interval == 60.0


def test_mailbox_defaults(tmp_path: Path) -> None:
    (box,) = load(tmp_path, DB + MAILBOX).mailboxes
    assert (box.port, box.security, box.folder) == (993, "ssl", "INBOX")
    assert (box.batch_size, box.batch_bytes, box.timeout) == (200, 20 * 1024 * 1024, 60.0)
    assert box.tls_verify is True and box.ca_file is None
    assert box.password.reveal() == "hunter2"


@pytest.mark.parametrize(
    ("security", "imap_port", "smtp_port"),
    [("ssl", 993, 465), ("starttls", 143, 587), ("none", 143, 25)],
)
def test_port_defaults_follow_security(
    tmp_path: Path, security: str, imap_port: int, smtp_port: int
) -> None:
    text = (
        DB
        + MAILBOX
        + f'security = "{security}"\n\n[smtp]\nhost = "smtp.example.com"\n'
        + f'security = "{security}"\n'
    )
    s = load(tmp_path, text)
    assert s.mailboxes[0].port == imap_port
    assert s.smtp is not None and s.smtp.port == smtp_port


def test_smtp_without_username_needs_no_password(tmp_path: Path) -> None:
    s = load(tmp_path, DB + '[smtp]\nhost = "relay.local"\n')
    assert s.smtp is not None
    assert s.smtp.password.source == "none" and s.smtp.password.reveal() == ""


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("postgres://u:pw@db.example.com:5433/helpdesk", "postgresql+psycopg://u:pw@"),
        ("postgresql://u@db.example.com/helpdesk", "postgresql+psycopg://u@"),
        ("postgresql+psycopg://u@db.example.com/helpdesk", "postgresql+psycopg://u@"),
    ],
)
def test_postgres_urls_use_psycopg(tmp_path: Path, written: str, expected: str) -> None:
    url = load(tmp_path, f'[database]\nurl = "{written}"\n').database.url
    assert url.startswith(expected)
    assert url.endswith("/helpdesk")


def test_absolute_and_memory_sqlite_urls_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "x.db"
    assert load(tmp_path, f'[database]\nurl = "sqlite:///{absolute}"\n').database.url == (
        f"sqlite:///{absolute}"
    )
    assert load(tmp_path, '[database]\nurl = "sqlite:///:memory:"\n').database.url == (
        "sqlite:///:memory:"
    )


def test_relative_paths_resolve_against_the_config_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "postdesk"
    path = write(conf_dir, 'data_dir = "data"\n' + DB)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Loaded through a relative path from another directory.
    s = load_settings(os.path.relpath(path, elsewhere))
    assert s.data_dir == conf_dir.resolve() / "data"
    assert s.database.url == f"sqlite:///{conf_dir.resolve() / 'postdesk.db'}"


def test_password_file_and_env_are_read_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PD_TEST_PW", raising=False)
    text = DB + MAILBOX.replace('password = "hunter2"', 'password_file = "pw.txt"')
    text += '\n[smtp]\nhost = "smtp.example.com"\nusername = "u"\npassword_env = "PD_TEST_PW"\n'
    # Neither the file nor the variable exists yet: loading still works.
    s = load(tmp_path, text)
    (tmp_path / "pw.txt").write_text("  s3cret\n", encoding="utf-8")
    monkeypatch.setenv("PD_TEST_PW", "from-env")
    assert s.mailboxes[0].password.reveal() == "s3cret"
    assert s.smtp is not None and s.smtp.password.reveal() == "from-env"


def test_secrets_do_not_appear_in_repr(tmp_path: Path) -> None:
    s = load(tmp_path, DB + MAILBOX)
    assert "hunter2" not in repr(s)
    assert "hunter2" not in repr(s.mailboxes[0].password)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert config_path(None) == Path(DEFAULT_CONFIG)
    monkeypatch.setenv(CONFIG_ENV, "/etc/postdesk/from-env.toml")
    assert config_path(None) == Path("/etc/postdesk/from-env.toml")
    assert config_path("given.toml") == Path("given.toml")


# --- secrets that turn out missing -------------------------------------------------------


def test_missing_password_file_is_reported_when_revealed(tmp_path: Path) -> None:
    text = DB + MAILBOX.replace('password = "hunter2"', 'password_file = "nope/pw"')
    path = write(tmp_path, text)
    secret = load_settings(path).mailboxes[0].password
    with pytest.raises(ConfigError) as excinfo:
        secret.reveal()
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert "password_file" in message and "support" in message
    assert str(tmp_path.resolve() / "nope" / "pw") in message
    assert "\n" not in message


def test_empty_password_file_is_reported_when_revealed(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("  \n", encoding="utf-8")
    path = write(tmp_path, DB + MAILBOX.replace('password = "hunter2"', 'password_file = "pw"'))
    with pytest.raises(ConfigError, match="is empty; write the password into it") as excinfo:
        load_settings(path).mailboxes[0].password.reveal()
    assert "password_file" in str(excinfo.value)


def test_unset_password_env_is_reported_when_revealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PD_TEST_UNSET", raising=False)
    text = (
        DB + '[smtp]\nhost = "smtp.example.com"\nusername = "u"\npassword_env = "PD_TEST_UNSET"\n'
    )
    path = write(tmp_path, text)
    smtp = load_settings(path).smtp
    assert smtp is not None
    secret = smtp.password
    with pytest.raises(ConfigError) as excinfo:
        secret.reveal()
    message = str(excinfo.value)
    assert message.startswith(f"{path}: smtp.password_env: ")
    assert "PD_TEST_UNSET" in message
    assert "\n" not in message


# --- files that cannot be read ---------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert "no such file" in message and "\n" not in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "[database\nurl = 1\n",
        'data_dir = "a"\ndata_dir = "b"\n',
        "key = \n",
        '[database]\nurl = "unterminated\n',
    ],
)
def test_invalid_toml_is_one_line(tmp_path: Path, text: str) -> None:
    error = config_error(tmp_path, text)
    assert error.key is None
    assert "is not valid TOML" in str(error)
    assert "line" in str(error)  # says where


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "postdesk.toml"
    path.write_bytes(b'data_dir = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path)


# --- wrong or missing keys --------------------------------------------------------------


def test_database_table_is_required(tmp_path: Path) -> None:
    assert_names(config_error(tmp_path, 'data_dir = "x"\n'), "database", "missing", "table")


def test_database_url_is_required(tmp_path: Path) -> None:
    assert_names(config_error(tmp_path, "[database]\n"), "database.url", "missing", "string")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("sqlite://", "sqlite:///path/to/postdesk.db"),
        ("postgresql://u:pw@host:notaport/db", "not a valid database URL"),
    ],
)
def test_bad_database_urls(tmp_path: Path, url: str, expected: str) -> None:
    error = config_error(tmp_path, f'[database]\nurl = "{url}"\n')
    assert_names(error, "database.url", expected)


def test_bad_database_url_does_not_echo_the_password(tmp_path: Path) -> None:
    error = config_error(tmp_path, '[database]\nurl = "postgres://u:topsecret@h:xx/db"\n')
    assert "topsecret" not in str(error)


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ('datadir = "x"\n' + DB, "datadir", "'data_dir'"),
        (DB + '[[mailboxes]]\nname = "x"\n', "mailboxes", "'mailbox'"),
        ('[databse]\nurl = "sqlite:///x.db"\n', "databse", "'database'"),
        ('[database]\nurl = "sqlite:///x.db"\nurll = 1\n', "database.urll", "'url'"),
        (DB + "[run]\npoll_intervall = 5\n", "run.poll_intervall", "'poll_interval'"),
        (DB + MAILBOX + 'pasword_file = "x"\n', "mailbox[0].pasword_file", "'password_file'"),
        (DB + MAILBOX + "batchsize = 5\n", "mailbox[0].batchsize", "'batch_size'"),
        (DB + '[smtp]\nhost = "h"\nprot = 25\n', "smtp.prot", "'port'"),
        (DB + '[[agent]]\nemail = "a@b.c"\nnmae = "A"\n', "agent[0].nmae", "'name'"),
    ],
)
def test_unknown_keys_suggest_the_closest_known_key(
    tmp_path: Path, text: str, key: str, suggestion: str
) -> None:
    error = config_error(tmp_path, text)
    assert_names(error, key, "unknown key", f"did you mean {suggestion}?")


def test_unknown_key_with_nothing_close_lists_the_allowed_keys(tmp_path: Path) -> None:
    error = config_error(tmp_path, DB + "[run]\nzzz = 1\n")
    assert_names(error, "run.zzz", "unknown key", "allowed: poll_interval")
    assert "did you mean" not in str(error)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("data_dir = 5\n" + DB, "data_dir", "expected a string, got an integer"),
        ('database = "sqlite:///x.db"\n', "database", "expected a table, got a string"),
        ("[database]\nurl = 5\n", "database.url", "expected a string, got an integer"),
        (DB + "[run]\npoll_interval = '5'\n", "run.poll_interval", "expected a number"),
        (DB + "[run]\npoll_interval = true\n", "run.poll_interval", "got a boolean"),
        (DB + "[run]\npoll_interval = 0\n", "run.poll_interval", "positive"),
        (DB + "[run]\npoll_interval = -3.5\n", "run.poll_interval", "positive"),
        ("run = 5\n" + DB, "run", "must be a table"),
        ('smtp = "smtp.example.com"\n' + DB, "smtp", "must be a table"),
        (DB + '[mailbox]\nname = "x"\n', "mailbox", "[[mailbox]]"),
        (DB + '[agent]\nemail = "a@b.c"\n', "agent", "[[agent]]"),
        ("mailbox = [1]\n" + DB, "mailbox[0]", "must be a table"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str, expected: str) -> None:
    assert_names(config_error(tmp_path, text), key, expected)


MAILBOX_KEYS = ("name", "address", "host", "username")


@pytest.mark.parametrize("missing", MAILBOX_KEYS)
def test_mailbox_required_keys(tmp_path: Path, missing: str) -> None:
    lines = [ln for ln in MAILBOX.splitlines() if not ln.startswith(f"{missing} =")]
    error = config_error(tmp_path, DB + "\n".join(lines) + "\n")
    key = "mailbox[0].name" if missing == "name" else f"mailbox 'support'.{missing}"
    assert_names(error, key, "is missing")


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('name = ""', "mailbox[0].name", "must not be empty"),
        ('host = "  "', "mailbox 'support'.host", "must not be empty"),
        ('address = "support"', "mailbox 'support'.address", "not an email address"),
        ('security = "tls"', "mailbox 'support'.security", "ssl, starttls, none"),
        ('security = "SSL"', "mailbox 'support'.security", "ssl, starttls, none"),
        ("port = 0", "mailbox 'support'.port", "1-65535"),
        ("port = 70000", "mailbox 'support'.port", "1-65535"),
        ('port = "993"', "mailbox 'support'.port", "expected an integer, got a string"),
        ("batch_size = 0", "mailbox 'support'.batch_size", "positive"),
        ("batch_size = 2.5", "mailbox 'support'.batch_size", "expected an integer"),
        ("batch_bytes = -1", "mailbox 'support'.batch_bytes", "positive"),
        ("timeout = 0", "mailbox 'support'.timeout", "positive"),
        ('tls_verify = "no"', "mailbox 'support'.tls_verify", "true or false"),
        ('processed_folder = "INBOX"', "mailbox 'support'.processed_folder", "must differ"),
    ],
)
def test_bad_mailbox_values(tmp_path: Path, line: str, key: str, expected: str) -> None:
    key_name = line.split(" =", 1)[0]
    lines = [ln for ln in MAILBOX.splitlines() if not ln.startswith(f"{key_name} =")]
    error = config_error(tmp_path, DB + "\n".join([*lines, line]) + "\n")
    assert_names(error, key, expected)


def test_mailbox_needs_a_password(tmp_path: Path) -> None:
    text = DB + MAILBOX.replace('password = "hunter2"\n', "")
    error = config_error(tmp_path, text)
    assert_names(error, "mailbox 'support'.password", "password_file", "password_env")


@pytest.mark.parametrize(
    ("extra", "second"),
    [
        ('password_file = "/x"', "password_file"),
        ('password_env = "X"', "password_env"),
    ],
)
def test_mailbox_password_sources_are_exclusive(tmp_path: Path, extra: str, second: str) -> None:
    error = config_error(tmp_path, DB + MAILBOX + extra + "\n")
    assert_names(error, f"mailbox 'support'.{second}", "only one of")


def test_file_and_env_together_are_rejected(tmp_path: Path) -> None:
    text = DB + MAILBOX.replace('password = "hunter2"', 'password_file = "f"\npassword_env = "E"')
    error = config_error(tmp_path, text)
    assert error.key is not None and error.key.startswith("mailbox 'support'.password_")
    assert "only one of" in str(error)


def test_password_must_be_a_string(tmp_path: Path) -> None:
    error = config_error(tmp_path, DB + MAILBOX.replace('"hunter2"', "1234"))
    assert_names(error, "mailbox 'support'.password", "expected a string")


def test_smtp_with_username_needs_a_password(tmp_path: Path) -> None:
    error = config_error(tmp_path, DB + '[smtp]\nhost = "h"\nusername = "u"\n')
    assert_names(error, "smtp.password", "is missing")


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('security = "starttls-ish"', "smtp.security", "ssl, starttls, none"),
        ("port = 65536", "smtp.port", "1-65535"),
        ('host = ""', "smtp.host", "must not be empty"),
    ],
)
def test_bad_smtp_values(tmp_path: Path, line: str, key: str, expected: str) -> None:
    text = DB + "[smtp]\n" + ('host = "smtp.example.com"\n' if "host" not in line else "") + line
    assert_names(config_error(tmp_path, text + "\n"), key, expected)


def test_smtp_host_is_required(tmp_path: Path) -> None:
    assert_names(config_error(tmp_path, DB + "[smtp]\nport = 25\n"), "smtp.host", "is missing")


def test_mailbox_names_must_be_unique(tmp_path: Path) -> None:
    second = MAILBOX.replace("Support@Example.com", "other@example.com")
    error = config_error(tmp_path, DB + MAILBOX + second)
    assert_names(error, "mailbox.name", "'support'", "unique")


def test_agent_email_must_be_an_address(tmp_path: Path) -> None:
    error = config_error(tmp_path, DB + '[[agent]]\nemail = "sara"\n')
    assert_names(error, "agent[0].email", "not an email address")


def test_agent_email_is_required(tmp_path: Path) -> None:
    error = config_error(tmp_path, DB + '[[agent]]\nemail = "a@b.c"\n[[agent]]\nname = "X"\n')
    assert_names(error, "agent[1].email", "is missing")


def test_unknown_mailbox_lookup_lists_known_names(tmp_path: Path) -> None:
    path = write(tmp_path, DB + MAILBOX)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path).mailbox("sales")
    assert str(excinfo.value) == f"{path}: mailbox: no mailbox named 'sales' (known: support)"


def test_threading_section(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, DB + '[threading]\nsecret_env = "PD_SECRET"\nsubject_window_days = 3\n')
    )
    assert settings.threading.secret.source == "env"
    assert settings.threading.subject_window_days == 3.0
    assert settings.threading.new_ticket_after_closed_days == 30.0
    with pytest.raises(ConfigError, match=r"threading\.subject_window_days: must be a positive"):
        load_settings(write(tmp_path, DB + "[threading]\nsubject_window_days = 0\n"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"MX.Example.com"', ("mx.example.com",)),
        ('["a.example", "b.example"]', ("a.example", "b.example")),
    ],
)
def test_authserv_id_is_one_id_or_a_list(
    tmp_path: Path, value: str, expected: tuple[str, ...]
) -> None:
    path = tmp_path / "postdesk.toml"
    path.write_text(DB + f"[authentication]\nauthserv_id = {value}\n")
    assert load_settings(path).authentication.authserv_id == expected


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        ("5", "authentication.authserv_id", "a string or an array of strings"),
        ('[""]', "authentication.authserv_id[0]", "non-empty string"),
    ],
)
def test_bad_authserv_ids(tmp_path: Path, value: str, key: str, expected: str) -> None:
    error = config_error(tmp_path, DB + f"[authentication]\nauthserv_id = {value}\n")
    assert_names(error, key, expected)
