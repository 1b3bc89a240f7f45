"""What makes an open UDP echo safe to expose, as pure functions and data.

- The loop guard (xinetd's ``bad_port_check``, OpenBSD inetd's rule): no
  reply to a source port below 1024 or to port 0, where echo, chargen and
  their kind live, nor to a source that cannot be a real sender
  (unspecified, multicast, broadcast; IPv4-mapped ones included).
- Exemptions: sources that the rate limit and the amplification cap spare.
Nothing here touches a socket.  The rate limiter is in :mod:`ratelimit`;
the amplification cap, one comparison, is in the protocol's hot path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_EXEMPT = "127.0.0.0/8,::1/128"
DEFAULT_RATE = 200.0  # replies a second per prefix: NSD's default
DEFAULT_RATE_TABLE = 65_536  # prefixes remembered by the rate limiter

# Ports below this are where services live, not clients (RFC 6335).
FIRST_CLIENT_PORT = 1024

_IPV4_UNSPECIFIED = ipaddress.IPv4Network("0.0.0.0/8")
_IPV4_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def parse_networks(text: str) -> list[Network]:
    """``"127.0.0.0/8,::1/128"`` as networks; the empty string is none.

    Raises ``ValueError`` naming the first entry that is not a network.
    """
    networks = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 network: {entry!r}") from None
    return networks


def parse_address(host: str) -> Address:
    """An address as a socket gives it; IPv4-mapped IPv6 becomes IPv4."""
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def cannot_be_a_sender(address: Address) -> bool:
    """Unspecified, multicast or broadcast: no reply can be meant for it."""
    if isinstance(address, ipaddress.IPv4Address):
        return (
            address in _IPV4_UNSPECIFIED
            or address.is_multicast
            or address == _IPV4_BROADCAST
        )
    return address.is_unspecified or address.is_multicast


def rate_prefix(address: Address) -> bytes:
    """The prefix rate limiting counts by: the /24 of IPv4, the /56 of IPv6."""
    return address.packed[:3] if address.version == 4 else address.packed[:7]


@dataclass(frozen=True, slots=True)
class Source:
    """What the policies need to know of one source address."""

    bad: bool  # cannot be a sender: never answer it
    exempt: bool  # spared by the rate limit and the amplification cap
    prefix: bytes  # its rate-limiting prefix


def classify(host: str, exempt: Iterable[Network]) -> Source:
    """Look at a source address once: is it bad, exempt, and its prefix."""
    address = parse_address(host)
    return Source(
        bad=cannot_be_a_sender(address),
        exempt=any(address in network for network in exempt),
        prefix=rate_prefix(address),
    )


class Sources:
    """:func:`classify`, remembered for up to ``size`` addresses.

    Parsing an address costs more than answering it; busy sources repeat.
    When full, the memory is simply cleared: bounded, and cheap.
    """

    __slots__ = ("exempt", "size", "known")

    def __init__(self, exempt: Iterable[Network], size: int = 65_536) -> None:
        self.exempt = tuple(exempt)
        self.size = size
        self.known: dict[str, Source] = {}

    def get(self, host: str) -> Source:
        source = self.known.get(host)
        if source is None:
            if len(self.known) >= self.size:
                self.known.clear()
            source = self.known[host] = classify(host, self.exempt)
        return source


def lowest_port(allow_low_ports: bool) -> int:
    """The lowest source port the loop guard answers: port 0 never is."""
    return 1 if allow_low_ports else FIRST_CLIENT_PORT



@dataclass(frozen=True)
class Protections:
    """The protections' settings, as ``twistd udpupper``'s options give them.

    ``rate`` replies a second per source prefix (0: no limit), with bursts up
    to ``burst`` (None: twice the rate), ``rate_table`` prefixes remembered;
    sources in ``exempt`` are spared the limit and the amplification cap; a
    reply may be at most ``max_amplification`` times its request.
    """

    rate: float = DEFAULT_RATE
    burst: float | None = None
    rate_table: int = DEFAULT_RATE_TABLE
    exempt: tuple[Network, ...] = tuple(parse_networks(DEFAULT_EXEMPT))
    max_amplification: float = 1.0
    allow_low_ports: bool = False
