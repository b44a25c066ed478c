"""
The proxying path's origin: L{phantom_frame.proxy.origin.Origin} sends every
request through the pooled byte-level client, whose idle connections live
for the server's C{upstream_keepalive_timeout} and whose request heads are
sent at once.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CacheStrategy, CreateProxyConfig
from phantom_frame.cache.threads import runInline
from phantom_frame.config import ConfigError, parse_config
from phantom_frame.embed import create_proxy
from phantom_frame.proxy.client import Collector, IOriginClient
from phantom_frame.proxy.pool import OriginClient, OriginPool, endpoint_factory

from tests.proxy.origins import CountingSite, Page
from tests.proxy.test_http_semantics import Harness

PASSTHROUGH = CreateProxyConfig("http://origin.test").with_cache_strategy(CacheStrategy.NONE)


class KeepAliveTests(SynchronousTestCase):
    """
    C{upstream_keepalive_timeout}: a per-server key, 4 s by default, that
    bounds how long the proxy keeps an idle connection to the origin.
    """

    def test_key(self) -> None:
        """
        The key is read per server, defaults to 4 seconds, and must be a
        number of seconds.
        """
        server = {"bind_to": "*", "proxy_url": "http://127.0.0.1:3000"}
        default = parse_config({"server": {"api": server}}, {})
        self.assertEqual(default.servers[0].proxy.upstream_keepalive_timeout, 4.0)
        set_ = parse_config({"server": {"api": dict(server, upstream_keepalive_timeout=1.5)}}, {})
        self.assertEqual(set_.servers[0].proxy.upstream_keepalive_timeout, 1.5)
        with self.assertRaises(ConfigError) as raised:
            parse_config({"server": {"api": dict(server, upstream_keepalive_timeout="soon")}}, {})
        self.assertIn("server.api.upstream_keepalive_timeout", str(raised.exception))

    def test_own_pool(self) -> None:
        """
        A server given no client keeps its own L{OriginPool}, whose client
        for the origin has the server's timeouts, and closes it with the
        server.
        """
        config = PASSTHROUGH.with_upstream_keepalive_timeout(1.5).with_upstream_timeout(7)
        _, handle = create_proxy(config, MemoryReactorClock(), agent=object(), runner=runInline)
        server = next(handle.servers())
        client = server.origin.client
        self.assertIsInstance(client, OriginClient)
        self.assertTrue(IOriginClient.providedBy(client))
        self.assertIs(client.pool, server.origin_pool)
        self.assertEqual((client.keepalive, client.timeout), (1.5, 7))
        handle.close()

    def test_reused_then_closed(self) -> None:
        """
        Requests passed through reuse one kept-alive connection; once idle
        for C{upstream_keepalive_timeout}, it is closed.
        """
        h = Harness(PASSTHROUGH.with_upstream_keepalive_timeout(1.5))
        self.addCleanup(h.handle.close)
        h.serve("/a", body=b"first")
        for _ in range(3):
            response, body, _ = h.get("/a")
            self.assertEqual((response.code, body), (200, b"first"))
        pool = h.agent.pool
        self.assertEqual((h.agent.connections, pool.reused, pool.idle), (1, 2, 1))
        h.clock.advance(1.49)
        self.assertEqual(pool.idle, 1)
        h.clock.advance(0.01)
        self.assertEqual(pool.idle, 0)


class OptimisticSendTests(TestCase):
    """
    A request head goes to the origin's socket at once, not on the
    reactor's next pass.
    """

    async def test_sent_at_once(self) -> None:
        """
        On a kept-alive TCP connection with nothing buffered, the request is
        handed to the kernel inside C{request}: the transport buffers
        nothing.
        """
        from twisted.internet import reactor

        site = CountingSite(Page())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = OriginPool(reactor, endpoint_factory(reactor))
        client = pool.client("http://127.0.0.1:%d" % (port.getHost().port,))
        await client.request(b"GET", b"/page", [], Collector())
        [connection] = client.route.idle
        transport = connection.transport
        receiver = Collector()
        d = client.request(b"GET", b"/page", [], receiver)
        self.assertEqual((transport.dataBuffer, transport._tempDataBuffer), (b"", []))
        await d
        self.assertEqual(receiver.body(), Page.page)
        await pool.close()
        await site.all_closed()
