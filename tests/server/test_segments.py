"""The replies of a batch without the C helper: a run a system call, each
reply still its own datagram, in order; what the kernel refuses is listed."""

from __future__ import annotations

import errno
import socket

from twisted.trial import unittest

from tests import tiers
from udpupper.server.segments import MAX_SEGMENTS, UDP_SEGMENT, Segmenter


class Recording:
    """A socket that records each sendmsg and fails as told."""

    def __init__(self, fail=lambda buffers, ancillary: None) -> None:
        self.calls: list[tuple[list[bytes], list]] = []
        self.fail = fail

    def sendmsg(self, buffers, ancillary, flags, address) -> int:
        code = self.fail(list(buffers), ancillary)
        if code:
            raise OSError(code, errno.errorcode[code])
        self.calls.append((list(buffers), ancillary))
        return sum(map(len, buffers))


@tiers.loopback
class SegmenterTests(unittest.TestCase):
    def pair(self):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.settimeout(5)
        client.bind(("127.0.0.1", 0))
        return server, client

    def test_runs_arrive_as_separate_datagrams_in_order(self) -> None:
        server, client = self.pair()
        route = ([], client.getsockname())
        replies = (
            [b"%04d" % n for n in range(70)]  # more than a run
            + [b"x" * 1400] * 5
            + [b"yy"]  # a shorter one ends a run
            + [b"", b"zz", b"z" * 2000, b"zz"]
        )  # empty and big: alone
        counts = [0, 0, 0, 0]
        failed = Segmenter(server).send([(reply, route) for reply in replies], counts)
        self.assertEqual(failed, [])
        self.assertEqual(counts, [0, len(replies), 0, sum(map(len, replies))])
        self.assertEqual([client.recv(65_535) for _ in replies], replies)

    def test_one_call_a_run(self) -> None:
        sock = Recording()
        a, b = ([], ("192.0.2.1", 1)), ([], ("192.0.2.2", 2))
        queue = [(b"aaa", a)] * 3 + [(b"bb", a), (b"c", b), (b"ccc", b)] + [(b"d", a)] * 70
        self.assertEqual(Segmenter(sock).send(queue), [])
        self.assertEqual(
            [len(buffers) for buffers, _ in sock.calls], [4, 1, 1, MAX_SEGMENTS, 70 - MAX_SEGMENTS]
        )
        self.assertEqual(sock.calls[0][1][-1][:2], (17, UDP_SEGMENT))
        self.assertEqual(sock.calls[1][1], [])  # one alone is not segmented

    def test_refused_replies_are_listed(self) -> None:
        server, client = self.pair()
        route = ([], client.getsockname())
        counts = [0, 0, 0, 0]
        failed = Segmenter(server).send(
            [(b"ok", route), (b"x" * 70_000, route), (b"ok", route)], counts
        )
        self.assertEqual(failed, [(1, errno.EMSGSIZE)])
        self.assertEqual(counts, [0, 2, 0, 4])
        self.assertEqual([client.recv(100), client.recv(100)], [b"ok", b"ok"])

    def test_a_refused_run_goes_one_by_one(self) -> None:
        """A route whose MTU is below the segment (EMSGSIZE): that run goes
        one datagram at a time, and the next run is segmented again."""
        sock = Recording(
            lambda buffers, ancillary: (
                errno.EMSGSIZE if len(buffers) > 1 and buffers[0] == b"big" else None
            )
        )
        route = ([], ("192.0.2.1", 1))
        segmenter = Segmenter(sock)
        queue = [(b"big", route)] * 3
        self.assertEqual(segmenter.send(queue), [])
        self.assertEqual([len(buffers) for buffers, _ in sock.calls], [1, 1, 1])
        self.assertEqual(segmenter.send([(b"sml", route)] * 3), [])
        self.assertEqual(len(sock.calls[-1][0]), 3)

    def test_a_kernel_that_cannot_segment(self) -> None:
        sock = Recording(lambda buffers, ancillary: errno.EIO if len(buffers) > 1 else None)
        route = ([], ("192.0.2.1", 1))
        segmenter = Segmenter(sock)
        self.assertEqual(segmenter.send([(b"a", route)] * 3), [])
        self.assertFalse(segmenter.segmenting)
        self.assertEqual(segmenter.send([(b"b", route)] * 3), [])
        self.assertEqual([len(buffers) for buffers, _ in sock.calls], [1] * 6)

    def test_a_run_refused_for_the_replies_is_listed_whole(self) -> None:
        sock = Recording(lambda buffers, ancillary: errno.ENETUNREACH)
        route = ([], ("192.0.2.1", 1))
        counts = [0, 0, 0, 0]
        failed = Segmenter(sock).send([(b"a", route)] * 3, counts)
        self.assertEqual(
            failed, [(0, errno.ENETUNREACH), (1, errno.ENETUNREACH), (2, errno.ENETUNREACH)]
        )
        self.assertEqual(counts, [0, 0, 0, 0])
