"""``twistd udpupper``: command-line options and the service they make."""

from __future__ import annotations

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.python import usage

from udpupper.service import UpperService

DEFAULT_PORT = 12000


def port_number(value: str) -> int:
    """A UDP port: 0 (pick a free one) to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0 to 65535, not {number}")
    return number


port_number.coerceDoc = "0 to 65535; 0 picks a free port."  # type: ignore[attr-defined]


class OneLineUsageErrors:
    """Mix-in: a bad command line exits 1 with one line, not a help page.

    twistd prints its whole help text before a subcommand's usage error;
    raising ``SystemExit`` with the message instead gives one clear line on
    stderr and a non-zero exit.
    """

    command = ""

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)  # type: ignore[misc]
        except usage.UsageError as error:
            raise SystemExit(
                f"{self.command}: error: {error} (see {self.command} --help)"
            ) from None


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``twistd udpupper``."""

    command = "twistd udpupper"
    synopsis = "[--port PORT] [--interface ADDRESS]"
    longdesc = (
        "Answer every UDP datagram with its text in upper case (UTF-8; bytes "
        "that are not UTF-8 come back unchanged)."
    )
    optParameters = [
        ["port", "p", DEFAULT_PORT, "UDP port to listen on.", port_number],
        [
            "interface",
            "i",
            None,
            "IPv4 or IPv6 address to listen on "
            "[default: :: serving IPv4 and IPv6, or 0.0.0.0 without IPv6].",
        ],
    ]

    def postOptions(self) -> None:
        interface = self["interface"]
        if interface is not None and not (
            isIPAddress(interface) or isIPv6Address(interface)
        ):
            raise usage.UsageError(
                f"--interface must be an IPv4 or IPv6 address, not {interface!r}"
            )


def makeService(config: Options) -> UpperService:
    """Make the service that ``twistd udpupper`` runs."""
    return UpperService(config["port"], config["interface"])
