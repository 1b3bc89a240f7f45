"""The loop breaker: every possible loop withheld once in so many round trips.

Two echo services can be made to answer each other for ever with one
spoofed datagram, and as many loops as datagrams.  What comes back to us in
such a loop is what we last sent into it: exactly, from a plain echo, or
with a few bytes written in (a counter, a timestamp), from a reflector that
stamps what it echoes.  Its replies are then its requests again: upper
case, once upper-cased, stays what it is.

So only a datagram that *resembles its own reply* can be part of a loop:
same length, and equal, or equal in at least two of its four quarters (a
stamp shorter than a quarter touches two at most).  Ordinary lower-case
text never does, and costs nothing more here.  Such a datagram continues a
*chain* when it resembles a reply sent to the same address before: it
shares two quarters with it, so one of the six pairs of quarters, with the
length and the address, is a key the earlier reply left.  Each chain counts
its round trips, and when one reaches ``every`` that datagram gets no
reply: the loop has nothing to carry it on.  Every loop through an address
is its own chain, whatever its payload and however many there are, so each
dies within ``every`` of its own round trips.  A client that repeats
itself (a file of identical upper-case lines, a benchmark's numbered
requests made of digits) is one chain too: it loses one reply in ``every``
and sends that line again, which ``udpupper-client`` does after a few
round trips.

The source port is not part of a key, so a loop through a proxy that
changes its source port is seen too.  Keys are remembered in two
generations of at most ``size`` each (as the rate limiter's table), with
their chain's count: bounded, whatever the flood; a key touched again moves
to the recent generation, so a live loop keeps its count unless a flood
fills a whole generation between two of its round trips.  What is looked at
of a payload is its length and at most 32 bytes (four 8-byte samples of a
longer one).

``LoopBreaker``, ``sketch`` and ``echoes`` are in C (``_loops.c``) where it
could be built; ``PythonLoopBreaker``, ``python_sketch`` and
``python_echoes`` are what runs without a compiler, and the tests hold the
two to each other.
"""

from __future__ import annotations

from udpupper import helpers

# Keys remembered per generation: six for each upper-case reply that
# continues or starts a chain (2 MiB a generation in C).
LOOP_MEMORY = 65_536
SKETCH = 32  # payloads this long or shorter are looked at whole
_PART = SKETCH // 4
# The pairs of quarters that two sketches one stamp apart share one of.
PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def python_sketch(payload: bytes) -> bytes:
    """What is looked at of a payload: itself, or four samples of 8 bytes."""
    size = len(payload)
    if size <= SKETCH:
        return payload
    step = size // 4
    return (
        payload[:_PART]
        + payload[step : step + _PART]
        + payload[2 * step : 2 * step + _PART]
        + payload[-_PART:]
    )


def resembles(new: bytes, last: bytes) -> bool:
    """Whether two sketches of payloads of one length are one echo apart:
    equal, or equal in at least two of their four quarters."""
    if new == last:
        return True
    size = len(new)
    if size < 4:
        return False
    q = size // 4
    # Ordinary traffic differs everywhere: three quarters whose first bytes
    # differ leave at most one equal, told without slicing any.
    if new[0] != last[0] and new[q] != last[q] and new[2 * q] != last[2 * q]:
        return False
    first = new[:q] == last[:q]
    if new[q : 2 * q] == last[q : 2 * q]:
        if first:
            return True
    elif not first:  # two differ: both of the others must be equal
        return new[2 * q : 3 * q] == last[2 * q : 3 * q] and new[3 * q :] == last[3 * q :]
    return new[2 * q : 3 * q] == last[2 * q : 3 * q] or new[3 * q :] == last[3 * q :]


def python_echoes(datagram: bytes, last: bytes) -> bool:
    """Whether ``datagram`` resembles a payload of which ``last`` is the sketch."""
    new = python_sketch(datagram)
    return len(new) == len(last) and resembles(new, last)


def python_keys(host: object, size: int, sketch: bytes) -> list[int]:
    """The keys a payload of ``size`` bytes with ``sketch`` leaves for ``host``:
    one for each pair of quarters (the whole sketch, under four bytes)."""
    if len(sketch) < 4:
        return [hash((host, size, sketch))]
    q = len(sketch) // 4
    parts = (sketch[:q], sketch[q : 2 * q], sketch[2 * q : 3 * q], sketch[3 * q :])
    return [hash((host, size, i, j, parts[i], parts[j])) for i, j in PAIRS]


class PythonLoopBreaker:
    """Whether a reply may go, or is withheld to end a possible loop."""

    __slots__ = ("every", "older", "recent", "size")

    def __init__(self, every: int, size: int) -> None:
        if every < 1:
            raise ValueError(f"every must be 1 or more, not {every}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, not {size}")
        self.every = every
        self.size = size
        # key -> round trips its chain has counted since its last withheld
        # reply, in two generations.
        self.recent: dict[int, int] = {}
        self.older: dict[int, int] = {}

    def allow(self, host: str, datagram: bytes, reply: bytes) -> bool:
        """For ``datagram`` from ``host``, answered with ``reply``: may it go?"""
        size = len(datagram)
        if len(reply) != size:
            return True
        new = python_sketch(datagram)
        out = new if reply == datagram else python_sketch(reply)
        if out is not new and not resembles(new, out):
            return True  # not its own upper case: no loop carries it
        keys = python_keys(host, size, new)
        recent, older = self.recent, self.older
        counted = 0
        for key in keys:
            count = recent.get(key)
            if count is None:
                count = older.get(key)
            if count is not None and count >= counted:
                counted = count + 1
        counted = max(counted, 1)
        if counted >= self.every:
            for key in keys:
                self._put(key, 0)  # withheld: the chain starts again
            return False
        for key in keys if out is new else python_keys(host, size, out):
            self._put(key, counted)
        return True

    def _put(self, key: int, count: int) -> None:
        recent = self.recent
        if key not in recent:
            self.older.pop(key, None)
            if len(recent) >= self.size:
                self.older = recent
                self.recent = recent = {}
        recent[key] = count

    def __len__(self) -> int:
        """How many keys are remembered: at most twice ``size``."""
        return len(self.recent) + len(self.older)


# The same, in C, where it could be built: every answered datagram is
# compared (about 0.3 us in Python) and an upper-case one remembered.
_loops = helpers.load("loops")
if _loops is not None:
    LoopBreaker, echoes, sketch = _loops.LoopBreaker, _loops.echoes, _loops.sketch
else:  # pragma: no cover - depends on the build
    LoopBreaker = PythonLoopBreaker
    sketch, echoes = python_sketch, python_echoes
