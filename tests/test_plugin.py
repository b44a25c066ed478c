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
from twisted.internet.protocol import Factory, ProcessProtocol
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
        self.assertIn(b"address already in use", b"".join(child.output))

    async def test_bad_config_fails(self) -> None:
        """
        An invalid config stops start-up with a non-zero exit naming the key.
        """
        child = self.spawn('http_port = "x"\n[server.a]\n')
        code = await child.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"http_port", b"".join(child.output))



STARTUP = """
{root}
[server.site]
proxy_url = "http://127.0.0.1:1"
{server}
"""

#: Root keys that listen on ports the system picks.
ANY_PORTS = 'http_listen = "tcp:0:interface=127.0.0.1"\ncontrol_listen = "tcp:0:interface=127.0.0.1"'


class StartupErrorTests(SynchronousTestCase):
    """
    What can be seen in the file is refused before twistd starts anything;
    what can only be seen at start is one L{StartupError} line.
    """

    def write(self, root: str = ANY_PORTS, server: str = "") -> str:
        """
        @return: the path of a new file with these root keys and these keys
            in its one server block.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(STARTUP.format(root=root, server=server))
        return path

    def test_staticErrors(self) -> None:
        """
        A bad address, an endpoint description Twisted cannot parse or does
        not know, and a cache directory under a regular file are
        configuration errors naming the key.
        """
        regular = os.path.abspath(self.mktemp())
        with open(regular, "w") as f:
            f.write("x")
        cache = f'cache_storage_mode = "filesystem"\ncache_directory = "{regular}/cache"'
        cases = [
            (self.write(root='bind_address = "999.999.999.999"'), "bind_address: "),
            (self.write(root='http_listen = "tcp:notaport"'), "http_listen: "),
            (self.write(root='control_listen = "bogus:foo"'), "control_listen: "),
            (self.write(server=cache), "server.site.cache_directory: "),
        ]
        for path, key in cases:
            error = self.assertRaises(UsageError, tap.Options().parseOptions, ["--config", path])
            self.assertIn(key, str(error))

    def test_buildFailure(self) -> None:
        """
        A cache directory that cannot be made when the service is built
        (a file appeared there after the check) is a L{StartupError}
        naming it, not a traceback.
        """
        from phantom_frame.startup import StartupError

        directory = os.path.abspath(self.mktemp())
        path = self.write(server=f'cache_storage_mode = "filesystem"\ncache_directory = "{directory}"')
        options = tap.Options()
        options.parseOptions(["--config", path])
        with open(directory, "w") as f:
            f.write("x")
        error = self.assertRaises(StartupError, tap.makeService, options, reactor=MemoryReactorClock())
        self.assertIn(directory, str(error))
        self.assertTrue(str(error).startswith("cannot start: "), str(error))


class StartupFailureTests(TestCase):
    """
    A real C{twistd -n phantom-frame} that cannot start prints one line
    naming the key and the cause, and exits 1, without a traceback.
    """

    timeout = 60

    def fails(self, root: str) -> Deferred:
        """
        Run twistd on a file with these root keys, expecting it to exit.

        @return: a L{Deferred} firing with its exit status and its output.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(STARTUP.format(root=root, server=""))
        child = Twistd()
        process = reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "phantom-frame", "--config", path],
            env=dict(os.environ, PYTHONPATH=ROOT),
            path=ROOT,
        )

        def kill() -> None:
            if not child.ended.called:
                process.signalProcess("KILL")

        self.addCleanup(kill)
        return child.ended.addCallback(lambda code: (code, b"".join(child.output)))

    def assertOneLine(self, code: int, output: bytes, line: bytes) -> None:
        """
        Assert that twistd exited 1 and printed C{line}, and no traceback.
        """
        self.assertEqual(code, 1, output)
        self.assertNotIn(b"Traceback", output)
        self.assertIn(b"phantom-frame: " + line + b"\n", output)

    async def test_busyPort(self) -> None:
        """
        A port another socket listens on: C{http_port: cannot listen on
        ADDRESS:PORT: address already in use}.
        """
        busy = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        port = busy.getHost().port
        root = (
            f'http_port = {port}\nbind_address = "127.0.0.1"\n'
            'control_listen = "tcp:0:interface=127.0.0.1"'
        )
        code, output = await self.fails(root)
        self.assertOneLine(
            code, output, b"http_port: cannot listen on 127.0.0.1:%d: address already in use" % port
        )

    async def test_missingSocketDirectory(self) -> None:
        """
        A UNIX control socket in a directory that does not exist.
        """
        socket_path = os.path.join(os.path.abspath(self.mktemp()), "pf.sock")
        root = f'http_listen = "tcp:0:interface=127.0.0.1"\ncontrol_listen = "unix:{socket_path}"'
        code, output = await self.fails(root)
        self.assertOneLine(
            code,
            output,
            b"control_listen: cannot listen on unix:%s: no such file or directory" % socket_path.encode(),
        )

    async def test_unknownEndpointType(self) -> None:
        """
        An endpoint type nothing provides is refused as a configuration
        error naming the key, before anything starts.
        """
        code, output = await self.fails('http_listen = "bogus:foo"\ncontrol_listen = "tcp:0"')
        self.assertEqual(code, 1, output)
        self.assertNotIn(b"Traceback", output)
        self.assertIn(b"http_listen: expected a Twisted endpoint description", output)
