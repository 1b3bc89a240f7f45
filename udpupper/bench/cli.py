"""``udpupper-bench``: measure an upper-case UDP echo server from this host."""

from __future__ import annotations

import json
import os
import sys

from twisted.python import usage

from udpupper.bench.flood import FLOODS, run_flood
from udpupper.bench.histogram import Histogram, check_plot_path, plot, render
from udpupper.bench.load import HEADER, PAYLOADS, Bench, Result, report
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    non_negative_float,
    one_line,
    peer_port,
    positive_float,
)
from udpupper.transform import MAX_IPV4_PAYLOAD

COMMAND = "udpupper-bench"


def one_of(choices: tuple[str, ...]):
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


payload_kind = one_of(PAYLOADS)


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``udpupper-bench``."""

    command = COMMAND
    usage_status = 2
    synopsis = (
        f"Usage: {COMMAND} [--host H] [--port P] [--duration S] [--warmup S] "
        "[--window N] [--sockets N] [--size BYTES] [--payload ascii|unicode|binary] "
        "[--timeout S] [--json] [--histogram] [--plot FILE.png] [--prefixes] "
        "[--flood random|one [--flood-rate N] [--quiet-rate N] [--metrics URL]]"
    )
    longdesc = (
        "Keep WINDOW requests in flight on each of SOCKETS sockets for DURATION "
        "seconds (after WARMUP), check every reply against the upper-cased "
        "request, and report replies a second, losses, mismatches and latency. "
        "Runs are bounded: at most 600 s, 64 sockets, 1024 requests per socket. "
        "With --flood, instead: an open-loop flood of 32-byte datagrams to "
        "127.0.0.1 from every /24 of 127/8 (random) or from one /24 (one), with a "
        "quiet client beside it; the daemon's intake is read from --metrics."
    )
    optFlags = [
        ["json", None, "Print one JSON object instead of the summary."],
        [
            "histogram",
            None,
            "Also show the latency distribution as a bar chart "
            "(log-scale buckets; with --json, as a list).",
        ],
        [
            "prefixes",
            None,
            "Send each socket's requests from its own /24 "
            "(127.0.N.1: an IPv4 loopback server only), as --workers steers them.",
        ],
    ]
    optParameters = [
        ["host", "H", "127.0.0.1", "Server address or name."],
        ["port", "p", 12000, "Server UDP port."],
        ["duration", "d", 5, "Seconds to measure, at most 600."],
        ["warmup", "W", 1, "Seconds to run before measuring, at most 60."],
        ["window", "w", 64, "Requests in flight per socket, 1 to 1024."],
        ["sockets", "n", 1, "Sockets (distinct source ports), 1 to 64."],
        ["size", "s", 32, f"Request size in bytes, {HEADER} to {MAX_IPV4_PAYLOAD}."],
        ["payload", None, "ascii", "What requests carry: ascii, unicode or binary."],
        ["timeout", "t", 0.5, "Seconds after which a request counts as lost."],
        ["flood", None, None, "Flood from spoofed loopback sources: random or one."],
        ["flood-rate", None, 0, "Flood datagrams a second; 0: as fast as it can."],
        ["quiet-rate", None, 100, "Datagrams a second the quiet client sends, 1 to 10000."],
        [
            "metrics",
            None,
            None,
            "The daemon's metrics page, e.g. "
            "http://127.0.0.1:9812/metrics, for its intake under the flood.",
        ],
        [
            "plot",
            None,
            None,
            "Also write the latency distribution as a PNG (needs matplotlib: the plot extra).",
        ],
    ]
    checks = {
        "port": peer_port,
        "duration": bounded(positive_float, 0.1, 600),
        "warmup": bounded(non_negative_float, 0, 60),
        "window": bounded(count, 1, 1024),
        "sockets": bounded(count, 1, 64),
        "size": bounded(count, HEADER, MAX_IPV4_PAYLOAD),
        "payload": payload_kind,
        "timeout": bounded(positive_float, 0.001, 60),
        "flood": one_of(FLOODS),
        "flood-rate": bounded(count, 0, 10_000_000),
        "quiet-rate": bounded(count, 1, 10_000),
        "plot": lambda path: None if path is None else check_plot_path(path),
    }

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument: {args[0]!r}")

    def postOptions(self) -> None:
        super().postOptions()
        if self["prefixes"] and not self["host"].startswith("127."):
            raise usage.UsageError(
                "--prefixes sends from 127.0.N.1: only to an IPv4 loopback server"
            )
        if self["flood"] is not None:
            for name in ("histogram", "plot", "prefixes"):
                if self[name]:
                    raise usage.UsageError(f"--{name} is not for --flood (no latencies)")


def progress_line(result: Result, elapsed: float) -> None:
    rate = result.received / elapsed if elapsed > 0 else 0
    print(
        f"\r{elapsed:6.1f} s  {rate:12,.0f} replies/s  lost {result.lost:,}  "
        f"mismatched {result.mismatched:,}",
        end="",
        file=sys.stderr,
        flush=True,
    )


def can_draw_blocks() -> bool:
    """Whether stdout takes the block characters the bars are made of."""
    try:
        "\u2588\u258f".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0 when nothing was lost or wrong."""
    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    if options["flood"] is not None:
        flood(options)
    try:
        bench = Bench(
            options["host"],
            options["port"],
            window=options["window"],
            sockets=options["sockets"],
            size=options["size"],
            payload=options["payload"],
            timeout=options["timeout"],
            prefixes=options["prefixes"],
        )
    except OSError as error:
        print(one_line(f"{COMMAND}: {options['host']}: {error}"), file=sys.stderr)
        raise SystemExit(2) from None
    interactive = os.isatty(2) and not options["json"]
    try:
        result = bench.run(
            options["duration"], options["warmup"], progress_line if interactive else None
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        bench.close()
    if interactive:
        print(file=sys.stderr)
    histogram = Histogram.of_weighted(result.weighted_us())
    if options["json"]:
        figures = result.as_dict()
        if options["histogram"]:
            figures["histogram"] = histogram.as_list()
        print(json.dumps(figures))
    else:
        report(result)
        if options["histogram"] and result.received:
            print()
            print("\n".join(render(histogram, unicode=can_draw_blocks())))
    if options["plot"] and result.received:
        title = (
            f"udpupper-bench: {options['host']}:{options['port']}, "
            f"{result.received:,} replies of {options['size']} B, "
            f"window {options['window']} x {options['sockets']}"
        )
        try:
            plot(histogram, options["plot"], title)
        except OSError as error:  # the folder went away, the disk is full
            print(
                one_line(
                    f"{COMMAND}: --plot: cannot write {options['plot']}: {error.strerror or error}"
                ),
                file=sys.stderr,
            )
            raise SystemExit(1) from None
    raise SystemExit(0 if not (result.lost or result.mismatched) and result.received else 1)


def flood(options: Options) -> None:
    """``--flood``: one flood, its figures, exit 0 when the quiet client got
    99% of its replies."""
    try:
        result = run_flood(
            options["port"],
            options["flood"],
            options["duration"],
            options["flood-rate"],
            options["quiet-rate"],
            options["metrics"],
            warmup=options["warmup"],
        )
    except ImportError:
        print(f"{COMMAND}: --flood needs the C helper (udpupper._batch)", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"{COMMAND}: --flood: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    figures = result.as_dict()
    if options["json"]:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:22} {value}")
    raise SystemExit(0 if result.quiet_answered >= 0.99 * result.quiet_sent else 1)


if __name__ == "__main__":
    main()
