"""
Several phantom-frame nodes on one real Redis: one cache, one fill per key,
one purge for all, and Redis failures that never reach a client.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

import treq
from twisted.web.http_headers import Headers
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.bus import RedisNode
from phantom_frame.embed import default_agent
from phantom_frame.http.site import ProxySite
from phantom_frame.ops.control import ControlResource
from phantom_frame.ops.metrics import Metrics
from tests.origin import Origin
from tests.redis_server import NO_REDIS, RedisServer


class Node:
    """
    One phantom-frame node: its Redis link, its proxy on loopback, its
    control site.
    """

    def __init__(
        self, testcase: TestCase, url: str, origin: str, l1_bytes: int = 32 * 1024 * 1024,
        channel: bool = False, config: Optional[CreateProxyConfig] = None,
    ) -> None:
        """
        @param channel: whether its site is the proxy's own (whose HTTP/1.1
            channel answers requests itself), rather than a plain one.
        @param config: the server's settings (by default, a C{redis} server
            of C{origin}).
        """
        self.redis = RedisNode(url, reactor, prefix="test", l1_bytes=l1_bytes)
        self.redis.start()
        testcase.addCleanup(self.redis.stop)
        agent, pool = default_agent(reactor)
        testcase.addCleanup(pool.closeCachedConnections)
        if config is None:
            config = CreateProxyConfig(origin).with_cache_storage_mode("redis").with_upstream_timeout(5)
        resource, self.handle = create_proxy(config, reactor, agent=agent, name="api", redis=self.redis)
        testcase.addCleanup(self.handle.close)
        self.server = self.handle.server("api")
        site = ProxySite(resource, reactor=reactor, access_log=False) if channel else Site(resource)
        self.site = site
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % port.getHost().port
        control = Site(ControlResource(self.handle))
        control.noisy = False
        port = reactor.listenTCP(0, control, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        self.control = "http://127.0.0.1:%d" % port.getHost().port


class NodesTests(TestCase):
    """
    Two nodes (two handles, two Redis links) on one real redis-server.
    """

    skip = NO_REDIS

    async def _start(self, l1_bytes: int = 32 * 1024 * 1024) -> None:
        self.redisServer = RedisServer(self)
        await self.redisServer.start()
        self.origin = Origin()
        site = Site(self.origin)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self._release_origin)
        url = self.originURL = "http://127.0.0.1:%d" % port.getHost().port
        self.nodes = [Node(self, self.redisServer.url, url, l1_bytes) for _ in range(2)]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.client = Agent(reactor, pool=pool)
        await self._connected()

    def _release_origin(self) -> None:
        for call in self.origin.pending:
            if hasattr(call, "active") and call.active():
                call.cancel()

    async def _connected(self) -> None:
        for _ in range(400):
            if all(n.redis.connected and n.redis.listening for n in self.nodes):
                return
            await deferLater(reactor, 0.025, lambda: None)
        self.fail("the nodes did not connect to Redis")

    async def get(self, node: Node, path: str) -> Any:
        # One site behind a load balancer: every node sees the same Host
        # (keys are scoped by host).
        response = await self.client.request(
            b"GET", (node.base + path).encode(), headers=Headers({b"host": [b"www.example.com"]})
        )
        body = await treq.content(response)
        return response.code, response.headers.getRawHeaders(b"cache-status", [b""])[0], body

    def test_storeAndHitAcrossNodes(self) -> Any:
        """
        A page one node stored is a hit on the other: read from Redis into
        its L1, without an origin request.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            code, status, body = await self.get(a, "/page/one")
            self.assertEqual((code, self.origin.hits["/page/one"]), (200, 1))
            self.assertIn(b"stored", status)
            await deferLater(reactor, 0.05, lambda: None)
            again = await self.get(b, "/page/one")
            self.assertEqual(again[0], 200)
            self.assertEqual(again[2], body)
            self.assertIn(b"hit", again[1])
            self.assertEqual(self.origin.hits["/page/one"], 1)
            self.assertEqual(b.server.cache.entry_count, 1)

        return self.ensure(run())

    def test_channelReadsRedis(self) -> Any:
        """
        On the proxy's own site, a request that misses the L1 is answered
        by the HTTP/1.1 channel itself, which reads Redis before it fills:
        a hit of what another node stored, without an origin request.
        """

        async def run() -> None:
            await self._start()
            a = self.nodes[0]
            b = Node(self, self.redisServer.url, self.originURL, 32 * 1024 * 1024, channel=True)
            await self._connected()
            for _ in range(400):
                if b.redis.connected and b.redis.listening:
                    break
                await deferLater(reactor, 0.025, lambda: None)
            code, status, body = await self.get(a, "/page/two")
            self.assertEqual((code, self.origin.hits["/page/two"]), (200, 1))
            await deferLater(reactor, 0.05, lambda: None)
            again = await self.get(b, "/page/two")
            self.assertEqual((again[0], again[2]), (200, body))
            self.assertIn(b"hit", again[1])
            self.assertEqual(self.origin.hits["/page/two"], 1)
            self.assertEqual(b.site.fastHit.filled, 1)
            third = await self.get(b, "/page/three")
            self.assertEqual((third[0], self.origin.hits["/page/three"]), (200, 1))
            self.assertIn(b"stored", third[1])
            self.assertEqual(b.site.fastHit.filled, 2)

        return self.ensure(run())

    def ensure(self, coroutine: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(coroutine)

    def test_concurrentMissesOneOriginRequest(self) -> Any:
        """
        40 concurrent misses for one key, half on each node, make one origin
        request; every client gets the page.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            results = await gatherResults(
                [self.ensure(self.get(a if i % 2 else b, "/slowpage/x")) for i in range(40)]
            )
            self.assertEqual({(code, body) for code, _, body in results}, {(200, b"slow page /slowpage/x")})
            self.assertEqual(self.origin.hits["/slowpage/x"], 1)

        return self.ensure(run())

    def test_invalidationReachesEveryNode(self) -> Any:
        """
        An invalidation on one node drops the other node's L1 copy and the
        Redis entry before the control call answers, and says that both
        nodes confirmed.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            await self.get(a, "/page/two")
            await deferLater(reactor, 0.05, lambda: None)
            await self.get(b, "/page/two")
            self.assertEqual(b.server.cache.entry_count, 1)
            response = await treq.post(
                a.control + "/invalidate",
                json.dumps({"pattern": "/page/*"}).encode(),
                headers={b"content-type": [b"application/json"]},
                pool=HTTPConnectionPool(reactor, persistent=False),
            )
            answer = json.loads(await treq.content(response))
            self.assertEqual((answer["invalidated"], answer["nodes_confirmed"]), (1, 2))
            self.assertEqual(b.server.cache.entry_count, 0)
            code, status, _ = await self.get(b, "/page/two")
            self.assertEqual(code, 200)
            self.assertEqual(self.origin.hits["/page/two"], 2)

        return self.ensure(run())

    def test_redisDownNeverFailsClients(self) -> Any:
        """
        With Redis killed mid-run every answer is still a 200 (from L1 or
        the origin) and the failures are counted; once Redis is back the
        nodes share the cache again.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            await self.get(a, "/page/kept")
            await self.redisServer.stop()
            codes: List[int] = []
            for node, path in [(a, "/page/kept"), (b, "/page/new"), (a, "/page/new"), (b, "/page/kept")]:
                codes.append((await self.get(node, path))[0])
            self.assertEqual(codes, [200] * 4)
            self.assertGreater(a.redis.errors, 0)
            exposed = Metrics(a.handle, reactor).render()
            self.assertIn(b"phantom_frame_redis_errors_total %d.0" % a.redis.errors, exposed)
            await self.redisServer.start()
            await self._connected()
            await self.get(a, "/page/after")
            await deferLater(reactor, 0.05, lambda: None)
            code, status, _ = await self.get(b, "/page/after")
            self.assertEqual((code, self.origin.hits["/page/after"]), (200, 1))
            self.assertIn(b"hit", status)

        return self.ensure(run())

    def test_l1Bound(self) -> Any:
        """
        Each node's L1 stays within C{redis_l1_bytes}; what it evicted is
        still read back from Redis, not fetched again.
        """

        async def run() -> None:
            await self._start(l1_bytes=16 * 1024)
            a, b = self.nodes
            for i in range(20):
                await self.get(a, "/page/%d" % i)
                self.assertLessEqual(a.server.cache.bytes, 16 * 1024)
            await deferLater(reactor, 0.05, lambda: None)
            for i in range(20):
                self.assertEqual((await self.get(b, "/page/%d" % i))[0], 200)
                self.assertLessEqual(b.server.cache.bytes, 16 * 1024)
            self.assertEqual(sum(self.origin.hits[f"/page/{i}"] for i in range(20)), 20)

        return self.ensure(run())


#: Two C{twistd} processes ("two hosts") on one Redis.
TWISTD_REDIS = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
shutdown_grace = 2
redis_url = "{redis}"
redis_prefix = "hosts"

[server.site]
proxy_url = "http://127.0.0.1:{origin}"
cache_storage_mode = "redis"
"""


async def two_hosts(testcase: TestCase, template: str, origin: Origin) -> Tuple[List[Tuple[int, int]], Agent, Any]:
    """
    Start a real redis-server, C{origin} on loopback and two C{twistd}
    processes of C{template} (formatted with C{redis} and C{origin}) on
    them.

    @return: the proxy and control ports of each process, an agent to ask
        them with, and its connection pool.
    """
    from tests.test_plugin import spawn_twistd

    redis = RedisServer(testcase)
    await redis.start()
    port = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    config = template.format(redis=redis.url, origin=port.getHost().port)
    children = [spawn_twistd(testcase, config) for _ in range(2)]
    ports = [await child.ports() for child in children]
    pool = HTTPConnectionPool(reactor, persistent=False)
    testcase.addCleanup(pool.closeCachedConnections)
    return ports, Agent(reactor, pool=pool), pool


class TwoProcessesTests(TestCase):
    """
    Two real C{twistd} processes pointed at one Redis form one cache.
    """

    skip = NO_REDIS

    async def test_sharedAcrossProcesses(self) -> None:
        """
        A page one process stored is a hit on the other; an invalidation on
        the second is confirmed by both and drops the entry everywhere.
        """
        origin = Origin()
        ports, agent, pool = await two_hosts(self, TWISTD_REDIS, origin)

        async def get(http: int, path: bytes) -> Any:
            response = await agent.request(
                b"GET", b"http://127.0.0.1:%d%s" % (http, path), Headers({b"host": [b"www.example.com"]})
            )
            return response.code, response.headers.getRawHeaders(b"cache-status", [b""])[0], await treq.content(response)

        for _ in range(200):
            # Until both processes hear the bus: an invalidation reaches both.
            response = await treq.post(
                "http://127.0.0.1:%d/invalidate_all" % ports[1][1], b"{}", pool=pool,
                headers={b"content-type": [b"application/json"]},
            )
            if json.loads(await treq.content(response)).get("nodes_confirmed") == 2:
                break
            await deferLater(reactor, 0.05, lambda: None)
        code, status, body = await get(ports[0][0], b"/page/shared")
        self.assertEqual((code, origin.hits["/page/shared"]), (200, 1))
        await deferLater(reactor, 0.05, lambda: None)
        code, status, again = await get(ports[1][0], b"/page/shared")
        self.assertEqual((code, again, origin.hits["/page/shared"]), (200, body, 1))
        self.assertIn(b"hit", status)
        response = await treq.post(
            "http://127.0.0.1:%d/invalidate" % ports[1][1], json.dumps({"pattern": "*"}).encode(), pool=pool,
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(json.loads(await treq.content(response))["nodes_confirmed"], 2)
        code, status, _ = await get(ports[0][0], b"/page/shared")
        self.assertEqual((code, origin.hits["/page/shared"]), (200, 2))
