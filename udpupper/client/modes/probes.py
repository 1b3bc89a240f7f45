"""``udpupper-client --serve-probes``: the prober, as its options set it."""

from __future__ import annotations

import sys

from udpupper.client.options import COMMAND, Options
from udpupper.client.prober import limits_for, run_prober
from udpupper.passwords import checker


def run(reactor, options: Options) -> int:
    limits = limits_for(
        options["probe-networks"],
        options.exposed,
        max_probes=options["max-probes"],
        max_count=options["max-count"],
        max_duration=options["max-duration"],
        max_scrape_bytes=options["max-scrape-bytes"],
        byte_rate=options["probe-byte-rate"],
    )
    users = options["probe-auth"]
    check = checker(users) if users else None
    if options.exposed and check is None and not options["serve-probes"].startswith("ssl:"):
        print(
            f"{COMMAND}: serving probes beyond this host without TLS or "
            "--probe-auth: anyone who reaches it may have it probe",
            file=sys.stderr,
        )
    return run_prober(reactor, options["serve-probes"], limits, check)
