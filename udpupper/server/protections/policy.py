"""What makes an open UDP echo safe to expose, as pure functions and data.

- The loop guard (xinetd's ``bad_port_check``, OpenBSD inetd's rule): no
  reply to a source port below 1024 or to port 0, where echo, chargen and
  their kind live, nor to a source that cannot be a real sender
  (unspecified, multicast, broadcast, class E, and an IPv4-mapped address
  in an IPv6 packet, which no real IPv6 sender has: RFC 4291 2.5.5.2).
- Exemptions: sources that the rate limit and the amplification cap spare.
Nothing here touches a socket.  The rate limiter is in :mod:`ratelimit`,
the loop breaker in :mod:`loops`; the amplification cap, one comparison,
is in the protocol's hot path.

Addresses come as the port gives them: an IPv4 sender as IPv4 text, even on
an IPv6 socket.  They are read with ``inet_pton`` and judged by their bytes,
so a never-seen source costs about what a known one does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from socket import AF_INET, AF_INET6, inet_pton
from typing import NamedTuple

from udpupper import helpers
from udpupper.defaults import DEFAULT_RATE
from udpupper.options import Network, parse_networks

DEFAULT_EXEMPT = "127.0.0.0/8,::1/128"
DEFAULT_RATE_TABLE = 65_536  # prefixes (and addresses) remembered
# Prefixes not in the table taken in a second, all together: far more than
# the clients new to a busy service each second, far fewer than a
# spoofed-source flood's (which would otherwise have each datagram answered).
DEFAULT_NEW_PREFIX_RATE = 10_000
# Source addresses whose classification is remembered: enough for the busy
# ones, few enough to stay in the CPU's caches (a flood of new addresses then
# costs about 400 ns less a datagram than with a 65,536-entry memory).
SOURCE_MEMORY = 4096
# One in this many datagrams of a chain of echoes gets no reply: each loop
# dies within as many of its round trips (tens of milliseconds on loopback),
# a client repeating itself resends one line in as many.
DEFAULT_LOOP_BUDGET = 1000

# Ports below this are where services live, not clients (RFC 6335).
FIRST_CLIENT_PORT = 1024

_IPV4_MAPPED = bytes(10) + b"\xff\xff"
_IPV6_UNSPECIFIED = bytes(16)


class Source(NamedTuple):
    """What the policies need to know of one source address."""

    bad: bool  # cannot be a sender: never answer it
    exempt: bool  # spared by the rate limit and the amplification cap
    prefix: bytes  # its rate-limiting prefix: the /24 of IPv4, the /56 of IPv6


# The hot path keeps a source as one bytes object (nothing for the garbage
# collector to walk): its kind, one byte, then its rate-limiting prefix.  It
# is also the source's key in the rate limiter.
NORMAL, EXEMPT, BAD = 0, 1, 2
_NORMAL, _EXEMPT, _BAD = bytes([NORMAL]), bytes([EXEMPT]), bytes([BAD])


class Exemptions:
    """Membership in a list of networks, tested on packed addresses.

    A network whose length is whole bytes (127.0.0.0/8, ::1/128, the usual
    case) is a set look-up of that many leading bytes; any other is masked.
    """

    __slots__ = ("masked", "whole")

    def __init__(self, networks: Iterable[Network]) -> None:
        whole: dict[tuple[int, int], set[bytes]] = {}
        masked = []
        for network in networks:
            size = 4 if network.version == 4 else 16
            if network.prefixlen % 8 == 0:
                length = network.prefixlen // 8
                whole.setdefault((size, length), set()).add(network.network_address.packed[:length])
            else:
                masked.append((size, int(network.network_address), int(network.netmask)))
        self.whole = tuple(
            (size, length, frozenset(heads)) for (size, length), heads in whole.items()
        )
        self.masked = tuple(masked)

    def __contains__(self, packed: bytes) -> bool:
        size = len(packed)
        for length, head, heads in self.whole:
            if size == length and packed[:head] in heads:
                return True
        if self.masked:
            value = int.from_bytes(packed, "big")
            return any(
                size == length and value & mask == network for length, network, mask in self.masked
            )
        return False


class PythonSources:
    """Each source address as the hot path keeps it, remembered for up to
    ``size`` addresses.

    Busy sources repeat.  When full, the memory is simply cleared: bounded,
    and cheap; and looking at a new address is cheap too (a flood of spoofed
    sources brings nothing but new ones).  ``Sources`` is this class in C
    where it could be built (``_sources.c``): there a new address costs
    about what a known one does.
    """

    __slots__ = ("exempt", "known", "size")

    def __init__(self, exempt: Iterable[Network], size: int = SOURCE_MEMORY) -> None:
        exemptions = Exemptions(exempt)
        self.exempt = exemptions if exemptions.whole or exemptions.masked else None
        self.size = size
        self.known: dict[str, bytes] = {}

    def get(self, host: str) -> bytes:
        """``host`` as a key: its kind (NORMAL, EXEMPT or BAD), then its prefix."""
        return self.known.get(host) or self.add(host)

    def __len__(self) -> int:
        """How many addresses are remembered now: at most ``size``."""
        return len(self.known)

    def add(self, host: str) -> bytes:
        """Classify ``host``, not known yet, and remember it.

        Cannot be a sender: 0/8, 224/4 (multicast), 240/4 (class E,
        255.255.255.255); ::, ff00::/8, and IPv4-mapped (in an IPv6 packet).
        Written out in one function, without a call: a flood of new sources
        runs it for every datagram.
        """
        if ":" in host:
            packed = inet_pton(AF_INET6, host.partition("%")[0] if "%" in host else host)
            prefix = packed[:7]
            bad = packed[0] == 0xFF or packed[:12] == _IPV4_MAPPED or packed == _IPV6_UNSPECIFIED
        else:
            packed = inet_pton(AF_INET, host)
            prefix = packed[:3]
            first = packed[0]
            bad = first == 0 or first >= 224
        if bad:
            key = _BAD + prefix
        elif self.exempt is not None and packed in self.exempt:
            key = _EXEMPT + prefix
        else:
            key = _NORMAL + prefix
        known = self.known
        if len(known) >= self.size:
            known.clear()
        known[host] = key
        return key


_sources = helpers.load("sources")  # the same class in C, where it could be built
Sources = PythonSources if _sources is None else _sources.Sources


def classify(host: str, exempt: Iterable[Network]) -> Source:
    """Look at a source address: is it bad, exempt, and its prefix."""
    key = Sources(exempt, 1).add(host)
    return Source(bad=key[0] == BAD, exempt=key[0] == EXEMPT, prefix=key[1:])


def lowest_port(allow_low_ports: bool) -> int:
    """The lowest source port the loop guard answers: port 0 never is."""
    return 1 if allow_low_ports else FIRST_CLIENT_PORT


@dataclass(frozen=True)
class Protections:
    """The protections' settings, as ``twistd udpupper``'s options give them,
    and the policy objects they make.

    ``rate`` replies a second per source prefix (0: no limit), with bursts up
    to ``burst`` (None: twice the rate), ``rate_table`` prefixes (and source
    addresses) remembered, strangers answered ``new_prefix_rate`` a second;
    each loop ends within ``loop_budget`` of its round trips (0: never);
    sources in ``exempt`` are spared the limit and the amplification cap; a
    reply may be at most ``max_amplification`` times its request; source
    ports below 1024 are answered with ``allow_low_ports``.

    Each field is the option of its name (``rate_table``: ``--rate-table``):
    :meth:`from_options` reads them all, so a protection added here is one
    field, one option, and its object made below (docs/development.md).
    """

    rate: float = DEFAULT_RATE
    burst: float | None = None
    rate_table: int = DEFAULT_RATE_TABLE
    new_prefix_rate: float = DEFAULT_NEW_PREFIX_RATE
    loop_budget: int = DEFAULT_LOOP_BUDGET
    exempt: tuple[Network, ...] = field(
        default=tuple(parse_networks(DEFAULT_EXEMPT)), metadata={"from_option": tuple}
    )
    max_amplification: float = 1.0
    allow_low_ports: bool = field(default=False, metadata={"from_option": bool})

    @classmethod
    def from_options(cls, options) -> Protections:
        """From ``twistd udpupper``'s options (checked already): each field
        the option of its name."""
        return cls(
            **{
                setting.name: setting.metadata.get("from_option", lambda value: value)(
                    options[setting.name.replace("_", "-")]
                )
                for setting in fields(cls)
            }
        )

    def sources(self):
        """The classified source addresses, remembered."""
        return Sources(self.exempt, min(self.rate_table, SOURCE_MEMORY))

    def rate_limiter(self):
        """The rate limit's table, or None with no ``rate``."""
        from udpupper.server.protections.ratelimit import RateLimiter

        if not self.rate:
            return None
        burst = max(1.0, 2 * self.rate) if self.burst is None else self.burst
        return RateLimiter(self.rate, burst, self.rate_table, self.new_prefix_rate)

    def loop_breaker(self):
        """The loop breaker, or None with no ``loop_budget``."""
        from udpupper.server.protections.loops import LOOP_MEMORY, PAIRS, LoopBreaker

        if not self.loop_budget:
            return None
        return LoopBreaker(self.loop_budget, min(len(PAIRS) * self.rate_table, LOOP_MEMORY))

    def amplification_cap(self) -> float:
        """The cap, as the hot path compares it: a whole number as an int (int
        arithmetic, which Python 3.11 specializes, and exactly the same)."""
        cap = self.max_amplification
        return int(cap) if float(cap).is_integer() else cap

    def lowest_port(self) -> int:
        return lowest_port(self.allow_low_ports)
