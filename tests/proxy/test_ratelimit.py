"""
Tests for L{phantom_frame.proxy.ratelimit}: token buckets on a fake clock,
the limits of a server, and the decision's 429.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import attr
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from phantom_frame.cache.responses import ResponseCache
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.cache.store import MemoryStore
from phantom_frame.proxy.decision import TOO_MANY_REQUESTS, Decider, Reject
from phantom_frame.proxy.ratelimit import (
    MAX_KEYS,
    IBucketStore,
    MemoryBucketStore,
    RateLimit,
    RateLimiter,
    check_by,
    parse_rate,
)
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.view import RequestView
from tests.http.rig import Rig, answers, request
from tests.origin import Running


def view(path: bytes = b"/p", client: Optional[str] = "192.0.2.1", **headers: str) -> RequestView:
    """
    @return: a C{GET} of C{path} from C{client} with C{headers}
        (lower-cased names, underscores as dashes).
    """
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return RequestView(b"GET", path, b"", named, None, client)


class ParseTests(SynchronousTestCase):
    """
    L{parse_rate}, L{check_by} and the defaults of L{RateLimit}.
    """

    def test_rates(self) -> None:
        """
        A rate is a number of requests per second, minute or hour; a bare
        number is per second.
        """
        self.assertEqual(parse_rate("100/s"), 100.0)
        self.assertEqual(parse_rate("600/m"), 10.0)
        self.assertEqual(parse_rate(" 7200 / h "), 2.0)
        self.assertEqual(parse_rate("0.5/s"), 0.5)
        self.assertEqual(parse_rate(3), 3.0)

    def test_badRates(self) -> None:
        """
        Anything else, zero included, is a L{ValueError}.
        """
        for bad in ("5 per second", "100", "100/d", "0/s", "-1/s", "/s", "", True, 0, float("inf")):
            self.assertRaises(ValueError, parse_rate, bad)

    def test_by(self) -> None:
        """
        C{by} is C{ip}, C{route} or C{header:NAME}, the name lower-cased.
        """
        self.assertEqual(check_by("ip"), "ip")
        self.assertEqual(check_by("route"), "route")
        self.assertEqual(check_by("header:X-Api-Key"), "header:x-api-key")
        for bad in ("IP", "header:", "header:a b", "path", "header:x:y"):
            self.assertRaises(ValueError, check_by, bad)

    def test_defaultBurst(self) -> None:
        """
        The burst is by default the rate per second, at least 1.
        """
        self.assertEqual(RateLimit("100/s").burst, 100)
        self.assertEqual(RateLimit("600/m").burst, 10)
        self.assertEqual(RateLimit("1/h").burst, 1)
        self.assertEqual(RateLimit("100/s", burst=5).burst, 5)

    def test_badValues(self) -> None:
        """
        A burst below 1 and a path glob that does not start with C{/} or
        C{*} are refused.
        """
        self.assertRaises(ValueError, RateLimit, "1/s", burst=0)
        self.assertRaises(ValueError, RateLimit, "1/s", paths=["api/*"])
        self.assertRaises(ValueError, RateLimit, "1/s", by="who")


class MemoryBucketStoreTests(SynchronousTestCase):
    """
    L{MemoryBucketStore} holds one token bucket per key, bounded in keys.
    """

    def test_interface(self) -> None:
        """
        It provides L{IBucketStore}.
        """
        self.assertTrue(verifyObject(IBucketStore, MemoryBucketStore("l", 1.0, 1)))

    def test_burstThenWait(self) -> None:
        """
        A new bucket is full: C{burst} requests pass at once, the next is
        told how long until a token comes back.
        """
        store = MemoryBucketStore("l", 2.0, 3)
        self.assertEqual([store.take("a", 10.0) for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertEqual(store.take("a", 10.0), 0.5)
        self.assertEqual(store.take("a", 10.25), 0.25)

    def test_refill(self) -> None:
        """
        Tokens come back at the rate, never beyond the burst; a refused
        request takes nothing.
        """
        store = MemoryBucketStore("l", 1.0, 2)
        store.take("a", 0.0)
        store.take("a", 0.0)
        for _ in range(5):
            self.assertGreater(store.take("a", 0.5), 0)
        self.assertEqual(store.take("a", 1.0), 0.0)
        self.assertGreater(store.take("a", 1.0), 0)
        # A long pause fills the bucket to its burst, no further.
        self.assertEqual([store.take("a", 1000.0) for _ in range(3)][:2], [0.0, 0.0])
        self.assertGreater(store.take("a", 1000.0), 0)

    def test_keysApart(self) -> None:
        """
        Each key has its own bucket.
        """
        store = MemoryBucketStore("l", 1.0, 1)
        self.assertEqual(store.take("a", 0.0), 0.0)
        self.assertGreater(store.take("a", 0.0), 0)
        self.assertEqual(store.take("b", 0.0), 0.0)

    def test_refund(self) -> None:
        """
        A refunded token can be taken again, up to the burst.
        """
        store = MemoryBucketStore("l", 1.0, 1)
        store.take("a", 0.0)
        store.refund("a", 0.0)
        self.assertEqual(store.take("a", 0.0), 0.0)
        store.refund("a", 0.0)
        store.refund("a", 0.0)
        self.assertEqual(store.take("a", 0.0), 0.0)
        self.assertGreater(store.take("a", 0.0), 0)

    def test_bounded(self) -> None:
        """
        At most C{capacity} keys are held: the least recently used goes
        first (and starts full again), a recently used one stays.
        """
        store = MemoryBucketStore("l", 1.0, 1, capacity=3)
        for key in "abc":
            store.take(key, 0.0)
        store.take("a", 0.0)
        store.take("d", 0.0)
        self.assertEqual(len(store), 3)
        self.assertEqual(list(store.buckets), ["c", "a", "d"])
        self.assertEqual(store.take("b", 0.0), 0.0)
        self.assertGreater(store.take("a", 0.0), 0)

    def test_defaultCapacity(self) -> None:
        """
        By default a store holds at most L{MAX_KEYS} keys.
        """
        store = MemoryBucketStore("l", 1.0, 1)
        for index in range(MAX_KEYS + 10):
            store.take(str(index), 0.0)
        self.assertEqual(len(store), MAX_KEYS)


class RecordingStore(MemoryBucketStore):
    """
    A memory store that records the keys it is asked about.
    """

    def __init__(self, name: str, rate: float, burst: int) -> None:
        super().__init__(name, rate, burst)
        self.keys: List[str] = []

    def take(self, key: str, now: float) -> float:
        self.keys.append(key)
        return super().take(key, now)


class RateLimiterTests(SynchronousTestCase):
    """
    L{RateLimiter} keys each request's bucket as its limits say.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.stores: List[Tuple[str, RecordingStore]] = []

    def limiter(self, *limits: RateLimit) -> RateLimiter:
        def make(name: str, rate: float, burst: int) -> RecordingStore:
            store = RecordingStore(name, rate, burst)
            self.stores.append((name, store))
            return store

        return RateLimiter("api", limits, self.clock, make)

    def test_byIp(self) -> None:
        """
        C{by = "ip"}: a bucket per client address; the wait is in whole
        seconds, rounded up.
        """
        limiter = self.limiter(RateLimit("1/m", burst=2))
        self.assertTrue(limiter.needs_client)
        self.assertEqual([limiter.check(view()) for _ in range(3)], [None, None, 60])
        self.assertIsNone(limiter.check(view(client="192.0.2.2")))
        self.clock.advance(59.5)
        self.assertEqual(limiter.check(view()), 1)
        self.clock.advance(0.5)
        self.assertIsNone(limiter.check(view()))

    def test_byHeader(self) -> None:
        """
        C{by = "header:NAME"}: a bucket per value; requests without the
        header share one; long values are kept as a digest.
        """
        limiter = self.limiter(RateLimit("1/s", by="header:X-Key", burst=1))
        self.assertFalse(limiter.needs_client)
        self.assertIsNone(limiter.check(view(x_key="a")))
        self.assertEqual(limiter.check(view(x_key="a", client="192.0.2.9")), 1)
        self.assertIsNone(limiter.check(view(x_key="b")))
        self.assertIsNone(limiter.check(view()))
        self.assertEqual(limiter.check(view(client="192.0.2.9")), 1)
        self.assertIsNone(limiter.check(view(x_key="k" * 10_000)))
        store = self.stores[0][1]
        self.assertEqual(store.keys[:5], ["a", "a", "b", "", ""])
        self.assertLessEqual(len(store.keys[5]), 128)
        self.assertEqual(limiter.check(view(x_key="k" * 10_000)), 1)

    def test_byRoute(self) -> None:
        """
        C{by = "route"}: one bucket for every request.
        """
        limiter = self.limiter(RateLimit("2/s", by="route"))
        self.assertIsNone(limiter.check(view(b"/a", client="192.0.2.1")))
        self.assertIsNone(limiter.check(view(b"/b", client="192.0.2.2")))
        self.assertEqual(limiter.check(view(b"/c", client="192.0.2.3")), 1)

    def test_paths(self) -> None:
        """
        A limit with C{paths} counts only the requests whose path one of
        its globs matches.
        """
        limiter = self.limiter(RateLimit("1/s", by="route", paths=["/api/*", "*.json"]))
        self.assertIsNone(limiter.check(view(b"/api/x")))
        self.assertEqual(limiter.check(view(b"/api/y")), 1)
        self.assertEqual(limiter.check(view(b"/data.json")), 1)
        for _ in range(5):
            self.assertIsNone(limiter.check(view(b"/page")))
        self.assertEqual(len(self.stores[0][1].keys), 3)

    def test_everyLimit(self) -> None:
        """
        Every limit applies; one that refuses gives back the tokens the
        limits before it took, so a refused request costs nothing.
        """
        limiter = self.limiter(RateLimit("10/s", by="route", burst=3), RateLimit("1/s", burst=1))
        self.assertEqual([name for name, _ in self.stores], ["api.rate_limits[0]", "api.rate_limits[1]"])
        self.assertIsNone(limiter.check(view()))
        for _ in range(5):
            self.assertEqual(limiter.check(view()), 1)
        self.assertIsNone(limiter.check(view(client="192.0.2.2")))
        self.assertIsNone(limiter.check(view(client="192.0.2.3")))
        self.assertEqual(limiter.check(view(client="192.0.2.4")), 1)


class DecisionTests(SynchronousTestCase):
    """
    L{Decider.admit} refuses a request over a limit with a 429.
    """

    def decider(self, config: CreateProxyConfig) -> Decider:
        self.clock = Clock()
        cache = ResponseCache("t", MemoryStore(), self.clock, 1 << 20, 10)
        return Decider("t", config, cache, self.clock)

    def test_noLimits(self) -> None:
        """
        A server without limits has no limiter.
        """
        decider = self.decider(CreateProxyConfig("http://origin.test"))
        self.assertIsNone(decider.limiter)
        for _ in range(100):
            self.assertIsNone(decider.admit(view(), False))

    def test_tooManyRequests(self) -> None:
        """
        Over the limit, C{admit} gives a L{Reject} 429 with C{Retry-After};
        upgrades count too.
        """
        config = CreateProxyConfig("http://origin.test").with_rate_limits([RateLimit("1/m", burst=2)])
        decider = self.decider(config)
        self.assertIsNone(decider.admit(view(), False))
        self.assertIsNotNone(decider.admit(view(), True))
        refused = decider.admit(view(), False)
        self.assertIsInstance(refused, Reject)
        self.assertEqual(refused.code, 429)
        self.assertEqual(refused.text, TOO_MANY_REQUESTS)
        self.assertEqual(refused.headers, ((b"retry-after", b"60"),))
        self.clock.advance(60)
        self.assertIsNone(decider.admit(view(), False))

    def test_customStores(self) -> None:
        """
        The decider's buckets come from the store factory it is given.
        """
        made = []

        def make(name: str, rate: float, burst: int) -> MemoryBucketStore:
            made.append((name, rate, burst))
            return MemoryBucketStore(name, rate, burst)

        config = CreateProxyConfig("http://origin.test").with_rate_limits([RateLimit("5/s")])
        self.clock = Clock()
        cache = ResponseCache("t", MemoryStore(), self.clock, 1 << 20, 10)
        Decider("t", config, cache, self.clock, make)
        self.assertEqual(made, [("t.rate_limits[0]", 5.0, 5)])


class _Peer(StringTransport):
    """
    A client transport from a given address that counts the calls to
    C{getPeer}.
    """

    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.peers = 0

    def getPeer(self) -> Any:
        self.peers += 1
        return super().getPeer()


def limited(*limits: RateLimit) -> CreateProxyConfig:
    """
    @return: the settings of a server in front of C{origin.test} with
        C{limits}.
    """
    return CreateProxyConfig("http://origin.test").with_rate_limits(limits)


class ProxyTests(SynchronousTestCase):
    """
    A rate-limited server, through a whole proxy site in memory: misses,
    hits of the stock path and hits the channel answers itself all count.
    """

    def send(self, rig: Rig, data: bytes, host: str = "192.0.2.1") -> Tuple[List[Any], _Peer]:
        """
        Send C{data} on a new connection from C{host}.

        @return: the answers and the transport.
        """
        protocol = rig.site.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = _Peer(host)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        protocol.dataReceived(data)
        rig.agent.flush()
        return answers(transport.value()), transport

    def assertTooMany(self, answer: Any, retry: bytes) -> None:
        """
        Assert that C{answer} is a 429 with C{Retry-After: retry} and a
        short text body.
        """
        code, headers, body = answer
        self.assertEqual(code, 429)
        self.assertEqual(headers[b"retry-after"], [retry])
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
        self.assertEqual(body, TOO_MANY_REQUESTS.encode() + b"\n")
        self.assertNotIn(b"cache-status", headers)

    def test_fastHitsCount(self) -> None:
        """
        Hits the channel answers take tokens from the client's bucket as
        the stock path's answers do; over the burst the stock path answers
        429, and the client comes back when a token does.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", burst=3)))
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual(rig.answered(), 2)
        [refused], _ = self.send(rig, request())
        self.assertTooMany(refused, b"60")
        self.assertEqual(rig.answered(), 2)
        self.assertEqual(len(rig.origin.received), 1)
        rig.clock.advance(60)
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual(rig.answered(), 3)

    def test_pipelined(self) -> None:
        """
        Pipelined hits are answered in order: the channel's up to the limit,
        then the stock path's 429s.
        """
        rig = Rig(self, config=limited(RateLimit("1/s", burst=3)))
        self.send(rig, request())
        got, _ = self.send(rig, request() * 4)
        self.assertEqual([a[0] for a in got], [200, 200, 429, 429])
        self.assertTooMany(got[2], b"1")
        self.assertEqual(rig.answered(), 2)

    def test_clientsApart(self) -> None:
        """
        By address, each client of the channel's hits has its bucket.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", burst=1)))
        self.send(rig, request(), "192.0.2.1")
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.1")[0]], [429])
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.2")[0]], [200])
        self.assertEqual(rig.answered(), 1)
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.2")[0]], [429])

    def test_byHeader(self) -> None:
        """
        By header, each value has its bucket, and the channel reads no
        client address.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", by="header:X-Key", burst=1)))
        self.send(rig, request())
        got, transport = self.send(rig, request(x_key="a"))
        self.assertEqual([a[0] for a in got], [200])
        self.assertEqual(transport.peers, 0)
        self.assertEqual([a[0] for a in self.send(rig, request(x_key="a"))[0]], [429])
        self.assertEqual([a[0] for a in self.send(rig, request(x_key="b"))[0]], [200])
        self.assertEqual(rig.answered(), 2)

    def test_unlimitedFree(self) -> None:
        """
        Without limits the channel's hits consult no limiter and read no
        client address.
        """
        rig = Rig(self)
        self.send(rig, request())
        got, transport = self.send(rig, request() * 50)
        self.assertEqual({a[0] for a in got}, {200})
        self.assertEqual(rig.answered(), 50)
        self.assertEqual(transport.peers, 0)
        self.assertIsNone(next(rig.handle.servers()).decider.limiter)

    def test_stockPath(self) -> None:
        """
        Without the channel's fast path, misses and hits count the same.
        """
        rig = Rig(self, fast=False, config=limited(RateLimit("2/s", by="route", paths=["/page*"])))
        got, _ = self.send(rig, request() + request("/page2") + request())
        self.assertEqual([a[0] for a in got], [200, 200, 429])
        self.assertTooMany(got[2], b"1")
        self.assertEqual([a[0] for a in self.send(rig, request("/other") * 3)[0]], [200] * 3)
        rig.clock.advance(0.5)
        self.assertEqual([a[0] for a in self.send(rig, request() * 2)[0]], [200, 429])


class LoopbackTests(TestCase):
    """
    A rate-limited proxy on loopback in front of a real origin.
    """

    async def test_realSockets(self) -> None:
        """
        Over real connections, a miss and a hit the channel answers take
        the client's tokens; the next request gets 429 with C{Retry-After}
        and the origin is asked once.
        """
        run = Running(self, limited(RateLimit("1/h", burst=2)))
        site = ProxySite(Router([("*", run.resource)]), reactor=reactor, access_log=False)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        run.base = "http://127.0.0.1:%d" % (port.getHost().port,)
        codes = []
        for _ in range(3):
            response, body = await run.fetch("GET", "/page", headers={"host": "proxy.test"})
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 429])
        self.assertEqual(site.fastHit.answered, 1)
        self.assertEqual(run.origin.hits["/page"], 1)
        retry = int(response.headers.getRawHeaders(b"retry-after")[0])
        self.assertTrue(3500 < retry <= 3600, retry)
        self.assertEqual(body, TOO_MANY_REQUESTS.encode() + b"\n")
