"""Crash safety: SIGKILL `postdesk run --once` at random moments while it ingests mail.

Each round loads 2,000 generated messages into a fresh Dovecot account, runs the real
command line as a subprocess and kills it with SIGKILL several times at seeded random
moments, then runs it again until a run exits 0 on its own. Afterwards every message
must be stored once, filed in exactly one ticket (the tickets partitioning the mail
exactly like the generator's thread truth), nothing may be left pending or quarantined,
and every message in the INBOX must be \\Seen.

The kill moments are seeded random points spread over the whole ingest: half of them
among the messages still to fetch, half among those still to file. A run is killed

* a random short delay (0-30 ms, about one fetch batch) after it logs the n-th stored
  message. Stored messages are logged right after their batch commits, so this lands in
  the \\Seen flagging that follows the commit or in the next batch's fetch and commit.
  About a third of these kills come at once after a batch's last stored line, aimed at
  the window between the commit and the \\Seen flags;
* a random short delay (0-4 ms, about one message) after it logs the n-th filed message,
  which lands inside the next message's processing transaction or its commit;
* now and then instead, at a random time within 2 s of its start (start-up, lease,
  finishing the last run's \\Seen flags, SEARCH, the first batches).

The mailbox uses batches of 50 so a pass has 40 fetch commits. The test prints each
run, where its kill landed and what the database held afterwards. Every loop is bounded.

Random moments find what nobody thought of, but they hit a given window only by luck.
So each planned window is also hit on purpose, on both backends
(`test_sigkill_in_every_planned_window`): postdesk has named pause points
(postdesk/pausepoints.py; $POSTDESK_PAUSE_AT=NAME@N makes the process stop there and say
so), the test kills the run as soon as it has stopped, and checks that the database and
the server are in exactly the state that window leaves behind before the next run
repairs it: the lease held by a dead process; a batch committed but not \\Seen; messages
\\Seen on the server but not recorded; everything fetched, nothing processed; a processing
batch with filed messages not yet committed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postdesk.models import (
    Delivery,
    MailboxSync,
    Message,
    RawMessage,
    RawStatus,
)
from postdesk.models.db import Database
from postdesk.pausepoints import ENV as PAUSE_ENV
from postdesk.testing.config import mailbox_toml, write_config
from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import GeneratedMail, generate
from postdesk.testing.postgres import pg_schema_url

N_MESSAGES = 2000
BATCH_SIZE = 50
KILLS_PER_ROUND = (6, 9)  # inclusive range of kill points per round, half while fetching
TIME_KILL_SHARE = 0.15  # runs killed at a random time after start instead
SEEN_WINDOW_SHARE = 0.35  # fetch kills aimed right after a batch commit
MAX_RUNS = 25  # runs per round, killed or not: the loop cannot go on for ever
RUN_TIMEOUT = 240.0  # seconds one run may take before the test gives up on it
# How long after its trigger a kill lands: about one fetch batch (~30 ms here) after a
# stored line, about one message (~3 ms) after a processed line.
STORED_JITTER = 0.03
PROCESSED_JITTER = 0.004
# `time` kills fall within this many seconds of the start (start-up is ~0.6 s here and
# fetching 2,000 messages ~1.5 s).
TIME_WINDOW = 2.0

STORED_LINE = b" stored as raw "
DUPLICATE_LINE = b" duplicate of raw "
PROCESSED_LINES = (b" opened ticket ", b" added to ticket ")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Progress:
    """What the database holds between two runs."""

    stored: int
    processed: int
    pending: int
    quarantined: int
    unflagged: int  # deliveries committed whose \\Seen flag is not recorded as set

    def describe(self) -> str:
        return (
            f"stored {self.stored}, processed {self.processed}, pending {self.pending}, "
            f"quarantined {self.quarantined}, awaiting \\Seen {self.unflagged}"
        )


@dataclass(frozen=True)
class KillPlan:
    """When to kill one run: `delay` seconds after start (`time`) or after the n-th line."""

    trigger: str  # "time" | "stored" | "processed"
    count: int
    delay: float

    def describe(self) -> str:
        if self.trigger == "time":
            return f"{self.delay * 1000:.0f} ms after start"
        return f"{self.delay * 1000:.1f} ms after {self.trigger} line {self.count}"


@dataclass
class RunOutcome:
    """How one run ended and what it printed."""

    returncode: int
    killed: bool
    seconds: float
    stored_lines: int
    processed_lines: int
    duplicate_lines: int
    tail: list[str] = field(default_factory=list)


def _classify(line: bytes) -> str | None:
    if STORED_LINE in line:
        return "stored"
    if DUPLICATE_LINE in line:
        return "duplicate"
    if any(marker in line for marker in PROCESSED_LINES):
        return "processed"
    return None


def run_cli(config: Path, plan: KillPlan | None, cwd: Path) -> RunOutcome:
    """Run `postdesk -vv run --once` (-vv: the per-message lines are at DEBUG); kill it
    with SIGKILL as `plan` says (None: never)."""
    argv = [sys.executable, "-m", "postdesk", "-c", str(config), "-vv", "run", "--once"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    killed = threading.Event()
    timed_out = threading.Event()

    def kill(flag: threading.Event) -> None:
        if proc.poll() is None:
            flag.set()
            proc.send_signal(signal.SIGKILL)

    watchdog = threading.Timer(RUN_TIMEOUT, kill, args=(timed_out,))
    watchdog.start()
    timer: threading.Timer | None = None
    if plan is not None and plan.trigger == "time":
        timer = threading.Timer(plan.delay, kill, args=(killed,))
        timer.start()
    counts: Counter[str] = Counter()
    tail: list[str] = []
    try:
        for line in proc.stdout:
            kind = _classify(line)
            if kind is not None:
                counts[kind] += 1
            tail.append(line.decode("utf-8", "replace").rstrip())
            del tail[:-15]
            if (
                plan is not None
                and kind == plan.trigger
                and counts[kind] == plan.count
                and not killed.is_set()
            ):
                time.sleep(plan.delay)
                kill(killed)
        returncode = proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    # Reaped by wait() above, so the next run's lease check sees the pid gone.
    assert not timed_out.is_set(), f"run did not finish within {RUN_TIMEOUT} s:\n" + "\n".join(tail)
    return RunOutcome(
        returncode=returncode,
        killed=killed.is_set() and returncode == -signal.SIGKILL,
        seconds=time.monotonic() - started,
        stored_lines=counts["stored"],
        processed_lines=counts["processed"],
        duplicate_lines=counts["duplicate"],
        tail=tail,
    )


def progress(url: str) -> Progress:
    db = Database(url)
    try:
        with db.read_session() as session:
            statuses = dict(
                session.execute(
                    select(RawMessage.status, func.count()).group_by(RawMessage.status)
                ).all()
            )
            unflagged = session.execute(
                select(func.count()).select_from(Delivery).where(Delivery.server_done.is_(False))
            ).scalar_one()
    finally:
        db.dispose()
    return Progress(
        stored=sum(statuses.values()),
        processed=statuses.get(RawStatus.PROCESSED, 0),
        pending=statuses.get(RawStatus.PENDING, 0),
        quarantined=statuses.get(RawStatus.QUARANTINED, 0),
        unflagged=unflagged,
    )


class KillSchedule:
    """The seeded kill moments of one round, as points along the ingest.

    A point counts log lines over the whole round: 1..N are messages stored (fetching),
    N+1..2N messages filed (processing). Half the points fall in each phase. A point the
    previous kill already carried the ingest past is dropped, and now and then a run is
    killed at a random time after its start instead.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        kills = rng.randint(*KILLS_PER_ROUND)
        fetching = rng.sample(range(1, N_MESSAGES + 1), kills // 2)
        filing = rng.sample(range(N_MESSAGES + 1, 2 * N_MESSAGES + 1), kills - kills // 2)
        self.points = sorted(fetching + filing)

    def next(self, state: Progress) -> KillPlan | None:
        """How to kill the next run, given what is stored; None when it should finish."""
        done = state.processed + state.quarantined
        position = state.stored + done
        while self.points and self.points[0] <= position:
            self.points.pop(0)
        if not self.points:
            return None
        rng = self.rng
        if rng.random() < TIME_KILL_SHARE:
            return KillPlan("time", 0, rng.uniform(0.0, TIME_WINDOW))
        point = self.points.pop(0)
        if point > N_MESSAGES:
            return KillPlan(
                "processed", point - N_MESSAGES - done, rng.uniform(0, PROCESSED_JITTER)
            )
        count = point - state.stored
        if rng.random() < SEEN_WINDOW_SHARE:
            # At once after a batch's last stored line: committed, not yet flagged \Seen.
            batch_end = -(-count // BATCH_SIZE) * BATCH_SIZE
            return KillPlan("stored", min(batch_end, N_MESSAGES - state.stored), 0.0)
        return KillPlan("stored", count, rng.uniform(0.0, STORED_JITTER))


@contextmanager
def round_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'postdesk.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    with pg_schema_url(base) as url:
        yield url


def verify(
    url: str, config: Path, mails: list[GeneratedMail], dovecot: Dovecot, user: MailUser
) -> None:
    """Everything stored once, filed once, in the right tickets, and \\Seen on the server."""
    expected = {mail.message_id for mail in mails}
    n = len(mails)
    db = Database(url)
    try:
        with db.read_session() as session:
            raws = session.execute(
                select(
                    RawMessage.id,
                    RawMessage.message_id,
                    RawMessage.dedupe_key,
                    RawMessage.status,
                    RawMessage.reason,
                )
            ).all()
            filed = session.execute(
                select(Message.message_id, Message.ticket_id, Message.raw_message_id)
            ).all()
            deliveries = session.execute(
                select(Delivery.uid, Delivery.raw_message_id, Delivery.server_done)
            ).all()
            sync = session.execute(select(MailboxSync.last_uid, MailboxSync.lease_owner)).all()
    finally:
        db.dispose()

    # The raw store: n rows, one per Message-ID, all processed.
    raw_ids = Counter(row.message_id for row in raws)
    twice = sorted(mid for mid, n in raw_ids.items() if n > 1)
    assert not twice, f"{len(twice)} messages stored more than once, e.g. {twice[:5]}"
    assert set(raw_ids) == expected, (
        f"raw store misses {sorted(expected - set(raw_ids))[:5]}, "
        f"has unexpected {sorted(set(raw_ids) - expected)[:5]}"
    )
    assert len(raws) == len({row.dedupe_key for row in raws}) == n
    stuck = [(row.id, row.status, row.reason) for row in raws if row.status != RawStatus.PROCESSED]
    assert not stuck, f"{len(stuck)} raw messages not processed, e.g. {stuck[:5]}"

    # Filed: each Message-ID in exactly one ticket message row, each raw filed once.
    filed_ids = Counter(row.message_id for row in filed)
    repeated = sorted(mid for mid, n in filed_ids.items() if n > 1)
    assert not repeated, f"{len(repeated)} messages filed more than once, e.g. {repeated[:5]}"
    assert set(filed_ids) == expected, f"not filed: {sorted(expected - set(filed_ids))[:5]}"
    assert len({row.raw_message_id for row in filed}) == len(filed) == n

    # Deliveries: one per UID 1..N, each flagged on the server; the lease was released.
    uids = Counter(row.uid for row in deliveries)
    assert set(uids) == set(range(1, n + 1)) and max(uids.values()) == 1
    unflagged = sorted(row.uid for row in deliveries if not row.server_done)
    assert not unflagged, f"{len(unflagged)} deliveries never flagged, e.g. {unflagged[:5]}"
    assert [tuple(row) for row in sync] == [(n, None)]

    # Tickets, read through the command line: exactly the generator's threads.
    listed = subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), "tickets", "list", "--json"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    tickets = json.loads(listed.stdout)
    in_tickets = Counter(mid for ticket in tickets for mid in ticket["message_ids"])
    assert set(in_tickets) == expected and max(in_tickets.values()) == 1
    truth: dict[int, set[str]] = defaultdict(set)
    for mail in mails:
        truth[mail.thread].add(mail.message_id)
    got = {frozenset(ticket["message_ids"]) for ticket in tickets}
    want = {frozenset(ids) for ids in truth.values()}
    assert len(tickets) == len(want), f"{len(tickets)} tickets for {len(want)} threads"
    wrong = got ^ want
    assert not wrong, f"{len(wrong)} tickets differ from the threads, e.g. {list(wrong)[:2]}"

    # The server: every message still in the INBOX, and all of them \Seen.
    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["ALL"])) == n
        unseen = client.search(["UNSEEN"])
    finally:
        client.logout()
    assert not unseen, f"{len(unseen)} messages not \\Seen in INBOX, e.g. UIDs {unseen[:5]}"


@pytest.mark.parametrize(
    ("backend", "seed"),
    [
        pytest.param("sqlite", 11, id="sqlite-11"),
        pytest.param("sqlite", 22, id="sqlite-22"),
        pytest.param("sqlite", 33, id="sqlite-33"),
        pytest.param("postgresql", 44, id="postgresql-44"),
    ],
)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    backend: str,
    seed: int,
    dovecot_server: Dovecot,
    mail_user: MailUser,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    started = time.monotonic()
    mails = list(generate(N_MESSAGES, seed=seed))
    assert dovecot_server.fill(mail_user, [mail.raw for mail in mails]) == N_MESSAGES
    rng = random.Random(seed)
    with round_database(backend, tmp_path, request) as url:
        config = write_config(
            tmp_path, url, mailbox_toml(dovecot_server, mail_user, batch_size=BATCH_SIZE)
        )
        subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(config), "init"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        schedule = KillSchedule(rng)
        log: list[str] = []
        phases: Counter[str] = Counter()
        state = progress(url)
        finished = False
        for attempt in range(1, MAX_RUNS + 1):
            plan = schedule.next(state)
            outcome = run_cli(config, plan, tmp_path)
            before, state = state, progress(url)
            summary = (
                f"run {attempt}: {plan.describe() if plan else 'no kill'} -> "
                f"{'SIGKILL' if outcome.killed else f'exit {outcome.returncode}'} after "
                f"{outcome.seconds:.2f} s, {outcome.stored_lines} stored / "
                f"{outcome.processed_lines} filed lines; now {state.describe()}"
            )
            log.append(summary)
            assert outcome.duplicate_lines == 0, "a message was fetched twice:\n" + "\n".join(log)
            if outcome.killed:
                if state.stored < N_MESSAGES:
                    phases["fetch"] += 1
                elif state.processed == before.processed:
                    phases["between fetch and processing"] += 1
                else:
                    phases["processing"] += 1
                if state.unflagged:
                    phases["after a commit, before \\Seen"] += 1
                continue
            assert outcome.returncode == 0, (
                f"run {attempt} failed with exit {outcome.returncode}:\n"
                + "\n".join([*log, *outcome.tail])
            )
            finished = True
            break
        print(f"{backend} seed {seed}: {time.monotonic() - started:.1f} s")
        print("\n".join(log))
        print("kills by phase:", dict(phases))
        assert finished, f"no run finished in {MAX_RUNS} runs:\n" + "\n".join(log)
        # The kills are triggered by `-v` log lines of fetch.py and process.py; if their
        # wording changes, the triggers stop firing and these say so.
        hint = f" (are {STORED_LINE!r} / {PROCESSED_LINES!r} still logged?)\n"
        assert phases["fetch"] >= 1, "no kill landed while fetching" + hint + "\n".join(log)
        assert phases["processing"] >= 1, "no kill while processing" + hint + "\n".join(log)
        verify(url, config, mails, dovecot_server, mail_user)


# --- every planned window, on purpose ----------------------------------------------------

WINDOW_MESSAGES = 300  # six fetch batches of 50
PAUSED_LINE = b"postdesk: paused at "


def run_until_paused(config: Path, point: str, cwd: Path) -> list[str]:
    """Run `postdesk -v run --once` with $POSTDESK_PAUSE_AT=point; SIGKILL it once it has
    stopped there. Fails if the run ends, or takes a minute, without reaching the point."""
    argv = [sys.executable, "-m", "postdesk", "-c", str(config), "-v", "run", "--once"]
    env = {**os.environ, PAUSE_ENV: point}
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(60.0, proc.kill)
    watchdog.start()
    lines: list[str] = []
    paused = False
    try:
        for line in proc.stdout:
            lines.append(line.decode("utf-8", "replace").rstrip())
            if line.startswith(PAUSED_LINE):
                paused = True
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert paused, f"the run never reached {point} (exit {proc.returncode}):\n" + "\n".join(
        lines[-15:]
    )
    assert proc.returncode == -signal.SIGKILL
    return lines


def unseen_uids(dovecot: Dovecot, user: MailUser) -> set[int]:
    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        return set(client.search(["UNSEEN"]))
    finally:
        client.logout()


def lease_and_rows(url: str) -> tuple[str | None, int, int]:
    """The folder's lease owner, and how many messages and processed raws there are."""
    db = Database(url)
    try:
        with db.read_session() as session:
            owners = session.execute(select(MailboxSync.lease_owner)).scalars().all()
            messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
            processed = session.execute(
                select(func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == RawStatus.PROCESSED)
            ).scalar_one()
    finally:
        db.dispose()
    return (owners[0] if owners else None), messages, processed


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_in_every_planned_window(
    backend: str,
    dovecot_server: Dovecot,
    mail_user: MailUser,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    n = WINDOW_MESSAGES
    mails = list(generate(n, seed=55))
    assert dovecot_server.fill(mail_user, [mail.raw for mail in mails]) == n
    every_uid = set(range(1, n + 1))
    with round_database(backend, tmp_path, request) as url:
        config = write_config(
            tmp_path, url, mailbox_toml(dovecot_server, mail_user, batch_size=BATCH_SIZE)
        )
        subprocess.run(
            [sys.executable, "-m", "postdesk", "-c", str(config), "init"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )

        # 1. Holding the lease, before SEARCH: the lease stays with a dead process, and
        # the next run must take it over.
        run_until_paused(config, "fetch-lease-taken", tmp_path)
        owner, _, _ = lease_and_rows(url)
        assert owner is not None
        assert progress(url) == Progress(0, 0, 0, 0, 0)
        assert unseen_uids(dovecot_server, mail_user) == every_uid

        # 2. After the second batch's commit: 100 stored, none flagged \Seen yet (flags
        # are set for every FINISH_EVERY stored and at the end of the pass), on the
        # server as in the database.
        run_until_paused(config, "fetch-committed@2", tmp_path)
        assert progress(url) == Progress(100, 0, 100, 0, 100)
        assert unseen_uids(dovecot_server, mail_user) == every_uid

        # 3. The next run first finishes those flags; killed after STORE \Seen, before it
        # records them: \Seen on the server, still to do in the database.
        run_until_paused(config, "fetch-flagged@1", tmp_path)
        assert progress(url) == Progress(100, 0, 100, 0, 100)
        assert unseen_uids(dovecot_server, mail_user) == every_uid - set(range(1, 101))

        # 4. Everything fetched and flagged, nothing processed yet.
        run_until_paused(config, "fetched", tmp_path)
        assert progress(url) == Progress(n, 0, n, 0, 0)
        assert not unseen_uids(dovecot_server, mail_user)

        # 5. Inside a processing batch, the 30th message filed but not committed: what was
        # committed before is whole (a ticket message per processed raw), the rest pending.
        run_until_paused(config, "process-filed@30", tmp_path)
        _, messages, processed = lease_and_rows(url)
        state = progress(url)
        assert processed < 30 and messages == processed == state.processed
        assert state == Progress(n, processed, n - processed, 0, 0)

        # Then a run left alone finishes, and everything is as if nothing had happened.
        outcome = run_cli(config, None, tmp_path)
        assert outcome.returncode == 0, "\n".join(outcome.tail)
        assert outcome.duplicate_lines == 0
        verify(url, config, mails, dovecot_server, mail_user)
