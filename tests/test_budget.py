"""The per-message budget: parsing in a worker process under a time and a memory limit.

The slow and the memory-hungry message are test-made (postdesk/testing/poison.py): the
worker really sleeps past the time budget, and really allocates past its RLIMIT_AS.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.config import ProcessingSettings
from postdesk.daemon import Service
from postdesk.errors import ConfigError, ParseError
from postdesk.ingest.steps import ParseStep
from postdesk.ingest.worker import (
    PREFETCH_BYTES,
    Budget,
    BudgetExceeded,
    ParseWorker,
    read_message,
)
from postdesk.models import RawMessage, RawStatus
from postdesk.models.db import Database
from postdesk.pipeline import steps
from postdesk.testing.config import settings_for
from postdesk.testing.inbox import ingest, mail
from postdesk.testing.mailgen import generate
from postdesk.testing.poison import TASK, poison
from postdesk.tickets import list_tickets


def _reasons(db: Database) -> dict[str, tuple[str, int, str | None]]:
    with db.read_session() as session:
        rows = session.execute(
            select(RawMessage.message_id, RawMessage.status, RawMessage.attempts, RawMessage.reason)
        ).all()
    return {row.message_id: (row.status, row.attempts, row.reason) for row in rows}


def test_a_message_over_the_time_budget_is_quarantined_with_the_reason(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    service = Service(settings_for(tmp_path, db_url), db)
    service.budget = Budget(seconds=1, memory_mb=256, task=TASK)
    result = ingest(
        service,
        mail("t1@x"),
        poison(mail("slow@x", subject="Slow"), "sleep 30"),
        mail("t3@x", subject="After"),
    )
    assert (result.processed.processed, result.processed.quarantined) == (2, 1)
    rows = _reasons(db)
    # At once, not after retries: overrunning is the message's own doing.
    assert rows["slow@x"] == (RawStatus.QUARANTINED, 1, "parse: took longer than 1 s to parse")
    assert rows["t3@x"][0] == RawStatus.PROCESSED
    assert {t["subject"] for t in list_tickets(db)} == {"Help", "After"}


def test_a_message_over_the_memory_budget_is_quarantined_with_the_reason(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    service = Service(settings_for(tmp_path, db_url), db)
    service.budget = Budget(seconds=15, memory_mb=128, task=TASK)
    result = ingest(
        service,
        poison(mail("hog@x", subject="Hog"), "allocate"),
        mail("m2@x", subject="After"),
    )
    assert (result.processed.processed, result.processed.quarantined) == (1, 1)
    rows = _reasons(db)
    assert rows["hog@x"] == (RawStatus.QUARANTINED, 1, "parse: needed more than 128 MB")
    assert rows["m2@x"][0] == RawStatus.PROCESSED


def test_the_worker_reads_what_the_process_itself_reads() -> None:
    """Same parsed message and visible text through the worker, across many messages
    (the read-only headers view included), and a parse error keeps its reason."""
    worker = ParseWorker(Budget(seconds=15))
    try:
        for generated in generate(40, seed=3):
            here = read_message(generated.raw)
            there = worker.read(generated.raw)
            assert there == here
            assert type(there.parsed.headers) is type(here.parsed.headers)
        with pytest.raises(ParseError, match="no header block"):
            worker.read(b"\x00\x01binary, not mail")
        assert worker.started == 1  # one worker for all of it
    finally:
        worker.close()


def test_a_worker_that_stays_silent_is_killed_and_replaced() -> None:
    worker = ParseWorker(Budget(seconds=0.5, task=TASK))
    try:
        worker.read(mail("a@x"))
        first = worker.pid
        with pytest.raises(BudgetExceeded, match=r"took longer than 0\.5 s to parse"):
            worker.read(poison(mail("b@x"), "sleep 10"))
        assert worker.pid is None  # killed, not left working
        assert worker.read(mail("c@x")).parsed.message_id == "c@x"
        assert worker.pid not in (None, first)
    finally:
        worker.close()


def test_processing_settings_and_their_errors(tmp_path: Path, sqlite_url: str) -> None:
    assert settings_for(tmp_path, sqlite_url).processing == ProcessingSettings(
        max_attempts=3, parse_worker=True, parse_seconds=20.0, parse_memory_mb=512
    )
    custom = settings_for(
        tmp_path,
        sqlite_url,
        "[processing]\nmax_attempts = 5\nparse_seconds = 2.5\nparse_memory_mb = 256\n",
    )
    assert custom.processing == ProcessingSettings(5, True, 2.5, 256)
    for block, problem in [
        ("max_attempts = 0", "processing.max_attempts: must be a whole number of at least 1"),
        ("parse_seconds = 0", "processing.parse_seconds: must be a positive number of seconds"),
        ("parse_memory_mb = 10", "processing.parse_memory_mb: must be at least 64 (MB)"),
        ("parse_worker = 1", "processing.parse_worker: expected true or false"),
    ]:
        with pytest.raises(ConfigError) as error:
            settings_for(tmp_path, sqlite_url, f"[processing]\n{block}\n")
        message = str(error.value)
        assert problem in message and "\n" not in message, message


def test_without_the_worker_parsing_runs_in_process(tmp_path: Path, sqlite_url: str) -> None:
    settings = settings_for(tmp_path, sqlite_url, "[processing]\nparse_worker = false\n")
    [parse, *_] = steps(settings)
    assert isinstance(parse, ParseStep) and parse.budget is None
    [parse, *_] = steps(settings_for(tmp_path, sqlite_url))
    assert isinstance(parse, ParseStep) and parse.budget == Budget(20.0, 512)


def test_prefetched_messages_are_read_in_order_and_the_rest_cancelled() -> None:
    worker = ParseWorker(Budget(seconds=15))
    try:
        raws = [mail(f"p{i}@x") for i in range(6)]
        worker.prefetch(raws)
        assert [worker.read(raw).parsed.message_id for raw in raws[:3]] == [
            "p0@x",
            "p1@x",
            "p2@x",
        ]
        # Another message first: what was sent ahead is cancelled, nothing gets mixed up.
        assert worker.read(mail("other@x")).parsed.message_id == "other@x"
        assert worker.read(raws[4]).parsed.message_id == "p4@x"
        worker.prefetch(raws[:2])
        worker.prefetch(raws[2:4])  # replaces the first batch sent ahead
        assert worker.read(raws[2]).parsed.message_id == "p2@x"
        assert worker.started == 1
    finally:
        worker.close()


def test_a_window_kept_ahead_is_extended_not_resent() -> None:
    """The processor calls prefetch before each message with the next few: what is already
    ahead stays in flight (also while the worker is busy with it) and only the rest is sent."""
    worker = ParseWorker(Budget(seconds=15))
    sent: list[list[str]] = []
    send = worker._send

    def counting(batch: list[bytes]) -> bool:
        sent.append([raw.decode().split("Message-ID: <")[1].split(">")[0] for raw in batch])
        return send(batch)

    worker._send = counting  # type: ignore[method-assign]
    try:
        raws = [mail(f"w{i}@x") for i in range(6)]
        worker.prefetch(raws[0:3])
        worker.prefetch(raws[0:3])  # nothing new: nothing sent, nothing cancelled
        assert worker.read(raws[0]).parsed.message_id == "w0@x"
        worker.prefetch(raws[1:5])  # w1, w2 ahead already; w3, w4 queued behind them
        assert list(worker._ahead) == raws[1:5]
        got = []
        for at in range(1, 6):
            worker.prefetch(raws[at : at + 3])
            got.append(worker.read(raws[at]).parsed.message_id)
        assert got == [f"w{i}@x" for i in range(1, 6)]
        assert not worker._ahead and worker.started == 1
        # Each message crossed the pipe once.
        assert [m for batch in sent for m in batch] == [f"w{i}@x" for i in range(6)]
    finally:
        worker.close()


def test_messages_sent_ahead_cannot_deadlock_the_socket_pair() -> None:
    """The caller and the worker write to one socket pair. With no limit on what is in
    flight, the worker filled the socket with answers the caller had not collected while
    the caller wrote a large message the worker was not reading: both blocked for good
    (a full run hung on a 237 KB hostile message). What is sent ahead is now capped, and a
    message over the cap waits for its own turn. Run on a thread with a deadline, so that
    a regression fails here instead of hanging the suite."""
    worker = ParseWorker(Budget(seconds=30))
    text = "word " * 6000  # 30 KB of text: its answer (text, visible text) is larger
    raws = [mail(f"d{i}@x", body=text) for i in range(8)]
    raws.append(mail("big@x", body="<br>" * 80_000))
    read: list[str] = []
    ahead: list[int] = []

    def run() -> None:
        worker.prefetch(raws[:8])
        ahead.append(sum(len(raw) for raw in worker._ahead))
        time.sleep(1.0)  # the worker answers what it was sent
        worker.prefetch(raws)
        ahead.append(sum(len(raw) for raw in worker._ahead))
        read.extend(str(worker.read(raw).parsed.message_id) for raw in raws)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    try:
        if thread.is_alive():
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGKILL)  # unblock the thread
            pytest.fail("the caller and the parse worker deadlocked on their socket pair")
        assert read == [f"d{i}@x" for i in range(8)] + ["big@x"]
        assert all(size <= PREFETCH_BYTES for size in ahead), ahead
    finally:
        worker.close()


def test_a_read_message_crosses_the_wire_whole_and_read_only() -> None:
    """What the worker sends back is the parsed message as the parser made it: addresses
    and attachments equal (they pickle as constructor calls), headers read-only again."""
    import pickle

    from postdesk.ingest.worker import _unwire, _wire, read_message

    raw = (
        b"From: Ana <ana@example.com>\r\nTo: support@example.com, b@example.com\r\n"
        b"Subject: invoice\r\nMessage-ID: <w1@example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
        b'Content-Type: application/pdf; name="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
    )
    sent = read_message(raw)
    got = _unwire(pickle.loads(pickle.dumps(_wire(sent))))
    assert got == sent
    assert got.parsed.from_ == sent.parsed.from_ and len(got.parsed.to) == 2
    assert (
        got.parsed.attachments[0].data == b"%PDF-"
        and got.parsed.attachments[0] == (sent.parsed.attachments[0])
    )
    with pytest.raises(TypeError):
        got.parsed.headers["subject"] = ("changed",)  # type: ignore[index]
