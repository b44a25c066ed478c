"""
Tests for L{phantom_frame.cache.lru}: the L{LRU} itself, and the bounds a
L{ResponseCache} keeps with its main and 404 LRUs.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import ENTRY_OVERHEAD
from phantom_frame.cache.lock import Shared
from phantom_frame.cache.lru import LRU
from tests.cache.support import NO_HEADERS, CacheTestMixin, FakeFetch, entrySize, ids


class LRUTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{LRU}.
    """

    def test_putReplaces(self) -> None:
        """
        Putting an entry in an occupied slot returns the old entry and
        counts only the new one's bytes.
        """
        lru = LRU(10_000)
        old = self.makeEntry("k", b"a" * 10)
        new = self.makeEntry("k", b"b" * 20)
        self.assertEqual(lru.put(old), [])
        self.assertEqual(lru.put(new), [old])
        self.assertEqual(lru.bytes, new.size)
        self.assertEqual(list(lru.entries.values()), [new])

    def test_evictsLeastRecentlyUsed(self) -> None:
        """
        When the bytes exceed the bound, the least recently used entries are
        evicted first; L{LRU.get} makes an entry the most recently used.
        """
        a, b, c = (self.makeEntry(k) for k in "abc")
        lru = LRU(a.size * 2)
        lru.put(a)
        lru.put(b)
        self.assertIs(lru.get(("a", ())), a)
        self.assertEqual(lru.put(c), [b])
        self.assertEqual(list(lru.entries.values()), [a, c])
        self.assertEqual(lru.bytes, a.size + c.size)

    def test_maxEntries(self) -> None:
        """
        With a count bound, the oldest entry goes when the count is
        exceeded, whatever the bytes.
        """
        a, b, c = (self.makeEntry(k) for k in "abc")
        lru = LRU(1 << 30, 2)
        lru.put(a)
        lru.put(b)
        self.assertEqual(lru.put(c), [a])
        self.assertEqual(len(lru.entries), 2)

    def test_tooLarge(self) -> None:
        """
        An entry larger than the bound is not stored and evicts nothing; the
        entry it would have replaced is dropped, and both are returned.
        """
        a, b = self.makeEntry("a"), self.makeEntry("b")
        lru = LRU(a.size * 2)
        lru.put(a)
        lru.put(b)
        huge = self.makeEntry("a", b"h" * (a.size * 2))
        self.assertEqual(lru.put(huge), [a, huge])
        self.assertEqual(list(lru.entries.values()), [b])
        self.assertEqual(lru.bytes, b.size)

    def test_getMissing(self) -> None:
        """
        L{LRU.get} of an empty slot is L{None}.
        """
        self.assertIsNone(LRU(100).get(("k", ())))

    def test_popAndClear(self) -> None:
        """
        L{LRU.pop} removes one entry and its bytes (L{None} for an empty
        slot); L{LRU.clear} removes all and returns them.
        """
        a, b = self.makeEntry("a"), self.makeEntry("b")
        lru = LRU(1 << 20)
        lru.put(a)
        lru.put(b)
        self.assertIs(lru.pop(("a", ())), a)
        self.assertIsNone(lru.pop(("a", ())))
        self.assertEqual(lru.bytes, b.size)
        self.assertEqual(lru.clear(), [b])
        self.assertEqual(lru.bytes, 0)
        self.assertEqual(len(lru.entries), 0)


class LRUHelperTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{LRU.holds}, L{LRU.trim} and L{LRU.resized}.
    """

    def test_holds(self) -> None:
        """
        L{LRU.holds} is true of the entry in its slot only, not of another
        entry of the same slot, and does not make it recently used.
        """
        a, b = self.makeEntry("a"), self.makeEntry("b")
        lru = LRU(1 << 20)
        lru.put(a)
        lru.put(b)
        self.assertTrue(lru.holds(a))
        self.assertFalse(lru.holds(self.makeEntry("a")))
        self.assertEqual(list(lru.entries.values()), [a, b])

    def test_trim(self) -> None:
        """
        L{LRU.trim} evicts the least recently used entries until the rest
        fit the budget, and returns them; a budget met evicts nothing.
        """
        a, b, c = (self.makeEntry(k) for k in "abc")
        lru = LRU(1 << 20)
        for entry in (a, b, c):
            lru.put(entry)
        self.assertEqual(lru.trim(a.size * 3), [])
        self.assertEqual(lru.trim(a.size * 2 - 1), [a, b])
        self.assertEqual(list(lru.entries.values()), [c])
        self.assertEqual(lru.bytes, c.size)
        self.assertEqual(lru.trim(-1), [c])
        self.assertEqual(lru.bytes, 0)

    def test_resized(self) -> None:
        """
        L{LRU.resized} adds the change to C{bytes} for an entry held, and
        ignores an entry not held.
        """
        a = self.makeEntry("a")
        lru = LRU(1 << 20)
        lru.put(a)
        lru.resized(a, 7)
        lru.resized(self.makeEntry("a"), 100)
        self.assertEqual(lru.bytes, a.size + 7)


class AccountingTests(SynchronousTestCase, CacheTestMixin):
    """
    Byte and entry accounting, replacement and eviction in the main LRU of
    L{ResponseCache}.
    """

    def test_empty(self) -> None:
        """
        A new cache holds nothing and finds nothing.
        """
        cache = self.makeCache()
        self.assertEqual(cache.entry_count, 0)
        self.assertEqual(cache.bytes, 0)
        self.assertIsNone(cache.lookup("GET:/", NO_HEADERS))
        self.assertEqual(list(cache.entries()), [])

    def test_puts(self) -> None:
        """
        Each stored entry counts once in C{entry_count} and by its size in
        C{bytes}, and is found by L{ResponseCache.lookup}.
        """
        cache = self.makeCache()
        a = self.makeEntry("GET:/a", b"a" * 100, ((b"Content-Type", b"text/plain"),))
        b = self.makeEntry("GET:/b", b"b" * 50)
        self.put(cache, a)
        self.put(cache, b)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(
            cache.bytes,
            entrySize("GET:/a", 100, 12 + 10) + entrySize("GET:/b", 50),
        )
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.assertIs(cache.lookup("GET:/b", NO_HEADERS), b)
        self.assertEqual(list(cache.entries()), [a, b])
        self.assertEqual(self.store.deleted, [])

    def test_replace(self) -> None:
        """
        A new entry for a key replaces the old one: the old body is deleted
        from the store, bytes are not counted twice and the replacement is
        not an eviction.
        """
        cache = self.makeCache()
        old = self.makeEntry("GET:/a", b"a" * 100)
        new = self.makeEntry("GET:/a", b"b" * 300)
        self.put(cache, old)
        self.put(cache, new)
        self.assertEqual(cache.entry_count, 1)
        self.assertEqual(cache.bytes, new.size)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), new)
        self.assertEqual(ids(self.store.deleted), ids([old.body]))
        self.assertEqual(cache.evictions, 0)

    def test_evictsLeastRecentlyUsed(self) -> None:
        """
        When the bytes would exceed C{max_bytes}, the least recently stored
        entry is evicted, its body deleted and C{evictions} counted.
        """
        a, b, c = (self.makeEntry(f"GET:/{k}", k.encode() * 100) for k in "abc")
        cache = self.makeCache(max_bytes=a.size * 2)
        self.put(cache, a)
        self.put(cache, b)
        self.assertEqual(cache.evictions, 0)
        self.put(cache, c)
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/b", NO_HEADERS), b)
        self.assertIs(cache.lookup("GET:/c", NO_HEADERS), c)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, b.size + c.size)
        self.assertEqual(cache.evictions, 1)
        self.assertEqual(ids(self.store.deleted), ids([a.body]))

    def test_lookupRefreshes(self) -> None:
        """
        A lookup makes an entry the most recently used, so the next eviction
        takes another one.
        """
        a, b, c = (self.makeEntry(f"GET:/{k}", k.encode() * 100) for k in "abc")
        cache = self.makeCache(max_bytes=a.size * 2)
        self.put(cache, a)
        self.put(cache, b)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.put(cache, c)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.assertIsNone(cache.lookup("GET:/b", NO_HEADERS))
        self.assertEqual(ids(self.store.deleted), ids([b.body]))

    def test_evictsSeveral(self) -> None:
        """
        A large entry evicts as many old entries as it takes to fit, each
        counted in C{evictions}.
        """
        small = [self.makeEntry(f"GET:/{k}", b"s" * 10) for k in "abcd"]
        cache = self.makeCache(max_bytes=small[0].size * 4)
        for entry in small:
            self.put(cache, entry)
        big = self.makeEntry("GET:/e", b"b" * (small[0].size * 2))
        self.put(cache, big)
        self.assertEqual(cache.evictions, 3)
        self.assertEqual(ids(self.store.deleted), ids([e.body for e in small[:3]]))
        self.assertEqual(list(cache.entries()), [small[3], big])
        self.assertLessEqual(cache.bytes, small[0].size * 4)

    def test_sizeCountsHeadersAndKey(self) -> None:
        """
        Headers and the key count against C{max_bytes}: two entries whose
        bodies alone would fit do not when their headers are counted.
        """
        key = "GET:/a"
        fits = entrySize(key, 100) * 2
        cache = self.makeCache(max_bytes=fits)
        a = self.makeEntry("GET:/a", b"a" * 100, ((b"X", b"1"),))
        b = self.makeEntry("GET:/b", b"b" * 100)
        self.put(cache, a)
        self.put(cache, b)
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertEqual(cache.evictions, 1)

    def test_overhead(self) -> None:
        """
        Empty bodies still cost L{ENTRY_OVERHEAD} each, so a bound on bytes
        also bounds how many tiny entries are held.
        """
        cache = self.makeCache(max_bytes=(ENTRY_OVERHEAD + 9) * 3 + 8)
        for i in range(10):
            self.put(cache, self.makeEntry(f"GET:/{i:04d}", b""))
        self.assertEqual(cache.entry_count, 3)
        self.assertEqual(cache.bytes, (ENTRY_OVERHEAD + 9) * 3)
        self.assertEqual(cache.evictions, 7)

    def test_entryLargerThanCache(self) -> None:
        """
        An entry larger than C{max_bytes} is not stored and does not evict
        what is there; its waiters still get it, and its body is deleted
        only after they have.
        """
        a, b = (self.makeEntry(f"GET:/{k}", k.encode() * 100) for k in "ab")
        cache = self.makeCache(max_bytes=a.size * 2)
        self.put(cache, a)
        self.put(cache, b)
        huge = self.makeEntry("GET:/huge", b"h" * (a.size * 3))
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/huge", fetch)
        d.addCallback(lambda result: self.store.events.append(("served", result)))
        fetch.calls[0].callback(Shared(huge))
        self.assertEqual(list(cache.entries()), [a, b])
        self.assertEqual(cache.evictions, 0)
        self.assertIsNone(cache.lookup("GET:/huge", NO_HEADERS))
        self.assertEqual(
            self.store.events,
            [("served", Shared(huge)), ("delete", huge.body)],
        )

    def test_tooLargeReplacement(self) -> None:
        """
        An entry too large to store still drops the older entry of its key,
        which it supersedes, and leaves no C{Vary} variant tracked.
        """
        a = self.makeEntry("GET:/a", b"a" * 100, vary=("x-v",), variant=("1",))
        cache = self.makeCache(max_bytes=a.size * 2)
        self.put(cache, a)
        huge = self.makeEntry(
            "GET:/a", b"h" * (a.size * 2), vary=("x-v",), variant=("1",)
        )
        self.put(cache, huge)
        self.assertEqual(cache.entry_count, 0)
        self.assertEqual(cache.bytes, 0)
        self.assertEqual(ids(self.store.deleted), ids([a.body, huge.body]))
        self.assertNotIn("GET:/a", cache._variance)


class NotFoundTests(SynchronousTestCase, CacheTestMixin):
    """
    The 404 LRU of L{ResponseCache}.
    """

    def test_stored(self) -> None:
        """
        A C{not_found} entry is found by L{ResponseCache.lookup} and counts in
        C{entry_count} and C{bytes}.
        """
        cache = self.makeCache()
        a = self.makeEntry("GET:/a")
        missing = self.makeEntry("GET:/gone", b"nope", not_found=True)
        self.put(cache, a)
        self.put(cache, missing)
        self.assertIs(cache.lookup("GET:/gone", NO_HEADERS), missing)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, a.size + missing.size)
        self.assertEqual(list(cache.entries()), [a, missing])

    def test_totalBound(self) -> None:
        """
        Main and 404 entries together stay within C{max_bytes}: when 404s
        take their share, the main cache's oldest entries make room.
        """
        size = entrySize("GET:/m0", 1000)
        cache = self.makeCache(max_bytes=size * 8)
        mains = [self.makeEntry(f"GET:/m{i}", b"m" * 1000) for i in range(8)]
        for entry in mains:
            self.put(cache, entry)
        self.assertEqual(cache.entry_count, 8)
        gone = [self.makeEntry(f"GET:/g{i}", b"g" * 1000, not_found=True) for i in range(2)]
        for entry in gone:
            self.put(cache, entry)
        self.assertLessEqual(cache.bytes, size * 8)
        self.assertIsNone(cache.lookup("GET:/m0", NO_HEADERS))
        self.assertIsNone(cache.lookup("GET:/m1", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/m2", NO_HEADERS), mains[2])
        self.assertIs(cache.lookup("GET:/g1", NO_HEADERS), gone[1])
        self.assertEqual(cache.evictions, 2)
        self.assertEqual(ids(self.store.deleted), ids([mains[0].body, mains[1].body]))

    def test_boundedByCount(self) -> None:
        """
        The 404 LRU holds at most C{max_404_entries}; the least recently
        used goes first, counted as an eviction, its body deleted.
        """
        cache = self.makeCache(max_404_entries=2)
        a, b, c = (self.makeEntry(f"GET:/{k}", k.encode(), not_found=True) for k in "abc")
        self.put(cache, a)
        self.put(cache, b)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.put(cache, c)
        self.assertIsNone(cache.lookup("GET:/b", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.assertIs(cache.lookup("GET:/c", NO_HEADERS), c)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.evictions, 1)
        self.assertEqual(ids(self.store.deleted), ids([b.body]))

    def test_separateFromMain(self) -> None:
        """
        The 404 count bound does not evict main entries, and main entries do
        not count against it.
        """
        cache = self.makeCache(max_404_entries=1)
        mains = [self.makeEntry(f"GET:/{i}") for i in range(5)]
        for entry in mains:
            self.put(cache, entry)
        self.put(cache, self.makeEntry("GET:/x", not_found=True))
        self.put(cache, self.makeEntry("GET:/y", not_found=True))
        self.assertEqual(cache.entry_count, 6)
        for entry in mains:
            self.assertIs(cache.lookup(entry.key, NO_HEADERS), entry)

    def test_boundedByQuarterOfBytes(self) -> None:
        """
        The 404 LRU is also bounded by a quarter of C{max_bytes}.
        """
        a, b = (self.makeEntry(f"GET:/{k}", not_found=True) for k in "ab")
        cache = self.makeCache(max_bytes=a.size * 4 + 3, max_404_entries=100)
        self.put(cache, a)
        self.put(cache, b)
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/b", NO_HEADERS), b)
        self.assertEqual(cache.evictions, 1)

    def test_disabled(self) -> None:
        """
        With C{max_404_entries=0} nothing is found in the 404 LRU, and the
        main LRU still works.
        """
        cache = self.makeCache(max_404_entries=0)
        missing = self.makeEntry("GET:/gone", not_found=True)
        a = self.makeEntry("GET:/a")
        self.put(cache, missing)
        self.put(cache, a)
        self.assertIsNone(cache.lookup("GET:/gone", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), a)
        self.assertEqual(cache.entry_count, 1)
        self.assertEqual(cache.bytes, a.size)

    def test_notFoundDisabledBodyDeleted(self) -> None:
        """
        With the 404 LRU disabled, a 404 entry's body is deleted after its
        waiters had it.
        """
        cache = self.makeCache(max_404_entries=0)
        gone = self.makeEntry("GET:/gone", not_found=True)
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/gone", fetch)
        d.addCallback(lambda result: self.store.events.append(("served", result)))
        fetch.calls[0].callback(Shared(gone))
        self.assertEqual(
            self.store.events, [("served", Shared(gone)), ("delete", gone.body)]
        )
        self.assertEqual(cache.evictions, 0)

    def test_mainToNotFound(self) -> None:
        """
        A 404 for a key held in the main LRU replaces it: the main copy and
        its body are gone, and nothing is counted twice.
        """
        cache = self.makeCache()
        ok = self.makeEntry("GET:/a", b"ok")
        gone = self.makeEntry("GET:/a", b"gone", not_found=True)
        self.put(cache, ok)
        self.put(cache, gone)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), gone)
        self.assertEqual(list(cache.entries()), [gone])
        self.assertEqual(cache.bytes, gone.size)
        self.assertEqual(ids(self.store.deleted), ids([ok.body]))
        self.assertEqual(cache.evictions, 0)

    def test_notFoundToMain(self) -> None:
        """
        A stored answer for a key held in the 404 LRU replaces it: the 404
        copy and its body are gone.
        """
        cache = self.makeCache()
        gone = self.makeEntry("GET:/a", b"gone", not_found=True)
        ok = self.makeEntry("GET:/a", b"ok")
        self.put(cache, gone)
        self.put(cache, ok)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), ok)
        self.assertEqual(list(cache.entries()), [ok])
        self.assertEqual(cache.bytes, ok.size)
        self.assertEqual(ids(self.store.deleted), ids([gone.body]))

    def test_mainToNotFoundWhenDisabled(self) -> None:
        """
        Even with the 404 LRU disabled, a 404 for a key drops the main copy:
        no stale answer is left behind.
        """
        cache = self.makeCache(max_404_entries=0)
        ok = self.makeEntry("GET:/a", b"ok")
        gone = self.makeEntry("GET:/a", b"gone", not_found=True)
        self.put(cache, ok)
        self.put(cache, gone)
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertEqual(cache.entry_count, 0)
        self.assertEqual(cache.bytes, 0)
