"""``--json``: every event of ``--ping`` and ``--sweep`` as one JSON object a
line (JSON Lines), built here alone, so the two modes and docs/client.md's
schema cannot drift apart.

Each object has ``event``, its kind: ``start`` first, ``summary`` last, and
between them what happened, with ``elapsed_s`` (seconds since the start).
"""

from __future__ import annotations

import json


def line(kind: str, **fields) -> str:
    """One event as its line."""
    return json.dumps({"event": kind, **fields})


def happened(kind: str, elapsed: float, **fields) -> str:
    """An event between the start and the summary."""
    return line(kind, elapsed_s=round(elapsed, 6), **fields)


def start(mode: str, host: str, server: tuple[str, int], **fields) -> str:
    """The first line: what the run is, at whom, and how it times."""
    return line("start", mode=mode, host=host, server=server[0], port=server[1], **fields)


def summary(host: str, server: tuple[str, int], **figures) -> str:
    """The last line: what the run found."""
    return line("summary", host=host, server=server[0], port=server[1], **figures)
