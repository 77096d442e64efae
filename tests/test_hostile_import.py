"""Issue 11, criterion 1: `postdesk import` of a folder of hostile mail, into real SQLite.

Every message of postdesk/testing/hostile.py ends in a ticket or quarantined with a
reason; the two over the size limits are quarantined "too large" with their size and the
limit, never parsed; the caps that cut a message are recorded as its defects.

The mail is generated at a twentieth of its found size, with [limits] lowered to match
(3 MB messages, 1 MB of HTML, 200,000 characters of text), so that the same cases stay
cheap here; bench/hostile.py imports them at full size against the defaults.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from postdesk.models import Message, RawMessage
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.hostile import HostileMail, hostile_mail, write_folder

LIMITS = """
[limits]
max_message_bytes = 3000000
max_header_bytes = 102400
max_text_chars = 200000
max_html_chars = 1000000
max_parts = 200
import_batch_bytes = 2000000
"""


def test_import_of_hostile_mail_ends_in_tickets_or_quarantine(
    tmp_path: Path, sqlite_url: str
) -> None:
    mails = hostile_mail(0.05, max_message_bytes=3_000_000, max_header_bytes=102_400)
    assert len(mails) >= 22
    write_folder(tmp_path / "hostile", mails)
    cli = Cli(write_config(tmp_path, sqlite_url, top=LIMITS))
    cli("init")
    out = cli("import", str(tmp_path / "hostile")).output
    assert f"read {len(mails)} message(s): {len(mails)} stored" in out
    assert "(2 too large)" in out

    with cli.database().read_session() as session:
        raws = {
            Path(origin).stem: (status, reason, raw_id)
            for origin, status, reason, raw_id in session.execute(
                select(RawMessage.origin, RawMessage.status, RawMessage.reason, RawMessage.id)
            )
        }
        messages = {
            raw_id: (ticket_id, defects)
            for raw_id, ticket_id, defects in session.execute(
                select(Message.raw_message_id, Message.ticket_id, Message.defects)
            )
        }
    assert set(raws) == {mail.name for mail in mails}
    for name, (status, reason, raw_id) in raws.items():
        if status == "quarantined":
            assert reason and ": " in reason, name
        else:
            assert status == "processed", (name, status)
            assert messages[raw_id][0] is not None, f"{name} is in no ticket"

    assert raws["oversized"][:2] == (
        "quarantined",
        f"too large: message of {len(_raw(mails, 'oversized')):,} bytes, "
        "the limit is 3,000,000 ([limits] max_message_bytes)",
    )
    status, reason, _ = raws["huge-header"]
    assert status == "quarantined" and reason is not None
    assert reason.startswith("too large: header block of ")
    assert reason.endswith("the limit is 102,400 ([limits] max_header_bytes)")

    def defects(name: str) -> list[str]:
        return list(messages[raws[name][2]][1])

    assert "more than 200 parts: the rest kept as one attachment" in defects("many-parts")
    assert "text part cut to 200,000 characters ([limits] max_text_chars)" in defects("long-line")
    assert "HTML cut to 1,000,000 characters ([limits] max_html_chars)" not in defects("wide-table")
    # Everything that is not over a size limit was parsed and is in a ticket.
    assert sorted(name for name, row in raws.items() if row[0] == "quarantined") == [
        "huge-header",
        "oversized",
    ]


def _raw(mails: list[HostileMail], name: str) -> bytes:
    return next(mail.raw for mail in mails if mail.name == name)
