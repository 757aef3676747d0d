"""The outcome chart: stacked bars of succeeded / failed / dead per time bucket, as SVG.

Drawn on the server from ``queue.history()`` so the page needs no chart script;
every text in it goes through :func:`markupsafe.escape`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from exqueue.storage import HistoryCount

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 180, 44, 22, 8
KINDS = ("succeeded", "failed", "dead")
RANGES = {"hour": (60, 60), "day": (24 * 60, 3600)}  # minutes shown, bucket seconds


@dataclass(frozen=True)
class Bucket:
    start: int
    succeeded: int = 0
    failed: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.dead


def buckets(rows: Sequence[HistoryCount], now: float, span: str) -> list[Bucket]:
    """The history summed over worker types into the range's buckets, oldest first."""
    minutes, size = RANGES[span]
    last = int(now) // size * size
    count = minutes * 60 // size
    starts = [last - size * (count - 1 - i) for i in range(count)]
    sums = {start: [0, 0, 0] for start in starts}
    for row in rows:
        start = row.minute // size * size
        if start in sums:
            tally = sums[start]
            tally[0] += row.succeeded
            tally[1] += row.failed
            tally[2] += row.dead
    return [Bucket(start, *sums[start]) for start in starts]


def _label(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M")


def svg(series: Sequence[Bucket], title: str) -> Markup:
    """Stacked bars for ``series``, with a y scale and a few UTC time labels."""
    top = max((b.total for b in series), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" '
        f'x2="{WIDTH - 4}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    every = max(len(series) // 6, 1)
    for index, bucket in enumerate(series):
        x = LEFT + index * step
        base = TOP + plot_h
        for kind in KINDS:
            value = getattr(bucket, kind)
            if not value:
                continue
            height = value / top * plot_h
            base -= height
            parts.append(
                f'<rect class="{kind}" x="{x + 0.5:.1f}" y="{base:.1f}" '
                f'width="{max(step - 1, 1):.1f}" height="{height:.1f}">'
                f"<title>{_label(bucket.start)} UTC: {value} {kind}</title></rect>"
            )
        if index % every == 0:
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}">{_label(bucket.start)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
