"""
Tests for L{phantom_frame.cache.redis} and L{phantom_frame.cache.bus}: the
entry codec, TTLs, Redis URLs, the configuration keys, and (on a real
redis-server) the fill lock and the C{maxmemory-policy} check.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.cache.bus import RedisAddress, RedisNode, parse_redis_url
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import Shared
from phantom_frame.cache.redis import TieredCache, decode_entry, encode_entry, time_to_live
from phantom_frame.cache.store import StoredBody
from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.redis_tier import eviction_warning
from tests.redis_server import NO_REDIS, RedisServer


def _entry(**changes: Any) -> CacheEntry:
    values = dict(
        key="GET:/a?b=1",
        status=200,
        phrase=b"OK",
        headers=((b"Content-Type", b"text/html"), (b"X-\xe9", b"\xff")),
        coding="br",
        body=StoredBody(4, b"\x00\x01\n\x02", None),
        identity_length=9,
        stored_at=100.0,
    )
    values.update(changes)
    return CacheEntry(**values)  # type: ignore[arg-type]


class CodecTests(SynchronousTestCase):
    """
    L{encode_entry} and L{decode_entry}.
    """

    def test_roundTrip(self) -> None:
        """
        Everything an entry is served from survives the trip: status,
        headers (any bytes), coded body, validators, freshness, Vary.
        """
        entry = _entry(
            vary=("accept-language",),
            vary_header=b"Accept-Language",
            variant=("fr",),
            lifetime=60.0,
            initial_age=3.0,
            stale_while_revalidate=5.0,
            stale_if_error=7.0,
            must_revalidate=True,
            etag=b'"x"',
            last_modified=b"Tue, 01 Jan 2030 00:00:00 GMT",
            not_found=True,
        )
        back = decode_entry(encode_entry(entry, entry.body.data))
        for name in (
            "key", "status", "phrase", "headers", "coding", "identity_length", "stored_at", "vary",
            "vary_header", "variant", "not_found", "lifetime", "initial_age", "stale_while_revalidate",
            "stale_if_error", "must_revalidate", "etag", "last_modified",
        ):
            self.assertEqual(getattr(back, name), getattr(entry, name), name)
        self.assertEqual(back.body.data, b"\x00\x01\n\x02")
        self.assertEqual(back.size, entry.size)

    def test_infiniteLifetime(self) -> None:
        """
        An entry fresh until invalidated stays so, and has no TTL.
        """
        entry = _entry()
        self.assertEqual(decode_entry(encode_entry(entry, b"")).lifetime, math.inf)
        self.assertIsNone(time_to_live(entry, 1e9))

    def test_notAnEntry(self) -> None:
        """
        Bytes that are not an entry raise L{ValueError}.
        """
        self.assertRaises(ValueError, decode_entry, b"garbage")


class TimeToLiveTests(SynchronousTestCase):
    """
    L{time_to_live}.
    """

    def test_freshAndStaleWindows(self) -> None:
        """
        The TTL covers the rest of the lifetime and the longer stale window.
        """
        entry = _entry(lifetime=60.0, stale_while_revalidate=10.0, stale_if_error=30.0)
        self.assertEqual(time_to_live(entry, 120.0), 70.0)

    def test_validatorsKeptForRevalidation(self) -> None:
        """
        An entry with validators stays past its windows, to be revalidated.
        """
        entry = _entry(lifetime=10.0, etag=b'"e"')
        self.assertEqual(time_to_live(entry, 100.0), 70.0)

    def test_useless(self) -> None:
        """
        Past every window the TTL is not positive (the entry is not written).
        """
        self.assertLessEqual(time_to_live(_entry(lifetime=10.0), 200.0), 0)


class AddressTests(SynchronousTestCase):
    """
    L{parse_redis_url}.
    """

    def test_tcp(self) -> None:
        """
        C{redis://:password@host:port/db}.
        """
        self.assertEqual(
            parse_redis_url("redis://:s%40cret@cache.internal:6380/2"),
            RedisAddress(host="cache.internal", port=6380, db=2, password="s@cret"),
        )
        self.assertEqual(parse_redis_url("redis://localhost"), RedisAddress(host="localhost"))

    def test_unix(self) -> None:
        """
        C{unix:///path?db=N}.
        """
        self.assertEqual(parse_redis_url("unix:///run/redis.sock?db=3"), RedisAddress(path="/run/redis.sock", db=3))

    def test_bad(self) -> None:
        """
        Other schemes, relative socket paths and bad databases are refused.
        """
        for url in ["http://localhost", "unix://relative/sock", "redis://", "redis://h/x"]:
            self.assertRaises(ValueError, parse_redis_url, url)


class ConfigTests(SynchronousTestCase):
    """
    C{redis_url}, C{redis_l1_bytes}, C{redis_prefix} and the C{redis}
    storage mode.
    """

    def test_keys(self) -> None:
        """
        The root keys are read, with their defaults.
        """
        config = parse_config({"server": {"api": {}}}, {})
        self.assertEqual((config.redis_url, config.redis_l1_bytes, config.redis_prefix), (None, 32 * 1024 * 1024, "phantom-frame"))
        config = parse_config(
            {"redis_url": "unix:///tmp/r.sock", "redis_l1_bytes": "1MiB", "redis_prefix": "site-a", "server": {"api": {"cache_storage_mode": "redis"}}},
            {},
        )
        self.assertEqual((config.redis_url, config.redis_l1_bytes, config.redis_prefix), ("unix:///tmp/r.sock", 1024 * 1024, "site-a"))

    def test_redisModeNeedsURL(self) -> None:
        """
        A C{redis} server without C{redis_url} is an error naming the key.
        """
        error = self.assertRaises(ConfigError, parse_config, {"server": {"api": {"cache_storage_mode": "redis"}}}, {})
        self.assertEqual(len(error.errors), 1)
        self.assertTrue(error.errors[0].startswith("server.api.cache_storage_mode:"), error.errors)
        self.assertIn("redis_url", error.errors[0])

    def test_badURL(self) -> None:
        """
        A C{redis_url} that is not one is an error naming the key.
        """
        error = self.assertRaises(ConfigError, parse_config, {"redis_url": "localhost:6379", "server": {"api": {}}}, {})
        self.assertTrue(error.errors[0].startswith("redis_url:"), error.errors)


class DisconnectedTests(SynchronousTestCase):
    """
    A L{TieredCache} whose Redis cannot be reached is a plain memory cache.
    """

    def test_l1Bound(self) -> None:
        """
        L1 holds at most C{l1_bytes}, Redis or not; failures are counted.
        """
        clock = Clock()
        node = RedisNode("unix:///nonexistent.sock", clock, l1_bytes=8192)
        cache = TieredCache("api", node, clock, 10, 1.0)
        for i in range(10):
            body = b"x" * 2000
            waiter, _ = cache.fill(f"GET:/{i}", lambda b=body, i=i: Deferred.fromCoroutine(_shared(f"GET:/{i}", b)))
            self.assertIsInstance(self.successResultOf(waiter), Shared)
            self.assertLessEqual(cache.bytes, 8192)
        self.assertGreater(cache.entry_count, 0)
        self.assertGreater(node.errors, 0)
        self.flushLoggedErrors()


async def _shared(key: str, body: bytes) -> Shared:
    return Shared(_entry(key=key, body=StoredBody(len(body), body, None)))


class LiveTests(TestCase):
    """
    On a real redis-server.
    """

    skip = NO_REDIS

    def test_holderDies(self) -> Any:
        """
        A waiter whose lock holder died (its lock expires without an
        announcement) takes over with its own fetch.
        """

        async def run() -> None:
            server = RedisServer(self)
            await server.start()
            node = RedisNode(server.url, reactor, prefix="t")
            node.start()
            self.addCleanup(node.stop)
            for _ in range(200):
                if node.connected and node.listening:
                    break
                await deferLater(reactor, 0.025, lambda: None)
            cache = TieredCache("api", node, reactor, 10, 0.1)
            # A holder that never comes back.
            self.assertIsNotNone(await node.acquire("t:api:lock:GET:/x", 0.3))
            fetched = []

            def fetch() -> Deferred:
                fetched.append(reactor.seconds())
                return Deferred.fromCoroutine(_shared("GET:/x", b"mine"))

            started = reactor.seconds()
            waiter, _ = cache.fill("GET:/x", fetch)
            result = await waiter
            self.assertEqual(result.entry.body.data, b"mine")
            self.assertEqual(len(fetched), 1)
            self.assertGreaterEqual(fetched[0] - started, 0.25)

        return Deferred.fromCoroutine(run())

    def test_evictionWarning(self) -> Any:
        """
        C{phantom-frame check} warns about a Redis that does not evict by
        use, and not about one that does.
        """

        async def run() -> None:
            server = RedisServer(self, policy="noeviction")
            await server.start()
            warning = eviction_warning(server.url)
            self.assertIsNotNone(warning)
            self.assertIn("noeviction", warning)
            lru = RedisServer(self, policy="allkeys-lru")
            await lru.start()
            self.assertIsNone(eviction_warning(lru.url))
            self.assertIsNone(eviction_warning("unix:///nonexistent.sock"))

        return Deferred.fromCoroutine(run())
