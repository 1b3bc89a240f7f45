"""The supervisor on a fake process reactor and clock, as Twisted tests its
own procmon: no process, no socket, no real time.  Pauses of the parent,
of the whole group, of one worker; crash loops; starts that never work."""

from __future__ import annotations

import signal

from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests import tiers
from udpupper.server.stats import Stats
from udpupper.server.workers import supervisor
from udpupper.server.workers.counters import WorkerCounters
from udpupper.server.workers.supervisor import (
    GIVE_UP,
    SILENCE,
    STARTUP_GRACE,
    WATCH_INTERVAL,
    Supervisor,
)


class ProcessReactor(MemoryReactor, task.Clock):
    """Records each spawnProcess, as Twisted's DummyProcessReactor does."""

    def __init__(self) -> None:
        MemoryReactor.__init__(self)
        task.Clock.__init__(self)
        self.spawned: list[FakeProcess] = []
        self.refuse = 0  # spawnProcess calls to fail, as an exec that cannot run
        self.stopped = 0

    def spawnProcess(
        self,
        protocol,
        executable,
        args=(),
        env=None,
        path=None,
        uid=None,
        gid=None,
        usePTY=0,
        childFDs=None,
    ):
        if self.refuse:
            self.refuse -= 1
            raise PermissionError(13, "Permission denied")
        process = FakeProcess(protocol)
        protocol.makeConnection(process)
        self.spawned.append(process)
        return process

    def callWhenRunning(self, call, *args, **kwargs):
        return call(*args, **kwargs)

    def stop(self) -> None:
        self.stopped += 1


class FakeProcess:
    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.signals: list[int] = []
        self.pid = id(self)

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)

    def end(self, reason) -> None:
        self.protocol.processEnded(Failure(reason))


class Counts:
    """A worker's shared counts, as the parent reads them."""

    fd = -1

    def __init__(self) -> None:
        self.read = 0

    def reset(self) -> None:
        self.read = 0

    def received(self) -> int:
        return self.read

    def stats(self) -> Stats:
        stats = Stats()
        stats.received = self.read
        return stats


class Parent(Supervisor):
    """What the parent service gives its supervision."""

    log = Logger(observer=lambda event: None)

    def __init__(self, reactor: ProcessReactor, count: int = 2) -> None:
        self.reactor = reactor
        self.names = [f"worker-{n}" for n in range(1, count + 1)]
        self.command = ["twistd"]
        self.env: dict[str, str] = {}
        self.sockets = [FakeSocket() for _ in self.names]
        self.shared = {name: Counts() for name in self.names}
        self.counters = WorkerCounters(self.names)
        self.running = True
        self.stopping = False
        self.init_supervision()

    def reported(self, name: str, line: bytes, hangup: bool = False) -> None:
        self.heard(name)
        self.first_report(name)

    def all_ended_maybe(self) -> None:
        pass


class FakeSocket:
    def fileno(self) -> int:
        return 3


@tiers.unit
class SupervisorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.patch(supervisor, "socket_memory", lambda sock: (0, 0))
        self.reactor = ProcessReactor()
        self.parent = Parent(self.reactor)
        for name in self.parent.names:
            self.parent.spawn(name)
        self.watchdog = task.LoopingCall(self.parent.watch)
        self.watchdog.clock = self.reactor
        self.watchdog.start(WATCH_INTERVAL, now=False)
        self.addCleanup(lambda: self.watchdog.running and self.watchdog.stop())
        self.ticks = 0

    def process(self, name: str) -> FakeProcess:
        return self.parent.protocols[name].transport

    def report(self, *names: str) -> None:
        for name in names or self.parent.names:
            self.parent.protocols[name].childDataReceived(4, b"{}\n")

    def run_for(self, seconds: float, reporting: tuple[str, ...] = ()) -> None:
        """The reactor turns for ``seconds``, the named workers reporting
        once a second, as they do."""
        for _ in range(round(seconds / WATCH_INTERVAL)):
            self.reactor.advance(WATCH_INTERVAL)
            self.ticks += 1
            if self.ticks % 4 == 0:
                self.report(*reporting)

    def killed(self) -> list[str]:
        return [
            process.protocol.name
            for process in self.reactor.spawned
            if signal.SIGKILL in process.signals
        ]

    def test_a_paused_parent_kills_no_worker(self) -> None:
        """The parent stopped for 1.5, 3 and 10 s while its workers served
        (their reports wait in the pipes): none is killed at the resume."""
        self.run_for(1, reporting=tuple(self.parent.names))
        for pause in (1.5, 3.0, 10.0):
            self.reactor.advance(pause)  # the parent saw nothing meanwhile
            self.report()  # what waited in the pipes
            self.run_for(2, reporting=tuple(self.parent.names))
        self.assertEqual(self.killed(), [])

    def test_a_stopped_group_kills_no_worker(self) -> None:
        """Ctrl-Z, a cgroup freeze: the parent and its workers all stopped;
        at the resume the parent looks before the workers have reported."""
        self.run_for(1, reporting=tuple(self.parent.names))
        for pause in (1.5, 3.0, 10.0):
            self.reactor.advance(pause)
            self.run_for(0.5)  # not reported yet
            self.run_for(2, reporting=tuple(self.parent.names))
        self.assertEqual(self.killed(), [])

    def test_a_worker_stopped_alone_is_replaced_within_3_s(self) -> None:
        self.run_for(1, reporting=tuple(self.parent.names))
        stopped = self.process("worker-1")
        elapsed = 0.0
        while not stopped.signals:
            self.run_for(WATCH_INTERVAL, reporting=("worker-2",))
            elapsed += WATCH_INTERVAL
        self.assertEqual(stopped.signals, [signal.SIGKILL])
        self.assertLessEqual(elapsed, SILENCE + WATCH_INTERVAL)
        stopped.end(ProcessTerminated(signal=signal.SIGKILL))
        self.reactor.advance(0)
        self.assertIsNot(self.process("worker-1"), stopped)  # replaced at once
        self.assertEqual(self.killed(), ["worker-1"])

    def test_a_worker_counting_datagrams_is_alive(self) -> None:
        """Its reports held up, but its shared counts go on: it serves."""
        self.run_for(1, reporting=tuple(self.parent.names))
        for _ in range(40):
            self.parent.shared["worker-1"].read += 10
            self.run_for(WATCH_INTERVAL, reporting=("worker-2",))
        self.assertEqual(self.killed(), [])

    def test_a_worker_that_never_reports(self) -> None:
        self.run_for(STARTUP_GRACE - 1, reporting=("worker-2",))
        self.assertEqual(self.killed(), [])
        self.run_for(1 + WATCH_INTERVAL, reporting=("worker-2",))
        self.assertEqual(self.killed(), ["worker-1"])

    def test_a_crash_looping_worker_backs_off(self) -> None:
        self.run_for(1, reporting=tuple(self.parent.names))
        self.reactor.advance(6)  # it lived long: the first restart is at once
        starts = []
        for _ in range(5):
            starts.append(self.reactor.seconds())
            process = self.process("worker-1")
            self.report("worker-1")
            process.end(ProcessTerminated(exitCode=1))
            self.reactor.advance(0)
            while "worker-1" not in self.parent.protocols:
                self.reactor.advance(0.05)
        delays = [round(b - a - 0.0, 2) for a, b in zip(starts, starts[1:])]
        self.assertEqual(delays[0], 0.0)
        self.assertTrue(all(delay <= 4.05 for delay in delays), delays)

    def test_a_worker_that_cannot_be_spawned_ends_the_parent(self) -> None:
        """posix_spawn refusing its Python (a --uid that cannot run it): one
        line, and the parent stops, GIVE_UP tries in (before: retried for
        ever, a line each time)."""
        self.reactor.refuse = 100
        self.process("worker-1").end(ProcessTerminated(exitCode=1))
        for _ in range(200):
            self.reactor.advance(0.5)
            if self.reactor.stopped:
                break
        self.assertEqual(self.reactor.stopped, 1)
        self.assertEqual(self.reactor.refuse, 100 - (GIVE_UP - 1))
        self.assertIn("worker-1 could not start", self.parent.failure)
        self.assertIn("Permission denied", self.parent.failure)

    def test_a_worker_that_ends_before_serving_ends_the_parent(self) -> None:
        for _ in range(GIVE_UP):
            process = self.process("worker-1")
            process.protocol.childDataReceived(2, b"MemoryError: tables\n")
            process.end(ProcessTerminated(exitCode=1))
            while "worker-1" not in self.parent.protocols and not self.reactor.stopped:
                self.reactor.advance(0.5)
        self.assertEqual(self.reactor.stopped, 1)
        self.assertIn("it said: MemoryError: tables", self.parent.failure)

    def test_an_end_asked_for_is_not_restarted(self) -> None:
        self.parent.stopping = True
        self.process("worker-1").end(ProcessDone(0))
        self.reactor.advance(10)
        self.assertNotIn("worker-1", self.parent.protocols)


@tiers.unit
class HangupTests(unittest.TestCase):
    """SIGHUP at the parent: its totals once each worker has answered."""

    def test_an_answer_read_with_a_later_report_counts(self) -> None:
        """A worker's SIGHUP report and its next periodic one, read together
        (a busy or paused parent): the answer is not lost with the first."""
        from udpupper.server.workers.parent import Workers
        from udpupper.server.workers.supervisor import WorkerProtocol

        reactor = ProcessReactor()
        workers = Workers(2, "127.0.0.1", 0, [], reactor=reactor)
        self.addCleanup(lambda: [shared.close() for shared in workers.shared.values() if shared])
        lines: list[str] = []
        workers.log = Logger(observer=lambda event: lines.append(event.get("log_format", "")))
        for name in workers.names:
            protocol = WorkerProtocol(workers, name)
            protocol.makeConnection(FakeProcess(protocol))
            workers.protocols[name] = protocol
        workers.pass_hangup_on()
        report = b'{"received": 5, "hangup": true}\n{"received": 6}\n'
        for name in workers.names:
            self.assertEqual(workers.protocols[name].transport.signals, [signal.SIGHUP])
            workers.protocols[name].childDataReceived(4, report)
        said = [line for line in lines if "workers' counters" in line]
        self.assertEqual(len(said), 1)
        self.assertEqual(workers.totals().received, 12)
        self.assertEqual(reactor.getDelayedCalls(), [])  # no wait left for a late one
