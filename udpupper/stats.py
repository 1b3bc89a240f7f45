"""The daemon's counters: one small object that logs and metrics both read."""

from __future__ import annotations

from collections import Counter
from errno import EAGAIN, ECONNREFUSED, EMSGSIZE, ENOBUFS, EWOULDBLOCK

# Why a reply could not be sent, by the errno that sendto() gave.
SEND_ERRORS = {
    EMSGSIZE: "too_large",
    EAGAIN: "send_buffer_full",
    EWOULDBLOCK: "send_buffer_full",
    ENOBUFS: "send_buffer_full",
    ECONNREFUSED: "refused",
}

# The reason under which the kernel's own drops on our socket are shown.
KERNEL_DROPS = "receive_buffer_full"


class Stats:
    """Counts datagrams and bytes in and out, and drops by reason.

    Plain attributes, so the hot path pays one attribute update per count.
    ``drops`` are the datagrams the daemon received and did not answer;
    ``kernel_drops`` are those the kernel dropped on the daemon's socket
    before it could read them (its receive buffer was full).
    """

    __slots__ = ("received", "replied", "bytes_in", "bytes_out", "drops", "kernel_drops")

    def __init__(self) -> None:
        self.received = 0
        self.replied = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.drops: Counter[str] = Counter()
        self.kernel_drops = 0

    def drop(self, reason: str) -> None:
        """Count one datagram that got no reply, and why."""
        self.drops[reason] += 1

    def send_failed(self, errno: int | None) -> None:
        """Count a reply that the kernel refused with ``errno``, by reason."""
        self.drops[SEND_ERRORS.get(errno, "send_error")] += 1

    @property
    def dropped(self) -> int:
        """How many received datagrams got no reply, whatever the reason."""
        return sum(self.drops.values())

    def all_drops(self) -> dict[str, int]:
        """Drops by reason, the kernel's included (when it dropped any)."""
        drops = dict(self.drops)
        if self.kernel_drops:
            drops[KERNEL_DROPS] = self.kernel_drops
        return drops

    def summary(self) -> str:
        """One line for the log: every counter, drops by reason."""
        reasons = ", ".join(
            f"{reason}={count}" for reason, count in sorted(self.drops.items())
        )
        return (
            f"received={self.received} replied={self.replied} "
            f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} "
            f"dropped={self.dropped}" + (f" ({reasons})" if reasons else "")
            + f" kernel_drops={self.kernel_drops}"
        )
