"""Benchmark: classify (human/automatic/bounce/own) next to parse_message, in one run.

classify runs on every inbound message right after parse_message, so its cost is shown
as microseconds per message and as a share of the parse of the same messages, measured
in the same process, best of --repeat passes each.

Messages: the mime-flanker corpus from ../shared/data and CPython's email test messages.

    .venv/bin/python bench/automatic.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from postdesk.errors import ParseError
from postdesk.ingest.automatic import kind_of_mail
from postdesk.ingest.parse import ParsedMessage, parse_message

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OWN = ("support@example.org",)


def corpora() -> dict[str, list[tuple[str, bytes]]]:
    found: dict[str, list[tuple[str, bytes]]] = {}
    flanker = SHARED_DATA / "mime-flanker"
    if flanker.is_dir():
        found["flanker"] = [
            (str(p.relative_to(flanker)), p.read_bytes()) for p in sorted(flanker.rglob("*.eml"))
        ]
    cpython = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    if cpython.is_dir():
        found["cpython"] = [(p.name, p.read_bytes()) for p in sorted(cpython.glob("msg_*.txt"))]
    return found


def best_of(repeat: int, run: Callable[[], None]) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def own_ids(message_id: str) -> bool:
    return message_id.endswith("@postdesk.example.org")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes per group (best is kept)")
    args = parser.parse_args()

    groups = corpora()
    if not groups:
        raise SystemExit(f"no corpus found under {SHARED_DATA} or in the stdlib tests")
    print(
        f"{'corpus':10} {'msgs':>5} {'parse µs/msg':>13} {'classify µs/msg':>16} "
        f"{'share':>7} {'slowest classify':>26}"
    )
    for group, messages in groups.items():
        raws: list[bytes] = []
        parsed: list[tuple[str, ParsedMessage]] = []
        for name, raw in messages:
            try:
                parsed.append((name, parse_message(raw)))
                raws.append(raw)
            except ParseError:
                continue

        def parse_all(raws: list[bytes] = raws) -> None:
            for raw in raws:
                parse_message(raw)

        def classify_all(parsed: list[tuple[str, ParsedMessage]] = parsed) -> None:
            for _, message in parsed:
                kind_of_mail(message, own_message_ids=own_ids, own_addresses=OWN)

        classify_all()  # warm up regex caches and imports
        parse_s = best_of(args.repeat, parse_all)
        classify_s = best_of(args.repeat, classify_all)

        slowest = ("", 0.0)
        for name, message in parsed:
            single = best_of(args.repeat, lambda m=message: _one(m))
            if single > slowest[1]:
                slowest = (name, single)
        count = len(parsed)
        print(
            f"{group:10} {count:5d} {parse_s / count * 1e6:13.1f} "
            f"{classify_s / count * 1e6:16.2f} {classify_s / parse_s:7.2%} "
            f"{slowest[1] * 1e6:8.1f} µs {slowest[0][:16]:>16}"
        )
        kinds = Counter(kind_of_mail(m, own_addresses=OWN).kind for _, m in parsed)
        print(f"{'':10} kinds: {', '.join(f'{k} {n}' for k, n in kinds.most_common())}")


def _one(message: ParsedMessage) -> None:
    kind_of_mail(message, own_message_ids=own_ids, own_addresses=OWN)


if __name__ == "__main__":
    main()
