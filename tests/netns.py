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
        source: str = "",
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
        if source:
            command += ["--source", source]
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


class Routed:
    """Three hosts in a line, ``client`` - ``router`` - ``server``, on two
    links (10.79.1.0/24 and 2001:db8:79:1::/64 on the client's side,
    10.79.2.0/24 and 2001:db8:79:2::/64 on the server's), so that what the
    network says of a datagram comes from a hop between (the router), as it
    does on a real path."""

    CLIENT, ROUTER_NEAR = ("10.79.1.2", "2001:db8:79:1::2"), ("10.79.1.1", "2001:db8:79:1::1")
    ROUTER_FAR, SERVER = ("10.79.2.1", "2001:db8:79:2::1"), ("10.79.2.2", "2001:db8:79:2::2")

    def __init__(self, tag: str) -> None:
        suffix = f"{os.getpid() % 100000}{tag}"
        self.client, self.router, self.server = (f"uu-{h}{suffix}" for h in "crs")
        self.namespaces = (self.client, self.router, self.server)
        # The link between the router and the server: give it a small MTU
        # (both ends, :meth:`narrow`) and the router says "too big" to the
        # client.
        self.router_far, self.server_device = f"uur{suffix}", f"uus{suffix}"
        for namespace in self.namespaces:
            ip("netns", "add", namespace)
        try:
            for (near, near_device, near_addresses), (far, far_device, far_addresses) in (
                (
                    (self.client, f"uuc{suffix}", self.CLIENT),
                    (self.router, f"uun{suffix}", self.ROUTER_NEAR),
                ),
                (
                    (self.router, self.router_far, self.ROUTER_FAR),
                    (self.server, self.server_device, self.SERVER),
                ),
            ):
                ip("link", "add", near_device, "type", "veth", "peer", "name", far_device)
                for namespace, device, (v4, v6) in (
                    (near, near_device, near_addresses),
                    (far, far_device, far_addresses),
                ):
                    ip("link", "set", device, "netns", namespace)
                    ip("-n", namespace, "addr", "add", f"{v4}/24", "dev", device)
                    ip("-n", namespace, "addr", "add", f"{v6}/64", "dev", device, "nodad")
                    ip("-n", namespace, "link", "set", device, "up")
                    ip("-n", namespace, "link", "set", "lo", "up")
            for namespace, via in ((self.client, self.ROUTER_NEAR), (self.server, self.ROUTER_FAR)):
                ip("-n", namespace, "route", "add", "default", "via", via[0])
                ip("-n", namespace, "-6", "route", "add", "default", "via", via[1])
            subprocess.run(
                [
                    *self.run_in(self.router),
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv4/ip_forward && "
                    "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._wait_for_addresses()
        except BaseException:
            self.remove()
            raise

    def _wait_for_addresses(self, deadline: float = 30.0) -> None:
        """Until no IPv6 address is tentative (duplicate address detection,
        on the link-local ones): until then the hosts drop what they route."""
        import time

        give_up = time.monotonic() + deadline
        for namespace in self.namespaces:
            while subprocess.run(
                ["ip", "-n", namespace, "-6", "addr", "show", "tentative"],
                capture_output=True,
                check=True,
                timeout=30,
            ).stdout.strip():
                if time.monotonic() > give_up:
                    raise TimeoutError(f"{namespace}: IPv6 addresses still tentative")
                time.sleep(0.05)

    def narrow(self, mtu: int) -> None:
        """Give the link between the router and the server an MTU of ``mtu``."""
        for namespace, device in (
            (self.router, self.router_far),
            (self.server, self.server_device),
        ):
            ip("-n", namespace, "link", "set", device, "mtu", str(mtu))

    def run_in(self, namespace: str) -> list[str]:
        """The command prefix that runs a program on one of the hosts."""
        return ["ip", "netns", "exec", namespace]

    def remove(self) -> None:
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
