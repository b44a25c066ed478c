"""
Tests for L{phantom_frame.ops.metrics}: cache results from C{Cache-Status}, the
timing agent, and the values C{GET /metrics} shows after scripted traffic.
"""

from __future__ import annotations

from typing import Any, List

from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from zope.interface.verify import verifyObject

from phantom_frame.config import parse_config
from phantom_frame.proxy.handle import CacheHandle
from phantom_frame.ops.metrics import (
    CACHE_RESULTS,
    Metrics,
    TimingAgent,
    method_class,
    status_class,
)
from phantom_frame.http.routing import current_request

from tests.memory import Proxy, samples, value
from tests.origin import Origin

TOKEN = "metrics-token"


def two_servers(**root: Any) -> Any:
    """
    @return: a configuration with a C{"*"} server and an C{/api} server in
        front of C{http://origin.example}.
    """
    return parse_config(
        {
            **root,
            "server": {
                "site": {
                    "proxy_url": "http://origin.example",
                    "cache_ttl": 10,
                    "stale_while_revalidate": 100,
                    # The client keeps what /cookie and /echo set: no session.
                    "ignore_cookies": ["a", "b", "echo"],
                },
                "api": {"bind_to": "/api", "proxy_url": "http://origin.example/v1"},
            },
        }
    )


class ClassTests(SynchronousTestCase):
    """
    The label classes of methods and statuses.
    """

    def test_classes(self) -> None:
        """
        Methods are C{get_head} or C{other}; statuses C{1xx} to C{5xx}.
        """
        self.assertEqual([method_class(m) for m in (b"GET", b"HEAD", b"POST")], ["get_head", "get_head", "other"])
        self.assertEqual(
            [status_class(c) for c in (101, 200, 304, 404, 503, 99, 600)],
            ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "other"],
        )


class FakeAgent:
    """
    Answers each request with a L{Deferred} the test fires.
    """

    def __init__(self) -> None:
        self.requests: List[Any] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred:
        """
        Record the request; answer when the test fires its L{Deferred}.
        """
        d: Deferred = Deferred()
        self.requests.append((uri, d))
        return d


class Client:
    """
    Stands for a client request.
    """

    phantomUpstream = None


class TimingAgentTests(SynchronousTestCase):
    """
    L{TimingAgent} times origin requests into the histogram and onto the
    client request being answered.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(CacheHandle(), self.clock)
        self.fake = FakeAgent()
        self.agent = self.metrics.timing_agent(self.fake, "site")
        self.agent.prefix = b"http://origin.example/v1"

    def parsed(self) -> Any:
        """
        @return: the samples of the metrics, parsed.
        """
        return samples(self.metrics.render().decode())

    def test_interface(self) -> None:
        """
        L{Metrics.timing_agent} gives a L{TimingAgent}, which provides
        L{IAgent}.
        """
        self.assertIsInstance(self.agent, TimingAgent)
        self.assertTrue(verifyObject(IAgent, self.agent))

    def test_times_and_attributes(self) -> None:
        """
        The time from the request to its response head goes into the
        histogram and is added to the client request current when the
        origin request started.
        """
        client = Client()
        token = current_request.set(client)
        try:
            d = self.agent.request(b"GET", b"http://origin.example/v1/page")
        finally:
            current_request.reset(token)
        second = self.agent.request(b"GET", b"http://origin.example/v1?q=1")
        self.clock.advance(0.25)
        self.fake.requests[0][1].callback("response")
        self.assertEqual(self.successResultOf(d), "response")
        self.clock.advance(0.5)
        self.fake.requests[1][1].errback(ValueError("refused"))
        self.failureResultOf(second, ValueError)
        self.assertEqual(client.phantomUpstream, 0.25)
        parsed = self.parsed()
        name = "phantom_frame_upstream_request_duration_seconds"
        self.assertEqual(value(parsed, name + "_count", server="site"), 2)
        self.assertEqual(value(parsed, name + "_sum", server="site"), 0.25 + 0.75)
        self.assertEqual(value(parsed, name + "_bucket", server="site", le="0.25"), 1)
        self.assertEqual(value(parsed, "phantom_frame_upstream_errors_total", server="site"), 1)

    def test_other_urls_not_timed(self) -> None:
        """
        Requests outside the origin's prefix (webhooks share the agent) are
        passed through untimed.
        """
        d = self.agent.request(b"POST", b"http://hooks.example/v1/x")
        other = self.agent.request(b"GET", b"http://origin.example/v10/x")
        self.fake.requests[0][1].callback("hook")
        self.fake.requests[1][1].callback("other")
        self.assertEqual(self.successResultOf(d), "hook")
        self.successResultOf(other)
        parsed = self.parsed()
        self.assertEqual(value(parsed, "phantom_frame_upstream_request_duration_seconds_count", server="site"), 0)


class RegistryTests(SynchronousTestCase):
    """
    Each L{Metrics} has its own registry.
    """

    def test_private_registries(self) -> None:
        """
        Two L{Metrics} count separately, and nothing reaches
        C{prometheus_client}'s global registry.
        """
        one, two = Metrics(CacheHandle(), Clock()), Metrics(CacheHandle(), Clock())
        one.observe("site", b"GET", 200, "hit", 0.0)
        self.assertEqual(value(samples(one.render().decode()), "phantom_frame_requests_total",
                               server="site", method="get_head", status="2xx", cache="hit"), 1)
        self.assertIsNone(value(samples(two.render().decode()), "phantom_frame_requests_total",
                                server="site", method="get_head", status="2xx", cache="hit"))
        names = {m.name for m in REGISTRY.collect()}
        self.assertFalse([n for n in names if n.startswith("phantom_frame")])

    def test_tunnel_gauge(self) -> None:
        """
        C{phantom_frame_tunnels_open} reads L{Metrics.open_tunnels}: the
        site's count by default, any function once pointed elsewhere, and is
        left out while the count is unknown.
        """
        metrics = Metrics(CacheHandle(), Clock())
        self.assertNotIn("phantom_frame_tunnels_open", metrics.render().decode())

        class Site:
            active = 3
            tunnels = 2

        metrics.site = Site()
        parsed = samples(metrics.render().decode())
        self.assertEqual(value(parsed, "phantom_frame_tunnels_open"), 2)
        self.assertEqual(value(parsed, "phantom_frame_requests_in_flight"), 3)
        metrics.open_tunnels = lambda: 7
        self.assertEqual(value(samples(metrics.render().decode()), "phantom_frame_tunnels_open"), 7)


class ScrapeTests(SynchronousTestCase):
    """
    C{GET /metrics} after scripted traffic through a proxy in memory.
    """

    def setUp(self) -> None:
        self.origin = Origin()
        self.proxy = Proxy(self, two_servers(control_auth=TOKEN), self.origin)

    def scrape(self) -> Any:
        """
        @return: the samples of an authorised C{GET /metrics}, checking its status and media type.
        """
        response, text = self.proxy.scrape(self, {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain; version=0.0.4; charset=utf-8"]
        )
        return samples(text)

    def test_auth(self) -> None:
        """
        C{/metrics} is behind C{control_auth}.
        """
        response, _ = self.proxy.scrape(self)
        self.assertEqual(response.code, 401)
        response, _ = self.proxy.scrape(self, {"Authorization": "Bearer nope"})
        self.assertEqual(response.code, 401)

    def test_requests_by_result(self) -> None:
        """
        Every answered request is counted by server, method class, status
        class and cache result; cache counters, sizes and upstream times
        match the traffic.
        """
        proxy = self.proxy
        for path in ("/a", "/a", "/api/x", "/cookie", "/status/503"):
            proxy.get(self, path)
        proxy.get(self, "/a", headers={"Authorization": "Basic eA=="})
        proxy.get(self, "/echo", method="POST")
        proxy.clock.advance(20)
        proxy.get(self, "/a")
        self.origin.gate = Deferred()
        first = proxy.client.get("http://proxy.example/gated")
        second = proxy.client.get("http://proxy.example/gated")
        proxy.settle()
        self.origin.gate.callback(None)
        proxy.settle()
        self.successResultOf(first)
        self.successResultOf(second)
        parsed = self.scrape()

        def requests(server: str, cache: str, status: str = "2xx", method: str = "get_head") -> Any:
            return value(parsed, "phantom_frame_requests_total", server=server, method=method, status=status, cache=cache)

        self.assertEqual(requests("site", "hit"), 1)
        self.assertEqual(requests("site", "miss"), 3)  # /a, /cookie, /gated
        self.assertEqual(requests("site", "miss", status="5xx"), 1)
        self.assertEqual(requests("api", "miss"), 1)
        self.assertEqual(requests("site", "bypass"), 1)
        self.assertEqual(requests("site", "bypass", method="other"), 1)
        self.assertEqual(requests("site", "stale"), 1)
        self.assertEqual(requests("site", "coalesced"), 1)
        self.assertEqual(value(parsed, "phantom_frame_request_duration_seconds_count", server="site", cache="hit"), 1)
        stats = proxy.handle.stats()
        for name in ("site", "api"):
            self.assertEqual(value(parsed, "phantom_frame_cache_entries", server=name, store="memory"), stats[name]["entries"])
            self.assertEqual(value(parsed, "phantom_frame_cache_bytes", server=name, store="memory"), stats[name]["bytes"])
            self.assertEqual(value(parsed, "phantom_frame_cache_hits_total", server=name), stats[name]["hits"])
            self.assertEqual(value(parsed, "phantom_frame_cache_misses_total", server=name), stats[name]["misses"])
            self.assertEqual(value(parsed, "phantom_frame_cache_coalesced_total", server=name), stats[name]["coalesced"])
        self.assertGreater(stats["site"]["entries"], 0)
        self.assertEqual(value(parsed, "phantom_frame_cache_max_bytes", server="api"), 256 * 1024 * 1024)
        # /a, /cookie, /status/503, the bypassed /a, /echo, the revalidation
        # of /a and /gated reached the origin for site; /x for api.
        self.assertEqual(value(parsed, "phantom_frame_upstream_request_duration_seconds_count", server="site"), 7)
        self.assertEqual(value(parsed, "phantom_frame_upstream_request_duration_seconds_count", server="api"), 1)
        self.assertEqual(value(parsed, "phantom_frame_requests_in_flight"), 0)
        self.assertEqual(value(parsed, "phantom_frame_tunnels_open"), 0)
        self.assertEqual(value(parsed, "phantom_frame_cache_invalidations_total", server="site"), 0)
        proxy.handle.invalidate_all("site")
        parsed = self.scrape()
        self.assertEqual(value(parsed, "phantom_frame_cache_invalidations_total", server="site"), 1)
        self.assertEqual(value(parsed, "phantom_frame_cache_entries", server="site", store="memory"), 0)

    def test_bytes_served(self) -> None:
        """
        C{phantom_frame_response_bytes_total} sums the body bytes of the
        answers, by server and cache result: fast-path hits included, HEAD
        answers as nothing; C{phantom_frame_cache_compressions_total}
        counts the stored bodies compressed once served again.
        """
        proxy = self.proxy
        sizes = []
        for path in ("/a", "/a", "/a", "/a", "/api/x"):
            _, body = proxy.get(self, path)
            sizes.append(len(body))
        proxy.get(self, "/a", method="HEAD")
        # The first hit (identity) and those after the gzip this client
        # (treq) takes was made from the Brotli the first hit started.
        self.assertEqual(proxy.site.fastHit.answered, 3)
        parsed = self.scrape()
        sent = lambda server, cache: value(parsed, "phantom_frame_response_bytes_total", server=server, cache=cache)  # noqa: E731
        identity = sizes[0]
        self.assertEqual(sizes[1:4], [identity] * 3)
        [site] = [server for server in proxy.handle.servers() if server.name == "site"]
        [entry] = site.cache.entries()
        gzipped = len(entry.alternates["gzip"].data)
        self.assertLess(gzipped, identity)
        self.assertEqual(sent("site", "miss"), identity)
        self.assertEqual(sent("site", "hit"), identity + 2 * gzipped)
        self.assertGreater(sent("api", "miss"), 0)
        self.assertEqual(value(parsed, "phantom_frame_cache_compressions_total", server="site"), 1)
        self.assertEqual(value(parsed, "phantom_frame_cache_compressions_total", server="api"), 0)

    def test_unrouted(self) -> None:
        """
        A request no server takes is counted with an empty C{server} and
        the C{none} cache result.
        """
        proxy = Proxy(self, parse_config({"server": {"api": {"bind_to": "/api"}}}), self.origin)
        response, _ = proxy.get(self, "/elsewhere")
        self.assertEqual(response.code, 404)
        _, text = proxy.scrape(self)
        self.assertEqual(
            value(samples(text), "phantom_frame_requests_total", server="", method="get_head", status="4xx", cache="none"),
            1,
        )

    def test_info(self) -> None:
        """
        C{phantom_frame_info} carries the version.
        """
        from phantom_frame import __version__

        self.assertEqual(value(self.scrape(), "phantom_frame_info", version=__version__), 1)


class SnapshotMetricsTests(SynchronousTestCase):
    """
    Pre-generation progress and failures.
    """

    def test_progress(self) -> None:
        """
        Before the warm-up, the tracked paths are counted and none is
        stored; after it, the stored ones and the failures are.
        """
        config = parse_config(
            {
                "server": {
                    "docs": {
                        "proxy_url": "http://origin.example",
                        "proxy_mode": "pre_generate",
                        "pre_generate_paths": ["/a", "/b", "/status/500"],
                    }
                }
            }
        )
        proxy = Proxy(self, config, Origin())
        _, text = proxy.scrape(self)
        parsed = samples(text)
        self.assertEqual(value(parsed, "phantom_frame_snapshots_tracked", server="docs"), 3)
        self.assertEqual(value(parsed, "phantom_frame_snapshots_stored", server="docs"), 0)
        self.assertEqual(value(parsed, "phantom_frame_snapshot_warmup_complete", server="docs"), 0)
        self.assertIsNone(value(parsed, "phantom_frame_snapshot_warmup_failures", server="docs"))
        server = proxy.handle.server("docs")
        server.snapshots.warm_up()
        proxy.settle()
        self.assertTrue(server.snapshots.warmed.called)
        for _ in range(2):
            _, text = proxy.scrape(self)
            parsed = samples(text)
            self.assertEqual(value(parsed, "phantom_frame_snapshots_stored", server="docs"), 2)
            self.assertEqual(value(parsed, "phantom_frame_snapshot_warmup_complete", server="docs"), 1)
            self.assertEqual(value(parsed, "phantom_frame_snapshot_warmup_failures", server="docs"), 1)
        self.assertEqual(list(self.successResultOf(server.snapshots.warmed)), ["/a", "/b", "/status/500"])
