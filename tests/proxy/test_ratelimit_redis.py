"""
Tests for rate limits shared through a real Redis
(L{phantom_frame.cache.redisbuckets}): two stores or two whole proxies on
one redis-server admit the limit together, a key makes one round trip at a
time, and with Redis killed the limits go on in each process.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from phantom_frame import create_proxy
from phantom_frame.cache.buckets import ISharedBucketStore
from phantom_frame.cache.bus import RedisNode
from phantom_frame.cache.redisbuckets import RedisBuckets, RedisBucketStore
from phantom_frame.embed import default_agent
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.ops.metrics import Metrics
from phantom_frame.proxy.ratelimit import RateLimit, RateLimiter
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.view import RequestView
from tests.origin import Origin
from tests.redis_server import NO_REDIS, RedisServer


class _Counted:
    """
    A L{RedisNode} whose C{call}s are counted (a spy: the node is real).
    """

    def __init__(self, node: RedisNode) -> None:
        self.node = node
        self.prefix = node.prefix
        self.calls = 0

    @property
    def errors(self) -> int:
        return self.node.errors

    def call(self, command: str, *args: Any) -> Deferred[Any]:
        self.calls += 1
        return self.node.call(command, *args)


def _view(client: str = "192.0.2.1") -> RequestView:
    """
    @return: a C{GET /page} from C{client}.
    """
    return RequestView(b"GET", b"/page", b"", {"host": "proxy.test"}, None, client, False, b"")


class _RedisCase(TestCase):
    """
    A real redis-server and nodes connected to it.
    """

    skip = NO_REDIS

    async def redis(self) -> RedisServer:
        """
        @return: a started redis-server.
        """
        self.redisServer = RedisServer(self)
        await self.redisServer.start()
        return self.redisServer

    async def node(self) -> RedisNode:
        """
        @return: a node connected to L{redis}'s server.
        """
        node = RedisNode(self.redisServer.url, reactor, prefix="test", timeout=0.5)
        node.start()
        self.addCleanup(node.stop)
        await self.connected(node)
        return node

    async def connected(self, node: RedisNode) -> None:
        """
        Wait until C{node}'s command connection is up.
        """
        for _ in range(400):
            if node.connected:
                return
            await deferLater(reactor, 0.025, lambda: None)
        self.fail("the node did not connect to Redis")


class StoreTests(_RedisCase):
    """
    L{RedisBucketStore}s of two nodes on one Redis.
    """

    async def take(self, limiter: RateLimiter, view: RequestView) -> Any:
        """
        @return: what L{RateLimiter.check} says once the limiter is ready.
        """
        waiting = limiter.ready(view)
        if waiting is not None:
            await waiting
        return limiter.check(view)

    async def test_interface(self) -> None:
        """
        A L{RedisBucketStore} provides L{ISharedBucketStore}.
        """
        await self.redis()
        store = RedisBuckets(await self.node(), reactor)("api.rate_limits[0]", 1.0, 1)
        self.assertTrue(verifyObject(ISharedBucketStore, store))

    async def test_sharedBetweenNodes(self) -> None:
        """
        Two limiters (on two nodes) of a limit of 5 a minute admit 5
        requests of one client together, then refuse with the seconds until
        the next token; another client has its own bucket.
        """
        await self.redis()
        limit = RateLimit("5/m", by="ip", burst=5)
        a = RateLimiter("api", [limit], reactor, RedisBuckets(await self.node(), reactor))
        b = RateLimiter("api", [limit], reactor, RedisBuckets(await self.node(), reactor))
        answers = [await self.take(a if i % 2 else b, _view()) for i in range(8)]
        self.assertEqual(answers[:5], [None] * 5)
        self.assertEqual(len(answers[5:]), 3)
        for wait in answers[5:]:
            self.assertTrue(1 <= wait <= 12, wait)
        self.assertIsNone(await self.take(a, _view("192.0.2.2")))

    async def test_oneRoundTripAtATime(self) -> None:
        """
        Twenty requests of one key waiting at once make two round trips
        (the first, and one for all those that came while it was out); the
        limit's 10 tokens go to 10 of them, the others are refused.
        """
        await self.redis()
        counted = _Counted(await self.node())
        limiter = RateLimiter("api", [RateLimit("10/m", by="route", burst=10)], reactor, RedisBuckets(counted, reactor))
        views = [_view("192.0.2.%d" % i) for i in range(20)]
        waits = [limiter.ready(view) for view in views]
        self.assertNotIn(None, waits)
        await gatherResults(waits)
        self.assertEqual(counted.calls, 2)
        answers = [limiter.check(view) for view in views]
        self.assertEqual(answers.count(None), 10)

    async def test_refusedWithoutAsking(self) -> None:
        """
        Once Redis said that a bucket is empty, its key is refused without
        another round trip until the next token is due.
        """
        await self.redis()
        counted = _Counted(await self.node())
        limiter = RateLimiter("api", [RateLimit("1/h", by="route", burst=1)], reactor, RedisBuckets(counted, reactor))
        self.assertIsNone(await self.take(limiter, _view()))
        self.assertIsNotNone(await self.take(limiter, _view()))
        calls = counted.calls
        self.assertTrue(limiter.answers_now(_view()))
        self.assertIsNone(limiter.ready(_view()))
        wait = limiter.check(_view())
        self.assertTrue(3500 < wait <= 3600, wait)
        self.assertEqual(counted.calls, calls)

    async def test_bucketsExpire(self) -> None:
        """
        A bucket's Redis key expires once it would be full again (idle
        buckets vanish), and is under the node's prefix.
        """
        await self.redis()
        node = await self.node()
        store = RedisBuckets(node, reactor)("api.rate_limits[0]", 10.0, 20)
        await store.ready("k", reactor.seconds())
        self.assertEqual(store.take("k", reactor.seconds()), 0.0)
        ttl = await node.call("ttl", "test:ratelimit:api.rate_limits[0]:k")
        self.assertIn(ttl, (2, 3))

    async def test_redisDown(self) -> None:
        """
        With Redis killed, the limits answer at once from this process's
        own buckets (still limiting), the failure is counted and logged
        once; with Redis back, the buckets are shared again.
        """
        await self.redis()
        node = await self.node()
        buckets = RedisBuckets(node, reactor, retry_after=0.05)
        limiter = RateLimiter("api", [RateLimit("2/h", by="route", burst=2)], reactor, buckets)
        self.assertIsNone(await self.take(limiter, _view()))
        await self.redisServer.stop()
        logged: List[Any] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        answers = [await self.take(limiter, _view()) for _ in range(4)]
        self.assertEqual(answers[:2], [None, None])
        self.assertTrue(all(isinstance(wait, int) and wait > 0 for wait in answers[2:]), answers)
        self.assertTrue(buckets.down)
        self.assertGreater(node.errors, 0)
        warnings = [e for e in logged if "rate limits use each process" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        await self.redisServer.start()
        await self.connected(node)
        await deferLater(reactor, 0.06, lambda: None)
        # Back in Redis, where the bucket was forgotten: full again.
        self.assertIsNone(await self.take(limiter, _view()))
        self.assertFalse(buckets.down)


class _Proxy:
    """
    One whole proxy (its own Redis node, a L{ProxySite} on loopback) whose
    rate limits are shared through Redis, as C{build_service} makes it.
    """

    def __init__(self, testcase: TestCase, node: RedisNode, origin: str, limit: RateLimit) -> None:
        agent, pool = default_agent(reactor)
        testcase.addCleanup(pool.closeCachedConnections)
        config = CreateProxyConfig(origin).with_rate_limits([limit])
        resource, self.handle = create_proxy(config, reactor, agent=agent, name="api", redis=node)
        testcase.addCleanup(self.handle.close)
        self.server = self.handle.server("api")
        decider = self.server.decider
        decider.limiter = decider.limiter.with_stores(RedisBuckets(node, reactor, retry_after=0.05))
        self.site = ProxySite(Router([("*", resource)]), reactor=reactor, access_log=False)
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % port.getHost().port


class ProxiesTests(_RedisCase):
    """
    Two proxies on one Redis with a limit of 6 a minute per client.
    """

    async def start(self, limit: RateLimit) -> Tuple[_Proxy, _Proxy]:
        await self.redis()
        self.origin = Origin()
        site = Site(self.origin)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d" % port.getHost().port
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.client = Agent(reactor, pool=pool)
        return _Proxy(self, await self.node(), url, limit), _Proxy(self, await self.node(), url, limit)

    async def get(self, proxy: _Proxy, path: str = "/page/one") -> Tuple[int, Any]:
        response = await self.client.request(
            b"GET", (proxy.base + path).encode(), headers=Headers({b"host": [b"www.example.com"]})
        )
        await treq.content(response)
        return response.code, response.headers.getRawHeaders(b"retry-after", [None])[0]

    async def test_togetherTheyAdmitTheLimit(self) -> None:
        """
        Requests of one client alternating between the two proxies (misses
        and hits alike): 6 are answered, then every one gets 429 with a
        C{Retry-After}, from either proxy.
        """
        a, b = await self.start(RateLimit("6/m", by="ip", burst=6))
        answers = [await self.get(a if i % 2 else b) for i in range(10)]
        self.assertEqual([code for code, _ in answers], [200] * 6 + [429] * 4)
        for _, retry in answers[6:]:
            self.assertTrue(1 <= int(retry) <= 10, retry)
        self.assertEqual(self.origin.hits["/page/one"], 2)

    async def test_busyKeysUseTheFastPath(self) -> None:
        """
        Under a high limit, the tokens a round trip leases ahead let the
        channel answer hits itself.
        """
        a, b = await self.start(RateLimit("1000/s", by="ip", burst=1000))
        answers = [await self.get(a) for _ in range(6)]
        self.assertEqual([code for code, _ in answers], [200] * 6)
        self.assertGreater(a.site.fastHit.answered, 0)

    async def test_redisKilled(self) -> None:
        """
        With Redis killed, each proxy limits its clients with its own
        buckets (which start full): no 5xx, 429 past each proxy's burst;
        the errors are counted in C{phantom_frame_redis_errors_total}.
        """
        a, b = await self.start(RateLimit("3/m", by="ip", burst=3))
        await self.get(a)
        await self.redisServer.stop()
        codes = [(await self.get(proxy))[0] for proxy in (a, b) for _ in range(5)]
        self.assertEqual(codes, ([200] * 3 + [429] * 2) * 2)
        node = a.server.decider.limiter.node
        self.assertGreater(node.errors, 0)
        exposed = Metrics(a.handle, reactor).render()
        self.assertIn(b"phantom_frame_redis_errors_total %d.0" % node.errors, exposed)
