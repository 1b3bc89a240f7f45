"""``twistd udpupper``: command-line options and the service they make."""

from __future__ import annotations

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.python import usage

from udpupper.options import OneLineUsageErrors, port_number
from udpupper.service import UpperService

DEFAULT_PORT = 12000


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``twistd udpupper``."""

    command = "twistd udpupper"
    synopsis = "[--port PORT] [--interface ADDRESS]"
    longdesc = (
        "Answer every UDP datagram with its text in upper case (UTF-8; bytes "
        "that are not UTF-8 come back unchanged)."
    )
    optParameters = [
        ["port", "p", DEFAULT_PORT, "UDP port to listen on; 0 picks a free one."],
        [
            "interface",
            "i",
            None,
            "IPv4 or IPv6 address to listen on "
            "[default: :: serving IPv4 and IPv6, or 0.0.0.0 without IPv6].",
        ],
    ]

    checks = {"port": port_number}

    def postOptions(self) -> None:
        super().postOptions()
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
