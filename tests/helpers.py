"""Which of the C helpers are built for the Python running the tests.

A checkout built with another Python has the helpers' files for that one
only: the tests then run the pure-Python paths, and must say so, loudly.
"""

from __future__ import annotations

import sys

from udpupper import helpers


def missing() -> list[str]:
    """The helpers that do not import here (or that UDPUPPER_PURE_PYTHON hides)."""
    return [module for name, (module, _) in helpers.HELPERS.items() if helpers.load(name) is None]


def banner() -> str:
    absent = missing()
    version = ".".join(map(str, sys.version_info[:2]))
    if not absent:
        return f"udpupper C helpers: all built for Python {version}"
    return (
        f"udpupper C helpers NOT BUILT for Python {version}: {', '.join(absent)}; "
        f"these tests run the pure-Python paths in their place "
        f"(python setup.py build_ext --inplace builds them)"
    )
