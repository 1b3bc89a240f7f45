"""What the ``--workers`` parent knows of its workers' counters.

Each worker reports its totals once a second; a worker that ends leaves
what it counted, and what it read and sent after its last report (shared
memory, :class:`~udpupper.server.workers.worker.SharedCounts`), in the
totals.  The totals never go back.
"""

from __future__ import annotations

from udpupper.server.stats import Reason, Stats


class WorkerCounters:
    """Every worker's counters as last reported, and what its earlier runs
    counted before they ended: the totals never go back."""

    def __init__(self, names: list[str]) -> None:
        self.current = {name: Stats() for name in names}
        self.retired = {name: Stats() for name in names}
        self.prefixes = dict.fromkeys(names, 0)

    def update(self, name: str, report: dict) -> None:
        stats = self.current[name] = Stats.from_dict(report)
        stats.kernel_drops = 0  # the socket's: the parent reads them itself
        self.prefixes[name] = int(report.get("prefixes", 0))

    def retire(self, name: str, shared: Stats | None = None) -> Stats:
        """A worker ended: keep its counts in the totals; its own start over.

        ``shared`` is what it read and sent, counted in shared memory as it
        did: what its last report does not cover is counted too (replies as
        replied, the rest as ``worker_ended``), so that nothing it read is in
        no counter.  What it returns is the last report, as the worker said.
        """
        last = self.current[name]
        counted = Stats()
        counted.add(last)
        if shared is not None:
            for field in ("received", "replied", "bytes_in", "bytes_out"):
                setattr(counted, field, max(getattr(shared, field), getattr(last, field)))
            counted.drops[Reason.WORKER_ENDED] += max(
                counted.received - counted.replied - counted.dropped, 0
            )
        self.retired[name].add(counted)
        self.current[name] = Stats()
        self.prefixes[name] = 0
        return last

    def totals(self) -> Stats:
        total = Stats()
        for name in self.current:
            total.add(self.retired[name])
            total.add(self.current[name])
        return total
