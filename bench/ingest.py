"""Benchmark: postdesk ingesting N messages from a local Dovecot, end to end, next to the floor.

The floor is what any program reading the same mail over IMAP pays at least: connect,
SELECT, UID SEARCH, FETCH BODY.PEEK[] in batches of 200 (postdesk's default), then a
parse of each message and reading its text body so the parse is not lazy. It is measured
twice in the same run, because the two ways the stdlib parses differ about sixfold:

* "floor (policy.default)": `email.message_from_bytes(raw, policy=email.policy.default)`,
  then its text body, `get_body(("plain", "html")).get_content()`: the first text/plain
  part that is not an attachment, else the first text/html one, decoded to text;
* "floor (compat32)": `email.message_from_bytes(raw)` (the compat32 policy, which is
  where postdesk's own parser starts), then the same part chosen by the same rule and
  decoded with its declared charset (`get_payload(decode=True)`).

postdesk's ratio to each is printed. The compat32 floor is the honest bound for what
postdesk does beyond fetching and parsing; the policy.default floor is what a program
written the obvious way with today's stdlib API pays.

End to end is postdesk itself, measured two ways, each on a fresh database (schema
created with the migrations) and its own account holding the same messages: fetch,
store, flag \\Seen, parse, thread and file every message into tickets.

* "--once": `Service.run_once()`, what `postdesk run --once` does: every mailbox fetched,
  then everything processed;
* "service": the service as `postdesk run` runs it, a watcher thread per mailbox
  fetching while the main loop processes what the stored batches woke it for, timed from
  its start (logins included) until every message is processed.

Schema creation is not counted; it is paid once per database, not per message.

Each measurement runs in its own fresh Python process (so peak RSS is its own), against
one private Dovecot started in a temporary directory. Mail is `postdesk.testing.mailgen`
output with a fixed seed. A second table shows where postdesk's time went, from timers
around the fetch, the IMAP calls and each processing step, in one more run that is not
counted in the rate (the timers cost a few percent); `--profile` adds a cProfile run of
the end-to-end path. Each side is measured several times, alternating, and the best of
each is kept (noise only ever adds time): five times up to 2,000 messages (a run of
about a second: the floor alone went 946-1,149 msg/s in three runs of 1,000 within a
minute), three times up to 10,000, where a run lasts seconds and one hiccup of the
machine moves it by tens of percent, once above; `--repeat R` sets the count for every
size.

    .venv/bin/python bench/ingest.py [--sizes 1000,10000,50000] [--db sqlite,postgresql]
        [--pg-url URL] [--profile] [--repeat R]

Peak memory is reported per size for postdesk's main process, its parse worker, its
read-ahead helper (a backlog of 5,000 messages or more is fetched with one: a process of
its own, so the total steps up once between 1,000 and 10,000) and all together, so a
mailbox ten or fifty times larger shows whether memory grows with it.
Memory is sampled every 50 ms by the benchmark's own process, not inside the measured
one, which would pay for the sampling (4% of a core) while the floor did not.
"""

from __future__ import annotations

import argparse
import cProfile
import email
import email.policy
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SEED = 20260105
BATCH = 200  # postdesk's default batch_size, used by the floor too
# The floor's two parses (the key is passed to the worker, the value is printed).
PARSES = {"default": "policy.default", "compat32": "compat32"}


# --- workers: each runs in its own process and prints one JSON line -------------------


def _peak_rss_mb() -> float:
    """This process's peak resident set: the kernel's VmHWM, which starts afresh with the
    program. Not getrusage's ru_maxrss: a process started by fork and exec keeps the
    maximum of the process it was forked from, here the orchestrator holding every
    message of the run (about 150 MB at 50,000), which read as the worker's own peak."""
    kb = _status_kb(os.getpid(), "VmHWM")
    return kb / 1024 if kb else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/<pid>/status in KiB, or 0 (gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """Every process below `root` (the parse worker)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[ppid].append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def _is_reader(pid: int) -> bool:
    """Whether the process is a read-ahead helper (its command line names the module)."""
    try:
        return b"postdesk.ingest.readahead" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class _MemorySampler:
    """Peak memory of a measured process (`root`) and of every process below it, sampled
    every 50 ms from the benchmark's own process.

    From outside: a sample walks /proc (about 2 ms of Python), which in the measured
    process took 4% of a core and the interpreter lock from postdesk while the floor,
    sampled by nobody, paid nothing. `RUSAGE_CHILDREN` would only see the parse worker
    once it has exited and been waited for; /proc sees it while it runs. Per process,
    the kernel's own high-water mark (VmHWM) is kept, so a peak between two samples is
    not missed; the sum of the resident sets sampled at the same moment is the whole
    service's peak.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.own_peak_kb = 0
        self.helpers_peak_kb = 0  # the largest parse worker
        self.reader_peak_kb = 0  # the largest read-ahead helper (ingest/readahead.py)
        self.total_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        me = self.root
        total = _status_kb(me, "VmRSS")
        self.own_peak_kb = max(self.own_peak_kb, _status_kb(me, "VmHWM"))
        for pid in _descendants(me):
            total += _status_kb(pid, "VmRSS")
            if _is_reader(pid):
                self.reader_peak_kb = max(self.reader_peak_kb, _status_kb(pid, "VmHWM"))
            else:
                self.helpers_peak_kb = max(self.helpers_peak_kb, _status_kb(pid, "VmHWM"))
        self.total_peak_kb = max(self.total_peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()


def _body_default(message: Any) -> str:
    """The text body under policy.default: get_body() picks it, get_content() decodes it."""
    body = message.get_body(("plain", "html"))
    return "" if body is None else str(body.get_content())


def _body_compat32(message: Any) -> str:
    """The same part as get_body(("plain", "html")) picks, read the compat32 way."""
    chosen = None
    for wanted in ("text/plain", "text/html"):
        for part in message.walk():
            disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
            if part.get_content_type() == wanted and disposition != "attachment":
                chosen = part
                break
        if chosen is not None:
            break
    if chosen is None:
        return ""
    payload = chosen.get_payload(decode=True) or b""
    charset = chosen.get_content_charset() or "us-ascii"
    try:
        return str(payload.decode(charset, "replace"))
    except LookupError:  # an unknown charset name
        return str(payload.decode("latin-1"))


def floor_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Fetch every message with imapclient; parse it with the policy `spec["parse"]` names."""
    from imapclient import IMAPClient

    if spec["parse"] == "default":
        policy: Any = email.policy.default
        read_body = _body_default
    else:
        policy = email.policy.compat32
        read_body = _body_compat32
    start = time.perf_counter()
    client = IMAPClient(spec["host"], port=spec["port"], ssl=False, timeout=60)
    client.login(spec["username"], spec["password"])
    client.select_folder("INBOX")
    uids = sorted(client.search(["UID", "1:*"]))
    count = chars = 0
    for first in range(0, len(uids), BATCH):
        batch = uids[first : first + BATCH]
        fetched = client.fetch(batch, ["BODY.PEEK[]"])
        for uid in batch:
            raw = fetched[uid][b"BODY[]"]
            message = email.message_from_bytes(raw, policy=policy)
            chars += len(read_body(message))
            count += 1
    client.logout()
    seconds = time.perf_counter() - start
    return {"count": count, "seconds": seconds, "chars": chars, "rss_mb": _peak_rss_mb()}


class _Timers:
    """Wall-clock seconds per label, summed; a call nested in one of the same label counts once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[label] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[label] -= 1
                if not self._depth[label]:
                    self.seconds[label] += time.perf_counter() - start

        return timed


class _TimedStep:
    """A processing step with a stopwatch around it."""

    def __init__(self, step: Any, timers: _Timers) -> None:
        self.name = step.name
        self._call = timers.wrap(f"process: {step.name} step", step)
        if hasattr(step, "prefetch"):  # the parse step hands batches to its worker ahead
            self.prefetch = timers.wrap(f"process: {step.name} prefetch", step.prefetch)
        if hasattr(step, "before_commit"):  # the file step flushes attachments to disk
            self.before_commit = timers.wrap(
                f"process: {step.name} before commit", step.before_commit
            )

    def __call__(self, item: Any) -> None:
        self._call(item)


def _instrument(timers: _Timers) -> type[Any]:
    """A Service whose fetch, IMAP calls and steps are timed (bench-only patching)."""
    from postdesk.daemon import Service
    from postdesk.ingest import fetch as fetch_module
    from postdesk.ingest.imap import ImapSource

    # Whichever of these the current ImapSource has; all of them talk to the server.
    for name in (
        *("connect", "select", "uids_above", "sizes", "sizes_over", "fetch", "existing"),
        *("message_ids", "mail_announced"),
        *("ensure_folder", "mark_seen", "move", "close"),
    ):
        if hasattr(ImapSource, name):
            setattr(ImapSource, name, timers.wrap("fetch: IMAP", getattr(ImapSource, name)))
    if hasattr(fetch_module, "store_imap_batch"):
        fetch_module.store_imap_batch = timers.wrap(
            "fetch: store rows", fetch_module.store_imap_batch
        )

    class TimedService(Service):
        def fetch_mailbox(self, box: Any, mailbox_id: int) -> Any:
            return timers.wrap("fetch (all)", super().fetch_mailbox)(box, mailbox_id)

        def processor(self) -> Any:
            processor = super().processor()
            processor.steps = [_TimedStep(step, timers) for step in processor.steps]
            processor.run = timers.wrap("process (all)", processor.run)  # type: ignore[method-assign]
            return processor

    return TimedService


def service_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """A fresh database, then the service as `postdesk run` runs it (a watcher thread per
    mailbox fetching while the main loop processes, woken by the stored batches), timed
    from its start until every message is processed; then it is stopped."""
    from postdesk.daemon import PassResult, Service

    settings, db, init_seconds = _fresh_database(spec)
    service = Service(settings, db)
    expected = int(spec["expected"])
    done = {"processed": 0, "quarantined": 0}
    errors: dict[str, str] = {}

    finished: list[float] = []

    def on_pass(outcome: PassResult) -> None:
        done["processed"] += outcome.processed.processed
        done["quarantined"] += outcome.processed.quarantined
        errors.update(outcome.errors)
        if done["processed"] + done["quarantined"] >= expected or errors:
            finished.append(time.perf_counter())
            service.stop()

    start = time.perf_counter()
    service.run_forever(on_pass=on_pass)
    # Until every message is processed, not until the service has stopped: ending
    # the mailbox threads' IDLE and logging out is not ingestion (it added up to a
    # second, a third of a run of 1,000 messages).
    seconds = (finished[0] if finished else time.perf_counter()) - start
    db.dispose()
    return {
        "count": done["processed"],
        "quarantined": done["quarantined"],
        "errors": errors,
        "seconds": seconds,
        "init_seconds": init_seconds,
        "rss_mb": _peak_rss_mb(),
    }


def _fresh_database(spec: dict[str, Any]) -> tuple[Any, Any, float]:
    """(settings, database, seconds its schema took) for a run over the account."""
    from postdesk.config import load_settings
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade

    work = Path(spec["dir"])
    config = work / "postdesk.toml"
    config.write_text(
        f"""data_dir = "data"

[database]
url = "{spec["url"]}"

[[mailbox]]
name = "bench"
address = "{spec["username"]}"
host = "{spec["host"]}"
port = {spec["port"]}
security = "none"
username = "{spec["username"]}"
password = "{spec["password"]}"
batch_size = {BATCH}
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    db = Database(settings.database.url)
    start = time.perf_counter()
    upgrade(db)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings, db, time.perf_counter() - start


def postdesk_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """A fresh database, then one `run_once()` over the account; timed, or profiled.

    With "instrument" in the spec, stopwatches around the fetch and each step say where
    the time went (they cost a few percent, so the run that gives the rate has none)."""
    from postdesk.daemon import Service

    settings, db, init_seconds = _fresh_database(spec)
    timers = _Timers()
    service_class = _instrument(timers) if spec.get("instrument") else Service
    service = service_class(settings, db)
    profiler = cProfile.Profile() if spec.get("profile") else None
    run = service.run_once if profiler is None else lambda: profiler.runcall(service.run_once)
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    db.dispose()
    processed = result.processed
    out: dict[str, Any] = {
        "count": processed.processed,
        "quarantined": processed.quarantined,
        "errors": result.errors,
        "seconds": seconds,
        "init_seconds": init_seconds,
        "timers": dict(timers.seconds),
        "rss_mb": _peak_rss_mb(),
    }
    if profiler is not None:
        out["profile"] = _profile_report(profiler, seconds, spec.get("top", 30))
    return out


# Functions whose cumulative time shows the shape of the pipeline in the profile.
_STAGES = (
    ("fetch pass (IMAP + raw store + commits)", "ingest/fetch.py", "_fetch"),
    (
        "  store_imap_batch (rows for raw messages, deliveries)",
        "ingest/store.py",
        "store_imap_batch",
    ),
    ("  header_summary (dedupe key)", "ingest/parse.py", "header_summary"),
    ("processing (every message, its own transaction)", "ingest/process.py", "process_one"),
    ("  parse_message", "ingest/parse.py", "parse_message"),
    ("  html_to_text", "ingest/htmltext.py", "html_to_text"),
    ("  get_or_create_contact", "ingest/sender.py", "get_or_create_contact"),
    ("  find_ticket", "ingest/threader.py", "find_ticket"),
    ("  AttachmentStore.save", "ingest/attachments.py", "save"),
    ("SQLAlchemy Connection.execute (every statement)", "engine/base.py", "execute"),
    ("SQLAlchemy Session.flush (ORM unit of work)", "orm/session.py", "flush"),
    ("commits (SQLAlchemy and the driver)", "engine/base.py", "_commit_impl"),
)

_PACKAGES = (
    ("SQLAlchemy (Python)", "sqlalchemy/"),
    ("postdesk", "/postdesk/"),
    ("stdlib email", "/email/"),
    ("stdlib re (regex compiles)", "/re/"),
    ("imapclient", "imapclient/"),
    ("inscriptis / lxml", "inscriptis/"),
)


def _package(key: Any) -> str:
    filename, _line, function = key
    for label, marker in _PACKAGES:
        if marker in filename:
            return label
    if "sqlite3." in function or "psycopg" in filename or "psycopg" in function:
        return "database driver (C: execute, commit, fetch)"
    if "socket" in function or "ssl" in function.lower():
        return "sockets"
    if "fsync" in function:
        return "fsync (attachments, durable commits)"
    return "other (builtins, stdlib)"


def _short(key: Any) -> str:
    filename, line, function = key
    short = re.sub(r"^.*?/(site-packages|python3\.\d+)/", "", filename)
    short = re.sub(r"^.*/postdesk/", "postdesk/", short)
    return f"{short}:{line}({function})" if line else function


def _profile_report(profiler: cProfile.Profile, seconds: float, top: int) -> str:
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    lines = [
        f"cProfile of run_once: {seconds:.2f} s wall under the profiler; percentages are of "
        f"the {total:.2f} s spent in profiled functions (the profiler inflates call-heavy "
        "Python code, so compare with the wall-clock table above)",
        "  -- stages (cumulative time)",
    ]
    for label, where, function in _STAGES:
        cumtime = sum(
            entry[3] for key, entry in raw.items() if key[0].endswith(where) and key[2] == function
        )
        lines.append(f"  {cumtime:8.2f} s {100 * cumtime / total:5.1f}%  {label}")
    lines.append("  -- own time by package")
    by_package: dict[str, float] = defaultdict(float)
    for key, entry in raw.items():
        by_package[_package(key)] += entry[2]
    for label, own in sorted(by_package.items(), key=lambda item: -item[1]):
        lines.append(f"  {own:8.2f} s {100 * own / total:5.1f}%  {label}")

    def rows(order: int, heading: str) -> None:
        lines.append(f"  -- top {top} functions by {heading}")
        lines.append(f"  {'tottime':>8} {'%':>6}  {'cumtime':>8} {'%':>6}  {'calls':>9}  function")
        ranked = sorted(raw.items(), key=lambda item: item[1][order], reverse=True)[:top]
        for key, (_cc, calls, tottime, cumtime, _callers) in ranked:
            lines.append(
                f"  {tottime:8.3f} {100 * tottime / total:5.1f}%  {cumtime:8.3f} "
                f"{100 * cumtime / total:5.1f}%  {calls:9d}  {_short(key)}"
            )

    rows(2, "own time")
    rows(3, "cumulative time")
    return "\n".join(lines)


WORKERS = {"floor": floor_worker, "postdesk": postdesk_worker, "service": service_worker}


# --- the orchestrating process ---------------------------------------------------------


# The PostgreSQL server to checkpoint before each measurement, when the run uses one.
_checkpoint_url: str | None = None


def _settle() -> None:
    """Start each measurement with nothing left to write. The mail just delivered into
    Dovecot's Maildir (a file per message) and the runs before (SQLite files, PostgreSQL's
    dirty buffers) are otherwise written back by the kernel or by PostgreSQL's
    checkpointer during the next run, and its fsyncs queue behind them. Here a run at
    50,000 messages on SQLite measured 0.77x of the floor right after the PostgreSQL
    runs of the size before, and 0.99x in a run of SQLite alone; settled, 0.84x in a
    run of both, so write-back is not all of the difference."""
    os.sync()
    if _checkpoint_url is None:
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(_checkpoint_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
    except Exception as exc:  # no superuser or pg_checkpoint role: say so, go on
        print(f"(no CHECKPOINT before measuring: {str(exc).splitlines()[0]})", file=sys.stderr)
    finally:
        engine.dispose()


def _run_worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run a worker in a process of its own, its memory sampled from here (the worker's
    own high-water mark, reported by itself, covers what a sample could miss)."""
    _settle()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with _MemorySampler(worker.pid) as memory:
        stdout, stderr = worker.communicate(json.dumps(spec))
    if worker.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{stdout}{stderr}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["rss_mb"] = max(result["rss_mb"], memory.own_peak_kb / 1024)
    result["worker_rss_mb"] = memory.helpers_peak_kb / 1024
    result["reader_rss_mb"] = memory.reader_peak_kb / 1024
    result["total_rss_mb"] = memory.total_peak_kb / 1024
    return result


@contextmanager
def _database(base_url: str | None, directory: Path) -> Iterator[str]:
    """A fresh SQLite file, or a private schema on the PostgreSQL server at base_url."""
    if base_url is None:
        yield f"sqlite:///{directory / 'postdesk.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in base_url else "?"
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _account(server: Any, user: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "username": user.email,
        "password": user.password,
    }


def _breakdown(n: int, result: dict[str, Any]) -> list[str]:
    timers: dict[str, float] = result["timed"]["timers"]
    total = result["timed"]["seconds"]
    fetch = timers.get("fetch (all)", 0.0)
    process = timers.get("process (all)", 0.0)
    steps = {k: v for k, v in timers.items() if k.startswith("process: ")}
    parts = [
        (
            "fetch: IMAP (login, SEARCH, sizes, FETCH, STORE \\Seen, logout)",
            timers.get("fetch: IMAP", 0),
        ),
        ("fetch: store rows (header scan, digest, INSERTs)", timers.get("fetch: store rows", 0)),
        (
            "fetch: other (durable commits, lease, bookkeeping)",
            fetch - timers.get("fetch: IMAP", 0) - timers.get("fetch: store rows", 0),
        ),
        *sorted(steps.items()),
        (
            "process: per-message load, status update, commit",
            process - sum(steps.values()),
        ),
        ("other (config sync, setup)", total - fetch - process),
    ]
    lines = [f"N={n}: {total:.2f} s end to end, with the stopwatches"]
    for label, value in parts:
        lines.append(
            f"  {label:66} {value:7.2f} s {100 * value / total:5.1f}%  "
            f"{1000 * value / n:6.2f} ms/msg"
        )
    return lines


DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(value: str) -> list[Any]:
        return [kind(item.strip()) for item in value.split(",") if item.strip()]

    return parse


def _backend(name: str) -> str:
    if name not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown database {name!r}: sqlite or postgresql")
    return name


Row = tuple[str, int, dict[str, dict[str, Any]], dict[str, Any]]


def _on_fresh_account(
    kind: str, spec: dict[str, Any], server: Any, raws: list[bytes], backend: str, work: Path
) -> dict[str, Any]:
    """Run a postdesk worker (`kind`) on an account of its own holding `raws`, with a fresh
    database (a SQLite file in `work`, or a private schema on `spec["pg_url"]`)."""
    user = server.add_user()
    server.fill(user, raws)
    work.mkdir()
    pg_url = spec.pop("pg_url")
    with _database(pg_url if backend == "postgresql" else None, work) as url:
        return _run_worker(kind, {**_account(server, user), "dir": str(work), "url": url, **spec})


def _ingested_all(
    kind: str, spec: dict[str, Any], server: Any, raws: list[bytes], backend: str, work: Path
) -> dict[str, Any]:
    """`_on_fresh_account`, stopping the benchmark unless every message was filed."""
    n = len(raws)
    result = _on_fresh_account(kind, spec, server, raws, backend, work)
    if result["count"] != n or result["quarantined"] or result["errors"]:
        raise SystemExit(f"postdesk ({kind}) did not ingest all {n} messages: {result}")
    return result


def _repeat(args: Any, n: int) -> int:
    """How many times each side is measured for `n` messages (see the module's doc)."""
    if args.repeat is not None:
        return int(args.repeat)
    if n <= 2_000:
        return 5
    return 3 if n <= 10_000 else 1


def _measure(
    server: Any, raws: list[bytes], n: int, backend: str, pg_url: str, args: Any, tmp: str
) -> tuple[Row, str]:
    """The two floors and postdesk for one size on one database, best of `--repeat`."""
    floor_user = server.add_user()
    server.fill(floor_user, raws)
    floors: dict[str, list[dict[str, Any]]] = {parse: [] for parse in PARSES}
    ours_runs: list[dict[str, Any]] = []
    service_runs: list[dict[str, Any]] = []
    repeat = _repeat(args, n)
    for attempt in range(repeat):
        for parse in PARSES:
            floor = _run_worker("floor", {**_account(server, floor_user), "parse": parse})
            if floor["count"] != n:
                raise SystemExit(f"the floor read {floor['count']} of {n} messages")
            floors[parse].append(floor)
        ours = _ingested_all(
            "postdesk",
            {"pg_url": pg_url},
            server,
            raws,
            backend,
            Path(tmp) / f"run-{backend}-{n}-{attempt}",
        )
        ours_runs.append(ours)
        served = _ingested_all(
            "service",
            {"pg_url": pg_url, "expected": n},
            server,
            raws,
            backend,
            Path(tmp) / f"service-{backend}-{n}-{attempt}",
        )
        service_runs.append(served)
        print(
            f"  {BACKENDS[backend]} N={n} run {attempt + 1}: "
            + ", ".join(
                f"floor ({PARSES[p]}) {n / r[-1]['seconds']:.0f}" for p, r in floors.items()
            )
            + f", postdesk run --once {n / ours['seconds']:.0f}"
            + f", postdesk run (service) {n / served['seconds']:.0f} msg/s",
            file=sys.stderr,
        )
    every = ""
    if repeat > 1:
        every = (
            f"{BACKENDS[backend]} N={n}, best of {repeat}: "
            + "; ".join(
                f"floor ({PARSES[parse]}) " + ", ".join(f"{n / f['seconds']:.0f}" for f in runs)
                for parse, runs in floors.items()
            )
            + "; postdesk run --once "
            + ", ".join(f"{n / o['seconds']:.0f}" for o in ours_runs)
            + "; postdesk run (service) "
            + ", ".join(f"{n / o['seconds']:.0f}" for o in service_runs)
            + " msg/s"
        )
    best = {parse: min(runs, key=lambda r: r["seconds"]) for parse, runs in floors.items()}
    ours = dict(min(ours_runs, key=lambda r: r["seconds"]))
    ours["service"] = min(service_runs, key=lambda r: r["seconds"])
    # Where the time goes: one more run with stopwatches, not counted in the rate.
    ours["timed"] = _on_fresh_account(
        "postdesk",
        {"pg_url": pg_url, "instrument": True},
        server,
        raws,
        backend,
        Path(tmp) / f"timed-{backend}-{n}",
    )
    return (backend, n, best, ours), every


def _report(rows: list[Row], repeats: list[str], args: Any) -> None:
    print(f"\npostdesk end to end vs the floors (batches of {BATCH}, seed {SEED})")
    print(
        f"{'database':>10} {'N':>7} {'floor: parse with':>18} {'floor msg/s':>12} "
        f"{'--once msg/s':>13} {'ratio':>7} {'service msg/s':>14} {'ratio':>7}"
    )
    for backend, n, floor_by_parse, ours in rows:
        our_rate = ours["count"] / ours["seconds"]
        served = ours["service"]
        service_rate = served["count"] / served["seconds"]
        for parse, label in PARSES.items():
            floor = floor_by_parse[parse]
            floor_rate = floor["count"] / floor["seconds"]
            print(
                f"{BACKENDS[backend]:>10} {n:7d} {label:>18} {floor_rate:12.0f} "
                f"{our_rate:13.0f} {our_rate / floor_rate:6.2f}x "
                f"{service_rate:14.0f} {service_rate / floor_rate:6.2f}x"
            )
    print("\npeak memory (resident set, MB)")
    print(
        f"{'database':>10} {'N':>7} {'floor (p.default)':>18} {'postdesk main':>14} "
        f"{'parse worker':>13} {'read-ahead':>11} {'postdesk total':>15}"
    )
    for backend, n, floor_by_parse, ours in rows:
        print(
            f"{BACKENDS[backend]:>10} {n:7d} {floor_by_parse['default']['rss_mb']:18.0f} "
            f"{ours['rss_mb']:14.0f} {ours['worker_rss_mb']:13.0f} "
            f"{ours.get('reader_rss_mb', 0):11.0f} {ours['total_rss_mb']:15.0f}"
            f"   (service: {ours['service']['total_rss_mb']:.0f})"
        )
    for backend in BACKENDS:
        sized = sorted((n, ours) for b, n, _f, ours in rows if b == backend)
        if len(sized) > 1:
            (small_n, small), (large_n, large) = sized[0], sized[-1]
            print(
                f"{BACKENDS[backend]}: {large_n // small_n}x the mail, "
                f"{large['total_rss_mb'] / small['total_rss_mb']:.2f}x the peak memory "
                f"({small['total_rss_mb']:.0f} -> {large['total_rss_mb']:.0f} MB); the main "
                f"process {small['rss_mb']:.0f} -> {large['rss_mb']:.0f} MB, the parse worker "
                f"{small['worker_rss_mb']:.0f} -> {large['worker_rss_mb']:.0f} MB, the "
                f"read-ahead helper (backlogs of 5,000 or more only) "
                f"{small.get('reader_rss_mb', 0):.0f} -> {large.get('reader_rss_mb', 0):.0f} MB"
            )
    if repeats:
        print("\nevery run (msg/s) where the best of several is reported above:")
        print("\n".join(repeats))
    print(
        "\n(postdesk main: peak RSS of the process running run_once; parse worker: the largest "
        "peak of the parse workers below it; read-ahead: the largest peak of the read-ahead "
        "helpers below it; total: the largest sum of "
        "all of them sampled at one moment, every 50 ms. Schema creation took "
        + ", ".join(f"{ours['init_seconds']:.2f} s" for *_, ours in rows)
        + ", not counted)"
    )
    print("\nwhere postdesk's time goes (wall clock):")
    for backend, n, _floor, ours in rows:
        print(BACKENDS[backend], end=" ")
        print("\n".join(_breakdown(n, ours)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=_csv(int),
        default=[1000, 10000, 50000],
        help="message counts, comma-separated (default 1000,10000,50000)",
    )
    parser.add_argument(
        "--db",
        type=_csv(_backend),
        default=["sqlite", "postgresql"],
        help="databases, comma-separated: sqlite, postgresql (default both)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("POSTDESK_TEST_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL server (a private schema is created per run and dropped); default "
        f"$POSTDESK_TEST_PG_URL or {DEFAULT_PG_URL}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the end-to-end path once more under cProfile (largest N, first "
        "database) and report",
    )
    parser.add_argument("--top", type=int, default=30, help="functions listed by --profile")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="measure each floor and postdesk this many times each (alternating) and keep the "
        "best of each (default: 3 for sizes up to 10,000, 1 above)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(sys.stdin.read()))))
        return

    from postdesk.testing.dovecot import Dovecot
    from postdesk.testing.mailgen import generate

    global _checkpoint_url
    if "postgresql" in args.db:
        _checkpoint_url = args.pg_url

    rows: list[Row] = []
    repeats: list[str] = []
    profile_report = ""
    with (
        tempfile.TemporaryDirectory(prefix="postdesk-bench-") as tmp,
        Dovecot(Path(tmp) / "dovecot") as server,
    ):
        for n in args.sizes:
            raws = [mail.raw for mail in generate(n, seed=SEED)]
            size = sum(len(raw) for raw in raws)
            print(
                f"N={n}: {size / n / 1024:.1f} KiB per message on average; measuring...",
                file=sys.stderr,
            )
            for backend in args.db:
                row, every = _measure(server, raws, n, backend, args.pg_url, args, tmp)
                rows.append(row)
                if every:
                    repeats.append(every)
            del raws
        if args.profile:
            n = max(args.sizes)
            backend = args.db[0]
            user = server.add_user()
            server.fill(user, [mail.raw for mail in generate(n, seed=SEED)])
            work = Path(tmp) / "profile"
            work.mkdir()
            with _database(args.pg_url if backend == "postgresql" else None, work) as url:
                spec = {
                    **_account(server, user),
                    "dir": str(work),
                    "url": url,
                    "profile": True,
                    "top": args.top,
                    "instrument": True,
                }
                profile_report = (
                    f"N={n}, {BACKENDS[backend]}\n" + _run_worker("postdesk", spec)["profile"]
                )
    _report(rows, repeats, args)
    if profile_report:
        print("\n" + profile_report)


if __name__ == "__main__":
    main()
