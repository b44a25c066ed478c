"""
Tests for L{phantom_frame.ops.workers} and L{phantom_frame.ops.fanout}:
the merges and the worker's setup in memory, then real C{twistd -n
phantom-frame} supervisors with C{workers = 2}.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from typing import Any, Dict, List, Optional, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.ops.control import TextAnswer
from phantom_frame.ops.fanout import FanOutResource, combine, merge_metrics
from phantom_frame.ops.inherit import WORKER_ENV, WorkerSetup
from phantom_frame.ops.workers import SharedListeners, WorkerMonitor
from phantom_frame.startup import listener
from phantom_frame.tap import worker_listen

from ..origin import Origin, until
from ..test_plugin import Twistd, spawn_twistd
from ..test_shutdown import BODY, Held, RawClient

SERVER = '[server.site]\nproxy_url = "http://127.0.0.1:1"\n'

CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
control_auth = "sesame"
shutdown_grace = 10
workers = 2

[server.site]
proxy_url = "http://127.0.0.1:{origin}"
"""

#: A worker's access-log line, relayed by the supervisor: its name and path.
SERVED = rb"\[(worker-\d)\] [^\n]*\"GET (/\S*) HTTP/1\.1\" 200"

#: A worker's control site is up: the worker is ready.
READY = rb"\[worker-\d\] [^\n]*ControlSite starting on '"


class WorkersKeyTests(SynchronousTestCase):
    """
    The C{workers} root key.
    """

    def test_default(self) -> None:
        """
        Without the key, one worker: the proxy runs in one process.
        """
        config = parse_config({"server": {"site": {"proxy_url": "http://127.0.0.1:1"}}})
        self.assertEqual(config.workers, 1)
        self.assertEqual(config.worker_count(), 1)

    def test_values(self) -> None:
        """
        A positive integer is kept; C{"auto"} is one worker per CPU, at least
        one; C{$env:} gives either.
        """
        site = {"site": {"proxy_url": "http://127.0.0.1:1"}}
        self.assertEqual(parse_config({"workers": 3, "server": site}).worker_count(), 3)
        auto = parse_config({"workers": "auto", "server": site})
        self.assertEqual(auto.worker_count(cpus=6), 6)
        self.assertEqual(auto.worker_count(cpus=None), max(1, os.cpu_count() or 1))
        env = parse_config({"workers": "$env:W", "server": site}, environ={"W": "auto"})
        self.assertEqual(env.workers, "auto")
        env = parse_config({"workers": "$env:W", "server": site}, environ={"W": "4"})
        self.assertEqual(env.workers, 4)

    def test_invalid(self) -> None:
        """
        Zero, a negative number, a float, a boolean or another string is an
        error naming the key.
        """
        site = {"site": {"proxy_url": "http://127.0.0.1:1"}}
        for value in (0, -1, 2.5, True, "many"):
            error = self.assertRaises(ConfigError, parse_config, {"workers": value, "server": site})
            self.assertIn("workers: expected an integer > 0 or \"auto\"", str(error), value)


    def test_check(self) -> None:
        """
        C{phantom-frame check} refuses a bad C{workers} with exit status 1,
        naming the key, and accepts C{"auto"}.
        """
        from io import StringIO

        from phantom_frame.config.check import check

        for value, status in (("0", 1), ('"auto"', 0)):
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(f"workers = {value}\n{SERVER}")
            out, err = StringIO(), StringIO()
            self.assertEqual(check(path, out, err), status, err.getvalue())
            self.assertEqual("workers: " in err.getvalue(), status == 1)


class WorkerSetupTests(SynchronousTestCase):
    """
    What a worker is handed.
    """

    def test_roundTrip(self) -> None:
        """
        L{WorkerSetup.from_environ} reads back what L{WorkerSetup.encode}
        wrote and removes the variable, so a worker's own children are not
        workers; without the variable, it is L{None}.
        """
        setup = WorkerSetup(1, {"http_listen": (3, socket.AF_INET)}, "/tmp/x/worker-1.sock")
        environ = {WORKER_ENV: setup.encode(), "OTHER": "1"}
        self.assertEqual(WorkerSetup.from_environ(environ), setup)
        self.assertEqual(environ, {"OTHER": "1"})
        self.assertIsNone(WorkerSetup.from_environ({}))

    def test_listener(self) -> None:
        """
        An inherited key listens on its descriptor, adopted (and the
        descriptor closed); any other (the control site) on the private UNIX
        socket.
        """
        memory = MemoryReactorClock()
        with socket.socket() as sock:
            fd = os.dup(sock.fileno())
        setup = WorkerSetup(0, {"http_listen": (fd, socket.AF_INET)}, "/tmp/x/worker-0.sock")
        factory = Factory()
        listen = worker_listen(setup)
        listen("http_listen", "tcp:0", factory, memory).privilegedStartService()
        self.assertEqual(memory.adoptedPorts, [(fd, socket.AF_INET, factory)])
        self.assertRaises(OSError, os.fstat, fd)
        listen("control_listen", "tcp:0", factory, memory).privilegedStartService()
        self.assertEqual([path for path, *_ in memory.unixServers], ["/tmp/x/worker-0.sock"])

    def test_childFDs(self) -> None:
        """
        Each worker gets the supervisor's listening sockets as descriptors
        3, 4, ... and its own control socket.
        """
        memory = MemoryReactorClock()
        shared = SharedListeners([], memory, listener)
        shared.ports = {"http_listen": _Port(11, socket.AF_INET), "https_port": _Port(12, socket.AF_INET6)}
        monitor = WorkerMonitor(memory, ["cmd"], 2, shared, "/run/d", 1.0)
        setup, fds = monitor.setup("worker-1")
        self.assertEqual(fds, {0: "w", 1: "r", 2: "r", 3: 11, 4: 12})
        self.assertEqual(setup, WorkerSetup(
            1, {"http_listen": (3, socket.AF_INET), "https_port": (4, socket.AF_INET6)}, "/run/d/worker-1.sock"))


class _Port:
    """
    A listening port's descriptor and family.
    """

    def __init__(self, fd: int, family: int) -> None:
        self._fd = fd
        self.addressFamily = family

    def fileno(self) -> int:
        return self._fd


class MergeTests(SynchronousTestCase):
    """
    Merging the workers' answers.
    """

    def test_invalidationSums(self) -> None:
        """
        An invalidation sums C{invalidated}, and says how many workers
        confirmed it; a worker that gave no answer is not counted.
        """
        resource = FanOutResource(["a", "b", "c"], None, MemoryReactorClock())
        merge = resource._routes  # the routes are built; the merge is by path
        self.assertIn((b"POST", b"/invalidate"), merge)
        answers = [(200, {"ok": True, "invalidated": 2}), None, (200, {"ok": True, "invalidated": 3})]
        from phantom_frame.ops.fanout import _sum_invalidated

        code, payload = combine(answers, _sum_invalidated)
        self.assertEqual(code, 200)
        self.assertEqual(payload, {"ok": True, "invalidated": 5, "workers": 3, "workers_confirmed": 2})

    def test_refusal(self) -> None:
        """
        A worker's refusal is the answer; no answer at all is 502.
        """
        from phantom_frame.ops.fanout import _first

        code, payload = combine([(400, {"error": "bad"}), (400, {"error": "bad"})], _first)
        self.assertEqual((code, payload["error"], payload["workers_confirmed"]), (400, "bad", 0))
        code, payload = combine([None, None], _first)
        self.assertEqual((code, payload["workers"]), (502, 2))

    def test_bulkAndStats(self) -> None:
        """
        Bulk results merge item by item (ok only when ok everywhere); stats
        sum every counter of every server.
        """
        from phantom_frame.ops.fanout import _bulk, _stats

        one = {"results": [{"pattern": "/a", "ok": True, "invalidated": 1}, {"pattern": "/b", "ok": True, "invalidated": 0}]}
        two = {"results": [{"pattern": "/a", "ok": True, "invalidated": 2}, {"pattern": "/b", "ok": False, "error": "x"}]}
        merged = _bulk([one, two])
        self.assertEqual((merged["requested"], merged["succeeded"], merged["failed"]), (2, 1, 1))
        self.assertEqual(merged["results"][0]["invalidated"], 3)
        self.assertEqual(merged["results"][1]["error"], "x")
        stats = _stats([{"servers": {"s": {"entries": 1, "hits": 4}}}, {"servers": {"s": {"entries": 2, "hits": 1}}}])
        self.assertEqual(stats, {"servers": {"s": {"entries": 3, "hits": 5}}})

    def test_metrics(self) -> None:
        """
        Samples with the same name and labels are summed (C{info} is not),
        under one C{HELP}/C{TYPE}; the worker counts are added.
        """
        one = (b'# HELP phantom_frame_info v\n# TYPE phantom_frame_info gauge\nphantom_frame_info{version="1"} 1.0\n'
               b'# HELP phantom_frame_requests_total r\n# TYPE phantom_frame_requests_total counter\n'
               b'phantom_frame_requests_total{server="s"} 2.0\n')
        two = one.replace(b'{server="s"} 2.0', b'{server="s"} 3.0\nphantom_frame_requests_total{server="t"} 1.0')
        text = merge_metrics([one, two], 3).decode()
        self.assertIn('phantom_frame_info{version="1"} 1.0\n', text)
        self.assertIn('phantom_frame_requests_total{server="s"} 5.0\nphantom_frame_requests_total{server="t"} 1.0\n', text)
        self.assertEqual(text.count("# TYPE phantom_frame_requests_total counter"), 1)
        self.assertIn("phantom_frame_workers 3.0\n", text)
        self.assertIn("phantom_frame_workers_answering 2.0\n", text)


class Supervised:
    """
    A real C{twistd -n phantom-frame} with C{workers = 2} in front of an
    origin, and a client for its proxy and control ports.

    @ivar child: the supervisor's process protocol.
    @ivar http: the proxy port (opened by the supervisor).
    @ivar control: the supervisor's control port.
    """

    def __init__(self, testcase: TestCase, origin: Any) -> None:
        self.testcase = testcase
        self.originSite = WrappingFactory(Site(origin))
        self.originPort = reactor.listenTCP(0, self.originSite, interface="127.0.0.1")
        testcase.addCleanup(self.originPort.stopListening)
        self.child: Twistd = spawn_twistd(testcase, CONFIG.format(origin=self.originPort.getHost().port))
        testcase.addCleanup(self.stop)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.http = self.control = 0

    async def stop(self) -> None:
        """
        Stop the supervisor (and so its workers) with C{SIGTERM}, and wait
        for the workers' connections to the origin to close.
        """
        if not self.child.ended.called:
            self.child.transport.signalProcess("TERM")
            await self.child.ended
        await until(lambda: not self.originSite.protocols)

    async def start(self) -> None:
        """
        Wait for the supervisor's listeners and for both workers.
        """
        self.http, self.control = await self.child.ports()
        await self.child.matches(READY, 2)

    def pids(self) -> Dict[str, List[int]]:
        """
        @return: the pids each worker was started with, in order.
        """
        found: Dict[str, List[int]] = {}
        for name, pid in re.findall(r"workers: (worker-\d) started \(pid (\d+)\)", self.child.text()):
            found.setdefault(name, []).append(int(pid))
        return found

    def served(self) -> Dict[str, str]:
        """
        @return: by path, the worker whose access log shows it answered.
        """
        everything = b"".join(self.child.output)
        return {path.decode(): name.decode() for name, path in re.findall(SERVED, everything)}

    async def get(self, path: str) -> Tuple[int, bytes]:
        """
        @return: the status and body of C{GET path} on the proxy port, on a
            new connection.
        """
        response = await self.agent.request(b"GET", b"http://127.0.0.1:%d%s" % (self.http, path.encode()))
        return response.code, await treq.content(response)

    async def call(self, method: bytes, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
        """
        @return: the status and decoded JSON answer of a control call on the
            supervisor, with the token.
        """
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        headers = Headers({b"authorization": [b"Bearer sesame"]})
        producer = None if body is None else FileBodyProducer(BytesIO(json.dumps(body).encode()))
        url = b"http://127.0.0.1:%d%s" % (self.control, path.encode())
        response = await self.agent.request(method, url, headers, producer)
        data = await treq.content(response)
        if path == "/metrics":
            return response.code, data.decode()
        return response.code, json.loads(data)

    async def spread(self, limit: int = 200) -> List[str]:
        """
        Ask for new paths, one connection each, until both workers have
        answered some.

        @return: the paths asked for.
        """
        paths: List[str] = []
        for number in range(limit):
            path = f"/page/{number}"
            served = self.served()
            winners = set(served.values())
            if number >= 20 and len(winners) == 1:
                # One worker won every accept so far (a busy machine may
                # run it first each time): stopped, it leaves this
                # connection to the other.
                pid = self.pids()[winners.pop()][-1]
                os.kill(pid, signal.SIGSTOP)
                try:
                    code, _ = await self.get(path)
                finally:
                    os.kill(pid, signal.SIGCONT)
            else:
                code, _ = await self.get(path)
            self.testcase.assertEqual(code, 200)
            paths.append(path)
            if len(set(self.served().values())) == 2:
                # Each answer's access-log line comes after the answer.
                await until(lambda: set(paths) <= set(self.served()))
                return paths
        self.testcase.fail(f"one worker answered all {limit} requests:\n{self.child.text()}")
        raise AssertionError  # pragma: no cover


class WorkersProcessTests(TestCase):
    """
    C{workers = 2} as real processes.
    """

    timeout = 60

    async def test_bothWorkersAcceptAndStatsSum(self) -> None:
        """
        Both workers accept on the port the supervisor opened, and the
        supervisor's C{/stats} and C{/metrics} sum theirs: every page asked
        for is stored once, in the worker that answered it, and counted once.
        """
        run = Supervised(self, Origin())
        await run.start()
        self.assertEqual(sorted(run.pids()), ["worker-0", "worker-1"])
        paths = await run.spread()
        code, stats = await run.call(b"GET", "/stats")
        self.assertEqual(code, 200, stats)
        self.assertEqual(stats["workers_confirmed"], 2)
        self.assertEqual(stats["servers"]["site"]["entries"], len(paths))
        self.assertEqual(stats["servers"]["site"]["misses"], len(paths))
        code, text = await run.call(b"GET", "/metrics")
        self.assertEqual(code, 200, text)
        counted = re.findall(r'^phantom_frame_requests_total\{[^}]*status="2xx"[^}]*\} (\S+)$', text, re.M)
        self.assertEqual(sum(float(n) for n in counted), len(paths))
        self.assertIn("phantom_frame_workers_answering 2.0\n", text)

    async def test_invalidationReachesEveryWorker(self) -> None:
        """
        An invalidation on the supervisor's control site drops the entries of
        every worker, sums their counts and says both confirmed.
        """
        origin = Origin()
        run = Supervised(self, origin)
        await run.start()
        paths = await run.spread()
        code, answer = await run.call(b"POST", "/invalidate", {"pattern": "/page/*"})
        self.assertEqual(code, 200, answer)
        self.assertEqual((answer["invalidated"], answer["workers_confirmed"], answer["workers"]), (len(paths), 2, 2))
        _, stats = await run.call(b"GET", "/stats")
        self.assertEqual(stats["servers"]["site"]["entries"], 0)
        code, answer = await run.call(b"POST", "/invalidate", {"pattern": "/x", "server": "nope"})
        self.assertEqual((code, answer["workers_confirmed"]), (404, 0), answer)

    async def test_killedWorkerRestarted(self) -> None:
        """
        A worker killed with C{SIGKILL} is started again; meanwhile and
        afterwards the port keeps answering.
        """
        run = Supervised(self, Origin())
        await run.start()
        victim = run.pids()["worker-1"][0]
        os.kill(victim, signal.SIGKILL)
        for number in range(5):
            code, _ = await run.get(f"/during/{number}")
            self.assertEqual(code, 200)
        await run.child.matches(rb"workers: worker-1 started \(pid \d+\)", 2)
        await run.child.matches(READY, 3)
        restarted = run.pids()["worker-1"]
        self.assertEqual(len(restarted), 2)
        self.assertNotEqual(restarted[1], victim)
        self.assertRaises(ProcessLookupError, os.kill, victim, 0)
        code, _ = await run.get("/after")
        self.assertEqual(code, 200)
        _, stats = await run.call(b"GET", "/stats")
        self.assertEqual(stats["workers_confirmed"], 2)

    async def test_sigtermDrainsEveryWorker(self) -> None:
        """
        C{SIGTERM} on the supervisor: the listener stops accepting, the
        request in flight on a worker gets its whole answer, every worker
        exits and the supervisor exits 0.
        """
        origin = Held()
        run = Supervised(self, origin)
        self.addCleanup(lambda: origin.release.called or origin.release.callback(None))
        await run.start()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", run.http)
        client = await endpoint.connect(Factory.forProtocol(RawClient))
        self.addCleanup(lambda: client.closed.called or client.transport.abortConnection())
        await origin.arrived
        pids = [pids[-1] for pids in run.pids().values()]
        os.kill(run.child.transport.pid, signal.SIGTERM)
        await run.child.matches(rb"\[worker-\d\] [^\n]*stopping: 1 request\(s\) in flight")
        origin.release.callback(None)
        await client.closed
        head, _, body = b"".join(client.received).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), head)
        self.assertEqual(len(body), len(BODY))
        code = await run.child.ended
        self.assertEqual(code, 0, run.child.text())
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)

    async def test_hangupWithBrokenConfigKeepsServing(self) -> None:
        """
        C{SIGHUP} (or C{POST /reload}) with a broken file is refused in one
        line; the workers are untouched and keep answering. With the file
        fixed, every worker reloads.
        """
        run = Supervised(self, Origin())
        await run.start()
        with open(run.child.config) as f:
            good = f.read()
        with open(run.child.config, "w") as f:
            f.write(good + "\nbogus_key = 1\n")
        os.kill(run.child.transport.pid, signal.SIGHUP)
        await run.child.matches(rb"reload refused: [^\n]*bogus_key")
        code, answer = await run.call(b"POST", "/reload")
        self.assertEqual((code, answer["ok"], answer["workers_confirmed"]), (400, False, 0), answer)
        code, _ = await run.get("/still")
        self.assertEqual(code, 200)
        self.assertNotIn(b"reloaded", b"".join(run.child.output))
        with open(run.child.config, "w") as f:
            f.write(good.replace("shutdown_grace = 10", "shutdown_grace = 9"))
        os.kill(run.child.transport.pid, signal.SIGHUP)
        await run.child.matches(rb"\[worker-\d\] [^\n]*configuration [^\n]* reloaded", 2)
        code, answer = await run.call(b"POST", "/reload")
        self.assertEqual((code, answer["ok"], answer["workers_confirmed"]), (200, True, 2), answer)
        self.assertEqual(sorted(len(p) for p in run.pids().values()), [1, 1])


class UnixListenerTests(TestCase):
    """
    A worker on an inherited UNIX socket.
    """

    async def test_workerLeavesThePath(self) -> None:
        """
        A worker that stops listening on an inherited UNIX socket leaves its
        path (the supervisor's, still used by the other workers) in place.
        """
        from twisted.internet.endpoints import UNIXServerEndpoint

        import shutil
        import tempfile

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "pf.sock")
        held = await UNIXServerEndpoint(reactor, path).listen(Factory())
        self.addCleanup(held.stopListening)
        held.stopReading()
        setup = WorkerSetup(0, {"http_listen": (os.dup(held.fileno()), socket.AF_UNIX)}, "unused")
        port = await setup.endpoint("http_listen", reactor).listen(Factory())
        await port.stopListening()
        self.assertTrue(os.path.exists(path))
