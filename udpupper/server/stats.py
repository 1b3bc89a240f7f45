"""The daemon's counters: one small object that logs and metrics both read."""

from __future__ import annotations

from enum import Enum
from errno import EAGAIN, ECONNREFUSED, EMSGSIZE, ENOBUFS, EWOULDBLOCK


class Reason(str, Enum):
    """Why a received datagram got no reply: the one list of drop reasons.

    The counters, the log lines, the metrics' label values and the tests all
    take their names from here, so a misspelt reason is an error, never a
    new series.  The members are their names as strings.
    """

    # Where it was sent (the port's destination check on a wildcard bind).
    NOT_UNICAST_DESTINATION = "not_unicast_destination"
    NO_DESTINATION = "no_destination"  # the kernel did not say, or truncated it
    # Who sent it (the loop guard).
    BAD_SOURCE = "bad_source"
    LOW_SOURCE_PORT = "low_source_port"
    LOOP = "loop"
    # How much (the rate limit and the amplification cap).
    RATE_LIMITED = "rate_limited"
    NEW_PREFIX_LIMITED = "new_prefix_limited"  # too many prefixes not seen lately
    AMPLIFICATION = "amplification"
    # The reply could not be sent.
    TOO_LARGE = "too_large"
    SEND_BUFFER_FULL = "send_buffer_full"
    REFUSED = "refused"
    SEND_ERROR = "send_error"
    # A bug of ours: counted and logged, and the daemon goes on.
    INTERNAL_ERROR = "internal_error"
    # Read by a --workers worker that ended (killed, say) before it reported
    # what became of it: some of these may have been answered.
    WORKER_ENDED = "worker_ended"
    # Dropped by the kernel before the daemon could read it.
    RECEIVE_BUFFER_FULL = "receive_buffer_full"

    def __str__(self) -> str:
        return self.value


# Why a reply could not be sent, by the errno that the kernel gave.
SEND_ERRORS = {
    EMSGSIZE: Reason.TOO_LARGE,
    EAGAIN: Reason.SEND_BUFFER_FULL,
    EWOULDBLOCK: Reason.SEND_BUFFER_FULL,
    ENOBUFS: Reason.SEND_BUFFER_FULL,
    ECONNREFUSED: Reason.REFUSED,
}


class Stats:
    """Counts datagrams and bytes in and out, and drops by reason.

    Plain attributes, so the hot path pays one attribute update per count.
    ``drops`` are the datagrams the daemon received and did not answer, by
    :class:`Reason` (every reason is there, from 0: another key is a
    ``KeyError``); ``kernel_drops`` are those the kernel dropped on the
    daemon's socket before it could read them (its receive buffer was full).
    """

    __slots__ = ("bytes_in", "bytes_out", "drops", "kernel_drops", "received", "replied")

    def __init__(self) -> None:
        self.received = 0
        self.replied = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.drops: dict[Reason, int] = {
            reason: 0 for reason in Reason if reason is not Reason.RECEIVE_BUFFER_FULL
        }
        self.kernel_drops = 0

    def drop(self, reason: Reason) -> None:
        """Count one datagram that got no reply, and why."""
        self.drops[reason] += 1

    def send_failed(self, errno: int | None) -> None:
        """Count a reply that the kernel refused with ``errno``, by reason."""
        reason = Reason.SEND_ERROR if errno is None else SEND_ERRORS.get(errno, Reason.SEND_ERROR)
        self.drops[reason] += 1

    @property
    def dropped(self) -> int:
        """How many received datagrams got no reply, whatever the reason."""
        return sum(self.drops.values())

    def counted(self) -> dict[Reason, int]:
        """The reasons that dropped anything, with their counts."""
        return {reason: count for reason, count in self.drops.items() if count}

    def all_drops(self) -> dict[Reason, int]:
        """Every reason's count, the kernel's included."""
        return {**self.drops, Reason.RECEIVE_BUFFER_FULL: self.kernel_drops}

    def as_dict(self) -> dict:
        """The counters as plain data: what a worker reports to its parent."""
        return {
            "received": self.received,
            "replied": self.replied,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "kernel_drops": self.kernel_drops,
            "drops": {reason.value: count for reason, count in self.drops.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Stats:
        """The counters :meth:`as_dict` gave (a reason unknown here is skipped)."""
        stats = cls()
        for name in ("received", "replied", "bytes_in", "bytes_out", "kernel_drops"):
            setattr(stats, name, int(data.get(name, 0)))
        for name, count in data.get("drops", {}).items():
            try:
                reason = Reason(name)
            except ValueError:
                continue
            if reason in stats.drops:
                stats.drops[reason] = int(count)
        return stats

    def add(self, other: Stats) -> None:
        """Add ``other``'s counts to these (totals over workers)."""
        self.received += other.received
        self.replied += other.replied
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.kernel_drops += other.kernel_drops
        for reason, count in other.drops.items():
            self.drops[reason] += count

    def summary(self) -> str:
        """One line for the log: every counter, the drops by reason that had any."""
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.counted().items()))
        return (
            f"received={self.received} replied={self.replied} "
            f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} "
            f"dropped={self.dropped}"
            + (f" ({reasons})" if reasons else "")
            + f" kernel_drops={self.kernel_drops}"
        )
