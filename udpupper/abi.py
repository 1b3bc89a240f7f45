"""What the C helpers and their Python twins share, defined here once.

The C side reads it from ``udpupper/_layout.h``, which setup.py writes from
this module before it builds the helpers (``python -m udpupper.abi``
prints it); the tests hold the built helpers to it.
"""

from __future__ import annotations

BATCH = 64  # datagrams a recvmmsg or sendmmsg call moves, at most
BUFFER_SIZE = 65536  # bytes a datagram is read into: the largest UDP payload
# What a batch's route is when it is an int: why the datagram is refused.
NOT_UNICAST = 0  # sent to a broadcast or multicast address
NO_DESTINATION = 1  # the kernel did not say where it was sent (or truncated it)
NOT_IP = 2  # from no IP address
# A --workers worker's counts in shared memory: native uint64 slots.
RECEIVED, REPLIED, BYTES_IN, BYTES_OUT = 0, 1, 2, 3
COUNT_SLOTS = 4
COUNTS_SIZE = 8 * COUNT_SLOTS
# The receive buffers a batch needs (BATCH of BUFFER_SIZE): reserved at start.
RECEIVE_BUFFERS = BATCH * BUFFER_SIZE

SHARED = (
    "BATCH",
    "BUFFER_SIZE",
    "NOT_UNICAST",
    "NO_DESTINATION",
    "NOT_IP",
    "RECEIVED",
    "REPLIED",
    "BYTES_IN",
    "BYTES_OUT",
    "COUNT_SLOTS",
)


def c_header() -> str:
    """udpupper/_layout.h: these as the C helpers' #defines."""
    lines = [
        "/* Written by setup.py from udpupper/abi.py: change it there. */",
        "#ifndef UDPUPPER_LAYOUT_H",
        "#define UDPUPPER_LAYOUT_H",
    ]
    lines += [f"#define LAYOUT_{name} {globals()[name]}" for name in SHARED]
    return "\n".join([*lines, "#endif", ""])


def mebibytes(size: int) -> str:
    """``4 MiB``, as a message says a size."""
    return f"{size / (1 << 20):g} MiB"


if __name__ == "__main__":
    print(c_header(), end="")
