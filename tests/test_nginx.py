"""Scale-out: a real nginx balancing UDP across two udpupper daemons.

Uses contrib/nginx/udpupper.conf itself, with this test's ports: as shipped
(transparent, the clients' addresses kept) in network namespaces, and on
loopback without its proxy_bind lines, the variant the recipe warns of.
Needs nginx with its stream module (CI installs Debian's nginx and
libnginx-mod-stream); skipped where there is none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT, Link, why_not
from tests.processes import METRICS_AT, Daemon
from tests.server.protections.test_loops import scrape
from tests.support import NO_IPV6, free_port, long_run
from udpupper.bench import spoof
from udpupper.server.protections.policy import DEFAULT_LOOP_BUDGET

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


@tiers.system
class NginxCase(unittest.TestCase):
    """Starts nginx with the shipped configuration in front of daemons."""

    skip = None if NGINX else "nginx is not installed"

    def start_nginx(
        self,
        front: int,
        backends: list[int],
        ipv6: bool = False,
        transparent: bool = False,
        prefix: tuple[str, ...] = (),
        front_host: str = "127.0.0.1",
    ) -> None:
        """nginx with the recipe, ``front`` its port and ``backends`` the
        instances' (of both families); without ``transparent``, as the
        recipe's non-root variant: no proxy_bind, IPv4 only unless ``ipv6``."""
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(ROOT, "contrib", "nginx", "udpupper.conf")) as template:
            stream = template.read()
        if not transparent:
            stream = stream.replace("        proxy_bind $remote_addr transparent;\n", "")
        if not ipv6 and not transparent:
            stream = stream[: stream.index("    server {\n        listen [::]")] + "}\n"
        stream = stream.replace("12000", str(front))
        stream = re.sub(
            r"(127\.0\.0\.1|\[::1\]):1200(\d)",
            lambda m: f"{m.group(1)}:{backends[int(m.group(2)) - 1]}",
            stream,
        )
        with open(os.path.join(folder, "udpupper.conf"), "w") as out:
            out.write(stream)
        main = []
        if os.path.exists(STREAM_MODULE):
            main.append(f"load_module {STREAM_MODULE};")
        if os.geteuid() == 0:
            main.append("user nobody nogroup;")
        main += [
            f"pid {folder}/nginx.pid;",
            "error_log stderr notice;",
            "worker_processes 1;",
            "events { worker_connections 1024; }",
            f"include {folder}/udpupper.conf;",
        ]
        with open(os.path.join(folder, "nginx.conf"), "w") as out:
            out.write("\n".join(main) + "\n")
        nginx = subprocess.Popen(
            [
                *prefix,
                NGINX,
                "-p",
                folder,
                "-c",
                os.path.join(folder, "nginx.conf"),
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            nginx.terminate()
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
            nginx.stdout.close()

        self.addCleanup(stop)
        self.probes = 0
        if prefix:
            time.sleep(1.0)  # the caller asks from where the clients are
            if nginx.poll() is not None:
                self.fail(f"nginx ended: {nginx.stdout.read().decode()}")
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if nginx.poll() is not None:
                self.fail(f"nginx ended: {nginx.stdout.read().decode()}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(0.2)
                probe.sendto(b"ready?", ("127.0.0.1", front))
                self.probes += 1
                try:
                    if probe.recv(100) == b"READY?":
                        return
                except OSError:
                    pass
        self.fail("nginx did not answer")


@tiers.system
class NginxTests(NginxCase):
    def test_balanced_across_two_daemons(self) -> None:
        daemons = [Daemon("--interface", "127.0.0.1", "--port", "0") for _ in range(2)]
        for daemon in daemons:
            self.addCleanup(daemon.stop)
        backends = [daemon.start() for daemon in daemons]
        front = free_port()
        self.start_nginx(front, backends)
        for number in range(100):  # from 100 /24s: nginx hashes by prefix
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((f"127.0.{number + 1}.2", 0))
                client.settimeout(5)
                client.sendto(f"through nginx {number} ü".encode(), ("127.0.0.1", front))
                reply, source = client.recvfrom(1000)
            self.assertEqual(reply, f"THROUGH NGINX {number} Ü".encode())
            self.assertEqual(source, ("127.0.0.1", front))
        received = [daemon.summary()["received"] for daemon in daemons]
        # Every request reached a daemon once, and so did one probe or more.
        self.assertTrue(100 + 1 <= sum(received) <= 100 + self.probes, received)
        self.assertTrue(all(count > 10 for count in received), received)


@tiers.system
class NginxLoopTests(NginxCase):
    """One spoofed datagram from the front's own address and port starts a
    loop through nginx: the reply goes to the front, which takes it for a
    new request.  The daemons see it come back from 127.0.0.1, from a new
    source port each time; the loop breaker counts by address and ends it."""

    skip = NginxCase.skip or spoof.why_not() or NO_IPV6

    def test_a_datagram_from_the_front_itself_dies(self) -> None:
        daemons = [
            Daemon(
                "--port",
                "0",
                "--metrics",  # IPv4 and IPv6: both upstreams
                "tcp:0:interface=127.0.0.1",
            )
            for _ in range(2)
        ]
        for daemon in daemons:
            self.addCleanup(daemon.stop)
        backends = [daemon.start() for daemon in daemons]
        pages = [int(daemon.find(METRICS_AT).group(1)) for daemon in daemons]
        front = free_port()
        self.start_nginx(front, backends, ipv6=True)
        spoof.send_spoofed(("::1", front), ("::1", front), b"LOOP")
        received = "udpupper_datagrams_received_total"

        def total() -> float:
            return sum(scrape(page)[received] for page in pages)

        deadline, last = time.monotonic() + 20, -1.0
        while time.monotonic() < deadline:  # until a second goes by with nothing new
            time.sleep(1.0)
            now = total()
            if now == last:
                break
            last = now
        else:
            self.fail(f"still looping after 20 s: {last:.0f} datagrams")
        loops = sum(scrape(page)[("udpupper_datagrams_dropped_total", "loop")] for page in pages)
        self.assertGreaterEqual(loops, 1)


@tiers.system
class TransparentNginxTests(NginxCase):
    """The recipe as shipped, as root, in network namespaces: nginx and four
    instances (two a family) on a server host, clients on another.  The
    instances see each client's address, so its rate limit applies, and a
    loop with a reflector on the client host, exact or stamping, dies within
    the loop budget's round trips, counted as ``loop`` (with no rate limit
    to end it first)."""

    skip = NginxCase.skip or why_not()

    # Hosts of one /24 and of one /56 (each in a /64 of its own) on the
    # client's side, besides the first client: the server reaches them all
    # on its link.
    PREFIX_HOSTS = {
        "10.88.5.0/24": [f"10.88.5.{host}" for host in range(2, 14)],
        "fd00:88:0:500::/56": [f"fd00:88:0:5{net:02x}::2" for net in range(2, 14)],
    }

    def start(self, *options: str) -> None:
        extra = [f"{host}/24" for host in self.PREFIX_HOSTS["10.88.5.0/24"]]
        extra += [f"{host}/64" for host in self.PREFIX_HOSTS["fd00:88:0:500::/56"]]
        self.link = Link(
            "ng", ["10.88.0.1/16", "fd00:88::1/48"], ["10.88.0.2/24", "fd00:88::2/64", *extra]
        )
        self.addCleanup(self.link.remove)
        subprocess.run(
            [
                *self.link.in_server(),
                os.path.join(ROOT, "contrib", "nginx", "transparent-routing"),
                "12001-12002",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.daemons = {}
        for host in ("127.0.0.1", "::1"):
            for port in (12001, 12002):
                daemon = Daemon(
                    "--interface",
                    host,
                    "--port",
                    str(port),
                    *options,
                    prefix=tuple(self.link.in_server()),
                )
                self.addCleanup(daemon.stop)
                self.daemons[host, port] = daemon
        for daemon in self.daemons.values():
            daemon.start()
        self.start_nginx(
            12000, [12001, 12002], transparent=True, prefix=tuple(self.link.in_server())
        )

    def test_clients_keep_their_addresses(self) -> None:
        self.start("--rate", "10", "--burst", "20")
        for front in ("10.88.0.1", "fd00:88::1"):
            answer = self.link.ask(front, 12000, "through nginx ü")
            self.assertEqual(answer["reply"], "THROUGH NGINX Ü")
            self.assertEqual(answer["source"], [front, 12000])
        # A burst of 200 from that client, all to one instance: its prefix's
        # burst of 20, and what its rate of 10 a second refills meanwhile.
        replies = self.link.ask("10.88.0.1", 12000, "burst", burst=200, timeout=1)["replies"]
        summaries = {key: daemon.summary() for key, daemon in self.daemons.items()}
        replied = [summary["replied"] for summary in summaries.values()]
        limited = sum(summary.get("rate_limited", 0) for summary in summaries.values())
        # The prefix's first request above, then the burst: its 20 in all.
        self.assertTrue(20 <= max(replied) <= 20 + 2, summaries)
        self.assertEqual(limited, 201 - max(replied), summaries)
        self.assertLessEqual(len(replies), max(replied) - 1)
        for host in ("127.0.0.1", "::1"):  # each family reached its own instances
            self.assertGreaterEqual(
                sum(summaries[host, port]["received"] for port in (12001, 12002)), 1
            )

    def test_a_prefix_meets_one_instance_and_its_rate_holds_across_them(self) -> None:
        """Twelve hosts of one /24, then twelve of one /56 (twelve /64s), 10 requests
        each at once: all of a prefix's reach one instance, which answers
        the prefix its burst of 20 and what --rate refills meanwhile, as
        one daemon would; by address, they spread over both instances and
        each allowed the prefix its own burst."""
        self.start("--rate", "10", "--burst", "20")
        asked: dict[str, float] = {}
        for prefix, hosts in self.PREFIX_HOSTS.items():
            front = "fd00:88::1" if ":" in prefix else "10.88.0.1"
            started = time.monotonic()
            for host in hosts:
                self.link.ask(front, 12000, "one prefix", burst=10, timeout=0.5, source=host)
            asked[prefix] = time.monotonic() - started
        summaries = {key: daemon.summary() for key, daemon in self.daemons.items()}
        for family, prefix in (("127.0.0.1", "10.88.5.0/24"), ("::1", "fd00:88:0:500::/56")):
            received = {port: summaries[family, port]["received"] for port in (12001, 12002)}
            replied = sum(summaries[family, port]["replied"] for port in (12001, 12002))
            # Each instance first answers the ready probes of nginx's start
            # (none here: the caller asked from the client host) and then
            # sees the prefix's 120 requests, or none of them.
            self.assertEqual(sorted(received.values()), [0, 120], (prefix, summaries))
            refill = 10 * asked[prefix]
            self.assertGreaterEqual(replied, 20, (prefix, summaries))
            self.assertLessEqual(replied, 20 + refill + 1, (prefix, asked, summaries))

    @long_run
    def test_a_loop_through_the_front_dies_within_its_budget(self) -> None:
        # The loop breaker alone, not the rate limit.  The bound is a count,
        # the budget's round trips: their time is the host's (0.15 to 0.21 s
        # here, 1.05 s on a slow CI machine).
        self.start("--rate", "0")
        for front, source in (("10.88.0.1", "10.88.0.2"), ("fd00:88::1", "fd00:88::2")):
            for stamp in (None, 0, 11):
                command = [
                    sys.executable,
                    "-m",
                    "tests.peer",
                    front,
                    "12000",
                    "a loop through nginx, stamped",
                    "--reflect",
                    "20",
                    "--source",
                    source,
                ]
                if stamp is not None:
                    command += ["--stamp-at", str(stamp)]
                result = subprocess.run(
                    ["ip", "netns", "exec", self.link.client, *command],
                    check=True,
                    capture_output=True,
                    timeout=60,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": ROOT},
                )
                loop = json.loads(result.stdout)
                self.assertTrue(loop["ended"], (front, stamp, loop))
                # nginx hashes by address: one daemon saw the whole loop.
                self.assertLessEqual(loop["reflected"], DEFAULT_LOOP_BUDGET, (front, stamp, loop))
                self.assertGreater(loop["reflected"], 10, (front, stamp, loop))
        loops = sum(daemon.summary().get("loop", 0) for daemon in self.daemons.values())
        self.assertEqual(loops, 6)
