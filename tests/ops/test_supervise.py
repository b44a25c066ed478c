"""
Tests for L{phantom_frame.ops.supervise}: origin commands under a process
monitor (a real child, killed and restarted), waiting for an origin's port,
and snapshot warm-ups that wait for a supervised origin.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import FailTest, SynchronousTestCase, TestCase

from phantom_frame.config import load_config
from phantom_frame.proxy.handle import CacheHandle
from phantom_frame.ops.metrics import Metrics
from phantom_frame.service import build_service
from phantom_frame.ops.supervise import (
    OriginSupervisor,
    WarmUps,
    command_args,
    origin_address,
    wait_for_port,
)

from tests.memory import samples, value

PYTHON = shlex.quote(sys.executable)


#: What an origin started by L{origin_command} logs once it listens (the
#: port the system gave it in the group).
SERVING = r"\[{name}\] Serving HTTP on 127\.0\.0\.1 port (\d+) "


def origin_command(*extra: str) -> str:
    """
    @param extra: more arguments (another command serving the same way).
    @return: an C{execute} value serving the current directory on a port
        the system chooses, which it prints (see L{SERVING}).
    """
    return " ".join([f"{PYTHON} -u -m http.server 0 --bind 127.0.0.1", *extra])


def reserve_port(testcase: Any) -> socket.socket:
    """
    @return: a TCP socket bound to a port on loopback the system chose,
        not listening: connections to the port are refused, and no one else
        can take it, until the test ends (when it is closed).
    """
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    testcase.addCleanup(reserved.close)
    reserved.bind(("127.0.0.1", 0))
    return reserved


class Logged:
    """
    Every log event during a test, and L{Deferred}s firing once enough of
    them match.
    """

    def __init__(self, testcase: Any) -> None:
        self.events: List[Dict[str, Any]] = []
        self._waiting: List[Tuple[str, Any, int, Deferred]] = []
        globalLogPublisher.addObserver(self._observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: Dict[str, Any]) -> None:
        self.events.append(event)
        self._check()

    def _check(self) -> None:
        for item in list(self._waiting):
            namespace, pattern, count, d = item
            found = [m for m in (pattern.search(t) for t in self.texts(namespace)) if m is not None]
            if len(found) >= count:
                self._waiting.remove(item)
                d.callback(found)

    def texts(self, namespace: str) -> List[str]:
        """
        @return: the formatted events of C{namespace}.
        """
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == namespace]

    def matches(
        self, pattern: str, namespace: str = "phantom_frame.origin", count: int = 1, timeout: float = 15
    ) -> Deferred[List[Any]]:
        """
        Wait until C{count} events of C{namespace} match C{pattern}.

        @return: a L{Deferred} firing with the matches, in order, or failing
            with L{FailTest} after C{timeout} seconds.
        """
        item: Tuple[str, Any, int, Deferred] = (namespace, re.compile(pattern), count, Deferred(
            lambda d: self._waiting.remove(item)
        ))
        self._waiting.append(item)
        self._check()

        def timedOut(failure: Any, timeout: float) -> None:
            texts = "\n".join(self.texts(namespace))
            raise FailTest(f"not {count} of {pattern!r} within {timeout:g}s:\n{texts}")

        return item[3].addTimeout(timeout, reactor, onTimeoutCancel=timedOut)


class HelperTests(SynchronousTestCase):
    """
    L{command_args} and L{origin_address}.
    """

    def test_command_args(self) -> None:
        """
        Commands are split as a shell would, without running one.
        """
        self.assertEqual(command_args("node server.js --port 8080"), ["node", "server.js", "--port", "8080"])
        self.assertEqual(command_args("sh -c 'a && b'"), ["sh", "-c", "a && b"])
        self.assertRaises(ValueError, command_args, "  ")
        self.assertRaises(ValueError, command_args, "unbalanced 'quote")

    def test_origin_address(self) -> None:
        """
        The host and port of a C{proxy_url}, with the scheme's default port.
        """
        self.assertEqual(origin_address("http://127.0.0.1:8080/v1"), ("127.0.0.1", 8080))
        self.assertEqual(origin_address("http://origin.example"), ("origin.example", 80))
        self.assertEqual(origin_address("https://origin.example"), ("origin.example", 443))


class FakeSnapshots:
    """
    Counts warm-ups.
    """

    def __init__(self) -> None:
        self.warmups = 0

    def warm_up(self) -> None:
        """
        Count a warm-up.
        """
        self.warmups += 1


class FakeConfig:
    """
    The configuration fields L{WarmUps} reads.
    """

    def __init__(self, execute: Optional[str]) -> None:
        self.execute = execute
        self.proxy_url = "http://127.0.0.1:8080"


class FakeServer:
    """
    A server with snapshots.
    """

    def __init__(self, name: str, execute: Optional[str] = None) -> None:
        self.name = name
        self.config = FakeConfig(execute)
        self.snapshots: Any = FakeSnapshots()


class WarmUpsTests(SynchronousTestCase):
    """
    L{WarmUps} with a fake port wait.
    """

    def setUp(self) -> None:
        self.waits: List[Tuple[Tuple[Any, ...], Deferred]] = []
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.warmups = WarmUps(Clock(), timeout=5, interval=0.5, wait=self.wait)

    def wait(self, *args: Any) -> Deferred:
        """
        Record a port wait; it ends when the test fires its L{Deferred}.
        """
        d: Deferred = Deferred()
        self.waits.append((args[1:], d))
        return d

    def messages(self) -> str:
        """
        @return: the log messages of L{phantom_frame.ops.supervise}, formatted.
        """
        return "\n".join(formatEvent(e) for e in self.events if e.get("log_namespace") == "phantom_frame.ops.supervise")

    def test_unsupervised(self) -> None:
        """
        A server whose origin the proxy does not start warms up when the
        service starts (or at once once it runs); servers without snapshots
        are ignored.
        """
        first, second, dynamic = FakeServer("a"), FakeServer("b"), FakeServer("c")
        dynamic.snapshots = None
        self.warmups.add(first)
        self.warmups.add(dynamic)
        self.assertEqual(first.snapshots.warmups, 0)
        self.warmups.startService()
        self.assertEqual(first.snapshots.warmups, 1)
        self.warmups.add(second)
        self.assertEqual(second.snapshots.warmups, 1)
        self.assertEqual(self.waits, [])

    def test_supervised(self) -> None:
        """
        A supervised origin is waited for (its host and port, the timeout
        and the interval); the warm-up starts when it is up, or anyway with
        an error logged when it never comes up.
        """
        up, down = FakeServer("up", "origin"), FakeServer("down", "origin")
        self.warmups.add(up)
        self.warmups.add(down)
        self.warmups.startService()
        self.assertEqual([args for args, _ in self.waits], [("127.0.0.1", 8080, 5, 0.5)] * 2)
        self.assertEqual((up.snapshots.warmups, down.snapshots.warmups), (0, 0))
        self.waits[0][1].callback(True)
        self.waits[1][1].callback(False)
        self.assertEqual((up.snapshots.warmups, down.snapshots.warmups), (1, 1))
        messages = self.messages()
        self.assertIn("server up: origin is up, pre-generating", messages)
        self.assertIn(
            "server down: origin at 127.0.0.1:8080 did not accept connections within 5s", messages
        )

    def test_discard_and_stop(self) -> None:
        """
        A discarded server's wait is cancelled and it is not warmed up;
        stopping cancels the other waits.
        """
        gone, waiting = FakeServer("gone", "origin"), FakeServer("waiting", "origin")
        self.warmups.startService()
        self.warmups.add(gone)
        self.warmups.add(waiting)
        self.warmups.discard(gone)
        # Cancelled (the cancellation is consumed).
        self.assertIsNone(self.successResultOf(self.waits[0][1]))
        self.warmups.stopService()
        self.assertIsNone(self.successResultOf(self.waits[1][1]))
        self.assertEqual((gone.snapshots.warmups, waiting.snapshots.warmups), (0, 0))


class WaitForPortTests(TestCase):
    """
    L{wait_for_port} on loopback.
    """

    async def test_open(self) -> None:
        """
        A listening port is found at once.
        """
        from twisted.internet.protocol import Factory, Protocol

        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(await wait_for_port(reactor, "127.0.0.1", port.getHost().port, 5, 0.05))

    async def test_closed(self) -> None:
        """
        A port nobody listens on is given up on after the timeout.
        """
        port = reserve_port(self).getsockname()[1]
        started = reactor.seconds()
        self.assertFalse(await wait_for_port(reactor, "127.0.0.1", port, 0.3, 0.05))
        self.assertLess(reactor.seconds() - started, 3)


class SupervisorTests(TestCase):
    """
    L{OriginSupervisor} with a real origin process.
    """

    timeout = 60

    def setUp(self) -> None:
        self.logged = Logged(self)

    async def until(self, condition: Any, seconds: float = 15) -> None:
        """
        Wait until C{condition()} is true.
        """
        deadline = reactor.seconds() + seconds
        while not condition():
            self.assertLess(reactor.seconds(), deadline, "timed out")
            await deferLater(reactor, 0.02, lambda: None)

    async def serving(self, name: str, count: int = 1) -> int:
        """
        Wait until the C{count}th origin process of server C{name} says it
        listens.

        @return: the port it listens on.
        """
        found = await self.logged.matches(SERVING.format(name=name), count=count)
        return int(found[count - 1].group(1))

    async def test_restart(self) -> None:
        """
        The origin command starts with the service, its output is logged
        with the server's name, it is started again after it is killed, and
        stopping the service stops it for good.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        metrics = Metrics(CacheHandle(), reactor)
        supervisor = OriginSupervisor(reactor, metrics)
        supervisor.minRestartDelay = 0.05
        supervisor.supervise("site", origin_command(), directory)
        supervisor.startService()
        self.addCleanup(lambda: supervisor.running and supervisor.stopService())
        port = await self.serving("site")
        self.assertTrue(await wait_for_port(reactor, "127.0.0.1", port, 15, 0.05))
        first = supervisor.protocols["site"].transport.pid
        os.kill(first, signal.SIGKILL)
        port = await self.serving("site", count=2)
        self.assertTrue(await wait_for_port(reactor, "127.0.0.1", port, 15, 0.05))
        second = supervisor.protocols["site"].transport.pid
        self.assertNotEqual(second, first)
        starts = [t for t in self.logged.texts("phantom_frame.ops.supervise") if "starting origin command" in t]
        self.assertEqual(len(starts), 2)
        self.assertIn(f"server site: starting origin command {origin_command()!r} in {directory}", starts[0])
        self.assertEqual(value(samples(metrics.render().decode()), "phantom_frame_origin_starts_total", server="site"), 2)
        await supervisor.stopService()
        self.assertEqual(supervisor.protocols, {})
        self.assertRaises(ProcessLookupError, os.kill, second, 0)
        self.assertEqual([name for name, call in supervisor.restart.items() if call.active()], [])

    async def test_replace_and_release(self) -> None:
        """
        Supervising the same command again changes nothing; another command
        replaces the process; releasing stops it.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        supervisor = OriginSupervisor(reactor)
        supervisor.minRestartDelay = 0.05
        supervisor.supervise("site", origin_command(), directory)
        supervisor.startService()
        self.addCleanup(lambda: supervisor.running and supervisor.stopService())
        await self.serving("site")
        pid = supervisor.protocols["site"].transport.pid
        supervisor.supervise("site", origin_command(), directory)
        self.assertEqual(supervisor.protocols["site"].transport.pid, pid)
        other = origin_command("--directory", ".")
        supervisor.supervise("site", other, directory)
        port = await self.serving("site", count=2)
        self.assertTrue(await wait_for_port(reactor, "127.0.0.1", port, 15, 0.05))
        self.assertNotEqual(supervisor.protocols["site"].transport.pid, pid)
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertEqual(supervisor.commands, {"site": (other, directory)})
        supervisor.release("site")
        await self.until(lambda: not supervisor.protocols)
        self.assertEqual(supervisor.commands, {})
        await supervisor.stopService()


#: An origin command that says it is ready, then runs until it is stopped;
#: the test listens on the origin's port for it (see L{ServiceTests}).
READY = f"{PYTHON} -u -c 'import sys; print(\"origin ready\"); sys.stdin.read()'"

CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
access_log = false

[server.docs]
proxy_url = "http://127.0.0.1:{port}"
proxy_mode = "pre_generate"
pre_generate_paths = ["/", "/page.html"]
execute = "{command}"
execute_dir = "site"
"""


class ServiceTests(TestCase):
    """
    A pre_generate server whose origin the proxy starts.
    """

    timeout = 60

    async def test_warm_up_after_origin(self) -> None:
        """
        The proxy starts the origin, waits for its port, then fetches the
        snapshots from it; stopping the proxy stops the origin.

        The origin's port is bound by the test before the proxy starts,
        but refuses connections until the origin command has said it is
        ready: only then does the test listen on it, as the origin.
        """
        from twisted.web.server import Site

        from tests.origin import Origin

        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "site"))
        pages = Origin()
        reserved = reserve_port(self)
        port = reserved.getsockname()[1]
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(CONFIG.format(port=port, command=READY.replace('"', '\\"')))
        logged = Logged(self)
        top = build_service(load_config(path), reactor, origin_timeout=20)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())
        await logged.matches(r"^\[docs\] origin ready$")
        self.assertFalse(top.handle.server("docs").snapshots.warmed.called)
        reserved.listen(16)
        reserved.setblocking(False)
        origin = reactor.adoptStreamPort(reserved.fileno(), socket.AF_INET, Site(pages))
        self.addCleanup(origin.stopListening)
        server = top.handle.server("docs")
        results = await server.snapshots.warmed
        self.assertEqual(results, {"/": None, "/page.html": None})
        self.assertTrue(server.snapshots.has("/page.html"))
        self.assertEqual(pages.hits, {"/": 1, "/page.html": 1})
        self.assertIn(
            f"server docs: waiting for its origin at 127.0.0.1:{port} before pre-generating",
            logged.texts("phantom_frame.ops.supervise"),
        )
        pid = top.supervisor.protocols["docs"].transport.pid
        await top.stopService()
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
