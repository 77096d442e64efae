"""Benchmark: what the per-message parse budget costs, next to parsing in-process, one run.

Two measurements, each side measured in alternating rounds in the same process (a round
of one, then a round of the other, `--repeat` times) and the best round of each kept
(noise on a shared machine only ever adds time):

* reading: `read_message` (parse, HTML to text, visible text) called in-process, against
  the same through the parse worker (`ParseWorker.read`: raw bytes over a pipe, the
  parsed message pickled back), over generated support mail (`postdesk.testing.mailgen`)
  and the mime-flanker corpus from ../shared/data when present;
* processing: `Service.processor().run()` over N stored generated messages in a fresh
  SQLite database (every step: parse, thread, file, triage without models), with
  `[processing] parse_worker` off and on.

    .venv/bin/python bench/budget.py [--n 400] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from postdesk.errors import ParseError
from postdesk.ingest.worker import Budget, ParseWorker, read_message

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED = 20261205


def _messages(n: int) -> list[bytes]:
    from postdesk.testing.mailgen import generate

    raws = [mail.raw for mail in generate(n, seed=SEED)]
    flanker = SHARED_DATA / "mime-flanker"
    if flanker.is_dir():
        for path in sorted(flanker.rglob("*.eml")):
            raw = path.read_bytes()
            with contextlib.suppress(ParseError):
                read_message(raw)
                raws.append(raw)
    return raws


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` has used so far; 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_message(
    read: Callable[[bytes], object], raws: list[bytes], worker: ParseWorker | None = None
) -> tuple[float, float]:
    """(wall, CPU) seconds per message; CPU counts this process and the worker."""
    cpu = time.process_time() + _cpu_of(worker.pid if worker else None)
    started = time.perf_counter()
    for raw in raws:
        read(raw)
    wall = time.perf_counter() - started
    cpu = time.process_time() + _cpu_of(worker.pid if worker else None) - cpu
    return wall / len(raws), cpu / len(raws)


def _processing_round(n: int, worker: bool) -> tuple[float, float]:
    """(wall, CPU) seconds per message to process `n` stored messages in a fresh SQLite
    database; CPU counts this process and the worker."""
    from postdesk.daemon import Service
    from postdesk.ingest.store import Incoming, store_many
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade
    from postdesk.testing.config import settings_for
    from postdesk.testing.mailgen import generate

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'postdesk.db'}"
        block = f"[processing]\nparse_worker = {'true' if worker else 'false'}\n"
        db = Database(url)
        try:
            upgrade(db)
            service = Service(settings_for(Path(tmp), url, block), db)
            with db.transaction() as session:
                store_many(
                    session,
                    [Incoming(m.raw, f"bench #{i}") for i, m in enumerate(generate(n, seed=SEED))],
                    source="import",
                    mailbox_id=None,
                )
            processor = service.processor()
            pid = None
            if worker:  # start-up is paid once per process, not per message
                assert service.budget is not None
                from postdesk.ingest.worker import shared_worker

                parse_worker = shared_worker(service.budget)
                parse_worker.read(b"From: a@b\r\n\r\nwarm-up\r\n")
                pid = parse_worker.pid
            cpu = time.process_time() + _cpu_of(pid)
            started = time.perf_counter()
            done = processor.run()
            seconds = time.perf_counter() - started
            cpu = time.process_time() + _cpu_of(pid) - cpu
            assert done.processed == n, done
        finally:
            db.dispose()
    return seconds / n, cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="generated messages (default 400)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each side (default 3)")
    args = parser.parse_args()

    raws = _messages(args.n)
    worker = ParseWorker(Budget())
    try:
        started = time.perf_counter()
        worker.read(raws[0])
        startup = time.perf_counter() - started
        inproc: list[tuple[float, float]] = []
        piped: list[tuple[float, float]] = []
        for _ in range(args.repeat):
            inproc.append(_per_message(read_message, raws))
            piped.append(_per_message(worker.read, raws, worker))
    finally:
        worker.close()
    sizes = sorted(len(raw) for raw in raws)
    print(
        f"reading {len(raws)} messages one at a time (median {statistics.median(sizes) / 1024:.1f}"
        f" KB, largest {sizes[-1] / 1024:.0f} KB), best of {args.repeat} rounds:"
    )
    _table("in-process", "parse worker", inproc, piped, 1e6, "µs")
    print(f"  worker start-up: {startup * 1e3:.0f} ms, once per process")

    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    for _ in range(args.repeat):
        off.append(_processing_round(args.n, worker=False))
        on.append(_processing_round(args.n, worker=True))
    print(
        f"processing {args.n} messages (SQLite, every step; batches sent to the worker "
        f"ahead), best of {args.repeat} rounds:"
    )
    _table("parse_worker = false", "parse_worker = true", off, on, 1e3, "ms")


def _table(
    first: str,
    second: str,
    a: list[tuple[float, float]],
    b: list[tuple[float, float]],
    scale: float,
    unit: str,
) -> None:
    print(f"  {'':22} {'wall':>9} {'CPU':>9}   ({unit}/message; CPU: postdesk + worker)")
    wall_a, cpu_a = min(x[0] for x in a), min(x[1] for x in a)
    wall_b, cpu_b = min(x[0] for x in b), min(x[1] for x in b)
    print(f"  {first:22} {wall_a * scale:9.2f} {cpu_a * scale:9.2f}")
    print(
        f"  {second:22} {wall_b * scale:9.2f} {cpu_b * scale:9.2f}   "
        f"(wall {(wall_b / wall_a - 1) * 100:+.0f}%, CPU {(cpu_b / cpu_a - 1) * 100:+.0f}%)"
    )


if __name__ == "__main__":
    main()
