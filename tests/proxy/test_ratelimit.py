"""
Tests for L{phantom_frame.proxy.ratelimit}: token buckets on a fake clock,
the limits of a server, and the decision's 429.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from phantom_frame.cache.responses import ResponseCache
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

