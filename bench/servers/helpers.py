"""udpupper's C helpers in a bare loop: the floor under the daemon.

    python bench/servers/helpers.py PORT [ADDRESS]

The daemon's own socket (both stacks on one wildcard socket, where each
datagram was sent to given by the kernel) read and answered with the same
calls the daemon's port makes (``recv_batch``, busy-polling 50 us as
``--busy-poll`` does by default, and ``send_batch``), each datagram
upper-cased with ``udpupper.transform.upper``.  Nothing else: no reactor,
no protocol, no protections, no counters.  What the daemon spends beyond
this loop is its own Python; what this loop spends beyond the C limit is
the interpreter's and the helpers' (docs/performance.md, "Where the time
goes").
"""

import socket
import sys

from udpupper import helpers
from udpupper.kernel import prepare_server_socket
from udpupper.server.port import DEFAULT_BUSY_POLL
from udpupper.server.protections.destination import is_wildcard
from udpupper.server.service import DEFAULT_RCVBUF
from udpupper.transform import upper

_batch = helpers.load("batch")
if _batch is None:
    sys.exit(f"bench/servers/helpers.py: no C helper: {helpers.missing['batch']}")
BATCH, recv_batch, reserve, send_batch = (
    _batch.BATCH,
    _batch.recv_batch,
    _batch.reserve,
    _batch.send_batch,
)

# As the daemon: with no ADDRESS, both stacks on one socket, the kernel
# saying where each datagram was sent; with one, that address alone.
address = sys.argv[2] if len(sys.argv) > 2 else "::"
wildcard = is_wildcard(address)
server = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
if wildcard:
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
prepare_server_socket(server, destinations=wildcard, rcvbuf=DEFAULT_RCVBUF)
server.bind((address, int(sys.argv[1])))
reserve()
fd = server.fileno()
spin = 0
while True:
    try:
        datagrams = recv_batch(fd, BATCH, wildcard, spin, False)
        if not datagrams:
            spin = 0
            # Block until the next one (a length of 1: CPython answers
            # recv(0) itself, at once, without asking the kernel).
            server.recv(1, socket.MSG_PEEK)
            continue
    except OSError:  # a client gone (ICMP unreachable): the daemon goes on too
        continue
    # Helper refusals (an int route) are not answered, as the daemon does.
    send_batch(
        fd,
        [(upper(datagram), route) for datagram, _, route in datagrams if route.__class__ is bytes],
    )
    spin = DEFAULT_BUSY_POLL
