"""Which of the C helpers this process runs, and why not the others.

udpupper has five optional C helpers, each the twin of a Python class or
function that runs where the helper is missing (no compiler at install,
another system): every module that has a twin asks :func:`load` here, and
nowhere else, for its helper.  ``UDPUPPER_PURE_PYTHON=1`` makes every one
missing, for tests and for a user who wants the Python path; the daemon
says once at start what runs without its helper, and why
(:func:`warning`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# name -> (module, what runs without it, and how fast, roughly)
HELPERS = {
    "batch": (
        "udpupper._batch",
        "datagrams read through ctypes' recvmmsg (or one a "
        "system call), sent one run a call: about 0.6x the speed",
    ),
    "transform": ("udpupper._transform", "upper-casing in Python: about 0.9x"),
    "ratelimit": (
        "udpupper.server.protections._ratelimit",
        "the rate limiter's tables in Python dicts: about 0.85x under a flood from many prefixes",
    ),
    "sources": ("udpupper.server.protections._sources", "each new source address read in Python"),
    "loops": ("udpupper.server.protections._loops", "the loop breaker in Python"),
}
PURE_PYTHON = os.environ.get("UDPUPPER_PURE_PYTHON", "") not in ("", "0")
missing: dict[str, str] = {}  # helper -> why it does not run


def load(name: str) -> ModuleType | None:
    """The C helper ``name`` (a key of HELPERS), or None, and why, in ``missing``."""
    module, _ = HELPERS[name]
    if PURE_PYTHON:
        missing[name] = "UDPUPPER_PURE_PYTHON is set"
        return None
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing[name] = f"{error}" or "not built"
        return None


def warning() -> str | None:
    """The one line the daemon says at start when a helper does not run."""
    if not missing:
        return None
    parts = [
        f"{HELPERS[name][0]} ({why}): {HELPERS[name][1]}" for name, why in sorted(missing.items())
    ]
    fix = "" if PURE_PYTHON else "; install a C compiler and Python's headers, then reinstall"
    return "udpupper runs without its C helpers " + "; ".join(parts) + fix
