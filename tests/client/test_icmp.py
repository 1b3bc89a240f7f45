"""What the network says of the client's datagrams, shown (issue 33): a
router between the client and the server, in network namespaces, says "too
big", "time exceeded" or, told by nftables to reject, "port unreachable";
``--sweep`` names it and its MTU, ``--ping`` shows it with its source, and a
reject ends ``--ping``, lines mode and a prober's probe at once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import Routed, why_not
from tests.processes import CLIENT, Daemon

FAMILIES = ((0, "fragmentation needed"), (1, "packet too big"))


@tiers.system
class RouterSaysTests(unittest.TestCase):
    skip = why_not() or (None if shutil.which("nft") else "nftables' nft is not installed")

    def setUp(self) -> None:
        self.hosts = Routed("icmp")
        self.addCleanup(self.hosts.remove)
        daemon = Daemon(
            "--port", "0", "--exempt", "", prefix=tuple(self.hosts.run_in(self.hosts.server))
        )
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def client(self, *options: str, stdin: bytes = b"", timeout: float = 120.0):
        return subprocess.run(
            [*self.hosts.run_in(self.hosts.client), *CLIENT, *options],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )

    def in_router(self, rules: str) -> None:
        subprocess.run(
            [*self.hosts.run_in(self.hosts.router), "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def test_sweep_names_the_router_and_its_mtu(self) -> None:
        self.hosts.narrow(1280)
        for (family, said), largest in zip(FAMILIES, (1252, 1232)):
            server, router = Routed.SERVER[family], Routed.ROUTER_NEAR[family]
            result = self.client(
                "--ping", "--sweep", "--host", server, "--port", str(self.port), "--timeout", "0.5"
            )
            lines = result.stdout.decode().splitlines()
            self.assertEqual((result.returncode, result.stderr), (0, b""), lines)
            self.assertTrue(
                any(
                    line.endswith(
                        f"too big for the path: From {router}: too big: {said} (MTU 1280)"
                    )
                    for line in lines
                ),
                lines,
            )
            self.assertIn(
                f"largest answered with the DF bit set: {largest} bytes (1280 with the IP and "
                f"UDP headers); {router} said its MTU is 1280",
                lines,
            )
            # Fragments the router refuses: the client's kernel, told its
            # MTU, makes them smaller, and the sweep sends again at once.
            self.assertTrue(
                lines[-1].endswith(" bytes fragmented: answered, fragments get through"), lines
            )

    def test_ping_shows_time_exceeded_with_its_source(self) -> None:
        self.in_router(
            f"""table inet last_hop {{
                chain pre {{
                    type filter hook prerouting priority -300;
                    # (UDP alone: neighbour discovery needs its hop limit of 255)
                    ip saddr {Routed.CLIENT[0]} meta l4proto udp ip ttl set 1
                    ip6 saddr {Routed.CLIENT[1]} meta l4proto udp ip6 hoplimit set 1
                }}
            }}"""
        )
        for family, said in ((0, "time to live exceeded"), (1, "hop limit exceeded")):
            result = self.client(
                "--ping",
                "--host",
                Routed.SERVER[family],
                "--port",
                str(self.port),
                "--count",
                "2",
                "--interval",
                "0.05",
                "--timeout",
                "1",
            )
            lines = result.stdout.decode().splitlines()
            self.assertEqual((result.returncode, result.stderr), (1, b""), lines)
            self.assertIn(f"From {Routed.ROUTER_NEAR[family]}: {said}", lines)
            self.assertTrue(
                any(
                    line.startswith("2 packets transmitted, 0 received, +")
                    and " errors, 100% packet loss" in line
                    for line in lines
                ),
                lines,
            )

    def reject(self) -> None:
        self.in_router(
            f"""table inet refuse {{
                chain forward {{
                    type filter hook forward priority 0;
                    udp dport {self.port} reject
                }}
            }}"""
        )

    def test_a_reject_ends_ping_and_lines_at_once(self) -> None:
        """An hour's timeout: only the ICMP message can end them in time."""
        self.reject()
        for family in (0, 1):
            server = Routed.SERVER[family]
            result = self.client(
                "--ping", "--host", server, "--port", str(self.port), "--timeout", "3600"
            )
            lines = result.stdout.decode().splitlines()
            self.assertEqual((result.returncode, result.stderr), (1, b""), lines)
            self.assertIn(f"From {Routed.ROUTER_NEAR[family]}: port unreachable", lines)
            result = self.client(
                "--host", server, "--port", str(self.port), "--timeout", "3600", stdin=b"a\nb\n"
            )
            self.assertEqual(result.returncode, 1, result)
            shown = f"[{server}]" if family else server
            self.assertEqual(
                result.stderr.decode().splitlines(),
                [
                    f"udpupper-client: {shown}:{self.port}: From "
                    f"{Routed.ROUTER_NEAR[family]}: port unreachable: no line can be answered"
                ],
            )

    def test_a_reject_ends_a_probe_at_once(self) -> None:
        self.reject()
        directory = tempfile.mkdtemp(prefix="udpupper-icmp-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "probes")
        prober = subprocess.Popen(
            [
                *self.hosts.run_in(self.hosts.client),
                *CLIENT,
                "--serve-probes",
                f"unix:{path}",
                "--probe-networks",
                "10.79.2.0/24",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(prober.communicate, timeout=30)
        self.addCleanup(prober.terminate)
        self.assertEqual(
            prober.stdout.readline().decode(),
            f"udpupper-client: serving probes at unix:{path} /probe\n",
        )
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX) as scrape:
            scrape.settimeout(30)
            scrape.connect(path)
            scrape.sendall(
                f"GET /probe?target={Routed.SERVER[0]}:{self.port}&count=3&timeout=5 HTTP/1.1\r\n"
                "Host: prober\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := scrape.recv(65536):
                answer += chunk
        took = time.monotonic() - started
        text = answer.decode()
        self.assertTrue(text.startswith("HTTP/1.1 200 "), text)
        self.assertIn("\nprobe_success 0\n", text)
        self.assertIn(
            f'udpupper_probe_ended_by_network{{said="port unreachable",'
            f'source="{Routed.ROUTER_NEAR[0]}"}} 1',
            text,
        )
        self.assertLess(took, 5, "ended by the timeout, not by the ICMP message")
