"""
Tests for the twistd plugin: discovery, options, L{makeService} on a memory
reactor, and one real C{twistd -n phantom-frame} run.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
import treq
from twisted.web.client import Agent, HTTPConnectionPool

from phantom_frame import tap
from phantom_frame.http.site import ProxySite

from .origin import PAGE, Origin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
http_port = {http}
control_port = {control}
bind_address = "127.0.0.1"
shutdown_grace = 2

[server.site]
bind_to = "*"
proxy_url = "http://127.0.0.1:{origin}"

[server.api]
bind_to = "/api"
proxy_url = "http://127.0.0.1:{origin}/v1"
"""


def free_port() -> int:
    """
    @return: a TCP port on loopback that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PluginTests(SynchronousTestCase):
    """
    Discovery and options.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_discovered(self) -> None:
        """
        twistd finds the C{phantom-frame} plugin.
        """
        names = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("phantom-frame", names)
        self.assertIsInstance(names["phantom-frame"].options(), tap.Options)

    def test_config_required(self) -> None:
        """
        C{--config} is required.
        """
        self.assertRaises(UsageError, tap.Options().parseOptions, [])

    def test_invalid_config(self) -> None:
        """
        An invalid config is a usage error listing every problem.
        """
        path = self.write('http_port = "x"\n[server.a]\ncache_stratgy = "all"\n')
        error = self.assertRaises(UsageError, tap.Options().parseOptions, ["--config", path])
        self.assertIn("http_port", str(error))
        self.assertIn("did you mean cache_strategy", str(error))

    def test_make_service(self) -> None:
        """
        L{tap.makeService} builds a L{MultiService} listening (on the given
        reactor) on the proxy port on C{bind_address} and the control port
        on localhost; stopping it closes the listeners.
        """
        path = self.write(CONFIG.format(http=3456, control=3457, origin=8080))
        options = tap.Options()
        options.parseOptions(["--config", path])
        memory = MemoryReactorClock()
        service = tap.makeService(options, reactor=memory)
        self.assertIsInstance(service, MultiService)
        service.privilegedStartService()
        service.startService()
        listening = {(port, interface): factory for port, factory, _, interface in memory.tcpServers}
        self.assertIsInstance(listening[(3456, "127.0.0.1")], ProxySite)
        self.assertIn((3457, "127.0.0.1"), listening)
        self.assertEqual(sorted(s.name for s in service.handle.servers()), ["api", "site"])
        d = service.stopService()
        memory.advance(0)
        self.successResultOf(d)
        self.assertTrue(all(not p.listening if hasattr(p, "listening") else True for p in memory.tcpServers))

    def test_graceful_stop_waits(self) -> None:
        """
        Stopping waits for requests in flight, at most C{shutdown_grace}.
        """
        path = self.write(CONFIG.format(http=3456, control=3457, origin=8080))
        options = tap.Options()
        options.parseOptions(["--config", path])
        memory = MemoryReactorClock()
        service = tap.makeService(options, reactor=memory)
        service.startService()
        service.site.active = 1
        d = service.stopService()
        memory.advance(1)
        self.assertNoResult(d)
        memory.advance(1.5)
        self.successResultOf(d)


class Twistd(ProcessProtocol):
    """
    Collects a child's output and its exit.
    """

    def __init__(self) -> None:
        self.output = []
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class TwistdTests(TestCase):
    """
    C{twistd -n phantom-frame --config FILE} as a real process.
    """

    def spawn(self, config: str) -> Twistd:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(config)
        child = Twistd()
        env = dict(os.environ, PYTHONPATH=ROOT)
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "phantom-frame", "--config", path],
            env=env,
            path=ROOT,
        )
        return child

    async def test_serves_and_stops(self) -> None:
        """
        The plugin proxies a request to the origin (through the prefix
        route) and exits 0 on SIGTERM.
        """
        from twisted.web.server import Site

        origin = Origin()
        originPort = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        http = free_port()
        child = self.spawn(CONFIG.format(http=http, control=free_port(), origin=originPort.getHost().port))
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        response = None
        for _ in range(200):
            try:
                response = await agent.request(b"GET", b"http://127.0.0.1:%d/api/page" % http)
                break
            except Exception:
                if child.ended.called:
                    break
                await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNotNone(response, b"".join(child.output).decode(errors="replace"))
        body = await treq.content(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(body.startswith(PAGE))
        self.assertEqual(origin.requests[-1]["uri"], "/v1/page")
        os.kill(child.transport.pid, signal.SIGTERM)
        code = await child.ended
        self.assertEqual(code, 0, b"".join(child.output).decode(errors="replace"))

    async def test_busy_port_fails(self) -> None:
        """
        A port already in use stops start-up with a non-zero exit.
        """
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            child = self.spawn(CONFIG.format(http=port, control=free_port(), origin=1))
            code = await child.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"Address already in use", b"".join(child.output))

    async def test_bad_config_fails(self) -> None:
        """
        An invalid config stops start-up with a non-zero exit naming the key.
        """
        child = self.spawn('http_port = "x"\n[server.a]\n')
        code = await child.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"http_port", b"".join(child.output))
