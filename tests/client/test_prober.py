"""``--serve-probes``: the prober's limits and metrics, what an attacker can
make it do, then a real Prometheus scraping it as docs/client.md
configures it, over TLS with basic authentication."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from twisted.internet import reactor, task, threads
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from tests import tiers
from tests.processes import CLIENT, Daemon, run_client
from tests.support import free_port, long_run
from udpupper.client.prober import (
    Limits,
    Prober,
    QueryError,
    exposition,
    limits_for,
    parse_query,
)
from udpupper.client.summary import PingStats
from udpupper.options import parse_networks
from udpupper.scrape import Request, ScrapeFactory


def query(text: str, limits: Limits = Limits()) -> dict:
    return parse_query(urllib.parse.parse_qs(text, keep_blank_values=True), limits)


def request(text: str, **headers: str) -> Request:
    return Request(
        "GET",
        "/probe",
        urllib.parse.parse_qs(text, keep_blank_values=True),
        {name.lower().replace("_", "-"): value for name, value in headers.items()},
    )


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=30
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metrics(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@tiers.unit
class QueryTests(unittest.TestCase):
    def test_defaults_and_limits(self) -> None:
        self.assertEqual(
            query("target=127.0.0.1:12000"),
            {
                "server": ("127.0.0.1", 12000),
                "count": 3,
                "interval": 0.1,
                "size": 32,
                "timeout": 1.0,
                "dscp": None,
            },
        )
        self.assertEqual(
            query("target=[::1]:7&count=10&interval=0.01&size=1400&dscp=46")["server"], ("::1", 7)
        )
        for bad, status in (
            ("", 400),
            ("target=localhost:12000", 400),
            ("target=127.0.0.1", 400),
            ("target=127.0.0.1:0", 400),
            ("target=192.0.2.1:12000", 403),
            ("target=[::2]:1", 403),
            ("target=127.0.0.1:1&count=11", 400),
            ("target=127.0.0.1:1&count=x", 400),
            ("target=127.0.0.1:1&count=1_0", 400),
            ("target=127.0.0.1:1&count=+3", 400),
            ("target=127.0.0.1:1&interval=0.001", 400),
            ("target=127.0.0.1:1&interval=1e-1", 400),
            ("target=127.0.0.1:1&timeout=6", 400),
            ("target=127.0.0.1:1&size=70000", 400),
            ("target=127.0.0.1:1&size=23", 400),
            ("target=127.0.0.1:1&dscp=64", 400),
        ):
            with self.assertRaises(QueryError) as caught:
                query(bad)
            self.assertEqual(caught.exception.status, status, bad)
        wide = Limits(networks=(ipaddress.ip_network("192.0.2.0/24"),), max_count=100)
        self.assertEqual(query("target=192.0.2.9:1&count=100", wide)["count"], 100)

    def test_every_form_of_target(self) -> None:
        """What each form is judged as, under the default networks, under
        ``::/0`` and ``0.0.0.0/0`` given by an operator, and exposed."""
        loopback = Limits()
        everything = limits_for(parse_networks("0.0.0.0/0,::/0"), exposed=False)
        exposed = limits_for(parse_networks("0.0.0.0/0,::/0"), exposed=True)
        only_v6 = limits_for(parse_networks("::/0"), exposed=False)
        named = limits_for(parse_networks("0.0.0.0/0,127.0.0.1/32"), exposed=True)
        table = [
            # target, (under loopback, everything, exposed, ::/0, named)
            ("127.0.0.1:9", ("127.0.0.1", "127.0.0.1", 403, 403, "127.0.0.1")),
            ("[::1]:9", ("::1", "::1", 403, "::1", 403)),
            ("[::ffff:127.0.0.2]:9", ("127.0.0.2", "127.0.0.2", 403, 403, 403)),
            ("[::ffff:10.0.0.1]:9", (403, "10.0.0.1", "10.0.0.1", 403, "10.0.0.1")),
            ("10.0.0.1:9", (403, "10.0.0.1", "10.0.0.1", 403, "10.0.0.1")),
            ("0.0.0.0:9", (403, 403, 403, 403, 403)),
            ("0.1.2.3:9", (403, 403, 403, 403, 403)),
            ("[::]:9", (403, 403, 403, 403, 403)),
            ("[::ffff:0.0.0.0]:9", (403, 403, 403, 403, 403)),
            ("255.255.255.255:9", (403, 403, 403, 403, 403)),
            ("224.0.0.1:9", (403, 403, 403, 403, 403)),
            ("[ff02::1]:9", (403, 403, 403, 403, 403)),
            ("[::1%lo]:9", (400, 400, 400, 400, 400)),
            ("[fe80::1%eth0]:9", (400, 400, 400, 400, 400)),
            ("2130706433:9", (400, 400, 400, 400, 400)),  # 127.0.0.1 in decimal
            ("0177.0.0.1:9", (400, 400, 400, 400, 400)),  # in octal
            ("0x7f.0.0.1:9", (400, 400, 400, 400, 400)),
            ("127.0.0.1%3A9:9", (400, 400, 400, 400, 400)),  # double-encoded
            ("127.0.0.1:1_5101", (400, 400, 400, 400, 400)),
            ("127.0.0.1:+15101", (400, 400, 400, 400, 400)),
            ("127.0.0.1:１２", (400, 400, 400, 400, 400)),  # full-width digits
            ("127.0.0.1:65536", (400, 400, 400, 400, 400)),
        ]
        for target, expected in table:
            for limits, outcome in zip((loopback, everything, exposed, only_v6, named), expected):
                arguments = {"target": [target]}
                if isinstance(outcome, int):
                    with self.assertRaises(QueryError, msg=(target, limits)) as caught:
                        parse_query(arguments, limits)
                    self.assertEqual(caught.exception.status, outcome, (target, limits))
                else:
                    self.assertEqual(
                        parse_query(arguments, limits)["server"][0], outcome, (target, limits)
                    )

    def test_exposition(self) -> None:
        stats = PingStats(transmitted=4, duplicates=1, wrong=1)
        for rtt in (0.0002, 0.0004, 0.003):
            stats.add(rtt)
        stats.ipdv_sum, stats.ipdv_count = 0.003, 2
        figures = metrics(exposition(stats, 0.5).decode())
        self.assertEqual(figures["probe_success"], 1)
        self.assertEqual(figures["probe_duration_seconds"], 0.5)
        self.assertEqual(figures["udpupper_probe_loss_ratio"], 0.25)
        self.assertEqual(
            (figures["udpupper_probe_duplicates"], figures["udpupper_probe_wrong"]), (1, 1)
        )
        self.assertEqual(figures["udpupper_probe_jitter_seconds"], 0.0015)
        buckets = [
            figures[f'udpupper_probe_rtt_seconds_bucket{{le="{le}"}}']
            for le in ("0.00025", "0.0005", "0.001", "0.005", "+Inf")
        ]
        self.assertEqual(buckets, [1, 2, 2, 3, 3])
        self.assertEqual(figures["udpupper_probe_rtt_seconds_count"], 3)
        self.assertEqual(
            metrics(exposition(PingStats(transmitted=2), 1.0).decode())["probe_success"], 0
        )


@tiers.unit
class BoundsTests(unittest.TestCase):
    """How long and how much a scrape may make the prober send, on a fake
    clock: nothing is sent for a refused one."""

    def prober(self, **limits) -> Prober:
        return Prober(task.Clock(), Limits(**limits))

    def refusal(self, prober: Prober, text: str, **headers: str) -> tuple[int, str]:
        with self.assertRaises(QueryError) as caught:
            prober.settings(request(text, **headers))
        return caught.exception.status, str(caught.exception)

    def test_no_longer_than_the_scrape_waits(self) -> None:
        """count=10&interval=10 held a slot for 95 s, renewable, before."""
        prober = self.prober(max_count=1000)
        status, why = self.refusal(prober, "target=127.0.0.1:1&count=10&interval=10")
        self.assertEqual(status, 400)
        self.assertIn("--max-duration is 10 s", why)
        status, why = self.refusal(
            prober,
            "target=127.0.0.1:1&count=10&interval=1",
            X_Prometheus_Scrape_Timeout_Seconds="5",
        )
        self.assertIn("the scrape's timeout is 5 s, less 0.5 s", why)
        settings = prober.settings(
            request(
                "target=127.0.0.1:1&count=4&interval=1", X_Prometheus_Scrape_Timeout_Seconds="5"
            )
        )
        self.assertEqual(settings["count"], 4)  # 3 s and a 1 s timeout: 4 s < 4.5 s

    def test_bytes_a_scrape_and_a_second(self) -> None:
        prober = self.prober(max_scrape_bytes=1000, byte_rate=500)
        status, why = self.refusal(prober, "target=127.0.0.1:1&count=2&size=600")
        self.assertEqual(status, 400)
        self.assertIn("a scrape may send 1000 (--max-scrape-bytes)", why)
        prober.settings(request("target=127.0.0.1:1&count=2&size=500"))  # the whole bucket
        status, why = self.refusal(prober, "target=127.0.0.1:1&count=1&size=100")
        self.assertEqual(status, 503)
        prober.reactor.advance(0.2)  # 100 bytes back
        prober.settings(request("target=127.0.0.1:1&count=1&size=100"))

    def test_the_amplifier_is_bounded(self) -> None:
        """Four scrapers, ten seconds, as fast as they can ask (before:
        36,720 bytes of HTTP in, 232 MB of UDP out): at most the bucket and
        the rate's ten seconds' worth go out, whatever they ask."""
        prober = self.prober(max_count=1000)
        clock = prober.reactor
        sent = scrapes = 0
        while clock.seconds() < 10:
            for _ in range(4):
                scrapes += 1
                try:
                    settings = prober.settings(
                        request("target=127.0.0.1:1&count=10&size=1400&interval=0.1")
                    )
                except QueryError:
                    continue
                sent += settings["count"] * settings["size"]
            clock.advance(0.01)
        limits = Limits()
        self.assertLessEqual(sent, limits.max_scrape_bytes + 10 * limits.byte_rate)


@tiers.system
class ProberTests(unittest.TestCase):
    """The prober on a real scrape server and daemon, in this process."""

    def setUp(self):
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.target = f"127.0.0.1:{daemon.start()}"
        self.probes = Prober(reactor, Limits(max_probes=1))
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        return endpoint.listen(ScrapeFactory({"/probe": self.probes}, reactor)).addCallback(
            self.listening
        )

    def listening(self, port) -> None:
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/probe"

    def test_a_probe_and_the_limit_on_probes_at_once(self):
        slow = threads.deferToThread(fetch, f"{self.url}?target={self.target}&count=5&interval=0.2")

        def second(_=None):
            return threads.deferToThread(fetch, f"{self.url}?target={self.target}")

        def check(results):
            (busy_status, busy_text), (status, text) = results
            self.assertEqual(
                (busy_status, busy_text), (503, "busy: 1 running, the most --max-probes allows\n")
            )
            self.assertEqual(status, 200, text)
            figures = metrics(text)
            self.assertEqual(
                (
                    figures["probe_success"],
                    figures["udpupper_probe_sent"],
                    figures["udpupper_probe_received"],
                ),
                (1, 5, 5),
            )
            self.assertGreater(figures["probe_duration_seconds"], 0.8)
            self.assertEqual(self.probes.running, 0)

        busy = task.deferLater(reactor, 0.3, second)
        return gatherResults([busy, slow]).addCallback(check)

    def test_a_dead_target_is_no_success(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]

        def check(result):
            status, text = result
            figures = metrics(text)
            self.assertEqual(
                (status, figures["probe_success"], figures["udpupper_probe_loss_ratio"]),
                (200, 0, 1),
            )

        return threads.deferToThread(
            fetch, f"{self.url}?target=127.0.0.1:{dead}&count=2&interval=0.05&timeout=0.2"
        ).addCallback(check)

    def test_forged_replies_do_not_make_a_dead_target_alive(self):
        """A target that reads nothing, and from its very address and port,
        every ephemeral port sprayed with replies as the probes would have
        them without the run's token (before: 84,696 in 0.8 s read
        ``probe_success 1``); and from another port, which the kernel drops
        before the prober sees it."""
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        spraying = threading.Event()

        def spray() -> None:
            while not spraying.is_set():
                for seq in range(3):
                    forged = (b"%d udpupper ping probe" % seq).upper()[:32].ljust(32, b"E")
                    for port in range(low, high + 1):
                        for sender in (silent, other):
                            try:
                                sender.sendto(forged, ("127.0.0.1", port))
                            except OSError:
                                pass

        sprayer = threading.Thread(target=spray, daemon=True)
        sprayer.start()

        def check(result):
            spraying.set()
            sprayer.join(10)
            status, text = result
            figures = metrics(text)
            self.assertEqual(
                (status, figures["probe_success"], figures["udpupper_probe_received"]), (200, 0, 0)
            )

        return threads.deferToThread(
            fetch, f"{self.url}?target={target}&count=3&interval=0.3&timeout=0.5"
        ).addCallback(check)


def self_signed(directory: str) -> tuple[str, str]:
    """A key and a certificate for 127.0.0.1, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "udpupper prober")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, certificate_path = (os.path.join(directory, name) for name in ("key.pem", "cert.pem"))
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certificate_path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, certificate_path


def tls_available() -> str | None:
    try:
        import cryptography  # noqa: F401
        import OpenSSL  # noqa: F401
    except ImportError:
        return "TLS needs pyOpenSSL (Twisted's tls extra)"
    return None


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: udpupper
    metrics_path: /probe
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: prometheus
      password: {password}
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


@tiers.system
class RealPrometheusTests(unittest.TestCase):
    """A real Prometheus scrapes the prober over TLS with basic auth for two
    daemons, one of which is stopped part way: the one stays up, the other
    goes down."""

    skip = (
        None if shutil.which("prometheus") else "prometheus is not installed"
    ) or tls_available()

    @long_run
    def test_two_daemons_one_stopped(self) -> None:
        first, second = Daemon("--port", "0"), Daemon("--port", "0")
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        targets = [f"127.0.0.1:{first.start()}", f"127.0.0.1:{second.start()}"]
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        key, certificate = self_signed(directory)
        password = base64.b32encode(os.urandom(10)).decode()
        hashed = run_client("--hash-password", stdin=password.encode() + b"\n")
        users = os.path.join(directory, "users")
        with open(users, "w") as out:
            out.write(f"prometheus:{hashed.stdout.decode().strip()}\n")
        prober_port = free_port(socket.SOCK_STREAM)
        prober = subprocess.Popen(
            [
                *CLIENT,
                "--serve-probes",
                f"ssl:{prober_port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
                "--probe-auth",
                users,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(prober.wait, 10)
        self.addCleanup(prober.terminate)
        self.assertIn(b"serving probes at https://127.0.0.1:", prober.stdout.readline())
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as out:
            out.write(
                PROMETHEUS_CONFIG.format(
                    ca=certificate,
                    password=password,
                    targets=", ".join(f'"{target}"' for target in targets),
                    prober=f"127.0.0.1:{prober_port}",
                )
            )
        web = free_port(socket.SOCK_STREAM)
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(directory, 'data')}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(prometheus.wait, 30)
        self.addCleanup(prometheus.terminate)

        def success() -> dict[str, float]:
            url = f"http://127.0.0.1:{web}/api/v1/query?query=" + urllib.parse.quote(
                'probe_success{job="udpupper"}'
            )
            try:
                _, text = fetch(url)
            except OSError:
                return {}
            return {
                sample["metric"]["instance"]: float(sample["value"][1])
                for sample in json.loads(text)["data"]["result"]
            }

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
        _, text = fetch(
            f"http://127.0.0.1:{web}/api/v1/query?query="
            + urllib.parse.quote('udpupper_probe_rtt_seconds_count{job="udpupper"}')
        )
        counts = {
            sample["metric"]["instance"]: float(sample["value"][1])
            for sample in json.loads(text)["data"]["result"]
        }
        self.assertEqual(counts, {targets[0]: 3.0, targets[1]: 0.0})


@tiers.system
class ExposureTests(unittest.TestCase):
    """What is open, as the command line says it."""

    def serve(self, *options: str, preexec=None) -> tuple[subprocess.Popen, str]:
        prober = subprocess.Popen(
            [*CLIENT, "--serve-probes", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
        )
        self.addCleanup(prober.wait, 10)
        self.addCleanup(prober.terminate)
        line = prober.stdout.readline().decode()
        return prober, line

    def test_a_bare_port_listens_on_loopback(self) -> None:
        port = free_port(socket.SOCK_STREAM)
        _, line = self.serve(f"tcp:{port}")
        self.assertEqual(
            line, f"udpupper-client: serving probes at http://127.0.0.1:{port}/probe\n"
        )

    def test_beyond_this_host_loopback_targets_are_refused_unless_named(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        target = f"127.0.0.1:{daemon.start()}"
        port = free_port(socket.SOCK_STREAM)
        _, line = self.serve(f"tcp:{port}:interface=0.0.0.0", "--probe-networks", "0.0.0.0/0")
        self.assertIn("serving probes at http://0.0.0.0:", line)
        status, why = fetch(f"http://127.0.0.1:{port}/probe?target={target}")
        self.assertEqual(status, 403, why)
        port = free_port(socket.SOCK_STREAM)
        self.serve(f"tcp:{port}:interface=0.0.0.0", "--probe-networks", "127.0.0.1/32")
        status, text = fetch(f"http://127.0.0.1:{port}/probe?target={target}")
        self.assertEqual((status, metrics(text)["probe_success"]), (200, 1))

    @long_run
    def test_a_scrape_gets_in_past_held_connections_at_the_descriptor_limit(self) -> None:
        """1,100 idle connections under ``ulimit -n 1024`` (before: every scrape
        reset for as long as they were held)."""
        import resource

        from tests.server.test_metrics_attacks import scrape_url

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1500:
            raise unittest.SkipTest("this test holds 1,100 connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1500), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        target = f"127.0.0.1:{daemon.start()}"
        port = free_port(socket.SOCK_STREAM)
        self.serve(
            f"tcp:{port}", preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        )
        held = []
        self.addCleanup(lambda: [connection.close() for connection in held])
        for _ in range(1100):
            try:  # the attacker's: one the prober closes at once is no matter
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:
                pass
        text = scrape_url(f"http://127.0.0.1:{port}/probe?target={target}").decode()
        self.assertEqual(metrics(text)["probe_success"], 1)

    def test_basic_auth(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        hashed = run_client("--hash-password", stdin=b"s3cret\n").stdout.decode().strip()
        users = os.path.join(directory, "users")
        with open(users, "w") as out:
            out.write(f"# scrapers\nprometheus:{hashed}\n")
        port = free_port(socket.SOCK_STREAM)
        self.serve(f"tcp:{port}", "--probe-auth", users)
        url = f"http://127.0.0.1:{port}/probe?target=127.0.0.1:9&count=1&timeout=0.1"
        self.assertEqual(fetch(url)[0], 401)
        wrong = base64.b64encode(b"prometheus:nope").decode()
        self.assertEqual(fetch(url, {"Authorization": f"Basic {wrong}"})[0], 401)
        right = base64.b64encode(b"prometheus:s3cret").decode()
        self.assertEqual(fetch(url, {"Authorization": f"Basic {right}"})[0], 200)


@tiers.system
class UsageTests(unittest.TestCase):
    def test_one_line_each(self) -> None:
        for options in (
            ["--probe-networks", "10.0.0.0/8"],
            ["--max-probes", "2"],
            ["--serve-probes", "tcp:9813", "--ping"],
            ["--serve-probes", "nonsense:1"],
            ["--serve-probes", "tcp:9813", "--max-probes", "0"],
            ["--serve-probes", "tcp:9813", "--probe-networks", "10.0.0.0/33"],
            ["--serve-probes", "tcp:9813:interface=0.0.0.0"],
            ["--serve-probes", "tcp:9813", "--probe-auth", "/nonexistent"],
            ["--serve-probes", "tcp:9813", "--max-duration", "0"],
            ["--serve-probes", "tcp:9813", "--max-scrape-bytes", "10"],
            ["--hash-password", "--ping"],
        ):
            result = run_client(*options, timeout=30)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(
                len(result.stderr.decode().strip().splitlines()), 1, (options, result.stderr)
            )
