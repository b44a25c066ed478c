"""
Tests for L{phantom_frame.cache.cache}.
"""

from __future__ import annotations

import gc
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.cache import (
    ENTRY_OVERHEAD,
    NOT_SHARED,
    CacheEntry,
    Exclusive,
    ResponseCache,
    Shared,
    _LRU,
    normalise,
    variant_of,
)
from phantom_frame.cache.patterns import PatternError
from phantom_frame.cache.store import MemoryStore, StoredBody

Lookup = Callable[[str], Optional[str]]


class RecordingStore(MemoryStore):
    """
    A L{MemoryStore} that records what it is asked to delete and whether it
    was closed.

    @ivar deleted: the L{StoredBody} values passed to L{delete}, in order.
    @ivar events: a shared log; C{delete} appends C{("delete", body)}.
    @ivar closed: whether L{close} was called.
    """

    def __init__(self, events: Optional[List[Any]] = None) -> None:
        """
        @param events: a list to log deletions to, shared with the test.
        """
        self.deleted: List[StoredBody] = []
        self.events: List[Any] = events if events is not None else []
        self.closed = False

    def delete(self, stored: StoredBody) -> None:
        """
        Record the deletion.

        @param stored: what was deleted.
        """
        self.deleted.append(stored)
        self.events.append(("delete", stored))

    def close(self) -> None:
        """
        Record the close.
        """
        self.closed = True


class FakeFetch:
    """
    A fill's fetch: each call returns a new unfired L{Deferred} whose
    canceller is recorded.

    @ivar calls: the Deferreds returned, one per call.
    @ivar cancelled: the Deferreds whose canceller ran.
    """

    def __init__(self) -> None:
        """
        Start with no calls.
        """
        self.calls: List[Deferred[Any]] = []
        self.cancelled: List[Deferred[Any]] = []

    def __call__(self) -> Deferred[Any]:
        """
        @return: a new unfired Deferred.
        """
        d: Deferred[Any] = Deferred(self.cancelled.append)
        self.calls.append(d)
        return d


def headers(**values: str) -> Lookup:
    """
    @param values: request header values by lower-cased name, with C{_} for
        C{-}.
    @return: a header look-up function as L{ResponseCache.lookup} takes.
    """
    table = {name.replace("_", "-"): value for name, value in values.items()}
    return table.get


NO_HEADERS: Lookup = headers()


def ids(bodies: List[StoredBody]) -> List[int]:
    """
    @return: the identities of C{bodies}, to compare them as objects.
    """
    return [id(b) for b in bodies]


class CacheTestMixin:
    """
    Makes caches and entries for the tests.
    """

    clock: Clock
    store: RecordingStore

    def makeCache(
        self, max_bytes: int = 1 << 20, max_404_entries: int = 100, max_variants: int = 16
    ) -> ResponseCache:
        """
        @return: a L{ResponseCache} on a L{RecordingStore} and a L{Clock},
            both kept as C{self.store} and C{self.clock}.
        """
        self.clock = Clock()
        self.store = RecordingStore()
        return ResponseCache(
            "site", self.store, self.clock, max_bytes, max_404_entries, max_variants
        )

    def makeEntry(
        self,
        key: str,
        body: bytes = b"x" * 100,
        headers: Tuple[Tuple[bytes, bytes], ...] = (),
        vary: Tuple[str, ...] = (),
        variant: Tuple[Optional[str], ...] = (),
        not_found: bool = False,
    ) -> CacheEntry:
        """
        @return: an entry for C{key} holding C{body} in memory, stored now.
        """
        return CacheEntry(
            key=key,
            status=404 if not_found else 200,
            phrase=b"Not Found" if not_found else b"OK",
            headers=headers,
            coding="identity",
            body=StoredBody(len(body), body, None),
            identity_length=len(body),
            stored_at=self.clock.seconds() if hasattr(self, "clock") else 0.0,
            vary=vary,
            variant=variant,
            not_found=not_found,
        )

    def put(self, cache: ResponseCache, entry: CacheEntry) -> None:
        """
        Store C{entry} the way the proxy does: through a fill whose fetch
        succeeds at once with L{Shared}.
        """
        d, collapsed = cache.fill(entry.key, lambda: succeed(Shared(entry)))
        assert not collapsed
        assert d.called


def entrySize(key: str, body: int, headerBytes: int = 0) -> int:
    """
    @return: the accounted size of an entry.
    """
    return body + headerBytes + len(key) + ENTRY_OVERHEAD


class NormaliseTests(SynchronousTestCase):
    """
    Tests for L{normalise} and L{variant_of}.
    """

    def test_none(self) -> None:
        """
        A missing header stays L{None}, distinct from an empty one.
        """
        self.assertIsNone(normalise(None))
        self.assertEqual(normalise(""), "")

    def test_whitespace(self) -> None:
        """
        Whitespace around list items is dropped and runs of spaces inside an
        item become one space; case and item order are kept.
        """
        self.assertEqual(normalise("gzip ,  br"), "gzip,br")
        self.assertEqual(normalise("  en-GB,\tfr ;q=0.5 "), "en-GB,fr ;q=0.5")
        self.assertEqual(normalise("a   b"), "a b")
        self.assertEqual(normalise("B, a"), "B,a")

    def test_variantOf(self) -> None:
        """
        L{variant_of} gives the normalised value of each named header, in the
        order of the names, L{None} for those missing.
        """
        lookup = headers(accept_language="en , fr", x_mode="a  b")
        self.assertEqual(
            variant_of(("x-mode", "accept-language", "cookie"), lookup),
            ("a b", "en,fr", None),
        )
        self.assertEqual(variant_of((), lookup), ())


class CacheEntryTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{CacheEntry}.
    """

    def test_size(self) -> None:
        """
        An entry's size is its body's size plus the bytes of its header
        names and values, plus its key, plus L{ENTRY_OVERHEAD}.
        """
        entry = self.makeEntry(
            "GET:/a",
            body=b"x" * 10,
            headers=((b"Content-Type", b"text/html"), (b"X-A", b"1")),
        )
        self.assertEqual(entry.size, 10 + (12 + 9) + (3 + 1) + 6 + ENTRY_OVERHEAD)

    def test_sizeOfStoredBody(self) -> None:
        """
        The body's part of the size is the L{StoredBody}'s C{size}, whether
        or not its bytes are in memory (filesystem mode).
        """
        entry = CacheEntry(
            key="k",
            status=200,
            phrase=b"OK",
            headers=(),
            coding="br",
            body=StoredBody(1000, None, "/somewhere"),
            identity_length=5000,
            stored_at=0.0,
        )
        self.assertEqual(entry.size, 1000 + 1 + ENTRY_OVERHEAD)


class LRUTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for the internal L{_LRU}.
    """

    def test_putReplaces(self) -> None:
        """
        Putting an entry in an occupied slot returns the old entry and
        counts only the new one's bytes.
        """
        lru = _LRU(10_000)
        old = self.makeEntry("k", b"a" * 10)
        new = self.makeEntry("k", b"b" * 20)
        self.assertEqual(lru.put(old), [])
        self.assertEqual(lru.put(new), [old])
        self.assertEqual(lru.bytes, new.size)
        self.assertEqual(list(lru.entries.values()), [new])

    def test_evictsLeastRecentlyUsed(self) -> None:
        """
        When the bytes exceed the bound, the least recently used entries are
        evicted first; L{_LRU.get} makes an entry the most recently used.
        """
        a, b, c = (self.makeEntry(k) for k in "abc")
        lru = _LRU(a.size * 2)
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
        lru = _LRU(1 << 30, 2)
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
        lru = _LRU(a.size * 2)
        lru.put(a)
        lru.put(b)
        huge = self.makeEntry("a", b"h" * (a.size * 2))
        self.assertEqual(lru.put(huge), [a, huge])
        self.assertEqual(list(lru.entries.values()), [b])
        self.assertEqual(lru.bytes, b.size)

    def test_getMissing(self) -> None:
        """
        L{_LRU.get} of an empty slot is L{None}.
        """
        self.assertIsNone(_LRU(100).get(("k", ())))

    def test_popAndClear(self) -> None:
        """
        L{_LRU.pop} removes one entry and its bytes (L{None} for an empty
        slot); L{_LRU.clear} removes all and returns them.
        """
        a, b = self.makeEntry("a"), self.makeEntry("b")
        lru = _LRU(1 << 20)
        lru.put(a)
        lru.put(b)
        self.assertIs(lru.pop(("a", ())), a)
        self.assertIsNone(lru.pop(("a", ())))
        self.assertEqual(lru.bytes, b.size)
        self.assertEqual(lru.clear(), [b])
        self.assertEqual(lru.bytes, 0)
        self.assertEqual(len(lru.entries), 0)


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
        self.assertNotIn("GET:/a", cache._variants)
        self.assertNotIn("GET:/a", cache._vary)

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


class VaryTests(SynchronousTestCase, CacheTestMixin):
    """
    C{Vary} variants in L{ResponseCache}.
    """

    def variant(
        self, key: str, language: Optional[str], body: bytes = b"v"
    ) -> CacheEntry:
        """
        @return: an entry for C{key} varying on C{Accept-Language}.
        """
        return self.makeEntry(
            key,
            body,
            vary=("accept-language",),
            variant=(normalise(language),),
        )

    def test_matching(self) -> None:
        """
        An entry with C{vary} names is found only by requests whose
        normalised values of those headers equal the entry's variant; a
        missing header is a variant of its own.
        """
        cache = self.makeCache()
        en = self.makeEntry(
            "GET:/a",
            vary=("accept-language", "x-mode"),
            variant=(normalise("en , fr"), None),
        )
        self.put(cache, en)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en,fr")), en)
        self.assertIs(
            cache.lookup("GET:/a", headers(accept_language="  en ,   fr ")), en
        )
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="fr,en")))
        self.assertIsNone(
            cache.lookup("GET:/a", headers(accept_language="en,fr", x_mode="1"))
        )
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))

    def test_missingHeaderVariant(self) -> None:
        """
        A variant stored for requests without the header is found by those
        and not by requests with an empty header.
        """
        cache = self.makeCache()
        none = self.variant("GET:/a", None)
        self.put(cache, none)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), none)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="")))

    def test_severalVariants(self) -> None:
        """
        Variants of one key live side by side, each counted.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), en)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, en.size + fr.size)

    def test_sameVariantReplaced(self) -> None:
        """
        A new entry for an existing variant replaces it and its body.
        """
        cache = self.makeCache()
        old, new = self.variant("GET:/a", "en", b"old"), self.variant("GET:/a", "en", b"new")
        self.put(cache, old)
        self.put(cache, new)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), new)
        self.assertEqual(cache.entry_count, 1)
        self.assertEqual(ids(self.store.deleted), ids([old.body]))

    def test_maxVariants(self) -> None:
        """
        A key holds at most C{max_variants} variants; storing one more drops
        the oldest stored, and its body.
        """
        cache = self.makeCache(max_variants=2)
        en, fr, de = (self.variant("GET:/a", lang, lang.encode()) for lang in ("en", "fr", "de"))
        self.put(cache, en)
        self.put(cache, fr)
        self.put(cache, de)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="en")))
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="de")), de)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, fr.size + de.size)
        self.assertEqual(ids(self.store.deleted), ids([en.body]))

    def test_maxVariantsRestoredIsNewest(self) -> None:
        """
        Storing a variant again makes it the newest, so the next drop takes
        another one.
        """
        cache = self.makeCache(max_variants=2)
        self.put(cache, self.variant("GET:/a", "en"))
        self.put(cache, self.variant("GET:/a", "fr"))
        en = self.variant("GET:/a", "en", b"again")
        self.put(cache, en)
        self.put(cache, self.variant("GET:/a", "de"))
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), en)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="fr")))

    def test_maxVariantsPerKey(self) -> None:
        """
        The variant bound is per key: other keys keep theirs.
        """
        cache = self.makeCache(max_variants=1)
        a = self.variant("GET:/a", "en")
        b = self.variant("GET:/b", "fr")
        self.put(cache, a)
        self.put(cache, b)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), a)
        self.assertIs(cache.lookup("GET:/b", headers(accept_language="fr")), b)

    def test_newVaryNames(self) -> None:
        """
        A response varying on other headers replaces every variant of the
        key: they are gone with their bodies, and lookups use the new names.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        mobile = self.makeEntry(
            "GET:/a", b"m", vary=("x-device",), variant=("mobile",)
        )
        self.put(cache, mobile)
        self.assertEqual(list(cache.entries()), [mobile])
        self.assertEqual(cache.bytes, mobile.size)
        self.assertEqual(
            sorted(ids(self.store.deleted)), sorted(ids([en.body, fr.body]))
        )
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="en")))
        self.assertIs(
            cache.lookup("GET:/a", headers(accept_language="en", x_device="mobile")),
            mobile,
        )

    def test_varyReplacesPlain(self) -> None:
        """
        A response with C{vary} names replaces an entry of the key that had
        none.
        """
        cache = self.makeCache()
        plain = self.makeEntry("GET:/a", b"plain")
        en = self.variant("GET:/a", "en")
        self.put(cache, plain)
        self.put(cache, en)
        self.assertEqual(list(cache.entries()), [en])
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertEqual(ids(self.store.deleted), ids([plain.body]))

    def test_plainReplacesVary(self) -> None:
        """
        A response without C{vary} names replaces every variant of the key,
        and is then found whatever the request headers.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        plain = self.makeEntry("GET:/a", b"plain")
        self.put(cache, plain)
        self.assertEqual(list(cache.entries()), [plain])
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), plain)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), plain)
        self.assertEqual(
            sorted(ids(self.store.deleted)), sorted(ids([en.body, fr.body]))
        )

    def test_notFoundVariant(self) -> None:
        """
        Variants work in the 404 LRU too, and a variant moving between the
        LRUs leaves no copy behind.
        """
        cache = self.makeCache()
        en = self.variant("GET:/a", "en", b"en")
        gone = self.makeEntry(
            "GET:/a", b"gone", vary=("accept-language",), variant=("en",), not_found=True
        )
        fr = self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        self.put(cache, gone)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), gone)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(ids(self.store.deleted), ids([en.body]))

    def test_evictedVariantsForgotten(self) -> None:
        """
        When LRU eviction takes every variant of a key, the key's C{Vary}
        names are forgotten too.
        """
        en = self.variant("GET:/a", "en")
        cache = self.makeCache(max_bytes=en.size)
        self.put(cache, en)
        self.put(cache, self.makeEntry("GET:/b", b"v"))
        self.assertEqual(cache.evictions, 1)
        self.assertNotIn("GET:/a", cache._vary)
        self.assertNotIn("GET:/a", cache._variants)


class FillTests(SynchronousTestCase, CacheTestMixin):
    """
    Single-flight fills: L{ResponseCache.fill}.
    """

    def assertConsumed(self, fetching: Deferred[Any]) -> None:
        """
        Assert that a fetch's Deferred has fired and its result, a failure
        included, was consumed: nothing is left to log as unhandled.
        """
        self.assertIsNone(self.successResultOf(fetching))

    def test_collapsed(self) -> None:
        """
        Concurrent fills of one key make one fetch call; the first caller is
        not collapsed and the others are, counted in C{misses} and
        C{coalesced}.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        results = [cache.fill("GET:/a", fetch) for _ in range(3)]
        self.assertEqual(len(fetch.calls), 1)
        self.assertEqual([collapsed for _, collapsed in results], [False, True, True])
        self.assertEqual((cache.misses, cache.coalesced), (1, 2))
        for d, _ in results:
            self.assertNoResult(d)

    def test_otherKeys(self) -> None:
        """
        Fills of different keys do not share a fetch.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        _, a = cache.fill("GET:/a", fetch)
        _, b = cache.fill("GET:/b", fetch)
        self.assertEqual(len(fetch.calls), 2)
        self.assertEqual((a, b), (False, False))
        self.assertEqual((cache.misses, cache.coalesced), (2, 0))

    def test_shared(self) -> None:
        """
        A L{Shared} result is stored, found by lookups afterwards, and given
        to every waiter.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        ds = [cache.fill("GET:/a", fetch)[0] for _ in range(3)]
        entry = self.makeEntry("GET:/a")
        shared = Shared(entry)
        fetch.calls[0].callback(shared)
        for d in ds:
            self.assertIs(self.successResultOf(d), shared)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), entry)
        self.assertEqual(self.store.deleted, [])
        self.assertConsumed(fetch.calls[0])

    def test_storedBeforeWaiters(self) -> None:
        """
        The entry is stored before waiters are called, so a waiter looking
        the key up finds it.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/a", fetch)
        found: List[Optional[CacheEntry]] = []
        d.addCallback(lambda _: found.append(cache.lookup("GET:/a", NO_HEADERS)))
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(found, [entry])

    def test_exclusive(self) -> None:
        """
        An L{Exclusive} result goes to the first waiter only; the others get
        L{NOT_SHARED}. Nothing is stored and C{release} is not called.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        ds = [cache.fill("GET:/a", fetch)[0] for _ in range(3)]
        released: List[bool] = []
        exclusive = Exclusive("stream", "size", lambda: released.append(True))
        fetch.calls[0].callback(exclusive)
        self.assertIs(self.successResultOf(ds[0]), exclusive)
        self.assertIs(self.successResultOf(ds[1]), NOT_SHARED)
        self.assertIs(self.successResultOf(ds[2]), NOT_SHARED)
        self.assertEqual(released, [])
        self.assertEqual(cache.entry_count, 0)
        self.assertConsumed(fetch.calls[0])

    def test_exclusiveFirstStillWaiting(self) -> None:
        """
        When the first waiter has gone, the L{Exclusive} value goes to the
        first one still waiting.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        first, _ = cache.fill("GET:/a", fetch)
        second, _ = cache.fill("GET:/a", fetch)
        third, _ = cache.fill("GET:/a", fetch)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        exclusive = Exclusive("stream", "private")
        fetch.calls[0].callback(exclusive)
        self.assertIs(self.successResultOf(second), exclusive)
        self.assertIs(self.successResultOf(third), NOT_SHARED)

    def test_exclusiveReleased(self) -> None:
        """
        An L{Exclusive} result nobody waits for any more is released: here
        the fetch answers its cancellation with one.
        """
        cache = self.makeCache()
        released: List[bool] = []
        exclusive = Exclusive("stream", "size", lambda: released.append(True))
        fetching: Deferred[Any] = Deferred(lambda d: d.callback(exclusive))
        d, _ = cache.fill("GET:/a", lambda: fetching)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(released, [True])
        self.assertConsumed(fetching)

    def test_failure(self) -> None:
        """
        A failed fetch fails every waiter, each with a L{Failure} of its own
        holding the same exception; the fetch's failure is consumed.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        ds = [cache.fill("GET:/a", fetch)[0] for _ in range(3)]
        error = ValueError("origin down")
        fetch.calls[0].errback(error)
        failures = [self.failureResultOf(d, ValueError) for d in ds]
        for failure in failures:
            self.assertIs(failure.value, error)
        self.assertEqual(len({id(f) for f in failures}), 3)
        self.assertConsumed(fetch.calls[0])
        self.assertEqual(cache.entry_count, 0)
        del ds, failures
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failureFreesKey(self) -> None:
        """
        After a failed fetch the next fill of the key starts a new one.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/a", fetch)
        fetch.calls[0].errback(ValueError())
        self.failureResultOf(d, ValueError)
        d2, collapsed = cache.fill("GET:/a", fetch)
        self.assertFalse(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        self.assertNoResult(d2)

    def test_fetchRaises(self) -> None:
        """
        A fetch that raises at once fails its waiter with that exception and
        leaves the key free.
        """
        cache = self.makeCache()
        calls: List[bool] = []

        def fetch() -> Deferred[Any]:
            """
            Count the call, then fail at once.
            """
            calls.append(True)
            raise ZeroDivisionError("bad")

        d, collapsed = cache.fill("GET:/a", fetch)
        self.assertFalse(collapsed)
        self.failureResultOf(d, ZeroDivisionError)
        d2, collapsed = cache.fill("GET:/a", fetch)
        self.assertFalse(collapsed)
        self.assertEqual(len(calls), 2)
        self.failureResultOf(d2, ZeroDivisionError)

    def test_fetchFiredAlready(self) -> None:
        """
        A fetch returning a fired Deferred answers its caller at once.
        """
        cache = self.makeCache()
        entry = self.makeEntry("GET:/a")
        d, collapsed = cache.fill("GET:/a", lambda: succeed(Shared(entry)))
        self.assertFalse(collapsed)
        self.assertEqual(self.successResultOf(d), Shared(entry))
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), entry)

    def test_cancelOne(self) -> None:
        """
        Cancelling one waiter fails it with L{CancelledError} and leaves the
        fetch and the other waiters alone.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        first, _ = cache.fill("GET:/a", fetch)
        second, _ = cache.fill("GET:/a", fetch)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(fetch.cancelled, [])
        self.assertNoResult(second)
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(self.successResultOf(second), Shared(entry))
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), entry)

    def test_cancelLast(self) -> None:
        """
        Cancelling the last waiter cancels the fetch, and frees the key: the
        next fill starts a new fetch.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        first, _ = cache.fill("GET:/a", fetch)
        second, _ = cache.fill("GET:/a", fetch)
        first.cancel()
        second.cancel()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, CancelledError)
        self.assertEqual(fetch.cancelled, [fetch.calls[0]])
        self.assertConsumed(fetch.calls[0])
        third, collapsed = cache.fill("GET:/a", fetch)
        self.assertFalse(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        self.assertEqual(cache.misses, 2)
        self.assertNoResult(third)
        self.assertEqual(fetch.cancelled, [fetch.calls[0]])

    def test_cancelAfterResult(self) -> None:
        """
        Cancelling a waiter that already has its result changes nothing.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/a", fetch)
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        d.cancel()
        self.assertEqual(self.successResultOf(d), Shared(entry))
        self.assertEqual(fetch.cancelled, [])

    def test_cancelDuringFanOut(self) -> None:
        """
        A waiter cancelled by another waiter's callback while results are
        handed out gets L{CancelledError}, and the others still get the
        result.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        first, _ = cache.fill("GET:/a", fetch)
        second, _ = cache.fill("GET:/a", fetch)
        third, _ = cache.fill("GET:/a", fetch)
        first.addCallback(lambda result: second.cancel() or result)
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(self.successResultOf(first), Shared(entry))
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.successResultOf(third), Shared(entry))
        self.assertConsumed(fetch.calls[0])

    def test_newFetchAfterFinish(self) -> None:
        """
        Once a fill has finished, a new fill of the key starts a new fetch.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        cache.fill("GET:/a", fetch)
        fetch.calls[0].callback(Exclusive("stream", "private"))
        d, collapsed = cache.fill("GET:/a", fetch)
        self.assertFalse(collapsed)
        self.assertEqual(len(fetch.calls), 2)
        self.assertNoResult(d)

    def test_refillFromWaiter(self) -> None:
        """
        A waiter's callback that fills the same key again starts a new
        fetch rather than joining the finished one.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        d, _ = cache.fill("GET:/a", fetch)
        again: List[Tuple[Deferred[Any], bool]] = []
        d.addCallback(lambda _: again.append(cache.fill("GET:/a", fetch)))
        fetch.calls[0].callback(Exclusive("stream", "private"))
        self.assertEqual(len(fetch.calls), 2)
        [(d2, collapsed)] = again
        self.assertFalse(collapsed)
        self.assertNoResult(d2)


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
