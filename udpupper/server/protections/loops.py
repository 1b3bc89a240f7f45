"""The loop breaker: withhold one in so many replies that echo the last one.

Two echo services can be made to answer each other for ever with one
spoofed datagram.  What comes back to us in such a loop is what we last sent
to that address: exactly, from a plain echo, or with a few bytes written in
(a counter, a timestamp), from a reflector that stamps what it echoes.  So a
datagram that *resembles the last reply sent to its source address* is a
possible echo: same length, and equal to that reply, or equal in at least
two of its four quarters (a stamp shorter than a quarter touches two at
most).  One in ``every`` such datagrams from an address gets no reply.  A
loop has nothing to carry it on after one withheld reply, so it ends within
``every`` round trips; a client that repeats itself (a file of identical
upper-case lines, a benchmark's numbered requests made of digits) loses one
reply in ``every`` and sends that line again, which ``udpupper-client`` does
after a few round trips.  Lower-case requests never resemble their
upper-cased replies, so ordinary text is never withheld.

``LoopBreaker``, ``sketch`` and ``echoes`` are in C (``_loops.c``) where it
could be built, since every answered datagram is compared and, under a
flood of never-seen sources, remembered; ``PythonLoopBreaker``,
``python_sketch`` and ``python_echoes`` are what runs without a compiler,
and the tests hold the two to each other.

The source port is not part of the key, so a loop through a proxy that
changes its source port is seen too.  Addresses are remembered in two
generations of at most ``size`` each (as the rate limiter's table): bounded,
whatever the flood, and a flood only ever makes a loop live longer by
resetting its count.  What is remembered of a reply is its length and at
most 32 bytes (four 8-byte samples of a longer one).
"""

from __future__ import annotations

LOOP_MEMORY = 16_384  # source addresses remembered, per generation
SKETCH = 32  # replies this long or shorter are remembered whole
_PART = SKETCH // 4


def python_sketch(payload: bytes) -> bytes:
    """What is remembered of a reply: itself, or four samples of 8 bytes."""
    size = len(payload)
    if size <= SKETCH:
        return payload
    step = size // 4
    return (payload[:_PART] + payload[step:step + _PART]
            + payload[2 * step:2 * step + _PART] + payload[-_PART:])


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
    if new[q:2 * q] == last[q:2 * q]:
        if first:
            return True
    elif not first:  # two differ: both of the others must be equal
        return new[2 * q:3 * q] == last[2 * q:3 * q] and new[3 * q:] == last[3 * q:]
    return new[2 * q:3 * q] == last[2 * q:3 * q] or new[3 * q:] == last[3 * q:]


def python_echoes(datagram: bytes, last: bytes) -> bool:
    """Whether ``datagram`` resembles a reply of which ``last`` is the sketch."""
    new = python_sketch(datagram)
    return len(new) == len(last) and resembles(new, last)


def python_step(
    recent: dict[str, tuple[int, bytes, int]], host: str, datagram: bytes, reply: bytes,
    every: int,
) -> bool | None:
    """:meth:`PythonLoopBreaker.allow` for a ``host`` that ``recent`` holds;
    None when it holds none (then the generations are the caller's).

    ``python_echoes`` and ``python_sketch`` written in: without a compiler
    this runs for every answered datagram.
    """
    entry = recent.get(host)
    if entry is None:
        return None
    length, last, count = entry
    if len(datagram) == length:
        new = datagram if length <= SKETCH else python_sketch(datagram)
        if len(new) == len(last) and resembles(new, last):
            count += 1
            if count >= every:
                recent[host] = (length, last, 0)
                return False
    size = len(reply)
    recent[host] = (size, reply if size <= SKETCH else python_sketch(reply), count)
    return True


class PythonLoopBreaker:
    """Whether a reply may go, or is withheld to end a possible loop."""

    __slots__ = ("every", "size", "recent", "older")

    def __init__(self, every: int, size: int) -> None:
        if every < 1:
            raise ValueError(f"every must be 1 or more, not {every}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, not {size}")
        self.every = every
        self.size = size
        # host -> (length of the last reply, its sketch, echoes counted since
        # the last withheld one), in two generations.
        self.recent: dict[str, tuple[int, bytes, int]] = {}
        self.older: dict[str, tuple[int, bytes, int]] = {}

    def allow(self, host: str, datagram: bytes, reply: bytes) -> bool:
        """For ``datagram`` from ``host``, answered with ``reply``: may it go?"""
        recent = self.recent
        allowed = python_step(recent, host, datagram, reply, self.every)  # the hot path
        if allowed is not None:
            return allowed
        entry = self.older.pop(host, None)
        if len(recent) >= self.size:
            self.older = recent
            self.recent = recent = {}
        if entry is None:
            recent[host] = (len(reply), python_sketch(reply), 0)
            return True
        recent[host] = entry  # back to the recent generation, and judged there
        return bool(python_step(recent, host, datagram, reply, self.every))

    def __len__(self) -> int:
        """How many addresses are remembered: at most twice ``size``."""
        return len(self.recent) + len(self.older)



try:  # the same, in C, where it could be built: every answered datagram is
    # compared (about 0.3 us in Python) and, from a stranger, remembered
    from udpupper.server.protections._loops import LoopBreaker, echoes, sketch
except ImportError:  # pragma: no cover - depends on the build
    LoopBreaker = PythonLoopBreaker  # type: ignore[misc, assignment]
    sketch, echoes = python_sketch, python_echoes
