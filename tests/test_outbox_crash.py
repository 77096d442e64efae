"""The outbox under failure, on SQLite and PostgreSQL: a server that is down for a while,
and a sender SIGKILLed at random moments while it sends.

A server that is down: every mail stays queued (retried with backoff, drain after
drain) and, once the server is back and the backoff has passed, each one is delivered
exactly once.

SIGKILL: a sender process (`postdesk.testing.sender`) drains the outbox into an SMTP
sink in this process and is killed at a seeded random moment, round after round, with
fresh rows queued each round; the next sender recovers what the dead one held. Then a
last drain runs to the end here. Each kill is classified by what the dead sender held:
a row marked `completing` (after the mark: the end of data may have gone out), only
rows in `sending` (before the mark: the server discards the unfinished transaction),
or nothing (between batches, start-up, or it had finished). Afterwards no mail may have
arrived twice, every row is `sent` or `unconfirmed`, every `sent` row arrived exactly
once, and there is one `unconfirmed` row per kill after the mark.

(A 550 that fails a row with the server's answer is tested in test_outbox.py.)
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser

import pytest
from sqlalchemy import select

from postdesk.config import SmtpSettings
from postdesk.models import OutboxMail, OutboxState
from postdesk.models.db import Database
from postdesk.notify.outbox import backoff, counts
from postdesk.notify.smtp import OutboxSender
from postdesk.owner import make_owner
from postdesk.testing.outgoing import message_id, queue, reply
from postdesk.testing.smtpsink import ReceivedMail, SmtpSink

DOWN_ROWS = 200
ROUNDS = 16  # sender processes killed per backend
ROWS_PER_ROUND = 25
CRASH_BATCH = 10  # rows a sender claims at once; several batches per drain
KILL_DELAY = (0.005, 0.3)  # seconds after the sender says it is ready
RUN_TIMEOUT = 60.0  # seconds a sender process may live before the test gives up on it


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _received(mails: list[ReceivedMail]) -> Counter[str]:
    """How often each Message-ID (bare) arrived at the sink."""
    parser = BytesHeaderParser()
    return Counter(str(parser.parsebytes(m.data)["Message-ID"]).strip("<>") for m in mails)


def _states(db: Database) -> dict[str, OutboxState]:
    with db.read_session() as session:
        rows = session.execute(select(OutboxMail.message_id, OutboxMail.state)).all()
    return {mid: OutboxState(state) for mid, state in rows}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def test_mail_waits_while_the_server_is_down_then_goes_out_once(db: Database) -> None:
    port = _closed_port()
    queue(db, (reply(n) for n in range(DOWN_ROWS)))
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5.0)
    start = datetime.now(UTC)

    def drain_until_none_is_due(at: datetime) -> list[int]:
        """Drain as `postdesk run` would, pass after pass; each pass's (sent, retrying)."""
        passes: list[int] = []
        for _ in range(DOWN_ROWS):
            result = OutboxSender(db, smtp, owner=make_owner(), clock=lambda: at).drain()
            assert result.failed == result.unconfirmed == 0
            if not result.sent + result.retrying:
                return passes
            passes.append(result.sent + result.retrying)
        pytest.fail("the drains never ran out of due mail")

    # Down: each pass gives up after one batch it cannot connect for; pass after pass,
    # every row is tried once and waits for its backoff.
    assert sum(drain_until_none_is_due(start)) == DOWN_ROWS
    assert counts(db)["queued"] == DOWN_ROWS
    # Still down a minute later: all of them again, now waiting two minutes.
    retried = start + backoff(1) + timedelta(seconds=1)
    assert sum(drain_until_none_is_due(retried)) == DOWN_ROWS
    assert counts(db)["queued"] == DOWN_ROWS
    with SmtpSink(port=port) as back:
        # Back, but the backoff has not passed: nothing is due yet.
        assert drain_until_none_is_due(retried + timedelta(seconds=30)) == []
        later = retried + backoff(2) + timedelta(seconds=1)
        assert sum(drain_until_none_is_due(later)) == DOWN_ROWS
        arrived = _received(back.wait_for(DOWN_ROWS))
    assert arrived == Counter({message_id(n): 1 for n in range(DOWN_ROWS)})
    assert counts(db)["sent"] == DOWN_ROWS
    assert len(back.messages) == DOWN_ROWS  # nothing more came after the last drain


def _run_and_kill(url: str, port: int, delay: float) -> tuple[str, bool]:
    """Start a sender, SIGKILL it `delay` s after it is ready; (its owner, whether killed)."""
    argv = [sys.executable, "-m", "postdesk.testing.sender", url, str(port), str(CRASH_BATCH)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode().split()
        assert ready[:1] == ["ready"], f"the sender did not start: {proc.communicate()}"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Reaped by communicate(), so the next sender sees this owner's pid gone.
    if proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0 and b"done" in out, f"sender failed: {out!r} {err!r}"
    return ready[1], proc.returncode == -signal.SIGKILL


def _held_by(db: Database, owner: str) -> Counter[OutboxState]:
    """The states of the rows `owner` held when it died.

    A SIGKILLed client's PostgreSQL backend may still carry out a COMMIT the client had
    sent (the `completing` mark) a moment after the kill, so the states are read until
    two reads 0.2 s apart agree (at most 2 s): else a row can be counted as held before
    the mark and then turn up unconfirmed.
    """

    def read() -> Counter[OutboxState]:
        with db.read_session() as session:
            states = session.execute(
                select(OutboxMail.state).where(OutboxMail.claimed_by == owner)
            ).scalars()
            return Counter(OutboxState(state) for state in states)

    previous = read()
    for _ in range(10):
        time.sleep(0.2)
        current = read()
        if current == previous:
            break
        previous = current
    return previous


@pytest.mark.slow
def test_a_sender_killed_at_random_moments_sends_nothing_twice(
    db: Database, sink: SmtpSink
) -> None:
    rng = random.Random(20260105)
    kills: Counter[str] = Counter()
    log: list[str] = []
    for round_ in range(ROUNDS):
        queue(db, (reply(n, tag=f"r{round_}.") for n in range(ROWS_PER_ROUND)))
        delay = rng.uniform(*KILL_DELAY)
        owner, killed = _run_and_kill(db.url, sink.port, delay)
        held = _held_by(db, owner) if killed else Counter()
        if not killed:
            where = "finished first"
        elif held[OutboxState.COMPLETING]:
            where = "after the mark"
        elif held[OutboxState.SENDING]:
            where = "before the mark"
        else:
            where = "outside a batch"
        kills[where] += 1
        log.append(
            f"round {round_}: kill at {delay * 1000:.0f} ms -> {where}; "
            f"held {dict(held)}; {len(sink.messages)} received so far; {counts(db)}"
        )

    # The last drain, here and to the end (a PostgreSQL backend of a killed sender may
    # still hold its row locks for a moment, so rows can stay out of reach briefly).
    for _ in range(20):
        smtp = SmtpSettings(host="127.0.0.1", port=sink.port, security="none")
        OutboxSender(db, smtp, owner=make_owner()).drain()
        left = counts(db)
        if not left["queued"] + left["sending"] + left["completing"]:
            break
        time.sleep(0.25)
    time.sleep(0.2)  # let the sink finish reading what killed senders wrote last

    states = _states(db)
    arrived = _received(sink.messages)
    unconfirmed = sorted(mid for mid, state in states.items() if state == OutboxState.UNCONFIRMED)
    never_arrived = [mid for mid in unconfirmed if not arrived[mid]]
    print("\n".join(log))
    print(
        f"{db.url.split(':')[0]}: kills {dict(kills)}; {len(unconfirmed)} unconfirmed, "
        f"{len(never_arrived)} of them never arrived; {len(states)} rows, "
        f"{len(sink.messages)} mails received"
    )
    twice = sorted(mid for mid, n in arrived.items() if n > 1)
    assert not twice, f"{len(twice)} mails arrived twice, e.g. {twice[:5]}\n" + "\n".join(log)
    assert set(arrived) <= set(states)
    assert len(states) == ROUNDS * ROWS_PER_ROUND
    stuck = {mid: state for mid, state in states.items() if state not in ("sent", "unconfirmed")}
    assert not stuck, f"rows neither sent nor unconfirmed: {stuck}"
    not_arrived = [mid for mid, state in states.items() if state == "sent" and not arrived[mid]]
    assert not not_arrived, f"sent but never received: {not_arrived}"
    # A sender killed after the `completing` mark leaves exactly that row unconfirmed.
    assert len(unconfirmed) == kills["after the mark"]
    # An unconfirmed row arrived once (the end of data was out) or not at all: the
    # sender died in the window between the durable `completing` mark and writing the
    # end-of-data line (for a large message, also flushing the part of it still in its
    # buffer), so the server discarded the transaction. At most one such row per kill.
    assert len(never_arrived) <= sum(kills[k] for k in ("before the mark", "after the mark"))
    # The kills must have hit senders with mail in flight, or this proves nothing.
    assert kills["before the mark"] + kills["after the mark"] >= 1, "\n".join(log)
