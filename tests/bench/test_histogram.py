"""Latency you can see: the buckets, the terminal chart, the PNG."""

from __future__ import annotations

import io
import json
import os
import random
import re
import struct
import subprocess
import tempfile
from contextlib import redirect_stderr
from unittest import mock

from twisted.trial import unittest

from tests import tiers
from tests.bench.test_load import BENCH
from tests.processes import Daemon
from udpupper.bench import cli as bench_cli
from udpupper.bench import histogram
from udpupper.bench.histogram import Histogram, edges_between, render

ROW = re.compile(r"^\s*([\d.,]+) - +([\d.,]+) +([\d,]+)")


def png_size(path: str) -> tuple[int, int]:
    """Width and height from a PNG's header, which must be a PNG's."""
    with open(path, "rb") as image:
        head = image.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise AssertionError(f"not a PNG: {head!r}")
    return struct.unpack(">II", head[16:24])


def chart_rows(text: str) -> list[tuple[float, float, int]]:
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            low, high, count = (group.replace(",", "") for group in match.groups())
            rows.append((float(low), float(high), int(count)))
    return rows


@tiers.unit
class BucketTests(unittest.TestCase):
    def test_edges_are_ten_a_decade_and_cover_the_range(self) -> None:
        self.assertEqual(
            edges_between(130, 900), [125, 160, 200, 250, 320, 400, 500, 630, 800, 1000]
        )
        self.assertEqual(edges_between(1, 1), [1, 1.25])
        edges = edges_between(0.7, 2_000_000)
        self.assertLessEqual(edges[0], 0.7)
        self.assertGreater(edges[-1], 2_000_000)
        self.assertEqual(len(edges), 2 + 6 * 10 + 5)  # 0.63, 0.8; 1 to 800k; 1M to 2.5M

    def test_every_value_in_its_bucket_and_none_lost(self) -> None:
        rng = random.Random(7)
        values = sorted([0.0] + [rng.lognormvariate(5, 1) for _ in range(20_000)])
        chart = Histogram.of(values)
        self.assertEqual(chart.total, len(values))
        for value in values[1:]:  # 0 us goes to the first bucket
            i = chart.bucket_of(value)
            self.assertTrue(chart.edges[i] <= value < chart.edges[i + 1], value)
        self.assertEqual(sum(row["count"] for row in chart.as_list()), len(values))
        self.assertEqual(chart.marks["max"], values[-1])
        self.assertEqual(chart.marks["p50"], values[len(values) // 2])

    def test_nothing_to_show(self) -> None:
        self.assertEqual(render(Histogram.of([])), ["no latencies to show"])


@tiers.unit
class ChartTests(unittest.TestCase):
    def setUp(self) -> None:
        self.chart = Histogram.of(sorted([100.0] * 900 + [210.0] * 90 + [5000.0] * 10))

    def test_bars_fit_the_width_and_marks_show(self) -> None:
        for width in (60, 80, 200):
            lines = render(self.chart, width=width)
            self.assertTrue(all(len(line) <= width for line in lines), (width, lines))
            rows = chart_rows("\n".join(lines))
            self.assertEqual(sum(count for _, _, count in rows), 1000)
        lines = render(self.chart, width=80)
        peak = next(line for line in lines if line.lstrip().startswith("100 -"))
        self.assertTrue(peak.endswith("p50"), peak)
        self.assertIn("p99 p99.9 max", lines[-1])
        tallest = max(line.count("\u2588") for line in lines)
        self.assertEqual(peak.count("\u2588"), tallest)

    def test_a_terminal_without_unicode_gets_hashes(self) -> None:
        lines = render(self.chart, width=80, unicode=False)
        self.assertFalse(any("\u2588" in line for line in lines))
        for line in lines[1:]:
            if ROW.match(line).group(3) != "0":
                self.assertIn("#", line)


@tiers.unit
class PlotLayoutTests(unittest.TestCase):
    """The PNG's text: every label inside the picture, none over another,
    the marks' names beside the plot and not on it, ticks as plain numbers."""

    skip = None if histogram.plot_available() else histogram.PLOT_MISSING

    CASES = {
        # marks crowded together, and a far maximum at the right edge
        "crowded": [100.0] * 500 + [101.0] * 400 + [102.0] * 90 + [103.0] * 9 + [250_000.0],
        "wide": [float(10**exponent) for exponent in range(0, 7) for _ in range(10)],
        "one value": [42.0] * 10,
    }

    def texts(self, figure) -> tuple[list, object, object]:
        """The visible text boxes (with their text), the figure's box and the axes'."""
        renderer = figure.canvas.get_renderer()
        (axes,) = figure.axes
        artists = [axes.title, axes.xaxis.label, axes.yaxis.label]
        for axis, (low, high) in ((axes.xaxis, axes.get_xlim()), (axes.yaxis, axes.get_ylim())):
            # the ticks drawn: those within the axis' limits
            artists += [
                tick.label1
                for tick in axis.get_major_ticks()
                if low <= tick.get_loc() <= high and tick.label1.get_text()
            ]
        legend = axes.get_legend()
        artists += legend.get_texts() if legend else []
        boxes = [
            (artist.get_text(), artist.get_window_extent(renderer))
            for artist in artists
            if artist.get_visible() and artist.get_text()
        ]
        return boxes, figure.bbox, axes.get_window_extent(renderer)

    def test_every_label_inside_and_none_over_another(self) -> None:
        from matplotlib import pyplot

        for name, values in self.CASES.items():
            figure = histogram.figure_of(histogram.Histogram.of(sorted(values)), name)
            self.addCleanup(pyplot.close, figure)
            figure.canvas.draw()
            boxes, frame, plot_area = self.texts(figure)
            self.assertEqual((round(frame.width), round(frame.height)), histogram.PLOT_SIZE)
            for text, box in boxes:
                self.assertTrue(
                    box.x0 >= 0 and box.y0 >= 0 and box.x1 <= frame.x1 and box.y1 <= frame.y1,
                    f"{name}: {text!r} leaves the picture: {box}",
                )
                self.assertNotRegex(text, r"\$|10\^|×|e[+-]?\d", f"{name}: tick {text!r}")
            for index, (text, box) in enumerate(boxes):
                for other, other_box in boxes[index + 1 :]:
                    self.assertFalse(box.overlaps(other_box), f"{name}: {text!r} over {other!r}")
            legend = figure.axes[0].get_legend()
            keys = [t.get_text() for t in legend.get_texts()]
            self.assertEqual([key.split()[0] for key in keys], list(histogram.MARKS_SHOWN))
            renderer = figure.canvas.get_renderer()
            for text in legend.get_texts():
                self.assertFalse(
                    text.get_window_extent(renderer).overlaps(plot_area),
                    f"{name}: {text.get_text()!r} on the plot",
                )


@tiers.unit
class PlotOptionTests(unittest.TestCase):
    def parse(self, *argv: str) -> int:
        with redirect_stderr(io.StringIO()) as stderr, self.assertRaises(SystemExit) as ended:
            bench_cli.Options().parseOptions(list(argv))
        self.assertEqual(len(stderr.getvalue().splitlines()), 1, stderr.getvalue())
        self.stderr = stderr.getvalue()
        return ended.exception.code

    def test_without_matplotlib_one_line_saying_how_to_install(self) -> None:
        with mock.patch.object(histogram, "plot_available", return_value=False):
            self.assertEqual(self.parse("--plot", "out.png"), 2)
        self.assertIn("pip install '.[plot]'", self.stderr)
        self.assertIn("pip install matplotlib in its venv", self.stderr)

    def test_a_folder_that_is_not_there(self) -> None:
        self.assertEqual(self.parse("--plot", "/no/such/folder/out.png"), 2)
        self.assertIn("no such folder", self.stderr)

    def test_a_folder_is_not_a_file(self) -> None:
        self.assertEqual(self.parse("--plot", tempfile.gettempdir()), 2)
        self.assertIn("is a folder", self.stderr)

    def test_not_with_a_flood(self) -> None:
        self.assertEqual(self.parse("--flood", "one", "--histogram"), 2)


@tiers.system
class RealRunTests(unittest.TestCase):
    """``udpupper-bench --histogram --plot`` against the daemon."""

    def setUp(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def bench(self, *options: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [
                *BENCH,
                "--port",
                str(self.port),
                "--duration",
                "0.5",
                "--warmup",
                "0.1",
                "--window",
                "16",
                *options,
            ],
            capture_output=True,
            timeout=60,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def test_chart_buckets_sum_to_the_replies(self) -> None:
        result = self.bench("--histogram")
        received = int(re.search(r"received ([\d,]+)", result.stdout).group(1).replace(",", ""))
        rows = chart_rows(result.stdout)
        self.assertGreater(len(rows), 0, result.stdout)
        self.assertEqual(sum(count for _, _, count in rows), received)
        self.assertTrue(all(len(line) <= 100 for line in result.stdout.splitlines()))
        for mark in ("p50", "p99", "max"):
            self.assertRegex(result.stdout, rf"\b{re.escape(mark)}\b")

    def test_json_keeps_percentiles_and_adds_buckets(self) -> None:
        figures = json.loads(self.bench("--json", "--histogram").stdout)
        self.assertEqual(sum(row["count"] for row in figures["histogram"]), figures["received"])
        for key in ("p50_us", "p90_us", "p99_us", "max_us"):
            self.assertIn(key, figures)

    def test_png_of_the_right_size(self) -> None:
        if not histogram.plot_available():
            raise unittest.SkipTest(histogram.PLOT_MISSING)
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "latency.png")
        self.bench("--plot", path)
        self.assertEqual(png_size(path), histogram.PLOT_SIZE)
        from matplotlib import image

        pixels = image.imread(path)  # it opens as an image
        self.assertEqual(pixels.shape[:2], histogram.PLOT_SIZE[::-1])
