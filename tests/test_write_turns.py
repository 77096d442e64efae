"""SQLite writers of one process take turns in the order they asked (models/db.py WriteTurns).

Real SQLite files; the threads are real and so is SQLite's write lock.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from postdesk.models.db import Database, WriteTurns


def _database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    with db.engine.connect() as conn, conn.begin():
        conn.execute(text("CREATE TABLE log (who TEXT, at REAL)"))
    return db


def test_a_writer_that_begins_again_at_once_does_not_starve_one_waiting(tmp_path: Path) -> None:
    """The processor commits a batch and begins the next at once (a claim, then the
    batch, each a write transaction, statements running all the while); a mailbox thread
    with a fetched batch to store must get in between, not poll SQLite's lock for
    seconds (in `postdesk run` on 10,000 messages it waited 10-12 s of a 15 s run).
    Without turns, this waiter waited 2-6 s here."""
    db = _database(tmp_path)
    started = threading.Event()
    stop = threading.Event()

    def busy_writer() -> None:
        with db.engine.connect() as conn:
            for _ in range(300):
                with conn.begin():  # the claim
                    conn.execute(text("INSERT INTO log VALUES ('claim', 0)"))
                    started.set()
                with conn.begin():  # the batch: 20 ms of statements
                    end = time.monotonic() + 0.02
                    while time.monotonic() < end:
                        conn.execute(text("INSERT INTO log VALUES ('busy', 0)"))
                if stop.is_set():
                    break

    thread = threading.Thread(target=busy_writer)
    thread.start()
    try:
        assert started.wait(5)
        asked = time.monotonic()
        with db.transaction() as session:
            session.execute(text("INSERT INTO log VALUES ('other', 0)"))
            waited = time.monotonic() - asked
    finally:
        stop.set()
        thread.join(30)
    assert waited < 0.5, f"waited {waited:.2f} s for its turn"
    db.dispose()


def test_turns_go_in_the_order_asked_and_a_rollback_ends_one(
    tmp_path: Path,
) -> None:
    db = _database(tmp_path)
    order: list[str] = []
    holder = db.engine.connect()
    transaction = holder.begin()
    holder.execute(text("INSERT INTO log VALUES ('holder', 0)"))

    def writer(name: str) -> None:
        with db.transaction() as session:
            # The session begins (and waits for its turn) at its first statement.
            session.execute(text("INSERT INTO log VALUES (:w, 0)"), {"w": name})
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        thread = threading.Thread(target=writer, args=(name,))
        thread.start()
        threads.append(thread)
        time.sleep(0.1)  # each is waiting before the next asks
    assert order == []  # the holder's transaction is still open
    transaction.rollback()  # a rollback ends the turn as a commit does
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "third"]
    with db.read_session() as session:
        rows = session.execute(text("SELECT who FROM log ORDER BY rowid")).scalars().all()
    assert rows == ["first", "second", "third"]
    holder.close()
    db.dispose()


def test_a_closed_connection_gives_its_turn_back(tmp_path: Path) -> None:
    """A connection closed (or invalidated) in the middle of a write transaction must not
    keep every other writer of the process waiting."""
    db = _database(tmp_path)
    conn = db.engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO log VALUES ('lost', 0)"))
    conn.invalidate()  # the pooled connection is closed, its transaction gone
    asked = time.monotonic()
    with db.transaction() as session:
        session.execute(text("INSERT INTO log VALUES ('next', 0)"))
    assert time.monotonic() - asked < 1
    db.dispose()


def test_write_turns_hand_over_and_time_out() -> None:
    turns = WriteTurns()
    assert turns.acquire(1)
    assert not turns.acquire(0.05)  # held: the wait runs out
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(turns.acquire(5)))
    waiter.start()
    time.sleep(0.05)
    turns.release()  # handed to the waiter, not freed
    waiter.join(5)
    assert got == [True]
    assert not turns.acquire(0.05)  # the waiter holds it now
    turns.release()
    assert turns.acquire(0.05)
