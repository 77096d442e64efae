"""A screenshot of `postdesk qa score` for the README: a real session, a real terminal.

Writes a small QA database (one solved Persian ticket with an agent's reply and an
internal note, sampled for a reviewer with the default scorecard), runs `postdesk qa
score` in a pseudo-terminal (pexpect), answers two criteria, feeds everything the program
wrote into a terminal emulator (pyte) of the same size, and draws that screen, cell by
cell, in DejaVu Sans Mono with Pillow. Lines with Persian are laid out as one run, shaped
and right to left (Pillow's raqm layout), as a terminal with bidi support shows them.

Usage: .venv/bin/python scripts/qa_score_screenshot.py docs/qa-score.png
(pyte is a development dependency: `pip install -e '.[dev]'`.)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib
import pyte
from PIL import Image, ImageDraw, ImageFont, features

from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.cli import Cli
from postdesk.testing.qa import SolvedTicket, add_solved_tickets, qa_config
from postdesk.testing.terminal import spawn_postdesk

COLUMNS, ROWS = 100, 27
CELL_W, CELL_H, FONT_SIZE = 9, 18, 15
BACKGROUND, FOREGROUND = (30, 30, 30), (220, 220, 220)
COLOURS = {
    "black": (30, 30, 30), "red": (224, 108, 117), "green": (152, 195, 121),
    "brown": (229, 192, 123), "yellow": (229, 192, 123), "blue": (97, 175, 239),
    "magenta": (198, 120, 221), "cyan": (86, 182, 194), "white": (220, 220, 220),
    "brightblack": (140, 140, 140),
}  # fmt: skip
# pyte gives U+200C (zero-width non-joiner, inside many Persian words) no cell of its own
# and loses what follows; it stands in as a private-use character and is put back.
ZWNJ, STAND_IN = "\u200c", "\ue000"


def _colour(name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if name == "default":
        return default
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return (int(name[0:2], 16), int(name[2:4], 16), int(name[4:6], 16))
    return COLOURS.get(name, COLOURS.get(name.removeprefix("bright"), default))


def session_output(directory: Path) -> str:
    """Everything `qa score` wrote to its terminal up to the third question."""
    url = f"sqlite:///{directory / 'postdesk.db'}"
    db = Database(url)
    upgrade(db)
    add_solved_tickets(
        db,
        [
            SolvedTicket(
                text="سلام، سفارش ۴۵۱۲ من هنوز نرسیده است. لطفاً پیگیری کنید.",
                reply="Hello Neda, the courier says your parcel arrives tomorrow. Sara",
                note="courier confirmed the delay at the depot",
                csat=4,
            )
        ],
    )
    config = qa_config(directory, url)
    Cli(config)(
        "qa", "sample", "--since", "2026-11-01", "--until", "2026-11-30", "--n", "1",
        "--seed", "1", "--reviewer", "rita@example.com",
    )  # fmt: skip
    child = spawn_postdesk(config, "qa", "score", "--reviewer", "rita@example.com",
                           columns=COLUMNS, rows=ROWS)  # fmt: skip
    shown: list[str] = []
    for wait, key in (("criterion 1 of 7", "4"), ("criterion 2 of 7", "5")):
        child.expect_exact(wait)
        shown.append(child.before + child.after)
        child.send(key)
    child.expect_exact("criterion 3 of 7")
    shown.append(child.before + child.after)
    child.expect(r"q quit")
    shown.append(child.before + child.after)
    child.terminate(force=True)
    return "".join(shown)


def draw(output: str, path: Path) -> None:
    if not features.check("raqm"):
        raise SystemExit("Pillow was built without raqm: Persian cannot be laid out")
    screen = pyte.Screen(COLUMNS, ROWS)
    text = output.replace(ZWNJ, STAND_IN).replace("\n", "\r\n").replace("\r\r\n", "\r\n")
    pyte.Stream(screen).feed(text)
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    regular = ImageFont.truetype(str(fonts / "DejaVuSansMono.ttf"), FONT_SIZE)
    bold = ImageFont.truetype(str(fonts / "DejaVuSansMono-Bold.ttf"), FONT_SIZE)
    sans = ImageFont.truetype(str(fonts / "DejaVuSans.ttf"), FONT_SIZE)
    image = Image.new("RGB", (COLUMNS * CELL_W + 24, ROWS * CELL_H + 24), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for y in range(ROWS):
        line = screen.buffer[y]
        text = "".join(line[x].data for x in range(COLUMNS)).rstrip()
        if any("\u0600" <= ch <= "\u06ff" for ch in text):
            # A line with Persian: laid out as one run, shaped and ordered right to left
            # (Pillow's raqm layout), as a terminal with bidi support shows it.
            indent = len(text) - len(text.lstrip())
            fg = _colour(line[indent].fg, FOREGROUND) if indent < COLUMNS else FOREGROUND
            pen.text((12 + indent * CELL_W, 12 + y * CELL_H),
                     text.strip().replace(STAND_IN, ZWNJ), font=sans, fill=fg)  # fmt: skip
            continue
        for x in range(COLUMNS):
            cell = line[x]
            fg = _colour(cell.fg, FOREGROUND)
            bg = _colour(cell.bg, BACKGROUND)
            if cell.reverse:
                fg, bg = bg, fg
            left, top = 12 + x * CELL_W, 12 + y * CELL_H
            if bg != BACKGROUND:
                pen.rectangle((left, top, left + CELL_W, top + CELL_H), fill=bg)
            if cell.data.strip():
                pen.text((left, top), cell.data, font=bold if cell.bold else regular, fill=fg)
    image.save(path, optimize=True)


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/qa-score.png")
    with tempfile.TemporaryDirectory() as directory:
        draw(session_output(Path(directory)), target)
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
