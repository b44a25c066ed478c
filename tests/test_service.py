"""
Tests for L{phantom_frame.service}: the access log of L{ProxySite} in text
and JSON, with the cache result, server and upstream time, and nothing at
all when it is off; the tunnel count; the graceful stop; the order of the
proxy's services, and of their stop.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Dict, List, Optional

from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.http import site as service
from phantom_frame.config import load_config, parse_config
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.service import GracefulStop, InOrder, build_service

from .memory import Proxy, SiteAgent, logged, samples, value
from .origin import Origin


def config(**root: Any) -> Any:
    """
    @return: one C{"*"} server with a TTL and stale serving, in front of
        C{http://origin.example}.
    """
    return parse_config(
        {
            **root,
            "server": {
                "site": {
                    "proxy_url": "http://origin.example",
                    "cache_ttl": 10,
                    "stale_while_revalidate": 100,
                }
            },
        }
    )


class AccessLogTests(SynchronousTestCase):
    """
    One access-log event per answered request.
    """

    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.origin = Origin()

    def traffic(self, proxy: Proxy) -> None:
        """
        A miss, a hit, a bypass, a stale answer and a collapsed fill (whose
        origin takes half a second), in this order.
        """
        proxy.get(self, "/a", headers={"User-Agent": "curl/8", "Referer": "http://ref.example/"})
        proxy.get(self, "/a")
        proxy.get(self, "/a", headers={"Authorization": "Basic eA=="})
        proxy.clock.advance(20)
        proxy.get(self, "/a")
        self.origin.gate = Deferred()
        first = proxy.client.get("http://proxy.example/gated")
        second = proxy.client.get("http://proxy.example/gated")
        proxy.settle()
        proxy.clock.advance(0.5)
        self.origin.gate.callback(None)
        proxy.settle()
        self.successResultOf(first)
        self.successResultOf(second)

    def test_text(self) -> None:
        """
        In text format each line is the combined log format followed by the
        cache result, the server, the upstream time and the duration.
        """
        proxy = Proxy(self, config(), self.origin)
        self.traffic(proxy)
        lines = [formatEvent(e) for e in logged(self.events)]
        self.assertEqual(len(lines), 6, lines)
        first = lines[0]
        self.assertTrue(first.startswith('"203.0.113.9" - - ['), first)
        self.assertIn('"GET /a HTTP/1.1" 200 ', first)
        self.assertIn('"http://ref.example/" "curl/8"', first)
        self.assertTrue(first.endswith(" cache=miss server=site upstream_ms=0.0 duration_ms=0.0"), first)
        self.assertTrue(lines[1].endswith(" cache=hit server=site upstream_ms=- duration_ms=0.0"), lines[1])
        self.assertTrue(lines[2].endswith(" cache=bypass server=site upstream_ms=0.0 duration_ms=0.0"), lines[2])
        self.assertIn(" cache=stale server=site ", lines[3])
        self.assertTrue(lines[4].endswith(" cache=miss server=site upstream_ms=500.0 duration_ms=500.0"), lines[4])
        self.assertTrue(lines[5].endswith(" cache=coalesced server=site upstream_ms=- duration_ms=500.0"), lines[5])
        self.assertEqual({e["log_level"].name for e in logged(self.events)}, {"info"})

    def test_json(self) -> None:
        """
        In JSON format the message is a JSON object whose fields are also
        the event's.
        """
        proxy = Proxy(self, config(log_format="json"), self.origin)
        self.traffic(proxy)
        events = logged(self.events)
        records = [json.loads(formatEvent(e)) for e in events]
        self.assertEqual([r["cache"] for r in records], ["miss", "hit", "bypass", "stale", "miss", "coalesced"])
        first = records[0]
        self.assertEqual(
            {k: first[k] for k in ("method", "uri", "protocol", "status", "client", "user_agent", "referer", "server")},
            {
                "method": "GET",
                "uri": "/a",
                "protocol": "HTTP/1.1",
                "status": 200,
                "client": "203.0.113.9",
                "user_agent": "curl/8",
                "referer": "http://ref.example/",
                "server": "site",
            },
        )
        self.assertEqual(first["cache_status"], "phantom-frame; fwd=uri-miss; stored")
        self.assertGreater(first["bytes"], 0)
        self.assertIsNone(records[1]["upstream_ms"])
        self.assertEqual(records[4]["upstream_ms"], 500.0)
        self.assertEqual(records[5]["duration_ms"], 500.0)
        for event, record in zip(events, records):
            for key, field in record.items():
                self.assertEqual(event[key], field)

    def test_off(self) -> None:
        """
        With C{access_log = false}, nothing is logged and no line is built,
        but requests are still counted in the metrics.
        """

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("access-log line built")

        class NoJSON:
            dumps = staticmethod(boom)

        self.patch(service, "combinedLogFormatter", boom)
        self.patch(service, "json", NoJSON)
        for log_format in ("text", "json"):
            proxy = Proxy(self, config(access_log=False, log_format=log_format), self.origin)
            self.traffic(proxy)
            self.assertEqual(logged(self.events), [])
            _, text = proxy.scrape(self)
            self.assertEqual(
                value(samples(text), "phantom_frame_requests_total", server="site", method="get_head", status="2xx", cache="hit"),
                1,
            )

    def test_switch(self) -> None:
        """
        C{access_log} and C{log_format} are read for every request, so a
        reload can change them.
        """
        proxy = Proxy(self, config(access_log=False), self.origin)
        proxy.get(self, "/a")
        proxy.site.access_log = True
        proxy.site.log_format = "json"
        proxy.get(self, "/a")
        records = [json.loads(formatEvent(e)) for e in logged(self.events)]
        self.assertEqual([r["cache"] for r in records], ["hit"])

    def test_upgrade(self) -> None:
        """
        An upgrade (a WebSocket) is logged once, when its tunnel closes: the
        origin's C{101}, every byte sent to the client, the C{bypass}
        result and how long the tunnel was open.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from .proxy.test_tunnel import SWITCHED, UPGRADE, FakeEndpoint, TunnelResource

        clock = Clock()
        endpoint = FakeEndpoint()
        site = ProxySite(Router([("*", TunnelResource(clock, endpoint), "ws")]), reactor=clock)
        channel = site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 1234))
        channel.makeConnection(StringTransport())
        channel.dataReceived(UPGRADE)
        origin, _ = endpoint.accept()
        origin.dataReceived(SWITCHED + b"\x81\x02hi")
        clock.advance(30)
        self.assertEqual(logged(self.events), [])
        channel.connectionLost(Failure(ConnectionDone()))
        [line] = [formatEvent(e) for e in logged(self.events)]
        self.assertIn('"GET /ws?x=1 HTTP/1.1" 101 %d ' % (len(SWITCHED) + 4), line)
        self.assertTrue(line.endswith(" cache=bypass server=ws upstream_ms=- duration_ms=30000.0"), line)
        origin.connectionLost(Failure(ConnectionDone()))

    def test_unrouted(self) -> None:
        """
        A request no server took is logged with C{server=-} and the
        C{none} result.
        """
        proxy = Proxy(self, parse_config({"server": {"api": {"bind_to": "/api"}}}), self.origin)
        proxy.get(self, "/nowhere")
        [line] = [formatEvent(e) for e in logged(self.events)]
        self.assertIn('"GET /nowhere HTTP/1.1" 404 ', line)
        self.assertIn(" cache=none server=- upstream_ms=- ", line)


class Hold(Resource):
    """
    Answers every request only when the test says so.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: List[Any] = []

    def render(self, request: Any) -> Any:
        """
        Hold the request.
        """
        self.held.append(request)
        return NOT_DONE_YET


class TunnelCountTests(SynchronousTestCase):
    """
    L{ProxySite.tunnels} counts upgrade requests in flight.
    """

    def test_count(self) -> None:
        """
        An upgrade request counts from its arrival until it ends; other
        requests do not count.
        """
        hold = Hold()
        site = ProxySite(Router([("*", hold, "ws")]), reactor=MemoryReactorClock(), access_log=False)
        agent = SiteAgent(site)
        upgrade = agent.request(
            b"GET", b"http://proxy.example/ws", _headers({"Connection": "Upgrade", "Upgrade": "websocket"})
        )
        plain = agent.request(b"GET", b"http://proxy.example/page")
        agent.flush()
        self.assertEqual((site.active, site.tunnels), (2, 1))
        self.assertEqual([r.phantomServer for r in hold.held], ["ws", "ws"])
        for request in hold.held:
            request.finish()
        agent.flush()
        self.successResultOf(upgrade)
        self.successResultOf(plain)
        self.assertEqual((site.active, site.tunnels), (0, 0))


def _headers(values: Dict[str, str]) -> Any:
    from twisted.web.http_headers import Headers

    return Headers({k: [v] for k, v in values.items()})


CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"

[server.site]
proxy_url = "http://127.0.0.1:9"

[server.docs]
bind_to = "/docs"
proxy_url = "http://127.0.0.1:9"
proxy_mode = "pre_generate"
execute = "{python} -c pass"
"""


class BuildServiceTests(SynchronousTestCase):
    """
    L{build_service} on a memory reactor.
    """

    def test_children(self) -> None:
        """
        The caches start first, then the origin commands, the warm-ups, the
        health checks, the graceful stop, the listeners, the C{SIGHUP}
        handler and the control site; the service exposes its parts.
        """
        import shlex
        import sys

        path = os.path.abspath(self.mktemp())
        python = shlex.quote(sys.executable)
        with open(path, "w") as f:
            f.write(CONFIG.format(python=python))
        memory = MemoryReactorClock()
        top = build_service(load_config(path), memory)
        kinds = [type(child).__name__ for child in top]
        self.assertEqual(
            kinds,
            [
                "CacheService",
                "OriginSupervisor",
                "WarmUps",
                "HealthService",
                "GracefulStop",
                "StreamServerEndpointService",
                "HangupReloader",
                "StreamServerEndpointService",
            ],
        )
        self.assertEqual(top.supervisor.commands, {"docs": (f"{python} -c pass", None)})
        self.assertIs(top.metrics.site, top.site)
        self.assertEqual(top.reloader.path, path)
        self.assertEqual([name for _, _, name in top.site.resource.routes], ["site", "docs"])
        # Nothing is fetched, nor waited for, before the service starts.
        self.assertEqual(memory.tcpClients, [])


class Received(Protocol):
    """
    A raw client: keeps what it receives, and whether it was disconnected.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        """
        Note the disconnection.
        """
        self.lost = True


class GracefulStopTests(SynchronousTestCase):
    """
    L{GracefulStop} drains a L{ProxySite} on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.hold = Hold()
        self.site = ProxySite(Router([("*", self.hold, "held")]), reactor=self.clock, access_log=False)
        self.stop = GracefulStop([self.site], 10, self.clock)
        self.stop.startService()
        self.pumps: List[iosim.IOPump] = []

    def connect(self, data: bytes = b"") -> Received:
        """
        @return: a raw client connected to the site, having sent C{data}.
        """
        address = IPv4Address("TCP", "203.0.113.9", 40000 + len(self.pumps))
        server = self.site.buildProtocol(address)
        client = Received()
        self.pumps.append(
            iosim.connect(server, iosim.FakeTransport(server, True, peerAddress=address), client,
                          iosim.FakeTransport(client, False))
        )
        client.transport.write(data)
        self.flush()
        return client

    def flush(self) -> None:
        """
        Move every byte both ways.
        """
        for pump in self.pumps:
            pump.flush()

    def answer(self) -> None:
        """
        Answer the held requests, and deliver the answers.
        """
        for request in self.hold.held:
            request.setHeader(b"content-length", b"2")
            request.write(b"ok")
            request.finish()
        self.hold.held = []
        self.flush()

    def test_drains(self) -> None:
        """
        Stopping closes idle connections at once, and fires once the
        requests in flight are answered, their answers delivered and their
        connections closed.
        """
        idle = self.connect()
        busy = self.connect(b"GET / HTTP/1.1\r\nHost: proxy.example\r\n\r\n")
        stopped = self.stop.stopService()
        self.flush()
        self.assertTrue(idle.lost)
        self.assertFalse(busy.lost)
        self.assertNoResult(stopped)
        self.answer()
        self.assertTrue(busy.received.startswith(b"HTTP/1.1 200 OK\r\n"), busy.received)
        self.assertIn(b"\r\nConnection: close\r\n", busy.received)
        self.assertTrue(busy.received.endswith(b"\r\n\r\nok"))
        self.assertTrue(busy.lost)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_grace(self) -> None:
        """
        After C{grace} seconds the connections still open are aborted, the
        stop fires, and a warning says so.
        """
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        busy = self.connect(b"GET / HTTP/1.1\r\nHost: proxy.example\r\n\r\n")
        stopped = self.stop.stopService()
        self.clock.advance(9.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.flush()
        self.assertTrue(busy.lost)
        [warning] = [formatEvent(e) for e in events if "shutdown_grace" in e.get("log_format", "")]
        self.assertIn("1 connection(s) aborted, 1 request(s) unanswered", warning)

    def test_exit_status(self) -> None:
        """
        A stop asked for by C{SIGTERM} or C{SIGINT} exits 0: the reactor's
        exit signal is cleared once the drain is over (so a second signal
        during it changes nothing); any other exit signal is kept.
        """
        for number, kept in ((signal.SIGTERM, None), (signal.SIGINT, None), (signal.SIGUSR1, signal.SIGUSR1)):
            self.setUp()
            self.clock._exitSignal = number  # type: ignore[attr-defined]
            self.connect(b"GET / HTTP/1.1\r\nHost: proxy.example\r\n\r\n")
            stopped = self.stop.stopService()
            self.clock._exitSignal = number  # type: ignore[attr-defined]
            self.answer()
            self.successResultOf(stopped)
            self.assertEqual(self.clock._exitSignal, kept)  # type: ignore[attr-defined]


class Stops(Service):
    """
    A service whose stop is recorded and fires when the test says so.
    """

    def __init__(self, name: str, log: List[str], failing: bool = False) -> None:
        self.name = name
        self._log = log
        self._failing = failing
        self.stopping: Optional[Deferred[None]] = None

    def stopService(self) -> Deferred[None]:
        """
        Record the stop.
        """
        super().stopService()
        self._log.append(self.name)
        if self._failing:
            return fail(RuntimeError("cannot stop"))
        self.stopping = Deferred()
        return self.stopping


class InOrderTests(SynchronousTestCase):
    """
    L{InOrder} stops its children one after the other, last first.
    """

    def test_order(self) -> None:
        """
        Each child stops once the one after it has stopped; a child that
        fails to stop is logged and the others still stop.
        """
        stopped: List[str] = []
        top = InOrder()
        first, broken, last = Stops("first", stopped), Stops("broken", stopped, True), Stops("last", stopped)
        for child in (first, broken, last):
            child.setServiceParent(top)
        top.startService()
        done = top.stopService()
        self.assertEqual(stopped, ["last"])
        last.stopping.callback(None)
        self.assertEqual(stopped, ["last", "broken", "first"])
        self.assertNoResult(done)
        first.stopping.callback(None)
        self.successResultOf(done)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.assertFalse(top.running)
