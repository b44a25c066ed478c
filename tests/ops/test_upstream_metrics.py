"""
Tests for the per-upstream families of L{phantom_frame.ops.metrics}: one
sample per server and upstream URL, read at scrape time.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import RequestTraversalAgent

from phantom_frame.cache.threads import runInline
from phantom_frame.config import parse_config
from phantom_frame.ops.metrics import Metrics
from phantom_frame.ops.timing import TimingClient
from phantom_frame.proxy.handle import CacheHandle
from phantom_frame.service import ServerBuilder
from tests.memory import MemoryOrigin, Proxy, samples, value
from tests.origin import Origin

A, B = "http://a.example", "http://b.example"


class UpstreamMetricsTests(SynchronousTestCase):
    """
    C{/metrics} shows each upstream's requests, failures, latency and
    health, with an C{upstream} label.
    """

    def test_families(self) -> None:
        """
        Requests spread over two upstreams are counted for each; an
        unhealthy one shows 0 in the health gauge; a server with one
        C{proxy_url} has no samples.
        """
        config = parse_config(
            {
                "server": {
                    "site": {"bind_to": "*", "upstreams": [A, B], "cache_strategy": "none"},
                    "api": {"bind_to": "/api", "proxy_url": "http://c.example"},
                }
            }
        )
        proxy = Proxy(self, config, Origin())
        for n in range(3):
            response, _ = proxy.get(self, f"/plain?{n}")
            self.assertEqual(response.code, 200)
        proxy.handle.server("site").origin.upstreams[1].healthy = False
        _, text = proxy.scrape(self)
        parsed = samples(text)
        labels = {"server": "site"}
        self.assertEqual(value(parsed, "phantom_frame_upstream_requests_total", upstream=A, **labels), 2)
        self.assertEqual(value(parsed, "phantom_frame_upstream_requests_total", upstream=B, **labels), 1)
        self.assertEqual(value(parsed, "phantom_frame_upstream_failures_total", upstream=A, **labels), 0)
        self.assertEqual(value(parsed, "phantom_frame_upstream_latency_seconds_count", upstream=A, **labels), 2)
        self.assertEqual(
            value(parsed, "phantom_frame_upstream_latency_seconds_bucket", upstream=B, le="+Inf", **labels), 1
        )
        self.assertEqual(value(parsed, "phantom_frame_upstream_healthy", upstream=A, **labels), 1)
        self.assertEqual(value(parsed, "phantom_frame_upstream_healthy", upstream=B, **labels), 0)
        self.assertIsNone(value(parsed, "phantom_frame_upstream_requests_total", server="api"))


class _Recording(MemoryOrigin):
    """
    A L{MemoryOrigin} that records the clients asked of it.

    @ivar asked: C{(url, timeout, keepalive_timeout)} of each.
    """

    def __init__(self, resource: Any, clock: Clock) -> None:
        super().__init__(resource, clock)
        self.asked: List[Tuple[str, float, Optional[float]]] = []

    def client(self, url: str, timeout: float = 30.0, keepalive_timeout: Optional[float] = None) -> Any:
        """
        Record the request for a client, and make it.
        """
        self.asked.append((url, timeout, keepalive_timeout))
        return super().client(url, timeout, keepalive_timeout)


class BuilderClientTests(SynchronousTestCase):
    """
    L{ServerBuilder} gives each upstream a timed client of its own.
    """

    def test_client_per_upstream(self) -> None:
        """
        The builder's origin pool is asked for one client per upstream URL,
        with the server's timeouts, and each is timed.
        """
        clock = Clock()
        origins = _Recording(Origin(), clock)
        handle = CacheHandle()
        self.addCleanup(handle.close)
        build = ServerBuilder(
            clock, RequestTraversalAgent(Origin()), runInline, Metrics(handle, clock), origins=origins
        )
        config = parse_config(
            {"server": {"site": {"upstreams": [A, B], "upstream_timeout": 7, "cache_strategy": "none"}}}
        )
        server = build(config.servers[0], handle)
        keepalive = server.config.upstream_keepalive_timeout
        self.assertEqual(origins.asked, [(A, 7.0, keepalive), (B, 7.0, keepalive)])
        clients = [u.origin.client for u in server.origin.upstreams]
        self.assertEqual([type(c) for c in clients], [TimingClient, TimingClient])
        self.assertIsNot(clients[0], clients[1])
