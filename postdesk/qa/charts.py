"""The chart of `postdesk qa report --plot FILE.png` (matplotlib, Agg: no display needed).

Three panels: the IQS per ISO week with its 95% interval as a band, then the IQS per
agent and per criterion as bars with their intervals. Criteria with a Persian title show
it under the English one. Matplotlib draws text left to right, glyph by glyph, so Persian
is first shaped (`arabic_reshaper`: each letter's joined form, the Persian letters and
the zero-width non-joiner included) and put in visual order (`python-bidi`, the Unicode
bidirectional algorithm). The font is DejaVu Sans, shipped with matplotlib, which has
every Arabic-script glyph Persian needs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import arabic_reshaper
from bidi import get_display
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from postdesk.files import write_atomically

FONT = "DejaVu Sans"
WIDTH_IN, DPI = 9.0, 100


def visual(text: str) -> str:
    """`text` as matplotlib must be given it: Arabic-script runs shaped and in visual
    (right-to-left) order; other text as it is."""
    if not any("\u0600" <= ch <= "\u06ff" for ch in text):
        return text
    return "\n".join(str(get_display(arabic_reshaper.reshape(line))) for line in text.split("\n"))


def _errors(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    return [
        [r["iqs"] - r["ci_low"] for r in rows],
        [r["ci_high"] - r["iqs"] for r in rows],
    ]


def _bars(axes: Any, rows: Sequence[dict[str, Any]], labels: Sequence[str], title: str) -> None:
    positions = list(range(len(rows)))
    axes.barh(
        positions,
        [r["iqs"] for r in rows],
        xerr=_errors(rows),
        color="#4c78a8",
        ecolor="#333333",
        capsize=3,
    )
    axes.set_yticks(positions, labels=[visual(label) for label in labels])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_title(title, loc="left", fontsize=10)
    for position, r in zip(positions, rows, strict=True):
        axes.text(2, position, f"{r['iqs']:.0f} (n={r['n']})", va="center", color="white")


def render(report: dict[str, Any]) -> bytes:
    """The report's chart as PNG bytes."""
    with rc_context({"font.family": FONT}):
        return _render(report)


def _render(report: dict[str, Any]) -> bytes:
    weeks = report["by_week"]
    agents = report["by_agent"]
    criteria = report["by_criterion"]
    tall = max(len(agents), len(criteria) * 1.6, 3)
    figure = Figure(figsize=(WIDTH_IN, 3.2 + 0.4 * tall), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 2, height_ratios=[3.0, 0.4 * tall])
    trend = figure.add_subplot(grid[0, :])
    name = report["scorecard"]["name"]
    overall = report["iqs"]
    heading = f"IQS, scorecard {name}"
    if overall:
        heading += (
            f": {overall['iqs']:.1f} [{overall['ci_low']:.1f}, {overall['ci_high']:.1f}]"
            f", {overall['n']} tickets"
        )
    figure.suptitle(heading, fontsize=12, fontfamily=FONT)
    x = list(range(len(weeks)))
    trend.fill_between(
        x,
        [w["ci_low"] for w in weeks],
        [w["ci_high"] for w in weeks],
        color="#4c78a8",
        alpha=0.2,
        label="95% interval",
    )
    trend.plot(x, [w["iqs"] for w in weeks], marker="o", color="#4c78a8", label="IQS")
    trend.set_xticks(x, labels=[w["group"] for w in weeks])
    trend.set_ylim(0, 100)
    trend.set_ylabel("IQS (0-100)")
    trend.set_title("per week of resolution (ISO week)", loc="left", fontsize=10)
    trend.legend(loc="lower left")
    trend.grid(axis="y", alpha=0.3)
    if agents:
        _bars(figure.add_subplot(grid[1, 0]), agents, [a["group"] for a in agents], "per agent")
    if criteria:
        labels = [
            f"{c['title']}\n{c['title_fa']}" if c.get("title_fa") else c["title"] for c in criteria
        ]
        _bars(figure.add_subplot(grid[1, 1]), criteria, labels, "per criterion")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_chart(report: dict[str, Any], path: Path) -> None:
    """Render the chart and write it to `path` (atomically: never half a file)."""
    write_atomically(path, render(report))
    path.chmod(0o644)  # a picture to share, not a secret (the temporary file was 0600)
