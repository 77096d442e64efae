"""The exceptions postdesk raises on purpose; every one descends from PostdeskError.

The CLI turns a PostdeskError into one line on stderr and a non-zero exit; anything else
reaching the CLI edge is a bug and is reported as such.
"""


class PostdeskError(Exception):
    """Base of every error postdesk raises deliberately; str() is the one-line message."""


class ConfigError(PostdeskError):
    """The configuration file is missing, unreadable or invalid.

    The message names the file, the key and what is expected.
    """

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)


class DatabaseError(PostdeskError):
    """The database cannot be reached or its schema is not the one this postdesk needs."""


class ParseError(PostdeskError):
    """A stored message cannot be turned into anything useful; the reason is one line."""


class MailboxError(PostdeskError):
    """Talking to an IMAP mailbox failed (connect, login, select, fetch, flag, move)."""


class MailboxLoginError(MailboxError):
    """The server refused the mailbox's credentials: retrying will not help until
    someone fixes them, so the service reports it once rather than at every retry."""


class ImportSourceError(PostdeskError):
    """A path given to `postdesk import` is not a mailbox, Maildir or message."""
