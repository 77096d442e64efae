"""Benchmark: `postdesk import` of hostile mail, each message's time and peak memory.

The hostile messages are postdesk/testing/hostile.py's, at full size by default (`--scale
1`: the wide table, <pre> of spaces, 60 KB X-Failed-Recipients, 1.2 MB and 9 MB of nested
<blockquote>s, a 20 MB HTML mail, 20,000 parts, a 26 MB message, ...). Each is imported on
its own, in a fresh Python process with a fresh SQLite database, the way `postdesk import`
does it (store, then parse, thread and file into a ticket or quarantine); the time is that
import call's, the memory the process's peak RSS (interpreter and libraries included).
The process runs under an address-space limit (`--memory-limit`, 3 GB) and a timeout, so
the old code's worst cases cannot take the machine down.

The comparison point, in the same run: ordinary support mail (postdesk.testing.mailgen)
imported one message per call the same way, its mean and slowest per-message time and peak
memory. Then the whole hostile folder in one import, as an operator would run it (for
this checkout only).

`--old PATH` runs the same messages against another checkout (e.g. one from before the
limits, `git archive <commit> postdesk | tar -x -C PATH`) for a before/after table; its
slow cases are cut off at `--timeout` seconds. `--old-only` measures only that one.

    .venv/bin/python bench/hostile.py [--scale 1.0] [--ordinary 100] [--timeout 120]
        [--old /path/to/older/checkout]

Targets (issue 11): no message over 5 s, peak memory under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 5.0
TARGET_MB = 500.0


# --- the worker: one fresh process per measurement, one JSON line out ------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Import each of spec["files"] (one call each) or spec["folder"] (one call) and time it."""
    limit = int(spec["memory_limit_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from sqlalchemy import select

    from postdesk.cli import main
    from postdesk.config import load_settings
    from postdesk.daemon import Service, import_messages
    from postdesk.ingest.sources import read_messages
    from postdesk.models import RawMessage
    from postdesk.models.db import Database

    directory = Path(spec["directory"])
    config = directory / "postdesk.toml"
    config.write_text(
        f'data_dir = "data"\n\n[database]\nurl = "sqlite:///{directory}/postdesk.sqlite"\n',
        encoding="utf-8",
    )
    main(["-c", str(config), "init"], standalone_mode=False)
    settings = load_settings(config)
    db = Database(settings.database.url)
    service = Service(settings, db)
    times: list[float] = []
    try:
        for path in spec["files"]:
            start = time.perf_counter()
            import_messages(service, read_messages(path))
            times.append(time.perf_counter() - start)
        with db.read_session() as session:
            outcomes = [
                [status, reason]
                for status, reason in session.execute(
                    select(RawMessage.status, RawMessage.reason).order_by(RawMessage.id)
                )
            ]
    finally:
        db.dispose()
    return {
        "times": times,
        "outcomes": outcomes,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_worker(
    files: list[Path], *, code: Path, timeout: float, memory_limit_mb: int
) -> dict[str, Any]:
    """Run worker() in a fresh interpreter importing postdesk from `code`."""
    with tempfile.TemporaryDirectory(prefix="postdesk-hostile-") as tmp:
        spec = {
            "files": [str(path) for path in files],
            "directory": tmp,
            "memory_limit_mb": memory_limit_mb,
        }
        env = {**os.environ, "PYTHONPATH": str(code), "POSTDESK_CONFIG": ""}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"> {timeout:.0f} s (killed)", "wall": time.perf_counter() - start}
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            if "MemoryError" in done.stderr:
                last = f"> {memory_limit_mb} MB (MemoryError)"
            return {"error": last[:100], "wall": time.perf_counter() - start}
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


# --- the run ------------------------------------------------------------------------------


def _write_mail(directory: Path, scale: float, ordinary: int) -> tuple[list[Path], list[Path]]:
    from postdesk.testing.hostile import hostile_mail, write_folder
    from postdesk.testing.mailgen import generate

    hostile = write_folder(directory / "hostile", hostile_mail(scale))
    plain_dir = directory / "ordinary"
    plain_dir.mkdir()
    plain = []
    for index, mail in enumerate(generate(ordinary, seed=11)):
        path = plain_dir / f"{index:05d}.eml"
        path.write_bytes(mail.raw)
        plain.append(path)
    return hostile, plain


def _outcome(result: dict[str, Any]) -> str:
    if "error" in result:
        return str(result["error"])
    status, reason = result["outcomes"][-1]
    return "ticket" if status == "processed" else f"quarantined: {reason}"[:60]


def measure(
    hostile: list[Path], plain: list[Path], code: Path, args: argparse.Namespace, *, whole: bool
) -> dict[str, Any]:
    rows = []
    for path in hostile:
        result = run_worker(
            [path], code=code, timeout=args.timeout, memory_limit_mb=args.memory_limit
        )
        seconds = result["times"][0] if "times" in result else None
        rows.append(
            {
                "name": path.stem,
                "mb": path.stat().st_size / 1e6,
                "seconds": seconds,
                "peak_mb": result.get("peak_mb"),
                "outcome": _outcome(result),
            }
        )
        shown = f"{seconds:7.2f} s" if seconds is not None else "   —     "
        peak = f"{result['peak_mb']:7.0f} MB" if "peak_mb" in result else "   —      "
        print(f"  {path.stem:26} {rows[-1]['mb']:7.2f} MB {shown} {peak}  {rows[-1]['outcome']}")
    ordinary = run_worker(
        plain, code=code, timeout=args.timeout * 10, memory_limit_mb=args.memory_limit
    )
    together = (
        run_worker(
            [hostile[0].parent],
            code=code,
            timeout=args.timeout * 10,
            memory_limit_mb=args.memory_limit,
        )
        if whole
        else None
    )
    return {"rows": rows, "ordinary": ordinary, "whole": together}


def report(label: str, figures: dict[str, Any]) -> None:
    rows = figures["rows"]
    timed = [row for row in rows if row["seconds"] is not None]
    failed = [row for row in rows if row["seconds"] is None]
    slowest = max(timed, key=lambda row: row["seconds"]) if timed else None
    peaks = [row["peak_mb"] for row in rows if row["peak_mb"] is not None]
    print(f"\n{label}")
    if slowest is not None:
        ok = "ok" if slowest["seconds"] <= TARGET_SECONDS and not failed else "OVER"
        print(
            f"  slowest hostile message: {slowest['name']} {slowest['seconds']:.2f} s "
            f"(target {TARGET_SECONDS:g} s: {ok})"
        )
    for row in failed:
        print(f"  did not finish: {row['name']}: {row['outcome']}")
    if peaks:
        peak = max(peaks)
        ok = "ok" if peak <= TARGET_MB and not failed else "OVER"
        print(f"  peak memory, one hostile message per process: {peak:.0f} MB ({ok})")
    ordinary = figures["ordinary"]
    if "times" in ordinary:
        times = ordinary["times"]
        print(
            f"  comparison, ordinary mail ({len(times)} messages, one per import call): "
            f"mean {sum(times) / len(times) * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms, "
            f"peak {ordinary['peak_mb']:.0f} MB"
        )
    whole = figures["whole"]
    if whole is None:
        return
    if "times" in whole:
        print(
            f"  the whole hostile folder in one import: {whole['times'][0]:.1f} s, "
            f"peak {whole['peak_mb']:.0f} MB"
        )
    else:
        print(f"  the whole hostile folder in one import: {whole['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--ordinary", type=int, default=100, help="ordinary messages")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per message")
    parser.add_argument("--memory-limit", type=int, default=3072, help="MB per process")
    parser.add_argument("--old", type=Path, help="another checkout to compare with")
    parser.add_argument("--old-only", action="store_true", help="measure only --old")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    with tempfile.TemporaryDirectory(prefix="postdesk-hostile-mail-") as tmp:
        hostile, plain = _write_mail(Path(tmp), args.scale, args.ordinary)
        total = sum(path.stat().st_size for path in hostile) / 1e6
        print(f"{len(hostile)} hostile messages ({total:.1f} MB), scale {args.scale:g}")
        figures = None
        if not (args.old_only and args.old is not None):
            print(f"this checkout ({ROOT}):")
            figures = measure(hostile, plain, ROOT, args, whole=True)
        old = None
        if args.old is not None:
            print(f"the other checkout ({args.old}):")
            # Not the whole folder: the old code's slow cases would each run to the timeout.
            old = measure(hostile, plain, args.old.resolve(), args, whole=False)
        if figures is not None:
            report(f"this checkout ({ROOT})", figures)
        if old is not None:
            report(f"the other checkout ({args.old})", old)


if __name__ == "__main__":
    main()
