"""
A proxy built from a configuration, its origin and its clients, all in
memory: requests travel through real L{twisted.web.server.Site}s over
L{twisted.test.iosim} transports, on fake clocks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import treq
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.client import Agent
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from phantom_frame.cache.threads import runInline
from phantom_frame.config import Config
from phantom_frame.ops.control import ControlResource
from phantom_frame.proxy.handle import CacheHandle
from phantom_frame.ops.metrics import Metrics
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.proxy.client import IOriginClient
from phantom_frame.proxy.pool import OriginAddress, OriginClient, OriginPool
from phantom_frame.service import ServerBuilder



class Holding(Resource):
    """
    An origin resource that holds some requests until the test answers them.

    @ivar waiting: the requests held, not answered yet.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: List[Any] = []

class _Endpoints:
    """
    Gives an L{Agent} TCP endpoints on a memory reactor.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self._reactor = reactor

    def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
        """
        @return: a TCP endpoint to the URI's host and port.
        """
        return TCP4ClientEndpoint(self._reactor, uri.host, uri.port)


@implementer(IAgent)
class SiteAgent:
    """
    An L{IAgent} whose requests reach a given L{Site} (any factory) in
    memory, as L{RequestTraversalAgent} does for a resource.
    """

    def __init__(self, site: Any, client: str = "203.0.113.9") -> None:
        self._site = site
        self._client = client
        self._reactor = MemoryReactorClock()
        self._agent = Agent.usingEndpointFactory(self._reactor, _Endpoints(self._reactor))
        self._pumps: Set[iosim.IOPump] = set()

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Any:
        """
        Send a request to the site.
        """
        d = self._agent.request(method, uri, headers, bodyProducer)
        host, port, factory, _, _ = self._reactor.tcpClients[-1]
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        client_address = IPv4Address("TCP", self._client, 40000 + len(self._pumps))
        server = self._site.buildProtocol(client_address)
        server_transport = iosim.FakeTransport(
            server, isServer=True, hostAddress=server_address, peerAddress=client_address
        )
        client = factory.buildProtocol(None)
        client_transport = iosim.FakeTransport(
            client, isServer=False, hostAddress=client_address, peerAddress=server_address
        )
        self._pumps.add(iosim.connect(server, server_transport, client, client_transport))
        return d

    def flush(self) -> None:
        """
        Move every pending byte both ways.
        """
        for pump in list(self._pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self._pumps.discard(pump)


@implementer(IStreamClientEndpoint)
class _SiteEndpoint:
    """
    Connects to a L{Site} in memory, over an L{iosim} pair of transports.
    """

    def __init__(self, origin: MemoryOrigin, address: OriginAddress) -> None:
        self._origin = origin
        self._address = address

    def connect(self, factory: Any) -> Deferred:
        """
        @return: a L{Deferred} of a connected protocol of C{factory}, or a
            refused connection while the origin is C{down}.
        """
        origin = self._origin
        if origin.down:
            return fail(ConnectionRefusedError("refused"))
        server_address = IPv4Address("TCP", "127.0.0.1", self._address.port)
        client_address = IPv4Address("TCP", "127.0.0.1", 50000 + origin.connections)
        origin.connections += 1
        client = factory.buildProtocol(server_address)
        server = origin.site.buildProtocol(client_address)
        server_transport = iosim.FakeTransport(
            server, isServer=True, hostAddress=server_address, peerAddress=client_address
        )
        client_transport = iosim.FakeTransport(
            client, isServer=False, hostAddress=client_address, peerAddress=server_address
        )
        origin.pumps.add(iosim.connect(server, server_transport, client, client_transport, greet=False))
        return succeed(client)


@implementer(IOriginClient)
class _Flushing:
    """
    An origin client whose requests are delivered as soon as they are sent.
    """

    def __init__(self, client: OriginClient, origin: MemoryOrigin) -> None:
        self._client = client
        self._origin = origin

    def request(self, *args: Any, **kw: Any) -> Deferred:
        """
        Send a request (see L{IOriginClient.request}), and move its bytes.
        """
        d = self._client.request(*args, **kw)
        self._origin.flush()
        return d

    def relay(self, *args: Any, **kw: Any) -> Any:
        """
        Send a request whose receiver is told of its end (see
        L{phantom_frame.proxy.client.IRelayingClient.relay}), and move its
        bytes.
        """
        request = self._client.relay(*args, **kw)
        self._origin.flush()
        return request


class MemoryOrigin:
    """
    An origin in memory for the proxy's origin client: a real
    L{OriginPool} whose connections reach a real L{Site} of C{resource}
    over L{iosim} transports (as L{RequestTraversalAgent} does for an
    L{IAgent}). Bytes move when L{flush} is called.

    @ivar pool: the pool, on the proxy's clock.
    @ivar site: the origin's site, on a clock of its own.
    @ivar down: while set, connections are refused.
    @ivar connections: connections made so far.
    """

    def __init__(self, resource: Any, clock: Any) -> None:
        """
        @param resource: the origin's root resource (or a L{Site}).
        @param clock: the proxy's clock: the client's timeouts run on it.
        """
        self.site = resource if isinstance(resource, Site) else Site(resource, reactor=Clock())
        self.site.displayTracebacks = False
        self.pool = OriginPool(clock, lambda address: _SiteEndpoint(self, address))
        self.pumps: Set[iosim.IOPump] = set()
        self._down = False
        self.connections = 0

    @property
    def down(self) -> bool:
        """
        Whether the origin refuses connections; setting it closes the
        pool's idle ones.
        """
        return self._down

    @down.setter
    def down(self, down: bool) -> None:
        self._down = down
        if down:
            self.pool.close()
            self.flush()

    def client(self, url: str, timeout: float = 30.0, keepalive_timeout: Optional[float] = None) -> Any:
        """
        @return: the L{IOriginClient} of C{url} (see L{OriginPool.client}),
            whose requests reach the site at once (as
            L{RequestTraversalAgent}'s do).
        """
        return _Flushing(self.pool.client(url, timeout, keepalive_timeout), self)

    def client_for(self, config: Any) -> OriginClient:
        """
        @param config: a L{phantom_frame.proxy.settings.CreateProxyConfig}.
        @return: the client a server of C{config} reaches its origin with.
        """
        return self.client(config.proxy_url, config.upstream_timeout, config.upstream_keepalive_timeout)

    def flush(self) -> None:
        """
        Move every pending byte both ways, and connection closes.
        """
        for _ in range(10):
            moved = False
            for pump in list(self.pumps):
                moved = pump.flush(advanceClock=False) or moved
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.discard(pump)
            if not moved:
                return


class Proxy:
    """
    The proxy of a configuration (its servers built as
    L{phantom_frame.service.build_service} builds them) in front of an
    in-memory origin, with a control site, on a fake clock.
    """

    def __init__(self, testcase: Any, config: Config, origin: Resource, **site: Any) -> None:
        self.clock = Clock()
        self.origin_agent = MemoryOrigin(origin, self.clock)
        self.webhook_agent = RequestTraversalAgent(origin)
        self.handle = CacheHandle()
        self.metrics = Metrics(self.handle, self.clock)
        self.build = ServerBuilder(
            self.clock,
            self.webhook_agent,
            runInline,
            self.metrics,
            origins=self.origin_agent,
            control_auth=lambda: config.control_auth,
        )
        for block in config.servers:
            self.build(block, self.handle)
        testcase.addCleanup(self.handle.close)
        router = Router(config.routes({b.name: self.handle.server(b.name).resource for b in config.servers}))
        self.site = ProxySite(
            router,
            reactor=self.clock,
            access_log=config.access_log,
            log_format=config.log_format,
            metrics=self.metrics,
        )
        self.metrics.site = self.site
        self.control = ControlResource(self.handle, config.control_auth, metrics=self.metrics)
        self.agent = SiteAgent(self.site)
        self.client = HTTPClient(self.agent)
        self.control_agent = RequestTraversalAgent(self.control)
        self.control_client = HTTPClient(self.control_agent)

    def settle(self) -> None:
        """
        Let every exchange run to its end.
        """
        for _ in range(20):
            self.origin_agent.flush()
            self.webhook_agent.flush()
            self.agent.flush()
            self.control_agent.flush()
            self.clock.advance(0)

    def get(self, testcase: Any, path: str, method: str = "GET", headers: Optional[Dict[str, str]] = None) -> Tuple[Any, bytes]:
        """
        @return: the response to C{method path} and its body.
        """
        d = self.client.request(method, "http://proxy.example" + path, headers=headers)
        self.settle()
        response = testcase.successResultOf(d)
        body = treq.content(response)
        self.settle()
        return response, testcase.successResultOf(body)

    def scrape(self, testcase: Any, headers: Optional[Dict[str, str]] = None) -> Tuple[Any, str]:
        """
        @return: the response of C{GET /metrics} and its text.
        """
        d = self.control_client.get("http://control/metrics", headers=headers)
        self.settle()
        response = testcase.successResultOf(d)
        body = testcase.successResultOf(treq.content(response))
        return response, body.decode("utf-8")


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """
    Parse the Prometheus text format.

    @return: every sample, keyed by its name and its sorted labels.
    """
    from prometheus_client.parser import text_string_to_metric_families

    found: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(parsed: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float], name: str, **labels: str) -> Optional[float]:
    """
    @return: the value of the sample C{name} with exactly C{labels}, or
        L{None}.
    """
    return parsed.get((name, tuple(sorted(labels.items()))))


def logged(events: List[Dict[str, Any]], namespace: str = "phantom_frame.access") -> List[Dict[str, Any]]:
    """
    @return: the events of C{namespace}.
    """
    return [e for e in events if e.get("log_namespace") == namespace]
