"""``--serve-probes``: the prober's limits and metrics, then a real
Prometheus scraping it, as docs/client.md configures it."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest
from twisted.web import resource, server

from tests.processes import CLIENT, Daemon, run_client
from tests.support import free_port, long_run
from udpupper.client.prober import Limits, ProbeResource, QueryError, exposition, parse_query
from udpupper.client.summary import PingStats


def query(text: str, limits: Limits = Limits()) -> dict:
    return parse_query(urllib.parse.parse_qs(text.encode()), limits)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metrics(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


class QueryTests(unittest.TestCase):
    def test_defaults_and_limits(self) -> None:
        self.assertEqual(query("target=127.0.0.1:12000"), {
            "server": ("127.0.0.1", 12000), "count": 3, "interval": 0.1, "size": 32,
            "timeout": 1.0, "dscp": None})
        self.assertEqual(query("target=[::1]:7&count=10&interval=0.01&size=1400&dscp=46")
                         ["server"], ("::1", 7))
        for bad, status in (("", 400), ("target=localhost:12000", 400),
                            ("target=127.0.0.1", 400), ("target=127.0.0.1:0", 400),
                            ("target=192.0.2.1:12000", 403), ("target=[::2]:1", 403),
                            ("target=127.0.0.1:1&count=11", 400),
                            ("target=127.0.0.1:1&count=x", 400),
                            ("target=127.0.0.1:1&interval=0.001", 400),
                            ("target=127.0.0.1:1&timeout=6", 400),
                            ("target=127.0.0.1:1&size=70000", 400),
                            ("target=127.0.0.1:1&dscp=64", 400)):
            with self.assertRaises(QueryError) as caught:
                query(bad)
            self.assertEqual(caught.exception.status, status, bad)
        wide = Limits(networks=(ipaddress.ip_network("192.0.2.0/24"),), max_count=100)
        self.assertEqual(query("target=192.0.2.9:1&count=100", wide)["count"], 100)

    def test_exposition(self) -> None:
        stats = PingStats(transmitted=4, duplicates=1, wrong=1)
        for rtt in (0.0002, 0.0004, 0.003):
            stats.add(rtt)
        stats.ipdv_sum, stats.ipdv_count = 0.003, 2
        figures = metrics(exposition(stats, 0.5).decode())
        self.assertEqual(figures["probe_success"], 1)
        self.assertEqual(figures["probe_duration_seconds"], 0.5)
        self.assertEqual(figures["udpupper_probe_loss_ratio"], 0.25)
        self.assertEqual((figures["udpupper_probe_duplicates"], figures["udpupper_probe_wrong"]),
                         (1, 1))
        self.assertEqual(figures["udpupper_probe_jitter_seconds"], 0.0015)
        buckets = [figures[f'udpupper_probe_rtt_seconds_bucket{{le="{le}"}}']
                   for le in ("0.00025", "0.0005", "0.001", "0.005", "+Inf")]
        self.assertEqual(buckets, [1, 2, 2, 3, 3])
        self.assertEqual(figures["udpupper_probe_rtt_seconds_count"], 3)
        self.assertEqual(metrics(exposition(PingStats(transmitted=2), 1.0).decode())
                         ["probe_success"], 0)


class ProbeResourceTests(unittest.TestCase):
    """The resource on a real site and daemon, in this process."""

    def setUp(self):
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.target = f"127.0.0.1:{daemon.start()}"
        root = resource.Resource()
        self.probes = ProbeResource(reactor, Limits(max_probes=1))
        root.putChild(b"probe", self.probes)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        return endpoint.listen(server.Site(root)).addCallback(self.listening)

    def listening(self, port) -> None:
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/probe"

    def test_a_probe_and_the_limit_on_probes_at_once(self):
        slow = threads.deferToThread(fetch, f"{self.url}?target={self.target}&count=5"
                                            f"&interval=0.2")
        def second(_=None):
            return threads.deferToThread(fetch, f"{self.url}?target={self.target}")

        def check(results):
            (busy_status, busy_text), (status, text) = results
            self.assertEqual((busy_status, busy_text),
                             (503, "busy: 1 running, the most --max-probes allows\n"))
            self.assertEqual(status, 200, text)
            figures = metrics(text)
            self.assertEqual((figures["probe_success"], figures["udpupper_probe_sent"],
                              figures["udpupper_probe_received"]), (1, 5, 5))
            self.assertGreater(figures["probe_duration_seconds"], 0.8)
            self.assertEqual(self.probes.running, 0)

        from twisted.internet import task

        busy = task.deferLater(reactor, 0.3, second)
        from twisted.internet.defer import gatherResults
        return gatherResults([busy, slow]).addCallback(check)

    def test_a_dead_target_is_no_success(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]

        def check(result):
            status, text = result
            figures = metrics(text)
            self.assertEqual((status, figures["probe_success"],
                              figures["udpupper_probe_loss_ratio"]), (200, 0, 1))

        return threads.deferToThread(
            fetch, f"{self.url}?target=127.0.0.1:{dead}&count=2&interval=0.05&timeout=0.2"
        ).addCallback(check)


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: udpupper
    metrics_path: /probe
    params:
      count: ["3"]
      interval: ["0.05"]
      timeout: ["0.3"]
    static_configs:
      - targets: [{targets}]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: {prober}
"""


class RealPrometheusTests(unittest.TestCase):
    """A real Prometheus scrapes the prober for two daemons, one of which
    is stopped part way: the one stays up, the other goes down."""

    skip = None if shutil.which("prometheus") else "prometheus is not installed"

    @long_run
    def test_two_daemons_one_stopped(self) -> None:
        first, second = Daemon("--port", "0"), Daemon("--port", "0")
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        targets = [f"127.0.0.1:{first.start()}", f"127.0.0.1:{second.start()}"]
        prober_port = free_port(socket.SOCK_STREAM)
        prober = subprocess.Popen([*CLIENT, "--serve-probes",
                                   f"tcp:{prober_port}:interface=127.0.0.1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(prober.wait, 10)
        self.addCleanup(prober.terminate)
        self.assertIn(b"serving probes at http://127.0.0.1:", prober.stdout.readline())
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as out:
            out.write(PROMETHEUS_CONFIG.format(
                targets=", ".join(f'"{target}"' for target in targets),
                prober=f"127.0.0.1:{prober_port}"))
        web = free_port(socket.SOCK_STREAM)
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(directory, 'data')}",
             f"--web.listen-address=127.0.0.1:{web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(prometheus.wait, 30)
        self.addCleanup(prometheus.terminate)

        def success() -> dict[str, float]:
            url = (f"http://127.0.0.1:{web}/api/v1/query?query="
                   + urllib.parse.quote('probe_success{job="udpupper"}'))
            try:
                _, text = fetch(url)
            except OSError:
                return {}
            return {sample["metric"]["instance"]: float(sample["value"][1])
                    for sample in json.loads(text)["data"]["result"]}

        def wait_for(expected: dict[str, float]) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if success() == expected:
                    return
                time.sleep(0.5)
            self.fail(f"Prometheus never saw {expected}: {success()}")

        wait_for({targets[0]: 1.0, targets[1]: 1.0})
        second.stop()
        wait_for({targets[0]: 1.0, targets[1]: 0.0})
        _, text = fetch(f"http://127.0.0.1:{web}/api/v1/query?query="
                        + urllib.parse.quote('udpupper_probe_rtt_seconds_count{job="udpupper"}'))
        counts = {sample["metric"]["instance"]: float(sample["value"][1])
                  for sample in json.loads(text)["data"]["result"]}
        self.assertEqual(counts, {targets[0]: 3.0, targets[1]: 0.0})


class UsageTests(unittest.TestCase):
    def test_one_line_each(self) -> None:
        for options in (["--probe-networks", "10.0.0.0/8"], ["--max-probes", "2"],
                        ["--serve-probes", "tcp:9813", "--ping"],
                        ["--serve-probes", "nonsense:1"],
                        ["--serve-probes", "tcp:9813", "--max-probes", "0"],
                        ["--serve-probes", "tcp:9813", "--probe-networks", "10.0.0.0/33"]):
            result = run_client(*options, timeout=30)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.decode().strip().splitlines()), 1,
                             (options, result.stderr))
