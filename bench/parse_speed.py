"""Benchmark: postdesk's parse_message against the stdlib floor, in one run.

The floor is what any code reading mail with the modern stdlib API pays at least:
`email.message_from_bytes(raw, policy=email.policy.default)`, then walking the parts and
getting each leaf's content. postdesk's parser does more (charset repair, HTML to text,
address and Message-ID normalization, attachment names) and must still be faster.

Messages: the mime-flanker corpus from ../shared/data, CPython's email test messages, and
generated typical support mail (plain replies, Gmail/Outlook alternatives, HTML-only,
Persian in UTF-8 and windows-1256, PDF and inline-image attachments).

    .venv/bin/python bench/parse_speed.py [--repeat N]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email
import email.policy
import random
import statistics
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from postdesk.errors import ParseError
from postdesk.ingest.htmltext import html_to_text
from postdesk.ingest.parse import parse_message

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def floor(raw: bytes) -> None:
    """The stdlib floor: parse with the default policy, walk, get every leaf's content."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for part in message.walk():
        if part.is_multipart():
            continue
        with contextlib.suppress(LookupError, ValueError, KeyError, AttributeError):
            part.get_content()


def ours(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_message(raw)


def corpus() -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    flanker = SHARED_DATA / "mime-flanker"
    if flanker.is_dir():
        found += [(f"flanker/{p.name}", p.read_bytes()) for p in sorted(flanker.rglob("*.eml"))]
    # CPython's own email test messages, where the interpreter ships its test suite.
    cpython = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    found += [(f"cpython/{p.name}", p.read_bytes()) for p in sorted(cpython.glob("msg_*.txt"))]
    return found


def _trace_headers(rng: random.Random) -> str:
    hops = []
    for hop in range(rng.randint(6, 14)):
        hops.append(
            f"Received: from mx{hop}.relay.example.net (mx{hop}.relay.example.net "
            f"[198.51.100.{hop}])\n\tby mail.example.org (Postfix) with ESMTPS id "
            f"{rng.getrandbits(40):X}\n\tfor <support@example.org>; Mon, 4 Mar 2024 "
            f"10:{hop:02d}:00 +0000 (UTC)\n"
        )
    signature = base64.b64encode(rng.randbytes(256)).decode()
    return (
        "Return-Path: <customer@example.com>\nDelivered-To: support@example.org\n"
        + "".join(hops)
        + "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1;\n"
        + f"\th=from:to:subject:date:message-id; bh=abc=; b={signature[:70]}\n"
        + f"\t{signature[70:140]}\n"
        + "Authentication-Results: mail.example.org; dkim=pass header.d=example.com;\n"
        + "\tspf=pass smtp.mailfrom=customer@example.com\nX-Spam-Status: No, score=-1.2\n"
    )


def _originator(subject: str, n: int) -> str:
    return (
        'From: "Jane Customer" <jane.customer@example.com>\n'
        "To: Support <support@example.org>\n"
        f"Subject: {subject}\n"
        f"Date: Mon, 4 Mar 2024 10:{n % 60:02d}:00 +0100\n"
        f"Message-ID: <CAF{n:08d}.{n * 7919:x}@mail.example.com>\n"
        "In-Reply-To: <ticket-1234-42@example.org>\n"
        "References: <ticket-1234-41@example.org> <ticket-1234-42@example.org>\n"
        "MIME-Version: 1.0\n"
    )


_ENGLISH = (
    "Hello, I was charged twice for my subscription this month and I would like a refund "
    "for the second charge. The order number is 48213 and the card ends in 4242. "
)
_PERSIAN = (
    "سلام، من دیروز سفارش دادم ولی هنوز به دستم نرسیده است. لطفاً پیگیری کنید. "
    "شماره سفارش ۴۸۲۱۳ است و مبلغ دو بار از حساب من کم شده است. "
)


def _html_body(paragraphs: int) -> str:
    blocks = "".join(
        f'<p class="MsoNormal"><span style="font-family:Calibri">{_ENGLISH}'
        f"<b>#{i}</b></span><o:p></o:p></p>\n"
        for i in range(paragraphs)
    )
    table = "<table>" + "".join(
        f"<tr><td>Item {i}</td><td>{i * 3}.00 EUR</td></tr>" for i in range(8)
    )
    return (
        "<html><head><style>p.MsoNormal{margin:0}</style></head><body><div>"
        f"{blocks}{table}</table><ul><li>first</li><li>second</li></ul>"
        '<div style="border-top:solid #E1E1E1 1pt"><b>From:</b> Support</div>'
        f"<blockquote>{blocks}</blockquote></div></body></html>"
    )


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


def generated() -> list[tuple[str, bytes]]:
    """Typical support mail, deterministic."""
    rng = random.Random(20240304)
    messages: list[tuple[str, bytes]] = []
    for n in range(6):
        quoted = "".join(f"> {_ENGLISH}\n" for _ in range(8))
        body = f"{_ENGLISH}\n\nThanks,\nJane\n\nOn Mon, Support wrote:\n{quoted}"
        messages.append(
            (
                "typical/plain-reply",
                (
                    _trace_headers(rng)
                    + _originator("Re: [#1234] Double charge", n)
                    + "Content-Type: text/plain; charset=utf-8; format=flowed\n"
                    + "Content-Transfer-Encoding: 7bit\n\n"
                    + body
                ).encode(),
            )
        )
        html = _html_body(6)
        messages.append(
            (
                "typical/alternative",
                (
                    _trace_headers(rng)
                    + _originator("Re: [#1234] Double charge", n)
                    + 'Content-Type: multipart/alternative; boundary="alt"\n\n--alt\n'
                    + "Content-Type: text/plain; charset=UTF-8\n"
                    + "Content-Transfer-Encoding: quoted-printable\n\n"
                    + (body * 2).replace("=", "=3D")
                    + "\n--alt\nContent-Type: text/html; charset=UTF-8\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(html.encode())
                    + "--alt--\n"
                ).encode(),
            )
        )
        messages.append(
            (
                "typical/html-only",
                (
                    _trace_headers(rng)
                    + _originator("Invoice question", n)
                    + "Content-Type: text/html; charset=utf-8\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(_html_body(4 + n).encode())
                ).encode(),
            )
        )
        persian = _PERSIAN * 4
        messages.append(
            (
                "typical/persian-utf8",
                (
                    _trace_headers(rng)
                    + _originator(
                        "=?UTF-8?B?" + base64.b64encode("پیگیری سفارش".encode()).decode() + "?=", n
                    )
                    + 'Content-Type: multipart/alternative; boundary="b1"\n\n--b1\n'
                    + "Content-Type: text/plain; charset=UTF-8\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(persian.encode())
                    + "\n--b1\nContent-Type: text/html; charset=UTF-8\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(f'<div dir="rtl">{persian}</div>'.encode())
                    + "--b1--\n"
                ).encode(),
            )
        )
        messages.append(
            (
                "typical/persian-1256",
                (
                    _trace_headers(rng)
                    + _originator("=?windows-1256?Q?=D3=E1=C7=E3?=", n)
                    + "Content-Type: text/plain; charset=windows-1256\n"
                    + "Content-Transfer-Encoding: 8bit\n\n"
                ).encode()
                + persian.replace("ی", "ي").replace("۴۸۲۱۳", "48213").encode("cp1256"),
            )
        )
        pdf = b"%PDF-1.4\n" + rng.randbytes(120_000)
        image = b"\x89PNG\r\n\x1a\n" + rng.randbytes(30_000)
        messages.append(
            (
                "typical/attachments",
                (
                    _trace_headers(rng)
                    + _originator("Receipt attached", n)
                    + 'Content-Type: multipart/mixed; boundary="mix"\n\n--mix\n'
                    + 'Content-Type: multipart/related; boundary="rel"\n\n--rel\n'
                    + "Content-Type: text/html; charset=utf-8\n\n"
                    + '<p>See the receipt.</p><img src="cid:logo@x">\n--rel\n'
                    + "Content-Type: image/png\nContent-ID: <logo@x>\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(image)
                    + "--rel--\n\n--mix\n"
                    + 'Content-Type: application/pdf; name="receipt.pdf"\n'
                    + "Content-Disposition: attachment;\n"
                    + " filename*=UTF-8''%D8%B1%D8%B3%DB%8C%D8%AF.pdf\n"
                    + "Content-Transfer-Encoding: base64\n\n"
                    + _b64(pdf)
                    + "--mix--\n"
                ).encode(),
            )
        )
    return messages


def measure(function: Callable[[bytes], None], messages: list[bytes], repeat: int) -> float:
    """Best-of-repeat seconds for one pass over all messages."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in messages:
            function(raw)
        timings.append(time.perf_counter() - start)
    return min(timings)


def _report(group: str, count: int, ours_s: float, floor_s: float) -> None:
    print(
        f"{group:24} {count:5d} {count / ours_s:15.0f} {count / floor_s:12.0f} "
        f"{floor_s / ours_s:7.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes per group (best is kept)")
    args = parser.parse_args()

    groups: dict[str, list[bytes]] = {}
    for name, raw in corpus() + generated():
        group = name.split("/", 1)[0] if not name.startswith("typical/") else name
        groups.setdefault(group, []).append(raw)
    for raws in groups.values():  # warm up imports, codec caches, mimetypes
        for raw in raws:
            ours(raw)
            floor(raw)

    print(f"{'group':24} {'msgs':>5} {'postdesk msg/s':>15} {'floor msg/s':>12} {'speedup':>8}")
    totals: dict[str, list[float]] = {"typical (all)": [0, 0, 0], "all": [0, 0, 0]}
    for group, raws in groups.items():
        ours_s = measure(ours, raws, args.repeat)
        floor_s = measure(floor, raws, args.repeat)
        _report(group, len(raws), ours_s, floor_s)
        for total in ("typical (all)", "all") if group.startswith("typical/") else ("all",):
            totals[total][0] += len(raws)
            totals[total][1] += ours_s
            totals[total][2] += floor_s
    for total, (count, ours_s, floor_s) in totals.items():
        if count:
            _report(total, int(count), ours_s, floor_s)

    print("\nhtml_to_text on Outlook-style HTML:")
    for paragraphs in (8, 16, 40):
        html = _html_body(paragraphs)
        runs = [0.0] * 5
        for index in range(len(runs)):
            start = time.perf_counter()
            for _ in range(20):
                html_to_text(html)
            runs[index] = (time.perf_counter() - start) / 20
        print(f"  {len(html) / 1024:5.1f} KB: {statistics.median(runs) * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
