"""Poison messages: a message that kills its parse worker, or postdesk itself, is given up
after `[processing] max_attempts` attempts while the rest of the mailbox is processed.

The misbehaviour is real (the worker really exits; postdesk really gets SIGKILL from the
test); only its cue is test-made: a parse task from postdesk/testing/poison.py that acts
on an `X-Test-Poison` header (a real message that crashes a C library on cue is not to
be had).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from postdesk.daemon import Service
from postdesk.ingest.process import CLAIM_EXPIRY, _claim_is_live, give_up_reason, requeue
from postdesk.ingest.store import Incoming, store_many
from postdesk.ingest.worker import Budget
from postdesk.models import Message, RawMessage, RawStatus
from postdesk.models.db import Database
from postdesk.owner import make_owner
from postdesk.testing.config import settings_for, write_config
from postdesk.testing.inbox import ingest, mail, ticket_of
from postdesk.testing.mailgen import generate
from postdesk.testing.owners import ended_owner
from postdesk.testing.poison import REACHED_ENV, TASK, poison
from postdesk.tickets import list_tickets

# Shorter than the default 20 s, so that a test gone wrong ends soon.
TEST_BUDGET = Budget(seconds=15, memory_mb=256, task=TASK)


def _service(tmp_path: Path, db: Database, db_url: str, block: str = "") -> Service:
    service = Service(settings_for(tmp_path, db_url, block), db)
    service.budget = TEST_BUDGET
    return service


def _raw_rows(db: Database) -> dict[str, tuple[str, int, int, str | None]]:
    with db.read_session() as session:
        rows = session.execute(
            select(
                RawMessage.message_id,
                RawMessage.status,
                RawMessage.attempts,
                RawMessage.unfinished,
                RawMessage.reason,
            )
        ).all()
    return {row.message_id: (row.status, row.attempts, row.unfinished, row.reason) for row in rows}


def test_a_message_that_kills_its_worker_is_given_up_after_three_attempts(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    service = _service(tmp_path, db, db_url)
    raws = [mail(f"k{i}@x", subject=f"Case {i}") for i in range(8)]
    raws[3] = poison(raws[3], "exit")
    raws.append(mail("k8@x", subject="Re: Case 2", reply_to="k2@x"))
    result = ingest(service, *raws)

    assert (result.processed.processed, result.processed.quarantined) == (8, 1)
    rows = _raw_rows(db)
    died = "parse: the parse worker died (exit status 3)"
    assert rows["k3@x"] == (
        RawStatus.QUARANTINED,
        3,
        3,
        give_up_reason(3, died),
    )
    assert rows["k3@x"][3] == f"gave up after 3 attempts (last: {died})"
    # Everything else was filed once, the messages after it included.
    others = {mid: row for mid, row in rows.items() if mid != "k3@x"}
    assert {row[:3] for row in others.values()} == {(RawStatus.PROCESSED, 1, 0)}
    assert ticket_of(db, "k8@x") == ticket_of(db, "k2@x")
    assert len(list_tickets(db)) == 7


def test_max_attempts_is_configurable(tmp_path: Path, db: Database, db_url: str) -> None:
    service = _service(tmp_path, db, db_url, "[processing]\nmax_attempts = 1\n")
    result = ingest(service, mail("a@x"), poison(mail("b@x", subject="Other"), "exit"))
    assert (result.processed.processed, result.processed.quarantined) == (1, 1)
    status, attempts, _, reason = _raw_rows(db)["b@x"]
    assert (status, attempts) == (RawStatus.QUARANTINED, 1)
    assert reason is not None and reason.startswith("gave up after 1 attempts (last: parse: ")
    # `inbound retry` gives it max_attempts fresh tries (not an instant give-up).
    assert len(requeue(db, None)) == 1
    again = service.processor().run()
    assert (again.processed, again.quarantined) == (0, 1)
    status, attempts, unfinished, reason = _raw_rows(db)["b@x"]
    assert (status, attempts, unfinished) == (RawStatus.QUARANTINED, 2, 1)


def test_whose_claims_count_as_live() -> None:
    """A claim is left alone while its processor may still work on it: a running one of
    this process, or one elsewhere until the claim expires; a dead one's is taken over."""
    now = datetime.now(UTC)
    elsewhere = "another-host:4242:77:abcd1234"
    assert _claim_is_live(elsewhere, now - timedelta(seconds=30), now)
    assert not _claim_is_live(elsewhere, now - CLAIM_EXPIRY - timedelta(seconds=1), now)
    here = make_owner()  # this process, but no processor of that name is running
    assert not _claim_is_live(here, now, now)
    assert not _claim_is_live(ended_owner(), now, now)


def test_a_worker_death_once_is_only_a_retry(tmp_path: Path, db: Database, db_url: str) -> None:
    """A worker killed from outside while idle (the OOM killer choosing it, say) costs
    the next message nothing: a fresh worker reads it."""
    service = _service(tmp_path, db, db_url)
    ingest(service, mail("first@x"))
    worker_pid = _shared_worker_pid(service)
    os.kill(worker_pid, signal.SIGKILL)
    time.sleep(0.1)
    result = ingest(service, mail("second@x", subject="Next"))
    assert result.processed.processed == 1
    assert _raw_rows(db)["second@x"][:3] == (RawStatus.PROCESSED, 1, 0)
    assert _shared_worker_pid(service) != worker_pid


def _shared_worker_pid(service: Service) -> int:
    from postdesk.ingest.worker import shared_worker

    assert service.budget is not None
    pid = shared_worker(service.budget).pid
    assert pid is not None
    return pid


# The SIGKILL test's program: one pass over what is stored, as `postdesk run --once`
# makes it, with the parse task that hangs on the poison message.
RUN_ONCE = f"""
import sys
from postdesk.config import load_settings
from postdesk.daemon import Service
from postdesk.ingest.worker import Budget
from postdesk.models.db import Database
from postdesk.owner import make_owner

settings = load_settings(sys.argv[1])
service = Service(settings, Database(settings.database.url))
service.budget = Budget(seconds=60, memory_mb=256, task={TASK!r})
# A batch is not cut at its usual 0.25 s: on a loaded machine a cut before the poison put
# it back unclaimed while the worker, parsing ahead, had already begun it, and the kill
# that followed was not counted as an attempt (four deaths instead of three).
make_processor = service.processor
def processor():
    made = make_processor()
    made.batch_seconds = 600.0
    return made
service.processor = processor
done = service.run_once(fetch=False).processed
print("processed", done.processed, "quarantined", done.quarantined, flush=True)
"""


def _run_until_reached(config: Path, reached: Path) -> tuple[bool, str]:
    """Run one pass; SIGKILL it when its worker reaches the poison. (killed?, output)

    The output goes to a file: a pipe would stay open in the worker the pass leaves.
    """
    reached.unlink(missing_ok=True)
    output = reached.with_suffix(".out")
    env = {**os.environ, REACHED_ENV: str(reached)}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_ONCE, str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    killed = False
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if reached.exists():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=60)
    return killed, output.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow  # four runs of a fresh process each, ~25 s on a busy machine
def test_a_message_that_gets_postdesk_killed_is_given_up_after_three_runs(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    """SIGKILL the whole process each time it is at one message (as the OOM killer, or
    systemd after its stop timeout, would): after three such deaths the message is
    quarantined, and every other message is filed once."""
    mails = list(generate(70, seed=5))
    raws = [m.raw for m in mails]
    # The poison comes inside the first batch, with mail stored before and after it.
    target = mail("poison@x", subject="Hostile")
    raws.insert(20, poison(target, "hang"))
    with db.transaction() as session:
        store_many(
            session,
            [Incoming(raw, f"test #{i}") for i, raw in enumerate(raws)],
            source="import",
            mailbox_id=None,
        )
    config = write_config(tmp_path, db_url)
    reached = tmp_path / "reached"
    runs: list[str] = []
    for _ in range(6):
        killed, out = _run_until_reached(config, reached)
        runs.append("killed" if killed else out.strip())
        if not killed:
            break
    assert runs[:3] == ["killed"] * 3, runs
    assert len(runs) == 4 and runs[3].endswith(" quarantined 1"), runs

    rows = _raw_rows(db)
    status, attempts, unfinished, reason = rows["poison@x"]
    assert status == RawStatus.QUARANTINED
    assert reason == "gave up after 3 attempts (last: the process died while processing it)"
    assert (attempts, unfinished) == (3, 3)
    others = {mid: row for mid, row in rows.items() if mid != "poison@x"}
    assert len(others) == 70
    assert {row[0] for row in others.values()} == {RawStatus.PROCESSED}
    # Messages of the batch that died were taken again one at a time: two attempts
    # at most (the batch, then alone), never given up.
    assert max(row[1] for row in others.values()) <= 2
    with db.read_session() as session:
        filed = Counter(session.execute(select(Message.message_id)).scalars())
    assert set(filed) == {m.message_id for m in mails} and max(filed.values()) == 1
    # And threaded as the generator meant: one ticket per thread.
    threads = {m.thread for m in mails}
    assert len(list_tickets(db)) == len(threads)
