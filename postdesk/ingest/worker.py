"""Read mail under a budget: parsing in a worker process with a memory limit and a timeout.

Parsing (MIME, charsets, HTML to text) and finding the visible text (quote and signature
stripping) are the work on a message whose cost its sender controls. They run in a
long-lived worker process, so that one message costs at most its budget:

* time: the processor waits `seconds` (wall clock) for the answer; past that the worker
  is killed and the message quarantined "parse: took longer than 20 s to parse";
* memory: the worker's address space is limited (RLIMIT_AS) to what it had when it
  started plus `memory_mb`; a message that needs more fails with MemoryError inside the
  worker and is quarantined "parse: needed more than 512 MB". After a message that
  left the worker grown by more than half its budget (freed memory a C allocator keeps),
  the worker retires and a fresh one takes the next message.
* a worker that dies some other way (killed by the kernel's OOM killer, a crash in a C
  library) raises `WorkerDied`, a `TryAgain`: the processor tries the message again,
  alone, up to `[processing] max_attempts` times before it gives it up
  (postdesk/ingest/process.py), and a new worker is started for it.

The worker receives raw bytes and returns a `ReadMessage` (the parsed message and its
visible text), a plain picklable value, so the same worker can later be one of a pool fed
by the fetcher. A worker is a Python process of its own (`python -c`, this module's
`_child_main`), talking over a socket pair: it inherits none of the main process's
threads, locks or database connections, and starting it is not waited for: what is sent
first waits in the socket while it imports the parser (about 0.4 s), which
`warm_up` begins when a pass begins, so that it happens while mailboxes are fetched.
(Not `multiprocessing`: its "forkserver" start re-runs the main script in every worker
on Python 3.11, since its preloading of `__main__` never takes effect; for the
`postdesk` command that was the whole command-line interface, about 1 s a worker,
always in front of the first message.) One worker per budget is shared by everything in
the process (`shared_worker`), used by one caller at a time.

The worker ignores SIGTERM and SIGINT: on `systemctl stop` the service finishes the
message in hand, and the worker with it, then exits; the worker sees its pipe close and
exits too. Should the main process be killed while the worker works, an alarm set per
message ends the worker at twice the time budget.

Left in the main process: the reading of an agent's reply for the relay
(`quotes.reply_text`, notify/relay.py), which only mail carrying a validly signed agent
token reaches, so a stranger cannot make it run.

The `task` is the `module:function` the worker runs on each message; tests swap in a
function that misbehaves on cue (postdesk/testing/poison.py).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import logging
import math
import resource
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import MappingProxyType
from typing import Any

from postdesk.config import LimitSettings
from postdesk.errors import ParseError, PostdeskError
from postdesk.ingest.child import start_child
from postdesk.ingest.parse import DEFAULT_LIMITS, ParsedMessage, parse_message
from postdesk.ingest.quotes import visible_text

log = logging.getLogger(__name__)

DEFAULT_TASK = "postdesk.ingest.worker:read_message"
MB = 1024 * 1024


class TryAgain(PostdeskError):
    """A failure that may not be the message's doing: try it again (up to a limit)."""


class WorkerDied(TryAgain):
    """The worker process died while reading a message."""


class WorkerUnavailable(PostdeskError):
    """No parse worker can be started (no memory or processes left): the pass stops,
    as for a database outage; the messages are not at fault."""


class BudgetExceeded(PostdeskError):
    """A message needed more time or memory than its budget; the reason is one line."""


@dataclass(frozen=True)
class ReadMessage:
    """What the worker makes of a message's raw bytes."""

    parsed: ParsedMessage
    visible: str  # the text without quoted history and signature (ingest/quotes.py)


def read_message(raw: bytes, limits: LimitSettings = DEFAULT_LIMITS) -> ReadMessage:
    """Parse a message and find its visible text (in-process; the worker runs this)."""
    parsed = parse_message(raw, limits)
    return ReadMessage(*capped_visible(parsed, limits.max_text_chars))


def capped_visible(parsed: ParsedMessage, max_chars: int) -> tuple[ParsedMessage, str]:
    """The visible text of `parsed`, cut to `max_chars` ([limits] max_text_chars); a cut
    is recorded with the parser's defects, which the message row keeps."""
    visible = visible_text(parsed.text, parsed.html)
    if len(visible) <= max_chars:
        return parsed, visible
    note = f"visible text cut to {max_chars:,} characters ([limits] max_text_chars)"
    return dataclasses.replace(parsed, defects=(*parsed.defects, note)), visible[:max_chars]


@dataclass(frozen=True)
class Budget:
    """What one message may cost: wall-clock seconds and memory beyond the worker's own."""

    seconds: float = 20.0
    memory_mb: int = 512
    task: str = DEFAULT_TASK
    limits: LimitSettings = DEFAULT_LIMITS  # how much of a message is read ([limits])


def _load_task(task: str) -> Callable[[bytes, LimitSettings], ReadMessage]:
    module, _, name = task.partition(":")
    function: Callable[[bytes, LimitSettings], ReadMessage] = getattr(
        importlib.import_module(module), name
    )
    return function


def _address_space() -> int:
    """This process's virtual memory size in bytes (what RLIMIT_AS limits)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a MemoryError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _wire(result: ReadMessage) -> ReadMessage:
    """The result in a picklable form (a read-only headers view is not picklable)."""
    parsed = dataclasses.replace(result.parsed, headers=dict(result.parsed.headers))
    return ReadMessage(parsed, result.visible)


def _unwire(result: ReadMessage) -> ReadMessage:
    """The result as the parser made it: headers read-only again. The message was just
    unpickled and nothing else holds it, so its frozen field is set in place, as a
    dataclass's own __init__ does (dataclasses.replace, a copy, cost ~8 us a message)."""
    parsed = result.parsed
    object.__setattr__(parsed, "headers", MappingProxyType(parsed.headers))
    return result


def _answer(
    task: Callable[[bytes, LimitSettings], ReadMessage],
    raw: bytes,
    limits: LimitSettings,
    backstop: int,
) -> tuple[str, Any]:
    """Read one message in the worker: ("ok", result), ("parse", reason), ("memory", None)
    or ("error", what)."""
    signal.alarm(backstop)
    try:
        return ("ok", _wire(task(raw, limits)))
    except ParseError as exc:
        return ("memory", None) if _out_of_memory(exc) else ("parse", str(exc))
    except MemoryError:
        return ("memory", None)
    except Exception as exc:
        if _out_of_memory(exc):
            return ("memory", None)
        return ("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])
    finally:
        signal.alarm(0)


# How often the worker checks whether it has grown enough to retire (see _serve).
CHECK_EVERY = 16
CHECK_AFTER_BYTES = 256 * 1024


def _serve(conn: Connection, budget: Budget) -> None:
    """The worker's loop. Requests: ("read", [raw, ...]) or ("cancel",). Each raw gets an
    answer (status, value, retiring), in the order sent, also when a read comes while
    earlier ones are in hand (the processor keeps a few messages ahead); a cancel (seen
    between two messages) drops those not begun and is answered ("cancelled", None,
    False)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task = _load_task(budget.task)
    start = _address_space()
    limit = budget.memory_mb * MB
    if start:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        wanted = start + limit
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    backstop = max(1, math.ceil(budget.seconds * 2))
    pending: deque[bytes] = deque()
    served = 0
    while True:
        try:
            if not pending:
                _take(conn, conn.recv(), pending)
            while pending and conn.poll(0):  # more sent ahead, or a cancel, meanwhile
                _take(conn, conn.recv(), pending)
        except (EOFError, OSError):
            return  # the main process closed the pipe, or is gone
        if not pending:
            continue
        raw = pending.popleft()
        answer = _answer(task, raw, budget.limits, backstop)
        served += 1
        # The worker's size is read from /proc every CHECK_EVERY messages and after any
        # large one (a read costs about as much as a twentieth of a message's parse);
        # one message alone cannot pass RLIMIT_AS, which answers "memory".
        check = served % CHECK_EVERY == 0 or len(raw) >= CHECK_AFTER_BYTES
        retiring = answer[0] == "memory" or (
            start and check and _address_space() - start > limit // 2
        )
        try:
            conn.send((*answer, bool(retiring)))
        except MemoryError:
            with contextlib.suppress(OSError):
                conn.send(("memory", None, True))
            return
        except OSError:
            # The main process went away (Ctrl-C, a crash) while this message was read:
            # nobody waits for the answer, and a traceback here would only alarm people.
            return
        if retiring:
            return


def _take(conn: Connection, request: tuple[Any, ...], pending: deque[bytes]) -> None:
    """A request, in the order sent: a read queues its messages behind those waiting; a
    cancel drops those not begun and is answered."""
    if request[0] == "cancel":
        pending.clear()
        conn.send(("cancelled", None, False))
    else:
        pending.extend(request[1])


def _child_main() -> None:
    """The worker process: its socket is file descriptor argv[1]; the budget comes first."""
    conn = Connection(int(sys.argv[1]))
    try:
        budget = conn.recv()
    except (EOFError, OSError):
        return
    _serve(conn, budget)


def _start_process(budget: Budget) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a worker process and send it its budget; neither waits for it to be ready."""
    try:
        return start_child(__name__, budget)
    except OSError as exc:
        raise WorkerUnavailable(f"cannot start the parse worker: {exc}") from exc


def warm_up(budget: Budget) -> None:
    """Start this thread's worker for `budget` now, if it is not running, and return:
    it imports the parser (about 0.4 s) while the caller does other work (the service
    calls this when a pass begins, before fetching). A failure here is left to the
    first read to report."""
    with contextlib.suppress(WorkerUnavailable):
        shared_worker(budget).start()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# Raw mail sent ahead of its turn, at most (see ParseWorker.prefetch). An answer is at
# most a few times its message (text, HTML, visible text, attachments, headers), so the
# answers to this much stay well inside a socket's buffer (about 200 KB on Linux).
PREFETCH_BYTES = 32 * 1024


class ParseWorker:
    """One worker process reading messages under `budget`; restarted when it dies or overruns.

    `read(raw)` answers one message. `prefetch(raws)` sends a batch ahead in one request,
    so the worker reads them while the caller does other work (the processor's database
    work on the messages before): a later `read` of the next of them only collects its
    answer. The time budget counts from when the caller starts waiting for an answer.
    Whatever was prefetched and is not read next is cancelled. Thread-safe: callers take
    turns, but each thread does best with its own worker (`shared_worker`).
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ahead: deque[bytes] = deque()  # sent and not answered yet, in order
        self.started = 0  # workers started, for logs and tests

    def read(self, raw: bytes) -> ReadMessage:
        """Parse `raw` in the worker; raises ParseError, BudgetExceeded or WorkerDied."""
        with self._lock:
            if self._ahead and self._ahead[0] is raw:
                self._ahead.popleft()
                return self._collect()
            self._cancel()
            if not self._send([raw]):
                self._send([raw])  # it had died while idle: a new one takes it
            return self._collect()

    def prefetch(self, raws: Sequence[bytes]) -> None:
        """Send `raws` ahead, to be read in this order. When what is already ahead and
        `raws` begin with the same objects, only what `raws` adds is sent and what is ahead
        stays: a caller keeps a window of messages ahead by calling this again before each
        read. Anything else ahead is cancelled first.

        At most PREFETCH_BYTES of raw mail is ahead at once, and a message that does not
        fit waits to be sent by its `read` (when nothing is ahead). Both sides write to
        one socket pair: with more in flight, the worker can block writing answers the
        caller has not collected while the caller blocks writing a large message the
        worker is not reading, and neither ever moves again (seen with a 237 KB hostile
        message behind eight answered ones)."""
        with self._lock:
            ahead = self._ahead
            if all(a is r for a, r in zip(ahead, raws, strict=False)):
                if len(ahead) > len(raws) // 2:
                    # Enough in flight: the window is refilled once half of it is read,
                    # so each send carries several messages (a send costs ~20 us here
                    # and as much in the worker, whatever it carries).
                    return
                more = list(raws[len(ahead) :])
            else:
                self._cancel()
                more = list(raws)
            room = PREFETCH_BYTES - sum(len(raw) for raw in ahead)
            fits = 0
            for raw in more:
                if len(raw) > room:
                    break
                room -= len(raw)
                fits += 1
            more = more[:fits]
            if more and self._send(more):
                ahead.extend(more)

    def _send(self, raws: list[bytes]) -> bool:
        conn = self._ensure()
        try:
            conn.send(("read", raws))
        except OSError:
            self._stop(kill=True)
            return False
        return True

    def _collect(self) -> ReadMessage:
        """The answer to the oldest message sent."""
        conn = self._conn
        budget = self.budget
        if conn is None:
            raise WorkerDied("the parse worker died (its pipe is closed)")
        if not conn.poll(budget.seconds):
            self._stop(kill=True)
            raise BudgetExceeded(f"took longer than {budget.seconds:g} s to parse")
        try:
            status, value, retiring = conn.recv()
        except (EOFError, OSError):
            code = self._stop(kill=False)
            raise WorkerDied(f"the parse worker died ({_describe_exit(code)})") from None
        if retiring:
            self._stop(kill=False)
        if status == "ok":
            result: ReadMessage = value
            return _unwire(result)
        if status == "parse":
            raise ParseError(str(value))
        if status == "memory":
            raise BudgetExceeded(f"needed more than {budget.memory_mb} MB")
        raise ParseError(f"internal error: {value}")

    def _cancel(self) -> None:
        """Drop what was prefetched and not read; the worker skips what it has not begun."""
        conn = self._conn
        if not self._ahead or conn is None:
            self._ahead.clear()
            return
        self._ahead.clear()
        try:
            conn.send(("cancel",))
            while True:
                if not conn.poll(self.budget.seconds):
                    self._stop(kill=True)
                    return
                status, _value, retiring = conn.recv()
                if status == "cancelled":
                    return
                if retiring:
                    self._stop(kill=False)
                    return
        except (EOFError, OSError):
            self._stop(kill=True)

    def start(self) -> None:
        """Start the worker process unless it runs; does not wait for it to be ready."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        # No liveness check here (a system call on every send): a worker that died is
        # found out by the socket itself: sending raises OSError (the caller starts
        # another) and collecting sees EOF (WorkerDied).
        if self._conn is not None and self._process is not None:
            return self._conn
        self._stop(kill=True)
        self._process, self._conn = _start_process(self.budget)
        self.started += 1
        return self._conn

    def _stop(self, *, kill: bool) -> int | None:
        """End the worker (SIGKILL if `kill`, else wait for it); return its exit code."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._ahead.clear()
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if kill and process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode

    @property
    def pid(self) -> int | None:
        """The worker process's pid while one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def close(self) -> None:
        """Stop the worker; a later read starts a new one."""
        with self._lock:
            self._stop(kill=False)


_shared: dict[tuple[Budget, int], ParseWorker] = {}
_shared_lock = threading.Lock()


def shared_worker(budget: Budget) -> ParseWorker:
    """This thread's worker for `budget`, made on first use and kept for the process."""
    key = (budget, threading.get_ident())
    with _shared_lock:
        worker = _shared.get(key)
        if worker is None:
            worker = _shared[key] = ParseWorker(budget)
        return worker


@atexit.register
def _close_shared() -> None:
    for worker in list(_shared.values()):
        worker.close()


__all__ = [
    "Budget",
    "BudgetExceeded",
    "ParseWorker",
    "ReadMessage",
    "TryAgain",
    "WorkerDied",
    "WorkerUnavailable",
    "read_message",
    "shared_worker",
]
