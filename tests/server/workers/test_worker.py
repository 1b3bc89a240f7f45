"""What a --workers worker does that a lone daemon does not."""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from tests import tiers
from udpupper.server.stats import Stats
from udpupper.server.workers.worker import Reporter, die_with_parent, given_socket


@tiers.unit
class WorkerSideTests(unittest.TestCase):
    def test_shared_counts_are_what_the_worker_counted(self) -> None:
        from udpupper.server.workers.worker import SharedCounts, given_counts

        shared = SharedCounts.for_worker("worker-1")
        if shared is None:
            raise unittest.SkipTest("memfd_create is Linux's")
        self.addCleanup(shared.close)
        worker_side = given_counts({"UDPUPPER_COUNTS": str(os.dup(shared.fd))})
        view = memoryview(worker_side).cast("Q")
        view[0], view[1], view[2], view[3] = 3, 2, 30, 20
        counted = shared.stats()
        self.assertEqual(
            (counted.received, counted.replied, counted.bytes_in, counted.bytes_out), (3, 2, 30, 20)
        )
        shared.reset()
        self.assertEqual(shared.stats().received, 0)
        view.release()
        worker_side.close()

    def test_reports_are_one_json_line_of_totals(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        stats = Stats()
        stats.received, stats.replied = 3, 2
        Reporter(write).report(stats, prefixes=5)
        report = json.loads(os.read(read, 4096))
        self.assertEqual((report["received"], report["replied"], report["prefixes"]), (3, 2, 5))

    def test_a_full_or_closed_pipe_loses_only_this_report(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, write)
        os.close(read)
        Reporter(write).report(Stats())  # no BrokenPipeError: the next one says it all

    def test_a_lone_daemon_is_no_worker(self) -> None:
        self.assertIsNone(given_socket({}))
        self.assertIsNone(Reporter.from_environment({}))
        die_with_parent({})  # no parent named: nothing to do
