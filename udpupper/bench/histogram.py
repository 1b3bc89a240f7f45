"""Latency you can see: log-scale buckets, a terminal bar chart, a PNG.

Built once, at the end of a run, from the bench's counts by fine bucket
(:mod:`udpupper.latency`, 1% wide): nothing is added per reply.
Ten buckets a decade (the R10 series: 1, 1.25, 1.6, 2, ... 8), so a bucket is
about 25% wide wherever the latencies fall, from microseconds to seconds.
"""

from __future__ import annotations

import math
import os
import shutil
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

STEPS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)
MARKS = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))
MARKS_SHOWN = (*(name for name, _ in MARKS), "max")  # in the chart, in order
PLOT_MISSING = (
    "--plot needs matplotlib: in a checkout, pip install '.[plot]'; "
    "beside an installed wheel or sdist, pip install matplotlib in its venv"
)


def edges_between(low: float, high: float) -> list[float]:
    """Bucket edges (in the unit given) from at or below ``low`` to above ``high``."""
    decade = math.floor(math.log10(max(low, 1e-3)))
    edges: list[float] = []
    while not edges or edges[-1] <= high:
        edges.extend(round(step * 10.0**decade, 6) for step in STEPS)
        decade += 1
    first = max(i for i, edge in enumerate(edges) if edge <= max(low, edges[0]))
    last = next(i for i, edge in enumerate(edges) if edge > high)
    return edges[first : last + 1]


def percentile(ordered: Sequence[float], share: float) -> float:
    """The value below which ``share`` of ``ordered`` lies (the bench's rule)."""
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Histogram:
    """``counts[i]`` values in ``[edges[i], edges[i + 1])`` microseconds."""

    edges: list[float]
    counts: list[int]
    marks: dict[str, float]  # p50 ... max, in microseconds

    @classmethod
    def of(cls, ordered_us: Sequence[float]) -> Histogram:
        """The histogram of latencies in microseconds, sorted."""
        return cls.of_weighted([(value, 1) for value in ordered_us])

    @classmethod
    def of_weighted(cls, pairs: Sequence[tuple[float, int]]) -> Histogram:
        """The histogram of (latency in microseconds, how many), in order:
        the bench's counts by fine bucket (:mod:`udpupper.latency`)."""
        if not pairs:
            return cls([], [], {})
        values = [value for value, _ in pairs]
        below = [0, *accumulate(count for _, count in pairs)]  # how many before each
        edges = edges_between(values[0], values[-1])
        places = [bisect_left(values, edge) for edge in edges]
        places[0], places[-1] = 0, len(values)  # 0 us included: no value is left out
        counts = [below[after] - below[before] for before, after in zip(places, places[1:])]
        total = below[-1]

        def at_rank(rank: int) -> float:
            return values[bisect_right(below, rank) - 1]

        marks = {name: at_rank(min(total - 1, int(share * total))) for name, share in MARKS}
        marks["max"] = values[-1]
        return cls(edges, counts, marks)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def bucket_of(self, value: float) -> int:
        return max(0, min(len(self.counts) - 1, bisect_left(self.edges, value + 1e-9) - 1))

    def as_list(self) -> list[dict]:
        """For ``--json``: one object per bucket."""
        return [
            {"from_us": low, "to_us": high, "count": count}
            for low, high, count in zip(self.edges, self.edges[1:], self.counts)
        ]


def label(us: float) -> str:
    return f"{us:g}" if us < 10 else f"{us:,.0f}"


def render(histogram: Histogram, width: int | None = None, unicode: bool = True) -> list[str]:
    """The chart as lines: bucket, count, a bar scaled to ``width``, marks."""
    if not histogram.counts:
        return ["no latencies to show"]
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    marks: dict[int, list[str]] = {}
    for name, value in histogram.marks.items():
        marks.setdefault(histogram.bucket_of(value), []).append(name)
    edge_width = max(len(label(edge)) for edge in histogram.edges)
    count_width = max(len(f"{count:,}") for count in histogram.counts)
    mark_width = max((len(" ".join(names)) for names in marks.values()), default=0)
    bar_room = max(10, width - (2 * edge_width + 3) - count_width - mark_width - 4)
    tallest = max(histogram.counts)
    lines = [f"{'latency us':>{2 * edge_width + 3}} {'replies':>{count_width}}"]
    for i, count in enumerate(histogram.counts):
        low, high = label(histogram.edges[i]), label(histogram.edges[i + 1])
        span = f"{low:>{edge_width}} - {high:>{edge_width}}"
        bar = bar_of(count / tallest * bar_room, unicode) if count else ""
        lines.append(
            f"{span} {count:>{count_width},} {bar:<{bar_room}} "
            f"{' '.join(marks.get(i, []))}".rstrip()
        )
    return lines


def bar_of(length: float, unicode: bool) -> str:
    """A bar ``length`` cells long, in eighths of a cell; never invisible."""
    if not unicode:
        return "#" * max(1, round(length))
    eighths = max(1, round(length * 8))
    full, rest = divmod(eighths, 8)
    return (
        "\u2588" * full
        + ("", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b", "\u258a", "\u2589")[rest]
    )


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def check_plot_path(path: str) -> str:
    """The PNG's path, if a file can be written there (before a long run)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a file to write")
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write in {folder}")
    if not plot_available():
        raise ValueError(PLOT_MISSING.removeprefix("--plot "))
    return path


PLOT_SIZE = (960, 540)  # pixels
# Each mark's line: a colour of its own (none of them the bars' blue),
# solid to dotted as the tail goes out, so that no label need sit on a line.
MARK_STYLES = {
    "p50": ("#1a1a1a", "-"),
    "p90": ("#7b3294", "--"),
    "p99": ("#d95f02", "--"),
    "p99.9": ("#1b7837", "-."),
    "max": ("#555555", ":"),
}


def plain(value: float, _position=None) -> str:
    """A tick as a plain number (300, 1,000, 0.5), never 3x10^2."""
    if value <= 0:
        return ""
    return label(value)


def figure_of(histogram: Histogram, title: str):
    """The chart as a matplotlib Figure of ``PLOT_SIZE``: bars by log-scale
    latency, each mark a vertical line named, with its value, in a key
    beside the plot (not on it: there a label crosses the lines and bars
    of its neighbours), ticks as plain numbers."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    from matplotlib import pyplot, ticker

    dpi = 100
    figure, axes = pyplot.subplots(figsize=(PLOT_SIZE[0] / dpi, PLOT_SIZE[1] / dpi), dpi=dpi)
    lows, highs = histogram.edges[:-1], histogram.edges[1:]
    axes.bar(
        lows,
        histogram.counts,
        width=[high - low for low, high in zip(lows, highs)],
        align="edge",
        color="#9ecae1",
        edgecolor="white",
        linewidth=0.5,
    )
    axes.set_xscale("log")
    axes.set_yscale("log")  # so the tail's few replies show beside the peak
    counts = [count for count in histogram.counts if count] or [1]
    for axis, low, high in (
        (axes.xaxis, histogram.edges[0], histogram.edges[-1]),
        (axes.yaxis, min(counts), max(counts)),
    ):
        # 1, 2 and 5 a decade where there is room for them; past two
        # decades, the powers of ten alone, or their labels collide.
        crowded = math.log10(max(high, 1e-9) / max(low, 1e-9)) > 2
        subs = (1.0,) if crowded else (1.0, 2.0, 5.0)
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(plain))
        axis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("latency (µs, log scale)")
    axes.set_ylabel("replies (log scale)")
    axes.set_title(title)
    for name, value in histogram.marks.items():
        colour, style = MARK_STYLES.get(name, ("#555555", ":"))
        axes.axvline(
            value, color=colour, linestyle=style, linewidth=1.2, label=f"{name} {label(value)} µs"
        )
    if histogram.marks:
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            frameon=False,
            fontsize=9,
        )
    figure.tight_layout()
    return figure


def plot(histogram: Histogram, path: str, title: str) -> None:
    """The chart (:func:`figure_of`) as a PNG at ``path``."""
    from matplotlib import pyplot

    figure = figure_of(histogram, title)
    try:
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)
