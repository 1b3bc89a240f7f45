"""The daemon's counters: one small object that logs and metrics both read."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Counts datagrams and bytes in and out, and drops by reason.

    Plain attributes, so the hot path pays one attribute update per count.
    """

    __slots__ = ("received", "replied", "bytes_in", "bytes_out", "drops")

    def __init__(self) -> None:
        self.received = 0
        self.replied = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.drops: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        """Count one datagram that got no reply, and why."""
        self.drops[reason] += 1

    @property
    def dropped(self) -> int:
        """How many datagrams got no reply, whatever the reason."""
        return sum(self.drops.values())

    def summary(self) -> str:
        """One line for the log: every counter, drops by reason."""
        reasons = ", ".join(
            f"{reason}={count}" for reason, count in sorted(self.drops.items())
        )
        return (
            f"received={self.received} replied={self.replied} "
            f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} "
            f"dropped={self.dropped}" + (f" ({reasons})" if reasons else "")
        )
