"""For IMAP fetch tests: put mail on the test Dovecot, read flags back, spy on ImapSource,
run one pass, and count what the database stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from postdesk.config import Settings
from postdesk.daemon import PassResult, Service
from postdesk.ingest.imap import ImapSource
from postdesk.models import MailboxSync, RawMessage
from postdesk.models.db import Database
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import GeneratedMail, generate

SEEN = b"\\Seen"


def mails(n: int, seed: int = 7) -> list[GeneratedMail]:
    """`n` generated support messages (the same ones for the same seed)."""
    return list(generate(n, seed=seed))


def put(
    dovecot: Dovecot, user: MailUser, items: Sequence[GeneratedMail | bytes], **kw: Any
) -> list[int]:
    """APPEND each message; the UIDs Dovecot gave them."""
    return [
        dovecot.append(user, item.raw if isinstance(item, GeneratedMail) else item, **kw)
        for item in items
    ]


def server_flags(dovecot: Dovecot, user: MailUser, folder: str = "INBOX") -> dict[int, set[bytes]]:
    """UID -> flags of every message in `folder`, read without changing anything."""
    conn = dovecot.client(user)
    try:
        conn.select_folder(folder, readonly=True)
        uids = conn.search(["ALL"])
        found = conn.get_flags(uids).items()
    finally:
        conn.logout()
    # \Recent is the server's session bookkeeping, not something postdesk sets.
    return {int(uid): set(flags) - {b"\\Recent"} for uid, flags in found}


def one_pass(settings: Settings, db: Database) -> PassResult:
    """One `Service.run_once()`, which must report no mailbox errors."""
    result = Service(settings, db).run_once()
    assert not result.errors, result.errors
    return result


def count(db: Database, model: Any) -> int:
    """How many rows `model`'s table has."""
    with db.read_session() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def stored_message_ids(db: Database) -> list[str]:
    """The Message-IDs of the raw messages stored, sorted."""
    with db.read_session() as session:
        return sorted(
            mid for mid in session.execute(select(RawMessage.message_id)).scalars() if mid
        )


def sync_state(db: Database, folder: str = "INBOX") -> MailboxSync:
    """The one sync row for `folder`."""
    with db.read_session() as session:
        rows = list(
            session.execute(select(MailboxSync).where(MailboxSync.folder == folder)).scalars()
        )
    assert len(rows) == 1
    return rows[0]


class Spy:
    """Records calls to one ImapSource method and then makes the real call to Dovecot.

    `before` runs ahead of the real call with the source and the arguments, so a test can
    make something happen on the server at that exact instant.
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        name: str,
        before: Callable[..., None] | None = None,
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        real = getattr(ImapSource, name)
        spy = self

        def wrapper(source: ImapSource, *args: Any, **kwargs: Any) -> Any:
            spy.calls.append(args)
            if before is not None:
                before(source, *args, **kwargs)
            return real(source, *args, **kwargs)

        monkeypatch.setattr(ImapSource, name, wrapper)
