"""Every test is of one tier, said by a decorator on its class (or, for a
long run, on its method); ``UDPUPPER_TIERS`` selects tiers under trial and
pytest alike (all of them when it is not set):

- ``unit``: no socket, no process, no real time: a fake clock and reactor;
- ``loopback``: real sockets on 127.0.0.1 and ::1, in the test's process;
- ``system``: programs run as a user runs them (twistd, the client, the
  bench scripts), network namespaces, nginx, Prometheus, root;
- ``long``: seconds of load, or a measure of time: run alone, once.

``make check`` runs unit and loopback; ``make test`` every tier, the long
ones alone after the rest.
"""

from __future__ import annotations

import os

TIERS = ("unit", "loopback", "system", "long")
SELECTED = frozenset(
    name.strip()
    for name in os.environ.get("UDPUPPER_TIERS", ",".join(TIERS)).split(",")
    if name.strip()
)
unknown = SELECTED - set(TIERS)
if unknown:
    raise SystemExit(
        f"UDPUPPER_TIERS: no tier {sorted(unknown)[0]!r}; the tiers: " + ", ".join(TIERS)
    )


def _reason(name: str) -> str:
    return f"a {name} test, and UDPUPPER_TIERS is {','.join(sorted(SELECTED))}"


def _tier(name: str):
    def mark(case):
        case.tier = name
        own_skip = case.__dict__.get("skip")  # what the class says of this host
        for _attribute, method in list(vars(case).items()):
            if getattr(method, "tier", None) == "long" and callable(method):
                # A long run in a class of another tier: the long tier's, and
                # then the class's own reason to skip, whatever its tier.
                method.skip = own_skip if "long" in SELECTED else _reason("long")
        if name not in SELECTED:
            case.skip = _reason(name)
        return case

    return mark


unit, loopback, system, long = (_tier(name) for name in TIERS)


def long_run(test):
    """Mark ``test``, a method, as a long run (its class's decorator acts)."""
    test.tier = "long"
    return test
