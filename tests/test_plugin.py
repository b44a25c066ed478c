"""
Tests for the twistd plugin: discovery, options, L{makeService} on a memory
reactor, and one real C{twistd -n phantom-frame} run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any, List, Pattern, Tuple

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import FailTest, SynchronousTestCase, TestCase
import treq
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

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

#: The configuration of a real C{twistd} child: both listeners on a port the
#: system chooses (C{{http}} is C{0}) or on a given one, on loopback; the
#: child's log says which ports it got (see L{Twistd.ports}).
TWISTD_CONFIG = """
http_listen = "tcp:{http}:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
shutdown_grace = 2

[server.site]
bind_to = "*"
proxy_url = "http://127.0.0.1:{origin}"

[server.api]
bind_to = "/api"
proxy_url = "http://127.0.0.1:{origin}/v1"
"""


@implementer(IListeningPort)
class RecordedPort:
    """
    A listening port of L{RecordingReactor}: records when it is stopped.
    """

    def __init__(self, address: IPv4Address, stopped: List[Tuple[int, str]]) -> None:
        self._address = address
        self._stopped = stopped

    def startListening(self) -> None:
        """
        Nothing to do: the port is not real.
        """

    def stopListening(self) -> None:
        """
        Record that the port was stopped.
        """
        self._stopped.append((self._address.port, self._address.host))

    def getHost(self) -> IPv4Address:
        """
        @return: the address the port pretends to listen on.
        """
        return self._address


class RecordingReactor(MemoryReactorClock):
    """
    A memory reactor whose TCP ports record being stopped in C{stopped}
    (as C{(port, interface)}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopped: List[Tuple[int, str]] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> RecordedPort:
        """
        Record the call, as L{MemoryReactorClock.listenTCP} does.

        @return: a L{RecordedPort}.
        """
        super().listenTCP(port, factory, backlog, interface)
        return RecordedPort(IPv4Address("TCP", interface, port), self.stopped)


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
        memory = RecordingReactor()
        service = tap.makeService(options, reactor=memory)
        self.assertIsInstance(service, MultiService)
        service.privilegedStartService()
        service.startService()
        listening = {(port, interface): factory for port, factory, _, interface in memory.tcpServers}
        self.assertIsInstance(listening[(3456, "127.0.0.1")], ProxySite)
        self.assertIn((3457, "127.0.0.1"), listening)
        self.assertEqual(sorted(s.name for s in service.handle.servers()), ["api", "site"])
        self.assertEqual(memory.stopped, [])
        d = service.stopService()
        memory.advance(0)
        self.successResultOf(d)
        self.assertEqual(sorted(memory.stopped), [(3456, "127.0.0.1"), (3457, "127.0.0.1")])

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
    Collects a child's output and its exit, and tells when its output
    shows something.

    @ivar output: every chunk the child wrote, stdout and stderr together.
    @ivar ended: fires with the child's exit code.
    @ivar config: the path of the child's configuration file.
    """

    #: The line Twisted logs for each listening TCP port, naming the
    #: factory's class (L{ProxySite} for the proxy, C{Site} for the control
    #: site) and the port the system gave it (a whole line: output may
    #: arrive in pieces).
    LISTENING = rb"\b(ProxySite|ControlSite) starting on (\d+)\r?\n"

    def __init__(self) -> None:
        self.output: List[bytes] = []
        self.ended: Deferred = Deferred()
        self.config = ""
        self._waiting: List[Tuple[Pattern[bytes], int, Deferred]] = []

    def text(self) -> str:
        """
        @return: what the child wrote so far, decoded.
        """
        return b"".join(self.output).decode(errors="replace")

    def outReceived(self, data: bytes) -> None:
        """
        Keep C{data}, and fire the waits it satisfies.
        """
        self.output.append(data)
        everything = b"".join(self.output)
        for item in list(self._waiting):
            pattern, count, d = item
            found = pattern.findall(everything)
            if len(found) >= count:
                self._waiting.remove(item)
                d.callback(found)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        """
        Fail the waits left, and fire L{ended} with the exit code.
        """
        waiting, self._waiting = self._waiting, []
        for pattern, count, d in waiting:
            d.errback(FailTest(f"exited before writing {pattern.pattern!r}:\n{self.text()}"))
        self.ended.callback(reason.value.exitCode)

    def matches(self, pattern: bytes, count: int = 1, timeout: float = 30) -> Deferred[List[Any]]:
        """
        Wait until the child's output holds C{count} matches of C{pattern}.

        @param pattern: a regular expression, searched in all the output.
        @param timeout: seconds to wait at most.
        @return: a L{Deferred} firing with the matches (as C{re.findall}
            gives them), or failing with L{FailTest} quoting the
            output when the child exits first or C{timeout} passes.
        """
        compiled = re.compile(pattern)
        d: Deferred[List[Any]] = Deferred(lambda d: self._waiting.remove((compiled, count, d)))
        self._waiting.append((compiled, count, d))
        self.outReceived(b"")

        def timedOut(failure: Any, timeout: float) -> None:
            raise FailTest(f"no {pattern!r} within {timeout:g}s:\n{self.text()}")

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timedOut)

    async def ports(self, timeout: float = 30) -> Tuple[int, int]:
        """
        Wait until the proxy listener and the control site listen.

        @return: the port of the proxy listener and of the control site.
        """
        found = dict(await self.matches(self.LISTENING, 2, timeout))
        return int(found[b"ProxySite"]), int(found[b"ControlSite"])


def spawn_twistd(testcase: TestCase, config: str) -> Twistd:
    """
    Run C{twistd -n phantom-frame --config FILE} with C{config} in FILE;
    the child is killed at the end of the test if it still runs.

    @return: the child's protocol.
    """
    path = os.path.abspath(testcase.mktemp())
    with open(path, "w") as f:
        f.write(config)
    child = Twistd()
    child.config = path
    reactor.spawnProcess(
        child,
        sys.executable,
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "phantom-frame", "--config", path],
        env=dict(os.environ, PYTHONPATH=ROOT),
        path=ROOT,
    )

    def kill() -> Deferred:
        if not child.ended.called:
            child.transport.signalProcess("KILL")
        return child.ended

    testcase.addCleanup(kill)
    return child


class TwistdTests(TestCase):
    """
    C{twistd -n phantom-frame --config FILE} as a real process.
    """

    def spawn(self, config: str) -> Twistd:
        """
        @return: a C{twistd} child running with C{config}.
        """
        return spawn_twistd(self, config)

    async def test_serves_and_stops(self) -> None:
        """
        The plugin proxies a request to the origin (through the prefix
        route) and exits 0 on SIGTERM.
        """
        from twisted.web.server import Site

        origin = Origin()
        originPort = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        child = self.spawn(TWISTD_CONFIG.format(http=0, origin=originPort.getHost().port))
        http, control = await child.ports()
        self.assertNotEqual(http, control)
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        response = await agent.request(b"GET", b"http://127.0.0.1:%d/api/page" % http)
        body = await treq.content(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(body.startswith(PAGE))
        self.assertEqual(origin.requests[-1]["uri"], "/v1/page")
        os.kill(child.transport.pid, signal.SIGTERM)
        code = await child.ended
        self.assertEqual(code, 0, child.text())

    async def test_busy_port_fails(self) -> None:
        """
        A port already in use stops start-up with a non-zero exit.
        """
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            child = self.spawn(TWISTD_CONFIG.format(http=port, origin=1))
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
