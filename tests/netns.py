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


class Hosts:
    """Network namespaces joined by veth pairs, built by a subclass:
    :meth:`join` two hosts, :meth:`route` one through another,
    :meth:`forward` on a router; :meth:`remove` them all."""

    def __init__(self, tag: str, names: str) -> None:
        self.suffix = f"{os.getpid() % 100000}{tag}"
        self.namespaces = tuple(f"uu-{name}{self.suffix}" for name in names)
        for namespace in self.namespaces:
            ip("netns", "add", namespace)

    def join(self, near: str, far: str, near_addresses: list[str], far_addresses: list[str]):
        """A link between namespaces ``near`` and ``far`` with these
        addresses (CIDR) on each end: the two devices' names."""
        index = len(getattr(self, "_links", ()))
        self._links = [*getattr(self, "_links", ()), index]
        devices = f"uun{index}{self.suffix}", f"uuf{index}{self.suffix}"
        ip("link", "add", devices[0], "type", "veth", "peer", "name", devices[1])
        for namespace, device, addresses in (
            (near, devices[0], near_addresses),
            (far, devices[1], far_addresses),
        ):
            ip("link", "set", device, "netns", namespace)
            for address in addresses:
                extra = ["nodad"] if ":" in address else []
                ip("-n", namespace, "addr", "add", address, "dev", device, *extra)
            ip("-n", namespace, "link", "set", device, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        return devices

    def route(self, namespace: str, via: tuple[str, str]) -> None:
        """Default routes of ``namespace`` through (IPv4, IPv6) ``via``."""
        ip("-n", namespace, "route", "add", "default", "via", via[0])
        ip("-n", namespace, "-6", "route", "add", "default", "via", via[1])

    def forward(self, namespace: str) -> None:
        subprocess.run(
            [
                *self.run_in(namespace),
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && "
                "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def wait_for_addresses(self, deadline: float = 30.0) -> None:
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

    def run_in(self, namespace: str) -> list[str]:
        """The command prefix that runs a program on one of the hosts."""
        return ["ip", "netns", "exec", namespace]

    def remove(self) -> None:
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


class Routed(Hosts):
    """Three hosts in a line, ``client`` - ``router`` - ``server``, on two
    links (10.79.1.0/24 and 2001:db8:79:1::/64 on the client's side,
    10.79.2.0/24 and 2001:db8:79:2::/64 on the server's), so that what the
    network says of a datagram comes from a hop between (the router), as it
    does on a real path."""

    CLIENT, ROUTER_NEAR = ("10.79.1.2", "2001:db8:79:1::2"), ("10.79.1.1", "2001:db8:79:1::1")
    ROUTER_FAR, SERVER = ("10.79.2.1", "2001:db8:79:2::1"), ("10.79.2.2", "2001:db8:79:2::2")

    def __init__(self, tag: str) -> None:
        super().__init__(tag, "crs")
        self.client, self.router, self.server = self.namespaces
        try:
            self.join(self.client, self.router, cidr(self.CLIENT), cidr(self.ROUTER_NEAR))
            # The link between the router and the server: give it a small
            # MTU (both ends, :meth:`narrow`) and the router says "too big"
            # to the client.
            self.router_far, self.server_device = self.join(
                self.router, self.server, cidr(self.ROUTER_FAR), cidr(self.SERVER)
            )
            self.route(self.client, self.ROUTER_NEAR)
            self.route(self.server, self.ROUTER_FAR)
            self.forward(self.router)
            self.wait_for_addresses()
        except BaseException:
            self.remove()
            raise

    def narrow(self, mtu: int) -> None:
        """Give the link between the router and the server an MTU of ``mtu``."""
        ends = ((self.router, self.router_far), (self.server, self.server_device))
        for namespace, device in ends:
            ip("-n", namespace, "link", "set", device, "mtu", str(mtu))


def cidr(addresses: tuple[str, str]) -> list[str]:
    """(IPv4, IPv6) as a /24 and a /64."""
    return [f"{addresses[0]}/24", f"{addresses[1]}/64"]


class Balanced(Hosts):
    """A ``client`` host, a ``balancer`` and three udpupper ``hosts`` behind
    it, each on a link of its own (10.90.N.0/24 and fd00:90:N::/64, N = 1
    to 3, the balancer at .1, the host at .2).  The client has addresses in
    several prefixes (:attr:`PREFIXES`: /24s and /56s, six hosts each) on
    its link to the balancer (10.89.0.0/16, fd00:89::/48); every host routes
    through the balancer."""

    PREFIXES = {
        **{f"10.89.{n}.0/24": [f"10.89.{n}.{h}" for h in range(2, 8)] for n in (1, 2, 3)},
        **{
            f"fd00:89:0:{n}00::/56": [f"fd00:89:0:{n}{h:02x}::2" for h in range(2, 8)]
            for n in (1, 2, 3)
        },
    }
    HOSTS = [(f"10.90.{n}.2", f"fd00:90:{n}::2") for n in (1, 2, 3)]

    def __init__(self, tag: str) -> None:
        super().__init__(tag, "cb123")
        self.client, self.balancer, *self.hosts = self.namespaces
        try:
            mine = ["fd00:89::2/64"] + [  # (the first: the balancer on its link)
                f"{host}/{16 if '.' in host else 64}"
                for hosts in self.PREFIXES.values()
                for host in hosts
            ]
            self.join(self.client, self.balancer, mine, ["10.89.0.1/16", "fd00:89::1/48"])
            self.route(self.client, ("10.89.0.1", "fd00:89::1"))
            for n, (host, (v4, v6)) in enumerate(zip(self.hosts, self.HOSTS), 1):
                self.join(
                    self.balancer,
                    host,
                    [f"10.90.{n}.1/24", f"fd00:90:{n}::1/64"],
                    [f"{v4}/24", f"{v6}/64"],
                )
                self.route(host, (f"10.90.{n}.1", f"fd00:90:{n}::1"))
            self.forward(self.balancer)
            self.wait_for_addresses()
        except BaseException:
            self.remove()
            raise
