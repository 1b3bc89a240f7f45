"""Command-line pieces that the daemon and the client share."""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from twisted.python import usage


def _convert(value: str, kind: type, what: str):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"not {what}: {value!r}") from None


def _whole(value: str | int, what: str) -> int:
    """``value`` in plain ASCII digits, no sign: ``-0``, ``+5``, ``1_000`` and
    other scripts' digits are not the numbers a user meant to type."""
    if isinstance(value, int):
        return value
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"not {what}: {value!r}")
    return int(value)


def port_number(value: str, lowest: int = 0) -> int:
    """A UDP port number, ``lowest`` (0: pick one) to 65535."""
    number = _whole(value, "a port number")
    if not lowest <= number <= 65535:
        raise ValueError(f"must be {lowest} to 65535, not {number}")
    return number


def peer_port(value: str) -> int:
    """A port to send to: 1 to 65535."""
    return port_number(value, 1)


def _figure(number: float) -> str:
    """A bound as a person reads it: 16777216, not 1.67772e+07."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def positive_float(value: str) -> float:
    """A finite number greater than zero (seconds, a factor)."""
    number = _convert(value, float, "a number")
    if not 0 < number < float("inf"):
        raise ValueError(f"must be a finite number greater than 0, not {value}")
    return number


def non_negative_float(value: str) -> float:
    """A finite number, zero or more."""
    number = _convert(value, float, "a number")
    if not 0 <= number < float("inf"):
        raise ValueError(f"must be a finite number, 0 or more, not {value}")
    return number


def unicast_interface(value: str | None) -> str | None:
    """An IPv4 or IPv6 address to listen on, not broadcast or multicast.

    A wildcard (``::``, ``0.0.0.0``) serves every local address.
    """
    if value is None:
        return None
    text, scoped, scope = value.partition("%")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"must be an IPv4 or IPv6 address, not {value!r}") from None
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"must be a unicast address, not {value!r}")
    if scoped:
        if address.version == 4:
            raise ValueError(f"an IPv4 address has no scope: {value!r}")
        if not address.is_link_local:
            raise ValueError(f"only a link-local address (fe80::/10) takes a scope, not {value!r}")
        try:
            if scope.isdigit():
                socket.if_indextoname(int(scope))
            else:
                socket.if_nametoindex(scope)
        except (OSError, OverflowError):
            raise ValueError(
                f"no network interface {scope!r} on this host (in {value!r})"
            ) from None
    return value


def count(value: str) -> int:
    """A whole number, zero or more, in plain digits."""
    if (
        isinstance(value, str)
        and value.startswith("-")
        and value[1:].isascii()
        and value[1:].isdigit()
        and int(value[1:])
    ):
        raise ValueError(f"must be 0 or more, not {value}")
    return _whole(value, "a whole number")


def _finite(value: str) -> float | None:
    """``value`` as a finite number, or None where it is none."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def bounded(check: Callable, low: float, high: float) -> Callable:
    """``check``, and then the value must be from ``low`` to ``high``.

    A number ``check`` refuses for its sign (``-1`` for a count) is told
    this range too, not only ``check``'s floor: ``--workers -1`` must not
    suggest that 0 would do.
    """

    def checked(value):
        try:
            number = check(value)
        except ValueError:
            number = _finite(value)
            if number is None or low <= number <= high:
                raise
        if not low <= number <= high:
            raise ValueError(f"must be {_figure(low)} to {_figure(high)}, not {_figure(number)}")
        return number

    return checked


def one_line(text: str) -> str:
    """``text`` with every character that could end or garble a line escaped.

    An error line may quote what a user typed (``--metrics=$'\\x1e'``) or
    what a library said about it; it stays one line on any terminal.
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# The process twistd runs in the foreground when it is to fork the daemon
# into the background, and the log file the daemon will write: set by
# ``twistd udpupper``'s makeService.
_foreground: int | None = None
_log_file: str | None = None


def expect_background(log_file: str | None = None) -> None:
    """twistd will fork the daemon: in any other process than this one,
    :func:`exit_with` fails twistd's start instead of exiting.

    twistd without ``-n`` forks the daemon, and its first process waits for
    the daemon to write to a pipe that the start succeeded or failed, which
    it does for an ``Exception`` but not for ``SystemExit``; and the waiting
    process holds the pipe's other end itself, so it then waits for ever
    (Twisted 22.10 to 26.10).  An ``Exception`` is written there: the first
    process says it and exits 1, and the daemon removes its pidfile.

    Until then, in the foreground, :func:`exit_with` writes its line to
    ``log_file`` too, where the daemon would have logged it.
    """
    global _foreground, _log_file
    _foreground = os.getpid()
    _log_file = log_file


def exit_with(line: str, status: int = 1) -> NoReturn:
    """End the program with ``line`` on standard error, and ``status``.

    Written to file descriptor 2 itself: once twistd logs, ``sys.stderr`` is
    its log (stdout with -n), not the terminal or the journal where a user
    looks for why the daemon did not start.  In the background (see
    :func:`expect_background`), logged, and raised for twistd to report.
    """
    line = one_line(line)
    if _foreground is not None and os.getpid() != _foreground:
        from twisted.logger import Logger

        Logger(namespace="udpupper").error("{line}", line=line)
        # A builtin type: twistd passes on "RuntimeError: <line>", 100 bytes.
        raise RuntimeError(line.removeprefix("udpupper: "))
    try:
        os.write(2, line.encode("utf-8", "replace") + b"\n")
    except OSError:
        pass  # no standard error to say it on: the status still says it
    if _log_file:
        import time

        try:
            with open(_log_file, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} [udpupper#error] {line}\n")
        except OSError:
            pass
    raise SystemExit(status)


class OneLineUsageErrors:
    """Mix-in for ``usage.Options``: a bad command line gives one line.

    twistd prints its whole help page before a subcommand's usage error; this
    prints only the error, on stderr, and exits with ``usage_status``.
    ``checks`` maps an option to the function that converts and checks its
    value, so that the error names the option.
    """

    command = ""
    usage_status = 1
    checks: dict[str, Callable[[str], object]] = {}

    def postOptions(self) -> None:
        for name, check in self.checks.items():
            try:
                self[name] = check(self[name])  # type: ignore[index]
            except ValueError as error:
                raise usage.UsageError(f"--{name}: {error}") from None

    def opt_version(self) -> None:
        """Print udpupper's version and exit."""
        from udpupper import __version__

        print(f"udpupper {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)  # type: ignore[misc]
        except usage.UsageError as error:
            print(
                one_line(f"{self.command}: error: {error} (see {self.command} --help)"),
                file=sys.stderr,
            )
            raise SystemExit(self.usage_status) from None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """``"127.0.0.0/8,::1/128"`` as networks; the empty string is none.

    Raises ``ValueError`` naming the first entry that is not a network.
    """
    networks = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 network: {entry!r}") from None
    return networks
