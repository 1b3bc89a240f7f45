"""The yardstick the bench scripts measure against: bench/servers/limit.c,
the limit of one core, built where there is a C compiler; and how they name
a server that failed them."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import BinaryIO

HERE = os.path.dirname(os.path.abspath(__file__))


def build_limit(directory: str) -> str | None:
    """bench/servers/limit.c built in ``directory``, or None without a compiler."""
    compiler = next(
        (cc for cc in (os.environ.get("CC"), "cc", "gcc", "clang") if cc and shutil.which(cc)), None
    )
    if compiler is None:
        return None
    binary = os.path.join(directory, "limit")
    subprocess.run(
        [compiler, "-O3", "-o", binary, os.path.join(HERE, "servers", "limit.c")], check=True
    )
    return binary


def last_line(log: BinaryIO) -> str:
    """The last line a server wrote to ``log`` that is not blank, or ''."""
    log.seek(0)
    said = [
        line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()
    ]
    return said[-1] if said else ""
