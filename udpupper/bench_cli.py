"""``udpupper-bench``: measure an upper-case UDP echo server from this host."""

from __future__ import annotations

import json
import os
import sys

from twisted.python import usage

from udpupper.bench import HEADER, PAYLOADS, Bench, Result, report
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    non_negative_float,
    port_number,
    positive_float,
)
from udpupper.transform import MAX_IPV4_PAYLOAD

COMMAND = "udpupper-bench"


def payload_kind(value: str) -> str:
    if value not in PAYLOADS:
        raise ValueError(f"must be one of {', '.join(PAYLOADS)}, not {value!r}")
    return value


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``udpupper-bench``."""

    command = COMMAND
    usage_status = 2
    synopsis = (
        f"Usage: {COMMAND} [--host H] [--port P] [--duration S] [--warmup S] "
        "[--window N] [--sockets N] [--size BYTES] [--payload ascii|unicode|binary] "
        "[--timeout S] [--json]"
    )
    longdesc = (
        "Keep WINDOW requests in flight on each of SOCKETS sockets for DURATION "
        "seconds (after WARMUP), check every reply against the upper-cased "
        "request, and report replies a second, losses, mismatches and latency. "
        "Runs are bounded: at most 600 s, 64 sockets, 1024 requests per socket."
    )
    optFlags = [["json", None, "Print one JSON object instead of the summary."]]
    optParameters = [
        ["host", "H", "127.0.0.1", "Server address or name."],
        ["port", "p", 12000, "Server UDP port."],
        ["duration", "d", 5.0, "Seconds to measure, at most 600."],
        ["warmup", "W", 1.0, "Seconds to run before measuring, at most 60."],
        ["window", "w", 64, "Requests in flight per socket, 1 to 1024."],
        ["sockets", "n", 1, "Sockets (distinct source ports), 1 to 64."],
        ["size", "s", 32, f"Request size in bytes, {HEADER} to {MAX_IPV4_PAYLOAD}."],
        ["payload", None, "ascii", "What requests carry: ascii, unicode or binary."],
        ["timeout", "t", 0.5, "Seconds after which a request counts as lost."],
    ]
    checks = {
        "port": bounded(port_number, 1, 65535),
        "duration": bounded(positive_float, 0.1, 600),
        "warmup": bounded(non_negative_float, 0, 60),
        "window": bounded(count, 1, 1024),
        "sockets": bounded(count, 1, 64),
        "size": bounded(count, HEADER, MAX_IPV4_PAYLOAD),
        "payload": payload_kind,
        "timeout": bounded(positive_float, 0.001, 60),
    }

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument: {args[0]!r}")


def progress_line(result: Result, elapsed: float) -> None:
    rate = result.received / elapsed if elapsed > 0 else 0
    print(f"\r{elapsed:6.1f} s  {rate:12,.0f} replies/s  lost {result.lost:,}  "
          f"mismatched {result.mismatched:,}", end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0 when nothing was lost or wrong."""
    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    try:
        bench = Bench(options["host"], options["port"], window=options["window"],
                      sockets=options["sockets"], size=options["size"],
                      payload=options["payload"], timeout=options["timeout"])
    except OSError as error:
        print(f"{COMMAND}: {options['host']}: {error}", file=sys.stderr)
        raise SystemExit(2)
    interactive = os.isatty(2) and not options["json"]
    try:
        result = bench.run(options["duration"], options["warmup"],
                           progress_line if interactive else None)
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        bench.close()
    if interactive:
        print(file=sys.stderr)
    if options["json"]:
        print(json.dumps(result.as_dict()))
    else:
        report(result)
    raise SystemExit(0 if not (result.lost or result.mismatched) and result.received else 1)


if __name__ == "__main__":
    main()
