"""The pure policies: which sources are bad, exempt, and their prefixes."""

from ipaddress import ip_address, ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests import tiers
from udpupper.server.protections import policy
from udpupper.server.protections.policy import (
    DEFAULT_EXEMPT,
    PythonSources,
    classify,
    lowest_port,
    parse_networks,
)

LOOPBACK = parse_networks(DEFAULT_EXEMPT)
NETWORKS = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda pair: ip_network(f"{pair[0]}/{pair[1]}", strict=False))


@tiers.unit
class ParseNetworksTests(unittest.TestCase):
    def test_default(self) -> None:
        self.assertEqual(LOOPBACK, [ip_network("127.0.0.0/8"), ip_network("::1/128")])

    def test_empty_means_none(self) -> None:
        self.assertEqual(parse_networks(""), [])
        self.assertEqual(parse_networks(" , "), [])

    def test_host_bits_are_allowed(self) -> None:
        self.assertEqual(parse_networks("10.1.2.3/8"), [ip_network("10.0.0.0/8")])

    def test_bad_entries(self) -> None:
        for bad in ("10.0.0.0/33", "nonsense", "::1/129", "10.0.0.0/8,x"):
            self.assertRaises(ValueError, parse_networks, bad)


@tiers.unit
class ClassifyTests(unittest.TestCase):
    def test_bad_sources(self) -> None:
        for host in (
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.254",
            "255.255.255.255",  # class E
            "::",
            "ff02::1",
            "ff0e::1",
            # The port gives IPv4 senders as IPv4: a mapped address here came
            # in an IPv6 packet, which no real sender sends (RFC 4291 2.5.5.2).
            "::ffff:127.0.0.1",
            "::ffff:192.0.2.1",
            "::ffff:0.0.0.0",
        ):
            self.assertTrue(classify(host, LOOPBACK).bad, host)

    def test_good_sources(self) -> None:
        for host in (
            "1.0.0.1",
            "192.0.2.1",
            "223.255.255.255",
            "2001:db8::1",
            "::1",
            "::2",
            "fe80::1%eth0",
            "64:ff9b::c000:201",
        ):
            self.assertFalse(classify(host, LOOPBACK).bad, host)

    def test_exempt(self) -> None:
        self.assertTrue(classify("127.0.0.1", LOOPBACK).exempt)
        self.assertTrue(classify("127.3.2.1", LOOPBACK).exempt)
        self.assertTrue(classify("::1", LOOPBACK).exempt)
        self.assertFalse(classify("::2", LOOPBACK).exempt)
        self.assertFalse(classify("128.0.0.1", LOOPBACK).exempt)
        self.assertFalse(classify("127.0.0.1", []).exempt)

    def test_spoofed_mapped_loopback_is_not_exempt(self) -> None:
        source = classify("::ffff:127.0.0.1", LOOPBACK)
        self.assertEqual((source.bad, source.exempt), (True, False))

    def test_prefixes(self) -> None:
        def prefix(host):
            return classify(host, []).prefix

        self.assertEqual(prefix("192.0.2.1"), prefix("192.0.2.254"))
        self.assertNotEqual(prefix("192.0.2.1"), prefix("192.0.3.1"))
        # /56: the first byte of the fourth group still counts.
        self.assertEqual(prefix("2001:db8:0:ff00::1"), prefix("2001:db8:0:ffab::2"))
        self.assertNotEqual(prefix("2001:db8:0:ff00::1"), prefix("2001:db8:0:fe00::1"))

    # Run by this class and by PythonClassifyTests, on the other class.
    @settings(suppress_health_check=[HealthCheck.differing_executors])
    @given(st.ip_addresses(), st.lists(NETWORKS, max_size=4))
    def test_any_address_as_ipaddress_says(self, address, networks) -> None:
        source = classify(str(address), networks)
        if address.version == 4:
            bad = address in ip_network("0.0.0.0/8") or address >= ip_address("224.0.0.0")
            prefix = address.packed[:3]
        else:
            bad = address.is_multicast or address.is_unspecified or address.ipv4_mapped is not None
            prefix = address.packed[:7]
        self.assertEqual((source.bad, source.prefix), (bad, prefix))
        # Exemption matters for a source that is not bad.
        exempt = any(address in net for net in networks if net.version == address.version)
        self.assertEqual(source.exempt, exempt and not bad)


@tiers.unit
class PythonClassifyTests(ClassifyTests):
    """The same cases on the class that runs without a compiler."""

    def setUp(self) -> None:
        self.patch(policy, "Sources", PythonSources)


@tiers.unit
class SourcesTests(unittest.TestCase):
    Sources = policy.Sources

    def test_remembers_within_bound(self) -> None:
        sources = self.Sources([], size=10)
        first = sources.get("192.0.2.1")
        self.assertIs(sources.get("192.0.2.1"), first)
        for n in range(100):
            sources.get(f"10.0.0.{n}")
            self.assertLessEqual(len(sources), 10)

    def test_what_is_not_an_address(self) -> None:
        sources = self.Sources(LOOPBACK)
        for text in (
            "",
            "nonsense",
            "1.2.3",
            "1.2.3.4.5",
            "::g",
            "1.2.3.4%eth0",
            "::1" + "0" * 100,
            "١٢٧.0.0.1",
        ):
            self.assertRaises(OSError, sources.get, text)
        self.assertRaises(ValueError, sources.get, "127.0.0.1\0")
        self.assertRaises(TypeError, sources.get, b"127.0.0.1")
        self.assertEqual(len(sources), 0)  # nothing remembered
        # A scope, however long, is not the address.
        self.assertEqual(sources.get("::1%" + "x" * 100), bytes([policy.EXEMPT]) + bytes(7))


@tiers.unit
class PythonSourcesTests(SourcesTests):
    Sources = PythonSources


def host_texts():
    """What a port may give as a host: any address, scoped or not, and junk."""
    return st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda address: f"{address}%{1 + hash(address) % 3}"),
        st.ip_addresses(v=4).map(lambda address: f"::ffff:{address}"),
        st.text(alphabet="0123456789abcdef:.%", max_size=45),
    )


@tiers.unit
class ImplementationsAgreeTests(unittest.TestCase):
    """The C class and the Python one give the same keys, and keep as many."""

    def test_the_c_class_is_the_one_used_where_built(self) -> None:
        try:
            from udpupper.server.protections import _sources
        except ImportError:
            raise unittest.SkipTest(
                "udpupper.server.protections._sources is not built here"
            ) from None
        self.assertIs(policy.Sources, _sources.Sources)

    def test_a_str_subclass_is_taken_as_its_text(self) -> None:
        """No Python code of the host's own runs while C holds a slot."""
        if policy.Sources is PythonSources:
            raise unittest.SkipTest("udpupper.server.protections._sources is not built here")

        class Host(str):
            def __hash__(self) -> int:
                raise AssertionError("called")

        sources = policy.Sources([], 4)
        self.assertEqual(sources.get(Host("192.0.2.1")), bytes([policy.NORMAL, 192, 0, 2]))
        self.assertEqual(len(sources), 1)
        self.assertIs(sources.get("192.0.2.1"), sources.get(Host("192.0.2.1")))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(NETWORKS, max_size=4), st.integers(1, 5), st.lists(host_texts(), max_size=30))
    def test_same_keys(self, networks, size, hosts) -> None:
        ours, python = policy.Sources(networks, size), PythonSources(networks, size)
        for host in hosts + hosts[::-1]:  # each again, some forgotten by then
            try:
                expected = python.get(host)
            except Exception as error:  # what inet_pton says of junk
                self.assertRaises(type(error), ours.get, host)
            else:
                self.assertEqual(ours.get(host), expected, host)
            self.assertEqual(len(ours), len(python))


@tiers.unit
class LowestPortTests(unittest.TestCase):
    def test_lowest_port(self) -> None:
        self.assertEqual(lowest_port(False), 1024)
        self.assertEqual(lowest_port(True), 1)  # port 0 is never answered
