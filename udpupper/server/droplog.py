"""Drop reasons in the log, in a way a flood cannot turn into a flood of lines.

Like Knot's ``log-period``: each reason gets a line at most once per period,
saying how many datagrams it dropped since its last line.  It reads the
counters in :class:`~udpupper.server.stats.Stats`; the hot path only counts.
"""

from __future__ import annotations

from twisted.logger import Logger

from udpupper.server.stats import Stats

LOG_PERIOD = 30.0  # seconds between two lines for the same reason


class Throttle:
    """Says yes at most once per ``period``, for a log line that could repeat."""

    __slots__ = ("last", "period")

    def __init__(self, period: float = LOG_PERIOD) -> None:
        self.period = period
        self.last: float | None = None

    def due(self, now: float) -> bool:
        """Whether a line may go at ``now``; if so, the next one waits a period.

        A clock that stepped back is taken at its word: a line may go.
        """
        last = self.last
        if last is not None and 0 <= now - last < self.period:
            return False
        self.last = now
        return True


class DropLog:
    """Turns growing drop counters into at most one line per reason per period."""

    def __init__(self, stats: Stats, log: Logger, period: float = LOG_PERIOD) -> None:
        self.stats = stats
        self.log = log
        self.period = period
        self.reported: dict[str, int] = {}  # count at each reason's last line
        self.last_line: dict[str, float] = {}  # when that line was

    def check(self, now: float) -> None:
        """Log each reason that dropped more and has been quiet long enough."""
        for reason, count in self.stats.all_drops().items():
            new = count - self.reported.get(reason, 0)
            last = self.last_line.get(reason)
            if new <= 0 or (last is not None and now - last < self.period):
                continue
            self.reported[reason] = count
            self.last_line[reason] = now
            self.log.warn(
                "udpupper dropped {new} datagram(s) for {reason} {since}",
                new=new,
                reason=reason,
                since="so far" if last is None else f"in the last {now - last:.0f} s",
                count=count,
            )
