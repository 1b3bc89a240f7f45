"""The transform: exactly str.upper() for text, every other byte kept."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from tests import tiers
from udpupper import transform
from udpupper.transform import (
    MAX_IPV4_PAYLOAD,
    MAX_IPV6_PAYLOAD,
    max_payload,
    python_upper,
    python_upper_ascii,
    upper,
)


def twins() -> list:
    """The ASCII fast paths to hold to ``python_upper_ascii``: the one in
    use and, with the C helper, its portable build, which CPUs without AVX2
    run."""
    if transform.upper_ascii is python_upper_ascii:
        return [python_upper_ascii]
    from udpupper._transform import portable_upper_ascii

    return [transform.upper_ascii, portable_upper_ascii]


@tiers.unit
class UpperAsciiTests(unittest.TestCase):
    """The ASCII fast path, and its C twin held to it."""

    def test_the_c_helper_is_built(self) -> None:
        """Where a compiler is (every machine CI runs on), the C twin runs."""
        import shutil
        import sysconfig

        if shutil.which(sysconfig.get_config_var("CC").split()[0]) is None:
            raise unittest.SkipTest("no C compiler")
        self.assertIsNot(transform.upper_ascii, python_upper_ascii)

    def test_every_byte_at_every_place(self) -> None:
        # Each byte value at each place of an eight-byte step and its tail,
        # and around the wider steps of the C twin's block loop (32 bytes
        # with AVX2), in each build of it.
        for size in (*range(0, 20), 31, 32, 33, 40, 63, 64, 65, 72):
            for value in range(256):
                for at in range(size):
                    payload = bytearray(b"q" * size)
                    payload[at] = value
                    payload = bytes(payload)
                    for twin in twins():
                        self.assertEqual(
                            twin(payload), python_upper_ascii(payload), (twin, payload)
                        )

    def test_the_widest_build_the_cpu_runs(self) -> None:
        try:
            from udpupper import _transform
        except ImportError:
            raise unittest.SkipTest("the C helper is not built") from None
        import platform

        if platform.machine() != "x86_64":
            self.assertEqual(_transform.INSTRUCTIONS, "portable")
            return
        with open("/proc/cpuinfo") as cpuinfo:
            avx2 = any(line.startswith("flags") and "avx2" in line.split() for line in cpuinfo)
        self.assertEqual(_transform.INSTRUCTIONS, "AVX2" if avx2 else "SSE2")

    def test_one_byte_not_ascii_anywhere_in_a_long_payload(self) -> None:
        # The C twin upper-cases a block at a time before it looks: a byte
        # that is not ASCII in any block, at its edges and in the tail.
        ascii = bytes(range(128)) * 16 + b"tail!"
        for twin in twins():
            self.assertEqual(twin(ascii), ascii.upper())
            for at in (0, 7, 8, 255, 256, 257, 1024, 2047, 2048, len(ascii) - 1):
                for value in (0x80, 0xC3, 0xFF):
                    payload = ascii[:at] + bytes([value]) + ascii[at + 1 :]
                    self.assertIsNone(twin(payload), (at, value))

    @given(
        st.binary(max_size=3000)
        | st.text(max_size=500).map(str.encode)
        | st.binary(max_size=200).map(lambda raw: bytes(byte & 0x7F for byte in raw))
    )
    def test_any_bytes(self, payload: bytes) -> None:
        for twin in twins():
            self.assertEqual(twin(payload), python_upper_ascii(payload), twin)

    def test_bytes_only(self) -> None:
        with self.assertRaises(TypeError):
            transform.upper_ascii(bytearray(b"abc"))  # type: ignore[arg-type]


def uppers() -> list:
    """The transforms to hold to the definition: the one in use and, where
    that is the C twin, the Python one, which runs without a compiler."""
    return [upper] if upper is python_upper else [upper, python_upper]


@tiers.unit
class UpperTests(unittest.TestCase):
    """``transform.upper``, the daemon's, and its twin: each case for both."""

    def check(self, payload: bytes, expected: bytes) -> None:
        for each in uppers():
            self.assertEqual(each(payload), expected, each)

    def test_the_one_in_use(self) -> None:
        """The C twin where the helper is built, the Python one where it is not."""
        try:
            from udpupper._transform import upper as built
        except ImportError:
            built = python_upper
        self.assertIs(upper, built)

    def test_ascii(self) -> None:
        self.check(b"hello, World 123!", b"HELLO, WORLD 123!")

    def test_empty(self) -> None:
        self.check(b"", b"")

    def test_text_grows_as_str_upper_says(self) -> None:
        self.check("straße".encode(), b"STRASSE")
        # U+0390 is 2 bytes and upper-cases to three code points, 6 bytes.
        self.check("\u0390".encode(), "\u0399\u0308\u0301".encode())

    def test_mixed_scripts(self) -> None:
        text = "Ünïcödé ελληνικά кириллица 日本語 ǆ ﬁ"
        self.check(text.encode(), text.upper().encode())

    def test_invalid_utf8_bytes_are_kept(self) -> None:
        self.check(b"\xff\xfeabc\xc3", b"\xff\xfeABC\xc3")

    def test_encoded_surrogates_are_kept(self) -> None:
        # UTF-8 forbids encoded surrogates: they are bytes, not text.
        self.check(b"\xed\xa0\x80x", b"\xed\xa0\x80X")

    def test_bytes_only(self) -> None:
        if upper is python_upper:
            raise unittest.SkipTest("the Python one takes what has .upper()")
        with self.assertRaises(TypeError):
            upper(bytearray(b"abc"))  # type: ignore[arg-type]

    @given(st.binary(max_size=2048))
    def test_any_bytes(self, payload: bytes) -> None:
        self.check(
            payload,
            payload.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape"),
        )

    @given(st.text())
    def test_any_text(self, text: str) -> None:
        self.check(text.encode(), text.upper().encode())

    @given(st.binary(max_size=512), st.text(max_size=64), st.binary(max_size=64))
    def test_no_invalid_byte_is_lost(self, before, text, after) -> None:
        """The bytes that are not UTF-8 come back, in order, whatever surrounds them."""
        payload = before + b"\xff" + text.encode() + b"\x80" + after
        for each in uppers():
            self.assertEqual(not_utf8(each(payload)), not_utf8(payload), each)


def not_utf8(data: bytes) -> list[str]:
    """The bytes of ``data`` that are not part of valid UTF-8, in order."""
    return [
        char for char in data.decode("utf-8", "surrogateescape") if "\udc80" <= char <= "\udcff"
    ]


@tiers.unit
class MaxPayloadTests(unittest.TestCase):
    def test_by_family(self) -> None:
        self.assertEqual(max_payload("127.0.0.1"), MAX_IPV4_PAYLOAD)
        self.assertEqual(max_payload("::1"), MAX_IPV6_PAYLOAD)
        self.assertEqual(max_payload("::ffff:127.0.0.1"), MAX_IPV4_PAYLOAD)
        self.assertEqual((MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD), (65_507, 65_527))
