"""Round trips in bounded memory, held to the exact percentiles."""

from __future__ import annotations

import random

from twisted.trial import unittest

from tests import tiers
from udpupper.bench.histogram import MARKS, Histogram, percentile
from udpupper.latency import FOLD, GROWTH, Latencies, bucket_of, lower_edge


def sample(count: int, seed: int = 1) -> list[float]:
    """Round trips as a bench sees them: mostly tens of microseconds, a tail
    of milliseconds, a few of a second."""
    rng = random.Random(seed)
    values = [rng.lognormvariate(-11.0, 0.6) for _ in range(count)]  # ~17 us
    values += [rng.uniform(0.001, 0.05) for _ in range(count // 100)]
    values += [rng.uniform(0.5, 1.5) for _ in range(count // 10_000)]
    rng.shuffle(values)
    return values


@tiers.unit
class LatenciesTests(unittest.TestCase):
    def record(self, values: list[float]) -> Latencies:
        latencies = Latencies()
        for value in values:
            latencies.pending.append(value)
            latencies.fold_if_due()
        return latencies

    def test_percentiles_within_half_a_percent_of_the_exact_ones(self) -> None:
        values = sample(300_000)
        latencies = self.record(values)
        ordered = sorted(values)
        shares = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0]
        for share, found in zip(shares, latencies.percentiles(*shares)):
            exact = percentile(ordered, share)
            self.assertLessEqual(abs(found - exact) / exact, 0.005, (share, found, exact))
        self.assertEqual((latencies.least, latencies.greatest), (ordered[0], ordered[-1]))
        self.assertEqual(len(latencies), len(values))

    def test_memory_is_bounded_whatever_the_run(self) -> None:
        latencies = self.record(sample(1_000_000, seed=2))
        self.assertLess(len(latencies.pending), FOLD)
        self.assertLess(len(latencies.counts), 2_400)  # 10 ns to 100 s: 2,316 buckets

    def test_buckets_are_one_percent_wide(self) -> None:
        for value in (1e-7, 3.7e-5, 0.02, 9.9):
            bucket = bucket_of(value)
            self.assertLessEqual(lower_edge(bucket), value * (1 + 1e-12))
            self.assertLess(value, lower_edge(bucket + 1) * (1 + 1e-12))
            self.assertAlmostEqual(lower_edge(bucket + 1) / lower_edge(bucket), GROWTH)

    def test_the_histogram_from_the_counts_is_the_exact_one_within_its_buckets(self) -> None:
        values = sample(200_000, seed=3)
        latencies = self.record(values)
        exact = Histogram.of(sorted(value * 1e6 for value in values))
        bounded = Histogram.of_weighted(
            [(seconds * 1e6, count) for seconds, count in latencies.weighted()]
        )
        self.assertEqual(bounded.total, exact.total)
        for name, _ in MARKS:
            self.assertLessEqual(
                abs(bounded.marks[name] - exact.marks[name]) / exact.marks[name], 0.005, name
            )
        # Counts agree but for values within 1% of a display bucket's edge.
        moved = sum(abs(a - b) for a, b in zip(bounded.counts, exact.counts))
        self.assertLess(moved, exact.total * 0.05)

    def test_nothing_recorded(self) -> None:
        latencies = Latencies()
        self.assertEqual(latencies.percentiles(0.5, 0.99), [0.0, 0.0])
        self.assertEqual(latencies.weighted(), [])
        self.assertEqual(len(latencies), 0)
