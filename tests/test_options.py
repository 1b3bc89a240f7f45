"""The option checks both programs share."""

from twisted.trial import unittest

from udpupper.options import count, port_number, positive_float


class ChecksTests(unittest.TestCase):
    def test_port_number(self) -> None:
        self.assertEqual([port_number(v) for v in ("0", "12000", "65535")], [0, 12000, 65535])
        for bad in ("-1", "65536", "abc", "1.5", ""):
            self.assertRaises(ValueError, port_number, bad)

    def test_positive_float(self) -> None:
        self.assertEqual(positive_float("0.25"), 0.25)
        for bad in ("0", "-1", "nan", "inf", "x"):
            self.assertRaises(ValueError, positive_float, bad)

    def test_count(self) -> None:
        self.assertEqual(count("0"), 0)
        for bad in ("-1", "x", "2.0"):
            self.assertRaises(ValueError, count, bad)
