"""
Tests for L{phantom_frame.cache.responses}: invalidation, snapshots and
stats of a L{ResponseCache}.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import NOT_SHARED, Exclusive, Shared
from phantom_frame.cache.patterns import PatternError
from phantom_frame.cache.responses import ResponseCache
from tests.cache.support import NO_HEADERS, CacheTestMixin, FakeFetch, headers, ids


class InvalidationTests(SynchronousTestCase, CacheTestMixin):
    """
    L{ResponseCache.invalidate} and L{ResponseCache.invalidate_all}.
    """

    KEYS = ["GET:/api/x", "POST:/api/y?z=1", "GET:/v1/users/7", "GET:/apix", "GET:/"]

    def filled(self) -> Tuple[ResponseCache, Dict[str, CacheEntry]]:
        """
        @return: a cache holding one entry per key of L{KEYS}, and those
            entries by key.
        """
        cache = self.makeCache()
        entries = {key: self.makeEntry(key, key.encode()) for key in self.KEYS}
        for entry in entries.values():
            self.put(cache, entry)
        return cache, entries

    def assertInvalidates(self, pattern: str, expected: List[str]) -> None:
        """
        Assert that C{pattern} drops exactly the entries of C{expected},
        returning their count and deleting their bodies, and keeps the rest.
        """
        cache, entries = self.filled()
        self.assertEqual(cache.invalidate(pattern), len(expected))
        for key, entry in entries.items():
            found = cache.lookup(key, NO_HEADERS)
            if key in expected:
                self.assertIsNone(found, key)
            else:
                self.assertIs(found, entry, key)
        self.assertEqual(
            sorted(ids(self.store.deleted)),
            sorted(ids([entries[key].body for key in expected])),
        )
        self.assertEqual(cache.entry_count, len(self.KEYS) - len(expected))
        self.assertEqual(
            cache.bytes,
            sum(e.size for k, e in entries.items() if k not in expected),
        )
        self.assertEqual(cache.invalidations, 1)
        self.assertEqual(cache.evictions, 0)

    def test_pathPattern(self) -> None:
        """
        C{"/api/*"} matches the path part of keys for any method, on the
        segment it names.
        """
        self.assertInvalidates("/api/*", ["GET:/api/x", "POST:/api/y?z=1"])

    def test_methodPattern(self) -> None:
        """
        C{"GET:/api/*"} matches only C{GET} keys.
        """
        self.assertInvalidates("GET:/api/*", ["GET:/api/x"])

    def test_starInside(self) -> None:
        """
        C{"*/users/*"} matches a segment anywhere in the key.
        """
        self.assertInvalidates("*/users/*", ["GET:/v1/users/7"])

    def test_star(self) -> None:
        """
        C{"*"} matches every key.
        """
        self.assertInvalidates("*", self.KEYS)

    def test_exact(self) -> None:
        """
        A pattern without a star matches one key.
        """
        self.assertInvalidates("GET:/apix", ["GET:/apix"])

    def test_noMatch(self) -> None:
        """
        A pattern matching nothing drops nothing and returns 0.
        """
        self.assertInvalidates("/nothing/*", [])

    def test_emptyPattern(self) -> None:
        """
        An empty pattern is refused with L{PatternError} and drops nothing.
        """
        cache, _ = self.filled()
        self.assertRaises(PatternError, cache.invalidate, "")
        self.assertEqual(cache.entry_count, len(self.KEYS))
        self.assertEqual(cache.invalidations, 0)

    def test_variantsAndNotFound(self) -> None:
        """
        Invalidation drops every variant of a matching key and matching 404
        entries, each counted; a later entry of the key without C{vary}
        names is found by every request.
        """
        cache = self.makeCache()
        for lang in ("en", "fr"):
            self.put(
                cache,
                self.makeEntry(
                    "GET:/a", lang.encode(), vary=("accept-language",), variant=(lang,)
                ),
            )
        self.put(cache, self.makeEntry("GET:/gone", not_found=True))
        self.put(cache, self.makeEntry("GET:/b"))
        self.assertEqual(cache.invalidate("GET:/[a-z]*"), 0)
        self.assertEqual(cache.invalidate("GET:/a"), 2)
        self.assertEqual(cache.invalidate("/gone"), 1)
        self.assertEqual(cache.entry_count, 1)
        plain = self.makeEntry("GET:/a", b"plain")
        self.put(cache, plain)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), plain)

    def test_invalidateAll(self) -> None:
        """
        L{ResponseCache.invalidate_all} drops every entry, main and 404,
        returns how many, and deletes their bodies.
        """
        cache, entries = self.filled()
        gone = self.makeEntry("GET:/gone", not_found=True)
        self.put(cache, gone)
        self.assertEqual(cache.invalidate_all(), len(self.KEYS) + 1)
        self.assertEqual(cache.entry_count, 0)
        self.assertEqual(cache.bytes, 0)
        self.assertEqual(list(cache.entries()), [])
        for key in entries:
            self.assertIsNone(cache.lookup(key, NO_HEADERS))
        self.assertEqual(
            sorted(ids(self.store.deleted)),
            sorted(ids([e.body for e in entries.values()] + [gone.body])),
        )
        self.assertEqual(cache.invalidations, 1)
        self.assertEqual(cache.invalidate_all(), 0)
        self.assertEqual(cache.invalidations, 2)

    def test_invalidateAllForgetsVary(self) -> None:
        """
        After L{ResponseCache.invalidate_all} a key's old C{vary} names no
        longer apply.
        """
        cache = self.makeCache()
        self.put(
            cache,
            self.makeEntry("GET:/a", vary=("accept-language",), variant=("en",)),
        )
        cache.invalidate_all()
        plain = self.makeEntry("GET:/a", b"plain")
        self.put(cache, plain)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), plain)

    def doomedFill(
        self, invalidate: Callable[[ResponseCache], int]
    ) -> None:
        """
        Start a fill, invalidate it with C{invalidate}, and check that its
        result reaches its waiters without being stored, that a fill after
        the invalidation starts a new fetch whose result is stored, and that
        the doomed fill's body is deleted once its waiters have had it.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        before, _ = cache.fill("GET:/api/x", fetch)
        joined, collapsed = cache.fill("GET:/api/x", fetch)
        self.assertTrue(collapsed)
        invalidate(cache)
        after, collapsed = cache.fill("GET:/api/x", fetch)
        self.assertFalse(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        for d in (before, joined):
            d.addCallback(lambda result: self.store.events.append(("served", result)))
        old = self.makeEntry("GET:/api/x", b"old")
        fetch.calls[0].callback(Shared(old))
        self.assertEqual(
            self.store.events,
            [("served", Shared(old)), ("served", Shared(old)), ("delete", old.body)],
        )
        self.assertIsNone(cache.lookup("GET:/api/x", NO_HEADERS))
        self.assertEqual(cache.entry_count, 0)
        self.assertNoResult(after)
        # The doomed fill landing leaves the new one in place.
        late, collapsed = cache.fill("GET:/api/x", fetch)
        self.assertTrue(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        new = self.makeEntry("GET:/api/x", b"new")
        fetch.calls[1].callback(Shared(new))
        self.assertEqual(self.successResultOf(after), Shared(new))
        self.assertEqual(self.successResultOf(late), Shared(new))
        self.assertIs(cache.lookup("GET:/api/x", NO_HEADERS), new)

    def test_inFlightInvalidated(self) -> None:
        """
        A fill in flight when its key is invalidated by pattern is not
        stored; its waiters still get the result, and a fill started after
        the invalidation makes its own fetch.
        """
        self.doomedFill(lambda cache: cache.invalidate("/api/*"))

    def test_inFlightInvalidatedAll(self) -> None:
        """
        The same holds for L{ResponseCache.invalidate_all}.
        """
        self.doomedFill(lambda cache: cache.invalidate_all())

    def test_inFlightNotMatching(self) -> None:
        """
        A fill in flight for a key the pattern does not match is stored, and
        later fills still join it.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/other", fetch)
        self.assertEqual(cache.invalidate("/api/*"), 0)
        joined, collapsed = cache.fill("GET:/other", fetch)
        self.assertTrue(collapsed)
        entry = self.makeEntry("GET:/other")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(self.successResultOf(d), Shared(entry))
        self.assertEqual(self.successResultOf(joined), Shared(entry))
        self.assertIs(cache.lookup("GET:/other", NO_HEADERS), entry)
        self.assertEqual(self.store.deleted, [])

    def test_queriesVariantsAndHosts(self) -> None:
        """
        A pattern without C{?} drops its path whatever the query, for every
        host and in every C{Vary} variant, pinned snapshots included; one
        with C{?} drops only the queries it names; C{//HOST} only that
        host's.
        """
        cache = self.makeCache()
        keys = ["GET:/isr", "GET:/isr?_rsc=1", "GET://a.example/isr", "GET://b.example/isr?_rsc=2",
                "GET://a.example/isr/x", "GET:/other?isr"]
        for key in keys:
            for lang in ("en", "fr"):
                self.put(cache, self.makeEntry(key, vary=("accept-language",), variant=(lang,)))
        snapshot = self.makeEntry("GET:/isr?pinned")
        snapshot.pinned = True
        self.put(cache, snapshot)
        self.assertEqual(cache.invalidate("/isr?_rsc=*"), 4)
        self.assertEqual(cache.invalidate("//a.example/isr"), 2)
        self.assertEqual(cache.invalidate("/isr"), 3)
        self.assertEqual(
            [key for key in keys + ["GET:/isr?pinned"] if cache.has(key)],
            ["GET://a.example/isr/x", "GET:/other?isr"],
        )
        self.assertEqual(cache.entry_count, 4)

    def test_inFlightByQuery(self) -> None:
        """
        A fill in flight for a key the pattern matches whatever its query,
        of any host, is not stored.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        waiter, _ = cache.fill("GET://a.example/isr?_rsc=1", fetch)
        other, _ = cache.fill("GET://a.example/isr2", fetch)
        cache.invalidate("/isr")
        fetch.calls[0].callback(Shared(self.makeEntry("GET://a.example/isr?_rsc=1")))
        fetch.calls[1].callback(Shared(self.makeEntry("GET://a.example/isr2")))
        self.successResultOf(waiter)
        self.successResultOf(other)
        self.assertFalse(cache.has("GET://a.example/isr?_rsc=1"))
        self.assertTrue(cache.has("GET://a.example/isr2"))

    def test_inFlightExclusiveInvalidated(self) -> None:
        """
        An invalidated fill whose result is L{Exclusive} still hands it to
        its first waiter.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        first, _ = cache.fill("GET:/a", fetch)
        second, _ = cache.fill("GET:/a", fetch)
        cache.invalidate_all()
        exclusive = Exclusive("stream", "private")
        fetch.calls[0].callback(exclusive)
        self.assertIs(self.successResultOf(first), exclusive)
        self.assertIs(self.successResultOf(second), NOT_SHARED)

    def test_cancelInvalidatedFill(self) -> None:
        """
        Cancelling the last waiter of an invalidated fill cancels its fetch
        and leaves the fill started after the invalidation alone.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        before, _ = cache.fill("GET:/a", fetch)
        cache.invalidate("GET:/a")
        after, _ = cache.fill("GET:/a", fetch)
        before.cancel()
        self.failureResultOf(before, CancelledError)
        self.assertEqual(fetch.cancelled, [fetch.calls[0]])
        _, collapsed = cache.fill("GET:/a", fetch)
        self.assertTrue(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        self.assertNoResult(after)

    def test_close(self) -> None:
        """
        L{ResponseCache.close} drops every entry, deleting its body, and
        closes the store.
        """
        cache, entries = self.filled()
        cache.close()
        self.assertEqual(cache.entry_count, 0)
        self.assertEqual(len(self.store.deleted), len(entries))
        self.assertTrue(self.store.closed)


class SnapshotTests(SynchronousTestCase, CacheTestMixin):
    """
    Pinned entries (snapshots), L{ResponseCache.has}, L{ResponseCache.drop}
    and L{ResponseCache.update}.
    """

    def test_pin(self) -> None:
        """
        A pinned entry is still found and counted, listed first, and no
        longer evicted by later entries.
        """
        a, b, c = (self.makeEntry(f"GET:/{k}") for k in "abc")
        cache = self.makeCache(max_bytes=a.size * 2)
        self.put(cache, a)
        self.put(cache, b)
        cache.pin(a)
        self.assertTrue(a.pinned)
        self.put(cache, c)
        self.assertEqual(list(cache.entries()), [a, b, c])
        self.assertEqual((cache.entry_count, cache.bytes), (3, a.size * 3))
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.assertEqual(cache.evictions, 0)

    def test_pinNotHeld(self) -> None:
        """
        Pinning an entry the cache no longer holds leaves it alone.
        """
        cache = self.makeCache()
        old, new = self.makeEntry("GET:/a"), self.makeEntry("GET:/a")
        self.put(cache, old)
        self.put(cache, new)
        cache.pin(old)
        self.assertFalse(old.pinned)
        self.assertEqual(list(cache.entries()), [new])

    def test_storePinned(self) -> None:
        """
        An entry made pinned replaces the key's unpinned copy, whose body is
        deleted, and is found by lookups.
        """
        cache = self.makeCache()
        plain, pinned = self.makeEntry("GET:/a"), self.makeEntry("GET:/a")
        pinned.pinned = True
        self.put(cache, plain)
        self.put(cache, pinned)
        self.assertEqual(list(cache.entries()), [pinned])
        self.assertEqual(cache.bytes, pinned.size)
        self.assertEqual(ids(self.store.deleted), ids([plain.body]))

    def test_hasAndDrop(self) -> None:
        """
        L{ResponseCache.has} sees any variant of a key, pinned or not;
        L{ResponseCache.drop} forgets them all and deletes their bodies.
        """
        cache = self.makeCache()
        en, fr = (
            self.makeEntry("GET:/a", vary=("accept-language",), variant=(lang,))
            for lang in ("en", "fr")
        )
        self.assertFalse(cache.has("GET:/a"))
        self.put(cache, en)
        self.put(cache, fr)
        cache.pin(fr)
        self.put(cache, self.makeEntry("GET:/b"))
        self.assertTrue(cache.has("GET:/a"))
        self.assertTrue(cache.has("GET:/b"))
        cache.drop("GET:/a")
        self.assertFalse(cache.has("GET:/a"))
        self.assertEqual(cache.entry_count, 1)
        self.assertEqual(ids(self.store.deleted), ids([en.body, fr.body]))
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="fr")))

    def test_update(self) -> None:
        """
        L{ResponseCache.update} replaces an entry's headers, drops its
        serialised answers and accounts its new size, whether it is pinned,
        held or no longer held.
        """
        cache = self.makeCache()
        pinned, held, gone = (self.makeEntry(f"GET:/{k}") for k in "abc")
        for entry in (pinned, held, gone):
            self.put(cache, entry)
        cache.pin(pinned)
        cache.drop("GET:/c")
        before = cache.bytes
        for entry in (pinned, held, gone):
            entry.wire = {"identity": b"..."}
            cache.update(entry, ((b"X-New", b"1"),))
            self.assertEqual((entry.headers, entry.wire), (((b"X-New", b"1"),), None))
        self.assertEqual(cache.bytes, before + 2 * 6)

    def test_invalidatePinned(self) -> None:
        """
        Invalidation drops matching pinned entries too, each counted.
        """
        cache = self.makeCache()
        a, b = self.makeEntry("GET:/a"), self.makeEntry("GET:/b")
        self.put(cache, a)
        self.put(cache, b)
        cache.pin(a)
        cache.pin(b)
        self.assertEqual(cache.invalidate("GET:/a"), 1)
        self.assertEqual(list(cache.entries()), [b])
        self.assertEqual(cache.bytes, b.size)
        self.assertEqual(ids(self.store.deleted), ids([a.body]))


class StatsTests(SynchronousTestCase, CacheTestMixin):
    """
    L{ResponseCache.stats}.
    """

    def test_empty(self) -> None:
        """
        A new cache's stats are all zero, under the keys C{GET /stats}
        shows.
        """
        self.assertEqual(
            self.makeCache().stats(),
            {
                "entries": 0,
                "bytes": 0,
                "hits": 0,
                "misses": 0,
                "stale": 0,
                "coalesced": 0,
                "evictions": 0,
            },
        )

    def test_counts(self) -> None:
        """
        The stats follow the cache's entries, bytes and counters.
        """
        cache = self.makeCache(max_404_entries=1)
        fetch = FakeFetch()
        cache.fill("GET:/a", fetch)
        cache.fill("GET:/a", fetch)
        a = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(a))
        self.put(cache, self.makeEntry("GET:/gone", not_found=True))
        gone = self.makeEntry("GET:/gone2", not_found=True)
        self.put(cache, gone)
        cache.hits += 4
        cache.stale += 1
        self.assertEqual(
            cache.stats(),
            {
                "entries": 2,
                "bytes": a.size + gone.size,
                "hits": 4,
                "misses": 3,
                "stale": 1,
                "coalesced": 1,
                "evictions": 1,
            },
        )
