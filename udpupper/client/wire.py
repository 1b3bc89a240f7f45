"""What a probe looks like on the wire, for ``--ping``, ``--sweep`` and the
prober: its sequence number in decimal, a token drawn at random for the run
(upper case, so upper-casing leaves it as it is), then lower-case filler to
the size asked for.  The reply must be the probe upper-cased: a server that
only echoes (or mangles) is seen, and a stranger who cannot read the probes
cannot forge a reply.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

WIRE_SEQ = 10**7  # sequence numbers on the wire are modulo this: 7 digits
SLOTS = 100_000  # probes remembered for late and duplicate replies; divides WIRE_SEQ
TOKEN_LENGTH = 16  # characters of base32: 80 bits
MIN_SIZE = 8 + TOKEN_LENGTH  # seven digits, a space and the token
FILLER = b" udpupper ping probe"  # lower case: the reply shows the upper-casing
UDP_HEADER = 8


def new_token() -> bytes:
    """A run's token: 80 random bits in base32, all upper case."""
    return base64.b32encode(os.urandom(TOKEN_LENGTH * 5 // 8))


def probe(seq: int, size: int, token: bytes = b"") -> bytes:
    """The probe with sequence number ``seq``, ``size`` bytes long, carrying
    ``token`` after the number."""
    head = b"%d" % (seq % WIRE_SEQ) + (b" " + token if token else b"")
    return (head + FILLER * (size // len(FILLER) + 1))[:size]


@dataclass(eq=False)
class Probe:
    seq: int
    sent_at: float  # the client's monotonic clock, before the send call
    sent_wall: float = 0.0  # its real-time clock, as the kernel's stamps are
    left: float | None = None  # the kernel's departure stamp
    replies: int = 0
    expired: bool = False
    rtt: float | None = None  # of its first right reply
