"""Scale-out: a real nginx balancing UDP across two udpupper daemons.

Uses contrib/nginx/udpupper.conf itself, with this test's ports.  Needs
nginx with its stream module (CI installs Debian's nginx and
libnginx-mod-stream); skipped where there is none.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.trial import unittest

from tests import spoof
from tests.netns import ROOT
from tests.processes import Daemon
from tests.support import NO_IPV6
from tests.test_loops import scrape

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NginxCase(unittest.TestCase):
    """Starts nginx with the shipped configuration in front of daemons."""

    skip = None if NGINX else "nginx is not installed"

    def start_nginx(self, front: int, backends: list[int], ipv6: bool = False) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(ROOT, "contrib", "nginx", "udpupper.conf")) as template:
            stream = template.read()
        if not ipv6:
            stream = stream.replace("listen [::]:12000 udp reuseport;\n", "")
        stream = stream.replace("12000", str(front))
        stream = re.sub(r"127\.0\.0\.1:1200(\d)",
                        lambda m: f"127.0.0.1:{backends[int(m.group(1)) - 1]}", stream)
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
            [NGINX, "-p", folder, "-c", os.path.join(folder, "nginx.conf"), "-e", "stderr",
             "-g", "daemon off;"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


class NginxTests(NginxCase):
    def test_balanced_across_two_daemons(self) -> None:
        daemons = [Daemon("--interface", "127.0.0.1", "--port", "0") for _ in range(2)]
        for daemon in daemons:
            self.addCleanup(daemon.stop)
        backends = [daemon.start() for daemon in daemons]
        front = free_udp_port()
        self.start_nginx(front, backends)
        for number in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(5)
                client.sendto(f"through nginx {number} ü".encode(), ("127.0.0.1", front))
                reply, source = client.recvfrom(1000)
            self.assertEqual(reply, f"THROUGH NGINX {number} Ü".encode())
            self.assertEqual(source, ("127.0.0.1", front))
        received = [daemon.summary()["received"] for daemon in daemons]
        # Every request reached a daemon once, and so did one probe or more.
        self.assertTrue(100 + 1 <= sum(received) <= 100 + self.probes, received)
        self.assertTrue(all(count > 10 for count in received), received)


class NginxLoopTests(NginxCase):
    """One spoofed datagram from the front's own address and port starts a
    loop through nginx: the reply goes to the front, which takes it for a
    new request.  The daemons see it come back from 127.0.0.1, from a new
    source port each time; the loop breaker counts by address and ends it."""

    skip = NginxCase.skip or spoof.why_not() or NO_IPV6

    def test_a_datagram_from_the_front_itself_dies(self) -> None:
        daemons = [Daemon("--interface", "127.0.0.1", "--port", "0", "--metrics",
                          "tcp:0:interface=127.0.0.1") for _ in range(2)]
        for daemon in daemons:
            self.addCleanup(daemon.stop)
        backends = [daemon.start() for daemon in daemons]
        pages = [int(daemon.find(r"Site starting on (\d+)").group(1)) for daemon in daemons]
        front = free_udp_port()
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
        loops = sum(scrape(page)[("udpupper_datagrams_dropped_total", "loop")]
                    for page in pages)
        self.assertGreaterEqual(loops, 1)
