"""What the C helpers share with their Python twins, pinned: the built
helper and udpupper/abi.py say the same, and the header setup.py writes
is abi.py's."""

from __future__ import annotations

import os

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT
from udpupper import abi, helpers
from udpupper.server import ctypes_batch, port
from udpupper.server.stats import Reason
from udpupper.server.workers import worker


@tiers.unit
class SharedLayoutTests(unittest.TestCase):
    def test_the_built_helper_agrees(self) -> None:
        batch = helpers.load("batch")
        if batch is None:
            raise unittest.SkipTest(f"no C helper: {helpers.missing['batch']}")
        for name in ("BATCH", "NOT_UNICAST", "NO_DESTINATION", "NOT_IP"):
            self.assertEqual(getattr(batch, name), getattr(abi, name), name)

    def test_the_header_is_abi_s(self) -> None:
        path = os.path.join(ROOT, "udpupper", "_layout.h")
        if not os.path.exists(path):
            raise unittest.SkipTest("the helpers were not built here")
        with open(path) as header:
            self.assertEqual(header.read(), abi.c_header())
        for name in abi.SHARED:
            self.assertIn(f"#define LAYOUT_{name} {getattr(abi, name)}\n", abi.c_header())

    def test_the_python_side_reads_it(self) -> None:
        self.assertEqual(port.BATCH, abi.BATCH)
        self.assertEqual(ctypes_batch.BATCH, abi.BATCH)
        self.assertEqual(
            port.HELPER_REFUSALS,
            {
                abi.NOT_UNICAST: Reason.NOT_UNICAST_DESTINATION,
                abi.NO_DESTINATION: Reason.NO_DESTINATION,
                abi.NOT_IP: Reason.BAD_SOURCE,
            },
        )
        self.assertEqual(
            len({abi.RECEIVED, abi.REPLIED, abi.BYTES_IN, abi.BYTES_OUT}), abi.COUNT_SLOTS
        )
        self.assertEqual(abi.COUNTS_SIZE, 8 * abi.COUNT_SLOTS)
        self.assertEqual(abi.mebibytes(abi.RECEIVE_BUFFERS), "4 MiB")

    def test_a_worker_s_counts_in_their_slots(self) -> None:
        shared = worker.SharedCounts.for_worker("worker-test")
        if shared is None:
            raise unittest.SkipTest("no memfd_create here")
        self.addCleanup(shared.close)
        for slot, value in (
            (abi.RECEIVED, 5),
            (abi.REPLIED, 4),
            (abi.BYTES_IN, 50),
            (abi.BYTES_OUT, 40),
        ):
            shared.view[slot] = value
        stats = shared.stats()
        self.assertEqual(
            (stats.received, stats.replied, stats.bytes_in, stats.bytes_out), (5, 4, 50, 40)
        )
        self.assertEqual(shared.received(), 5)
