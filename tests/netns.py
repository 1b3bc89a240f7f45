"""Test hosts in network namespaces joined by a veth pair (root, iproute2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def why_not() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"udpupper-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
        ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"ip netns does not work here: {error}"
    return None


class Link:
    """Two hosts, ``server`` and ``client``, on one Ethernet link.

    The server has ``server_addresses`` (CIDR) on its end, the client one
    address and a default route, so that it can send to any address,
    broadcast and multicast included, through the link.
    """

    def __init__(self, tag: str, server_addresses: list[str], client_addresses: list[str]):
        suffix = f"{os.getpid() % 100000}{tag}"
        self.server, self.client = f"uu-s{suffix}", f"uu-c{suffix}"
        ip("netns", "add", self.server)
        ip("netns", "add", self.client)
        try:
            ip("link", "add", f"uus{suffix}", "type", "veth", "peer", "name", f"uuc{suffix}")
            ip("link", "set", f"uus{suffix}", "netns", self.server)
            ip("link", "set", f"uuc{suffix}", "netns", self.client)
            for namespace, device, addresses in (
                (self.server, f"uus{suffix}", server_addresses),
                (self.client, f"uuc{suffix}", client_addresses),
            ):
                for address in addresses:
                    extra = ["nodad"] if ":" in address else []
                    ip("-n", namespace, "addr", "add", address, "dev", device, *extra)
                ip("-n", namespace, "link", "set", device, "up")
                ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", self.client, "route", "add", "default", "dev", f"uuc{suffix}")
            ip("-n", self.client, "-6", "route", "add", "default", "dev", f"uuc{suffix}")
            self.client_device = f"uuc{suffix}"
            self.server_device = f"uus{suffix}"
        except BaseException:
            self.remove()
            raise

    def in_server(self) -> list[str]:
        """The command prefix that runs a program on the server host."""
        return ["ip", "netns", "exec", self.server]

    def ask(
        self,
        host: str,
        port: int,
        payload: str,
        broadcast: bool = False,
        timeout: float = 2.0,
        burst: int = 0,
    ) -> dict:
        """Send one datagram (or ``burst`` at once) from the client host; the
        reply and its source (the replies)."""
        command = [
            "ip",
            "netns",
            "exec",
            self.client,
            sys.executable,
            "-m",
            "tests.peer",
            host,
            str(port),
            payload,
            "--timeout",
            str(timeout),
        ]
        if broadcast:
            command.append("--broadcast")
        if burst:
            command += ["--burst", str(burst)]
        result = subprocess.run(
            command,
            capture_output=True,
            check=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        return json.loads(result.stdout)

    def remove(self) -> None:
        for namespace in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
