"""
Tests for the snapshots of L{phantom_frame.cache.redis.TieredCache} shared
by several nodes (L{phantom_frame.cache.bus.RedisNode}): read rather than
fetched, fetched once for every node, kept through an invalidation until
their new versions replace them, and their changes confirmed by the nodes.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.cache.bus import RedisNode
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import Shared
from phantom_frame.cache.redis import READY_WITHIN, TieredCache, decode_entry, encode_entry
from phantom_frame.cache.store import StoredBody
from tests.redis_server import NO_REDIS, RedisServer


def _no_header(name: str) -> Optional[str]:
    return None


def _entry(key: str, body: bytes, pinned: bool = True, stored_at: float = 0.0) -> CacheEntry:
    return CacheEntry(
        key=key,
        status=200,
        phrase=b"OK",
        headers=((b"Content-Type", b"text/html"),),
        coding="identity",
        body=StoredBody(len(body), body, None),
        identity_length=len(body),
        stored_at=stored_at,
        pinned=pinned,
    )


class Listener:
    """
    Records what a cache tells its snapshots about the other nodes'
    changes (the calls L{phantom_frame.proxy.snapshots.Snapshots} takes).
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []

    def followed_add(self, path: str) -> None:
        """
        Record an addition.
        """
        self.calls.append(("add", path))

    def followed_remove(self, path: str) -> None:
        """
        Record a removal.
        """
        self.calls.append(("remove", path))

    def followed_purge(self, keys: Tuple[str, ...]) -> None:
        """
        Record a purge that keeps the snapshots of C{keys}.
        """
        self.calls.append(("purge", tuple(keys)))


class Recorder:
    """
    A registered server's cache that records the bus calls it gets.
    """

    def __init__(self) -> None:
        self.filled: List[Tuple[str, bytes]] = []
        self.dropped: List[Tuple[Optional[str], Tuple[str, ...]]] = []

    def filled_elsewhere(self, key: str, variant: bytes) -> None:
        """
        Record another node's fill.
        """
        self.filled.append((key, variant))

    def drop_local(self, pattern: Optional[str], keep: Tuple[str, ...] = ()) -> None:
        """
        Record another node's purge.
        """
        self.dropped.append((pattern, keep))


class MessageTests(SynchronousTestCase):
    """
    The bus messages of snapshots, without Redis.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.node = RedisNode("unix:///nonexistent.sock", self.clock, prefix="t")
        self.cache = Recorder()
        self.node.register("site", self.cache)

    def test_snapshotPinnedInRedis(self) -> None:
        """
        An entry says in Redis whether it is a snapshot, so that every node
        holds it as one.
        """
        self.assertTrue(decode_entry(encode_entry(_entry("GET:/a", b"x"), b"x")).pinned)
        self.assertFalse(decode_entry(encode_entry(_entry("GET:/a", b"x", pinned=False), b"x")).pinned)

    def test_filledByAnotherNode(self) -> None:
        """
        A C{filled} message of another node reaches the server's cache (which
        replaces a snapshot it holds); this node's own does not.
        """
        self.node.received(b"t:site:filled", b"0123456789abcdef\nGET:/a\n1[]")
        self.assertEqual(self.cache.filled, [("GET:/a", b"[]")])
        self.node.received(b"t:site:filled", self.node.node_id.encode() + b"\nGET:/b\n1[]")
        self.node.received(b"t:site:filled", b"0123456789abcdef\nGET:/c\n0")
        self.assertEqual(self.cache.filled, [("GET:/a", b"[]")])

    def test_filledWakesWaiters(self) -> None:
        """
        A waiter of the key gets the variant; the cache is not asked to read
        it again.
        """
        waiting = self.node.expect_filled("site", "GET:/a")
        self.node.received(b"t:site:filled", b"0123456789abcdef\nGET:/a\n1[]")
        self.assertEqual(self.successResultOf(waiting), b"[]")
        self.assertEqual(self.cache.filled, [])

    def test_purgeKeeps(self) -> None:
        """
        A purge message names the keys whose snapshots every node keeps.
        """
        self.node.received(
            b"t:site:purge", b'{"id": "1", "from": "other", "pattern": "*", "keep": ["GET:/a"]}'
        )
        self.assertEqual(self.cache.dropped, [("*", ("GET:/a",))])
        self.flushLoggedErrors()

    def test_readyGivesUp(self) -> None:
        """
        L{RedisNode.ready} answers C{False} once its time is up without a
        connection.
        """
        ready = self.node.ready(1.0)
        self.assertNoResult(ready)
        self.clock.advance(0.5)
        self.assertNoResult(ready)
        for _ in range(20):
            self.clock.advance(0.05)
        self.assertIs(self.successResultOf(ready), False)


class UnreachableTests(SynchronousTestCase):
    """
    Snapshot fills while Redis cannot be reached.
    """

    def test_firstFillsWaitForRedis(self) -> None:
        """
        The first snapshot fills of a node wait (at most C{READY_WITHIN}
        seconds) for Redis, registered at once (requests wait for them), then
        fetch; later ones do not wait.
        """
        clock = Clock()
        node = RedisNode("unix:///nonexistent.sock", clock, prefix="t")
        cache = TieredCache("site", node, clock, 10, 1.0)
        fetched: List[str] = []

        def fetch(key: str) -> Any:
            def fetch() -> Deferred:
                fetched.append(key)
                return succeed(Shared(_entry(key, b"page")))

            return fetch

        first, _ = cache.fill_snapshot("GET:/a", fetch("GET:/a"))
        second, _ = cache.fill_snapshot("GET:/b", fetch("GET:/b"))
        self.assertTrue(cache.in_flight("GET:/a"))
        clock.advance(READY_WITHIN - 0.1)
        self.assertEqual(fetched, [])
        for _ in range(10):
            clock.advance(0.05)
        self.assertEqual(sorted(fetched), ["GET:/a", "GET:/b"])
        self.assertEqual(self.successResultOf(first).entry.body.data, b"page")
        self.successResultOf(second)
        third, _ = cache.fill_snapshot("GET:/c", fetch("GET:/c"))
        self.successResultOf(third)
        self.assertEqual(fetched[-1], "GET:/c")
        self.assertTrue(cache.lookup("GET:/c", _no_header).pinned)
        cache.close()


class SharedTests(TestCase):
    """
    Two nodes on a real redis-server.
    """

    skip = NO_REDIS

    async def _nodes(self, fill_timeout: float = 5.0) -> Tuple[TieredCache, TieredCache]:
        server = RedisServer(self)
        await server.start()
        caches = []
        for _ in range(2):
            node = RedisNode(server.url, reactor, prefix="t")
            node.start()
            self.addCleanup(node.stop)
            cache = TieredCache("site", node, reactor, 10, fill_timeout)
            self.addCleanup(cache.close)
            caches.append(cache)
        for _ in range(200):
            if all(c.node.connected and c.node.listening for c in caches):
                break
            await deferLater(reactor, 0.025, lambda: None)
        return caches[0], caches[1]

    def _fetcher(self, fetched: List[str], key: str, body: bytes, delay: float = 0.0) -> Any:
        """
        @return: a fetch of C{key} answering a snapshot of C{body} after
            C{delay} seconds, noted in C{fetched}.
        """

        def fetch() -> Deferred:
            fetched.append(key)
            return deferLater(reactor, delay, lambda: Shared(_entry(key, body, stored_at=reactor.seconds())))

        return fetch

    def test_readNotFetched(self) -> Any:
        """
        A node whose L1 lacks a snapshot another node stored reads it from
        Redis instead of fetching it, and holds it as a snapshot.
        """

        async def run() -> None:
            a, b = await self._nodes()
            fetched: List[str] = []
            waiter, _ = a.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"page one"))
            await waiter
            waiter, _ = b.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"again"))
            result = await waiter
            self.assertEqual((result.entry.body.data, fetched), (b"page one", ["GET:/p"]))
            held = b.lookup("GET:/p", _no_header)
            self.assertEqual(held.body.data, b"page one")
            self.assertTrue(held.pinned)

        return Deferred.fromCoroutine(run())

    def test_warmTogether(self) -> Any:
        """
        Two nodes warming the same snapshots at once fetch each one once.
        """

        async def run() -> None:
            a, b = await self._nodes()
            fetched: List[str] = []
            waiters = []
            for key in ["GET:/1", "GET:/2", "GET:/3"]:
                for cache in (a, b):
                    waiter, _ = cache.fill_snapshot(key, self._fetcher(fetched, key, key.encode(), 0.05))
                    waiters.append(waiter)
            results = await gatherResults(waiters)
            self.assertEqual(sorted(fetched), ["GET:/1", "GET:/2", "GET:/3"])
            self.assertEqual([r.entry.body.data for r in results], [b"GET:/1"] * 2 + [b"GET:/2"] * 2 + [b"GET:/3"] * 2)

        return Deferred.fromCoroutine(run())

    def test_refreshWantsANewVersion(self) -> Any:
        """
        A refresh (C{since}) does not take the version stored before it: it
        fetches.
        """

        async def run() -> None:
            a, b = await self._nodes()
            fetched: List[str] = []
            waiter, _ = a.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"old"))
            await waiter
            await deferLater(reactor, 0.01, lambda: None)
            waiter, _ = b.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"new"), reactor.seconds())
            self.assertEqual((await waiter).entry.body.data, b"new")
            self.assertEqual(len(fetched), 2)

        return Deferred.fromCoroutine(run())

    def test_holderDies(self) -> Any:
        """
        A node waiting for another node's snapshot fill, whose holder died
        (its lock expires without a C{filled} message), takes over.
        """

        async def run() -> None:
            a, b = await self._nodes(fill_timeout=0.1)
            self.assertIsNotNone(await a.node.acquire("t:site:lock:GET:/p", 0.3))
            fetched: List[str] = []
            started = reactor.seconds()
            waiter, _ = b.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"mine"))
            self.assertEqual((await waiter).entry.body.data, b"mine")
            self.assertEqual(fetched, ["GET:/p"])
            self.assertGreaterEqual(reactor.seconds() - started, 0.25)

        return Deferred.fromCoroutine(run())

    def test_invalidationKeepsSnapshots(self) -> Any:
        """
        An invalidation that keeps snapshots keeps them on every node and in
        Redis (other entries go everywhere) until a new version is stored;
        then every node holds the new version.
        """

        async def run() -> None:
            a, b = await self._nodes()
            listener = b.snapshot_listener = Listener()
            fetched: List[str] = []
            for cache in (a, b):
                waiter, _ = cache.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"v1"))
                await waiter
            waiter, _ = a.fill("GET://h/other", self._fetcher(fetched, "GET://h/other", b"o"))
            await waiter
            await b.prefetch("GET://h/other", _no_header)
            self.assertIsNotNone(b.lookup("GET://h/other", _no_header))
            a.invalidate("*", lambda key: key == "GET:/p")
            self.assertEqual(await gatherResults(list(a.purges)), [2])
            self.assertEqual(b.lookup("GET:/p", _no_header).body.data, b"v1")
            self.assertIsNone(b.lookup("GET://h/other", _no_header))
            self.assertEqual(listener.calls, [("purge", ("GET:/p",))])
            self.assertIsNotNone(await b._current("GET:/p", _no_header))
            self.assertIsNone(await b._current("GET://h/other", _no_header))
            waiter, _ = a.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"v2"), reactor.seconds())
            await waiter
            for _ in range(100):
                if b.lookup("GET:/p", _no_header).body.data == b"v2":
                    break
                await deferLater(reactor, 0.01, lambda: None)
            held = b.lookup("GET:/p", _no_header)
            self.assertEqual((held.body.data, held.pinned), (b"v2", True))
            self.assertEqual(fetched, ["GET:/p", "GET://h/other", "GET:/p"])

        return Deferred.fromCoroutine(run())

    def test_invalidationKeepsSnapshotsHeldElsewhere(self) -> Any:
        """
        A snapshot the invalidating node does not hold itself (its own
        fetch failed, say) stays in Redis too: another node serves it from
        there, without fetching it.
        """

        async def run() -> None:
            a, b = await self._nodes()
            fetched: List[str] = []
            waiter, _ = b.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"v1"))
            await waiter
            self.assertIsNone(a.lookup("GET:/p", _no_header))
            a.invalidate("*", lambda key: key == "GET:/p")
            await gatherResults(list(a.purges))
            self.assertIsNotNone(await a._current("GET:/p", _no_header))
            # The other node, told to drop it, reads it back from Redis
            # before its next request is decided.
            await b.prefetch("GET:/p", _no_header)
            self.assertEqual(b.lookup("GET:/p", _no_header).body.data, b"v1")
            self.assertEqual(fetched, ["GET:/p"])

        return Deferred.fromCoroutine(run())

    def test_changesConfirmed(self) -> Any:
        """
        An added or removed snapshot is told to every node, which confirm
        it; a removed one is dropped from Redis and from the other nodes.
        """

        async def run() -> None:
            a, b = await self._nodes()
            listener = b.snapshot_listener = Listener()
            fetched: List[str] = []
            for cache in (a, b):
                waiter, _ = cache.fill_snapshot("GET:/p", self._fetcher(fetched, "GET:/p", b"page"))
                await waiter
            self.assertEqual(await a.share_snapshots_change("add", "/p", "GET:/p"), 2)
            self.assertEqual(await a.share_snapshots_change("remove", "/p", "GET:/p"), 2)
            self.assertEqual(listener.calls, [("add", "/p"), ("remove", "/p")])
            self.assertIsNone(b.lookup("GET:/p", _no_header))
            self.assertIsNone(await b._current("GET:/p", _no_header))

        return Deferred.fromCoroutine(run())
