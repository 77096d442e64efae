"""Processing stored mail into tickets: threading rules, contacts, files, quarantine."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from postdesk.daemon import Service
from postdesk.ingest.process import Processor, WorkItem, list_raw, requeue
from postdesk.ingest.store import Incoming, store_many
from postdesk.models import Attachment, Contact, Message, RawMessage, Ticket, TicketEvent
from postdesk.models.db import Database
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail, rule_of, ticket_of
from postdesk.tickets import list_tickets, show_ticket

AGENT_BLOCK = '[[agent]]\nemail = "sara@support.example"\nname = "Sara"\n'


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    return Service(settings_for(tmp_path, db_url, AGENT_BLOCK), db)


def test_new_mail_opens_ticket_with_requester(service: Service, db: Database) -> None:
    result = ingest(
        service, mail("a1@x", subject="Broken lid", sender="Alice M <Alice@Example.com>")
    )

    assert result.processed.created == 1
    [ticket] = list_tickets(db)
    assert ticket["subject"] == "Broken lid"
    assert ticket["status"] == "new"
    assert ticket["requester"] == {"email": "alice@example.com", "name": "Alice M"}
    assert ticket["message_ids"] == ["a1@x"]
    assert ticket["category"] is None and ticket["priority"] is None
    # Imported history keeps the time the customer wrote, not the import time.
    assert ticket["created_at"].startswith("2026-03-01T09:00")


def test_reply_threads_by_in_reply_to_and_references(service: Service, db: Database) -> None:
    ingest(
        service,
        mail("root@x"),
        mail("r1@x", reply_to="root@x", references=["root@x"], subject="Re: Help"),
        mail("r2@x", references=["root@x", "r1@x"], subject="Re: Help"),
        mail("other@x", subject="Another matter"),
    )
    root = ticket_of(db, "root@x")
    assert ticket_of(db, "r1@x") == root
    assert ticket_of(db, "r2@x") == root
    assert ticket_of(db, "other@x") != root
    assert rule_of(db, "r1@x") == "in-reply-to"
    assert rule_of(db, "r2@x") == "references"
    assert show_ticket(db, root)["message_ids"] == ["root@x", "r1@x", "r2@x"]


def test_reply_stored_before_its_parent_joins_the_same_ticket(
    service: Service, db: Database
) -> None:
    # Separate imports so the reply really is processed first.
    ingest(service, mail("child@x", reply_to="late@x", subject="Re: Help"))
    ingest(service, mail("late@x"))
    assert ticket_of(db, "late@x") == ticket_of(db, "child@x")
    assert rule_of(db, "late@x") == "referenced-by"
    assert len(list_tickets(db)) == 1


def test_subject_tag_needs_a_participant(service: Service, db: Database) -> None:
    ingest(service, mail("t1@x", subject="Refund please"))
    number = ticket_of(db, "t1@x")
    persian_digits = str(number).translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    ingest(
        service,
        mail("t2@x", subject=f"پاسخ: بازپرداخت [#{persian_digits}]"),
        mail("t3@x", sender="Mallory <mallory@evil.example>", subject=f"Re: [#{number}]"),
        mail("t4@x", sender="Sara <sara@support.example>", subject=f"[#{number}] note"),
    )
    assert ticket_of(db, "t2@x") == number
    assert rule_of(db, "t2@x") == "subject-tag"
    # A stranger quoting the number does not get into someone else's ticket.
    assert ticket_of(db, "t3@x") != number
    assert ticket_of(db, "t4@x") == number


def test_agent_mail_does_not_make_an_agent_a_customer(service: Service, db: Database) -> None:
    ingest(service, mail("ag@x", sender="Sara <SARA@support.example>", subject="Internal"))
    with db.read_session() as session:
        role = session.execute(
            select(Contact.role).where(Contact.email == "sara@support.example")
        ).scalar_one()
    assert role == "agent"


def test_customer_reply_reopens_pending_ticket(service: Service, db: Database) -> None:
    ingest(service, mail("p1@x"))
    number = ticket_of(db, "p1@x")
    with db.transaction() as session:
        session.get_one(Ticket, number).status = "pending"
    ingest(service, mail("p2@x", reply_to="p1@x"))
    assert show_ticket(db, number)["status"] == "open"
    with db.read_session() as session:
        kinds = list(
            session.execute(
                select(TicketEvent.kind)
                .where(TicketEvent.ticket_id == number)
                .order_by(TicketEvent.id)
            ).scalars()
        )
    assert kinds == ["created", "status"]


def test_attachments_are_content_addressed_and_sanitized(
    service: Service, db: Database, tmp_path: Path
) -> None:
    data = b"%PDF-1.4 test document\n" * 50
    ingest(
        service,
        mail("f1@x", attachment=("../../etc/passwd.pdf", data)),
        mail("f2@x", reply_to="f1@x", attachment=("copy.pdf", data)),
    )
    with db.read_session() as session:
        rows = session.execute(select(Attachment).order_by(Attachment.id)).scalars().all()
        assert [r.size for r in rows] == [len(data), len(data)]
        assert rows[0].sha256 == rows[1].sha256
        paths = [tmp_path / "data" / "attachments" / r.relpath for r in rows]
        names = [r.filename for r in rows]
    for path in paths:
        assert path.read_bytes() == data
        assert (tmp_path / "data" / "attachments") in path.resolve().parents
    assert "/" not in names[0] and ".." not in names[0].split(".")[0]
    # The same bytes under two names are one file; each message keeps its name.
    assert paths[0] == paths[1]
    assert names[1] == "copy.pdf"
    stored = [p for p in (tmp_path / "data" / "attachments").rglob("*") if p.is_file()]
    assert stored == [paths[0]]


def test_unusable_mail_is_quarantined_and_retry_works(service: Service, db: Database) -> None:
    no_sender = b"To: support@support.example\r\nSubject: hi\r\nMessage-ID: <q1@x>\r\n\r\nbody\r\n"
    result = ingest(service, no_sender, mail("fine@x"))

    assert result.processed.quarantined == 1
    assert result.processed.created == 1
    [row] = list_raw(db, ["quarantined"])
    assert str(row["reason"]).startswith("sender: no sender address")
    assert row["origin"] == "test #0"

    # Replaying cannot fix a message without a sender: it is quarantined again, not lost.
    again = requeue(db, None)
    assert again == [row["id"]]
    outcome = service.processor().run_ids(again)
    assert outcome.quarantined == 1
    with db.read_session() as session:
        attempts = session.execute(
            select(RawMessage.attempts).where(RawMessage.id == row["id"])
        ).scalar_one()
    assert attempts == 2


def test_same_message_twice_is_stored_once(service: Service, db: Database) -> None:
    raw = mail("dup@x")
    first = ingest(service, raw)
    second = ingest(service, raw)
    assert (first.stored, second.stored, second.duplicates) == (1, 0, 1)
    # Same Message-ID, different content (e.g. a list footer): both kept, one ticket.
    ingest(service, mail("dup@x", body="Hello\n-- \nlist footer"))
    with db.read_session() as session:
        assert session.execute(select(func.count()).select_from(RawMessage)).scalar_one() == 2
        rules = session.execute(select(Message.thread_rule).order_by(Message.id)).scalars().all()
    assert rules == ["new", "message-id"]
    assert len(list_tickets(db)) == 1


def test_html_only_and_persian_windows_1256_mail(service: Service, db: Database) -> None:
    html = EmailMessage()
    html["From"] = "bob@example.org"
    html["Subject"] = "VAT"
    html["Message-ID"] = "<h1@x>"
    html.set_content("<p>Our <b>VAT</b> number</p><ul><li>GB123</li></ul>", subtype="html")
    body = "سلام، سفارش من نرسيده است".encode("cp1256")
    persian = (
        b"From: reza@example.ir\r\nSubject: =?windows-1256?Q?"
        + "".join(f"={b:02X}" for b in "سفارش".encode("cp1256")).encode()
        + b"?=\r\nMessage-ID: <p1@x>\r\nContent-Type: text/plain; charset=windows-1256\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n"
    )
    ingest(service, bytes(html), persian)
    texts = {
        m["message_id"]: m["text"]
        for t in list_tickets(db)
        for m in show_ticket(db, t["number"])["messages"]
    }
    assert "VAT" in texts["h1@x"] and "GB123" in texts["h1@x"] and "<b>" not in texts["h1@x"]
    assert "سفارش من" in texts["p1@x"]
    assert ticket_subjects(db) >= {"VAT", "سفارش"}


def ticket_subjects(db: Database) -> set[str]:
    return {t["subject"] for t in list_tickets(db)}


class _Sabotage:
    """A last pipeline step that, for one Message-ID, writes and then fails in `how`."""

    name = "sabotage"

    def __init__(self, message_id: str, how: str) -> None:
        self.message_id = message_id
        self.how = how

    def __call__(self, item: WorkItem) -> None:
        if item.need_parsed().message_id != self.message_id:
            return
        if self.how == "raise":
            item.conn.execute(
                insert(Contact).values(
                    email="ghost@example.com",
                    name="",
                    role="customer",
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )
            raise RuntimeError("step gave up")
        # A foreign key checked only at COMMIT: SQLite itself fails the commit of the
        # transaction that holds this write, as a deferred constraint would.
        item.conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        item.conn.execute(
            insert(TicketEvent).values(
                ticket_id=987654, at=datetime.now(UTC), kind="note", actor="x", data={}
            )
        )


def _sabotaged(service: Service, step: _Sabotage) -> Service:
    class Sabotaged(Service):
        def processor(self) -> Processor:
            processor = super().processor()
            processor.steps.append(step)
            return processor

    return Sabotaged(service.settings, service.db)


def test_a_failing_message_in_a_batch_is_undone_alone(service: Service, db: Database) -> None:
    bad = _sabotaged(service, _Sabotage("b2@x", "raise"))
    result = ingest(bad, mail("b1@x"), mail("b2@x"), mail("b3@x", reply_to="b1@x"))
    assert (result.processed.processed, result.processed.quarantined) == (2, 1)
    [row] = list_raw(db, ["quarantined"])
    assert row["reason"] == "sabotage: RuntimeError: step gave up"
    with db.read_session() as session:
        assert (
            session.execute(select(Contact.id).where(Contact.email == "ghost@example.com")).first()
            is None
        )
        assert session.execute(select(func.count()).select_from(Message)).scalar_one() == 2
    assert ticket_of(db, "b3@x") == ticket_of(db, "b1@x")


def test_a_batch_whose_commit_fails_is_redone_one_by_one(
    service: Service, db: Database, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("provokes the failing commit with SQLite's defer_foreign_keys")
    bad = _sabotaged(service, _Sabotage("c2@x", "deferred"))
    result = ingest(bad, mail("c1@x"), mail("c2@x"), mail("c3@x"))
    assert (result.processed.processed, result.processed.quarantined) == (2, 1)
    [row] = list_raw(db, ["quarantined"])
    assert str(row["reason"]).startswith("commit: IntegrityError")
    assert "FOREIGN KEY" in str(row["reason"])
    assert {ticket["subject"] for ticket in list_tickets(db)} == {"Help"}
    assert len(list_tickets(db)) == 2


def _store(db: Database, *raws: bytes) -> list[int]:
    """Raw messages stored and left pending, as the fetch leaves them."""
    with db.transaction() as session:
        stored = store_many(
            session,
            [Incoming(raw, f"test #{i}") for i, raw in enumerate(raws)],
            source="import",
            mailbox_id=None,
        )
    return [s.raw_id for s in stored]


def _attempts(db: Database) -> dict[int, tuple[str, int]]:
    with db.read_session() as session:
        rows = session.execute(select(RawMessage.id, RawMessage.status, RawMessage.attempts))
        return {row.id: (row.status, row.attempts) for row in rows}


def test_stopping_mid_batch_gives_the_rest_back(service: Service, db: Database) -> None:
    ids = _store(db, *(mail(f"s{i}@x", subject=f"Case {i}") for i in range(6)))
    processor = service.processor()
    seen: list[int] = []
    processor.steps.append(_Probe(seen))
    processor.should_stop = lambda: sum(seen) >= 2  # SIGTERM during the second message
    result = processor.run_ids(ids)
    assert result.processed == 2
    states = _attempts(db)
    assert [states[i] for i in ids] == [("processed", 1)] * 2 + [("pending", 0)] * 4
    assert len(list_tickets(db)) == 2
    # The rest is processed by the next pass, each message once.
    assert service.processor().run().processed == 4
    assert {state for state in _attempts(db).values()} == {("processed", 1)}


def test_batches_are_cut_by_count_and_size(service: Service, db: Database) -> None:
    big = b"x" * 40_000
    ids = _store(
        db,
        *(mail(f"z{i}@x", subject=f"Zip {i}", attachment=(f"z{i}.pdf", big)) for i in range(5)),
    )
    processor = service.processor()
    processor.batch_bytes = 120_000  # two of these messages (~55 KB each) per batch
    transactions = []
    processor.steps.append(_Probe(transactions))
    assert processor.run_ids(ids).processed == 5
    assert transactions == [2, 2, 1]
    processor = service.processor()
    processor.batch_size = 3
    more = _store(db, *(mail(f"y{i}@x") for i in range(7)))
    sizes: list[int] = []
    processor.steps.append(_Probe(sizes))
    assert processor.run_ids(more).processed == 7
    assert sizes == [3, 3, 1]


class _Probe:
    """A step that records how many messages each transaction held (via its savepoints)."""

    name = "probe"

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self._transaction: object = None

    def __call__(self, item: WorkItem) -> None:
        transaction = item.conn.get_transaction()
        if transaction is not self._transaction:
            self._transaction = transaction
            self.sizes.append(0)
        self.sizes[-1] += 1


def test_two_processors_at_once_take_each_message_once(service: Service, db: Database) -> None:
    """Two instances on one database: batches claimed with SKIP LOCKED (PostgreSQL) or
    behind the write lock (SQLite); every message is processed by exactly one of them."""
    raws = [mail(f"w{i}@x", subject=f"Case {i // 3}", reply_to=None) for i in range(90)]
    ids = _store(db, *raws)
    first, second = service.processor(), service.processor()
    first.batch_size = second.batch_size = 7
    results: list[int] = []
    errors: list[BaseException] = []

    def work(processor: Processor) -> None:
        try:
            results.append(processor.run().processed)
        except BaseException as exc:  # reported below, a thread cannot fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sum(results) == 90
    assert set(_attempts(db).values()) == {("processed", 1)}
    with db.read_session() as session:
        stored = session.execute(select(Message.raw_message_id)).scalars().all()
    assert sorted(stored) == sorted(ids)
