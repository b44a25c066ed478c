"""
Tests for L{phantom_frame.cache.partial}: Content-Range parsing, strong
validators, merging, coverage, slicing and combining of parts.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import ENTRY_OVERHEAD
from phantom_frame.cache.partial import (
    PartialEntry,
    covers,
    held,
    if_range_matches,
    merge,
    parse_content_range,
    single_range,
    slice_parts,
    strong_validator,
)
from tests.cache.support import NO_HEADERS, CacheTestMixin

BODY = bytes(range(256)) * 4


def partial(length: int = len(BODY), validator=("etag", b'"v1"'), key: str = "k") -> PartialEntry:
    """
    @return: an empty partial entry of C{length} bytes.
    """
    return PartialEntry(
        key=key,
        length=length,
        validator=validator,
        headers=((b"Content-Type", b"video/mp4"),),
        etag=b'"v1"',
        last_modified=None,
        stored_at=100.0,
    )


class ContentRangeTests(SynchronousTestCase):
    """
    L{parse_content_range}.
    """

    def test_valid(self) -> None:
        """
        C{bytes a-b/N} gives C{(a, b, N)}, whatever the case and spaces.
        """
        self.assertEqual(parse_content_range(b"bytes 0-99/1000"), (0, 99, 1000))
        self.assertEqual(parse_content_range(b" Bytes 10-10/11 "), (10, 10, 11))

    def test_invalid(self) -> None:
        """
        An unknown complete length, an unsatisfied range, a range past the
        length, a reversed range, another unit or garbage give L{None}.
        """
        for value in (
            None,
            b"",
            b"bytes 0-99/*",
            b"bytes */1000",
            b"bytes 0-1000/1000",
            b"bytes 9-3/1000",
            b"items 0-1/2",
            b"bytes 0-1",
            b"bytes a-b/c",
        ):
            self.assertIsNone(parse_content_range(value), value)


class SingleRangeTests(SynchronousTestCase):
    """
    L{single_range}.
    """

    def test_single(self) -> None:
        """
        C{bytes=a-b}, C{bytes=a-} and C{bytes=-n} are single ranges.
        """
        for value in (b"bytes=0-99", b"bytes=100-", b"bytes=-500", b"bytes = 5-9"):
            self.assertTrue(single_range(value), value)

    def test_not_single(self) -> None:
        """
        Several ranges, another unit, a reversed range and garbage are not.
        """
        for value in (None, b"", b"bytes=0-1,5-9", b"items=0-1", b"bytes=9-3", b"bytes=x-"):
            self.assertFalse(single_range(value), value)


class ValidatorTests(SynchronousTestCase):
    """
    L{strong_validator}.
    """

    def test_strong_etag(self) -> None:
        """
        A strong entity-tag is the validator, before C{Last-Modified}.
        """
        self.assertEqual(strong_validator(b'"a"', b"Mon"), ("etag", b'"a"'))

    def test_weak_etag(self) -> None:
        """
        A weak entity-tag is no validator: C{Last-Modified} is, or none.
        """
        self.assertEqual(strong_validator(b'W/"a"', b"Mon"), ("last-modified", b"Mon"))
        self.assertIsNone(strong_validator(b'W/"a"', None))
        self.assertIsNone(strong_validator(None, None))


class IfRangeTests(SynchronousTestCase):
    """
    L{if_range_matches}.
    """

    DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"

    def test_etag(self) -> None:
        """
        An entity-tag matches by strong comparison only.
        """
        self.assertTrue(if_range_matches(b' "v1" ', b'"v1"', None))
        self.assertFalse(if_range_matches(b'"v2"', b'"v1"', None))
        self.assertFalse(if_range_matches(b'W/"v1"', b'"v1"', None))
        self.assertFalse(if_range_matches(b'"v1"', b'W/"v1"', None))
        self.assertFalse(if_range_matches(b'"v1"', None, self.DATE))

    def test_date(self) -> None:
        """
        A date matches an equal C{Last-Modified} only.
        """
        self.assertTrue(if_range_matches(self.DATE, None, self.DATE))
        self.assertFalse(if_range_matches(b"Sun, 06 Nov 1994 08:49:38 GMT", None, self.DATE))
        self.assertFalse(if_range_matches(self.DATE, b'"v1"', None))
        self.assertFalse(if_range_matches(b"garbage", None, self.DATE))


class MergeTests(SynchronousTestCase):
    """
    L{merge}, L{covers}, L{slice_parts} and L{held}.
    """

    def test_disjoint(self) -> None:
        """
        Parts apart from each other stay apart, sorted by offset.
        """
        parts = merge([], 100, BODY[100:200])
        parts = merge(parts, 0, BODY[0:50])
        self.assertEqual(parts, [(0, BODY[0:50]), (100, BODY[100:200])])
        self.assertEqual(held(parts), 150)

    def test_touching(self) -> None:
        """
        A part that ends where another starts is merged with it.
        """
        parts = merge([(0, BODY[0:50])], 50, BODY[50:100])
        self.assertEqual(parts, [(0, BODY[0:100])])

    def test_overlapping(self) -> None:
        """
        Overlapping parts are merged, the bytes of both kept.
        """
        parts = merge([(10, BODY[10:60])], 40, BODY[40:90])
        self.assertEqual(parts, [(10, BODY[10:90])])
        parts = merge(parts, 0, BODY[0:20])
        self.assertEqual(parts, [(0, BODY[0:90])])

    def test_bridging(self) -> None:
        """
        A part between two others merges all three; one inside another
        changes nothing but its bytes.
        """
        parts = merge([(0, BODY[0:10]), (20, BODY[20:30]), (50, BODY[50:60])], 10, BODY[10:20])
        self.assertEqual(parts, [(0, BODY[0:30]), (50, BODY[50:60])])
        self.assertEqual(merge(parts, 5, BODY[5:8]), parts)

    def test_spanning(self) -> None:
        """
        A part covering several others swallows them.
        """
        parts = merge([(5, BODY[5:10]), (20, BODY[20:30])], 0, BODY[0:40])
        self.assertEqual(parts, [(0, BODY[0:40])])

    def test_newer_bytes_win(self) -> None:
        """
        Where parts overlap, the newer part's bytes are kept.
        """
        parts = merge([(0, b"aaaaaaaaaa")], 3, b"bbb")
        self.assertEqual(parts, [(0, b"aaabbbaaaa")])

    def test_empty(self) -> None:
        """
        An empty part adds nothing.
        """
        self.assertEqual(merge([(0, b"ab")], 10, b""), [(0, b"ab")])

    def test_covers_and_slice(self) -> None:
        """
        A range is covered when one part holds all of it, and its bytes are
        sliced from that part; a range across a gap is not covered.
        """
        parts = [(0, BODY[0:10]), (20, BODY[20:30])]
        self.assertTrue(covers(parts, 0, 9))
        self.assertTrue(covers(parts, 22, 29))
        self.assertFalse(covers(parts, 5, 25))
        self.assertFalse(covers(parts, 25, 30))
        self.assertFalse(covers([], 0, 0))
        self.assertEqual(slice_parts(parts, 22, 25), BODY[22:26])
        self.assertRaises(ValueError, slice_parts, parts, 5, 25)


class PartialEntryTests(SynchronousTestCase):
    """
    L{PartialEntry}.
    """

    def test_size(self) -> None:
        """
        An entry is accounted its parts, headers, key and the overhead.
        """
        entry = partial()
        base = len(b"Content-Type") + len(b"video/mp4") + len("k") + ENTRY_OVERHEAD
        self.assertEqual(entry.size, base)
        entry.parts = merge(entry.parts, 0, BODY[:100])
        entry.resize()
        self.assertEqual((entry.size, entry.held), (base + 100, 100))

    def test_complete(self) -> None:
        """
        Parts that cover 0 to N-1 combine into the whole representation.
        """
        entry = partial()
        entry.parts = merge(entry.parts, 0, BODY[:500])
        self.assertFalse(entry.complete)
        self.assertRaises(ValueError, entry.combined)
        entry.parts = merge(entry.parts, 600, BODY[600:])
        self.assertFalse(entry.complete)
        entry.parts = merge(entry.parts, 500, BODY[500:600])
        self.assertTrue(entry.complete)
        self.assertEqual(entry.combined(), BODY)

    def test_covers_and_slice(self) -> None:
        """
        An entry answers the ranges its parts cover.
        """
        entry = partial()
        entry.parts = merge(entry.parts, 100, BODY[100:200])
        self.assertTrue(entry.covers(150, 199))
        self.assertFalse(entry.covers(150, 200))
        self.assertEqual(entry.slice(150, 160), BODY[150:161])

    def test_same_representation(self) -> None:
        """
        Parts combine only with the same validator and complete length.
        """
        self.assertTrue(partial().same_representation(partial()))
        self.assertFalse(partial().same_representation(partial(validator=("etag", b'"v2"'))))
        self.assertFalse(partial().same_representation(partial(length=5)))

    def test_age(self) -> None:
        """
        Its age is its initial age plus the time it has been held.
        """
        entry = partial()
        entry.initial_age = 5.0
        self.assertEqual(entry.age(110.0), 15.0)
        self.assertEqual(entry.age(50.0), 5.0)


class PartialStorageTests(SynchronousTestCase, CacheTestMixin):
    """
    Partial entries held by a L{ResponseCache}: merging, replacing, bounds,
    eviction and invalidation.
    """

    def test_add_and_merge(self) -> None:
        """
        Parts of the same representation merge into one partial entry, whose
        size counts in the cache's bytes; it takes the latest part's headers.
        """
        cache = self.makeCache()
        first = cache.add_part(partial(), 0, BODY[:100], 1000)
        later = partial()
        later.headers = ((b"Content-Type", b"video/webm"),)
        second = cache.add_part(later, 100, BODY[100:300], 1000)
        self.assertIs(cache.partial("k"), second)
        self.assertIsNot(first, second)
        self.assertEqual(second.parts, [(0, BODY[:300])])
        self.assertEqual(second.headers, ((b"Content-Type", b"video/webm"),))
        self.assertEqual(cache.bytes, second.size)
        self.assertEqual(cache.partial_count, 1)

    def test_other_representation_replaces(self) -> None:
        """
        A part with another validator replaces the stored parts.
        """
        cache = self.makeCache()
        cache.add_part(partial(), 0, BODY[:100], 1000)
        stored = cache.add_part(partial(validator=("etag", b'"v2"')), 500, BODY[500:600], 1000)
        self.assertEqual(stored.parts, [(500, BODY[500:600])])
        self.assertEqual(cache.bytes, stored.size)

    def test_bound(self) -> None:
        """
        Parts beyond the bound of one entry are not stored; what was stored
        stays.
        """
        cache = self.makeCache()
        kept = cache.add_part(partial(), 0, BODY[:600], 1000)
        self.assertIsNone(cache.add_part(partial(), 600, BODY[600:], 1000))
        self.assertIs(cache.partial("k"), kept)
        self.assertEqual(kept.parts, [(0, BODY[:600])])
        self.assertIsNone(cache.add_part(partial(key="big"), 0, BODY, 1000))
        self.assertIsNone(cache.partial("big"))

    def test_larger_than_cache(self) -> None:
        """
        A partial entry larger than the cache's byte bound is not stored.
        """
        cache = self.makeCache(max_bytes=1000)
        self.assertIsNone(cache.add_part(partial(), 0, BODY, 1 << 20))
        self.assertEqual(cache.bytes, 0)

    def test_evicts_lru(self) -> None:
        """
        Parts count against the byte bound: storing them evicts the least
        recently used partial entries first, then entries.
        """
        cache = self.makeCache(max_bytes=2 * (ENTRY_OVERHEAD + 400))
        entry = self.makeEntry("e", b"x" * 300)
        self.put(cache, entry)
        cache.add_part(partial(key="a"), 0, BODY[:300], 1 << 20)
        self.assertIsNotNone(cache.partial("a"))
        cache.add_part(partial(key="b"), 0, BODY[:300], 1 << 20)
        self.assertIsNone(cache.partial("a"))
        self.assertIsNotNone(cache.partial("b"))
        self.assertIs(cache.lookup("e", NO_HEADERS), entry)
        cache.add_part(partial(key="b"), 300, BODY[300:700], 1 << 20)
        self.assertIsNone(cache.lookup("e", NO_HEADERS))
        self.assertEqual(cache.bytes, cache.partial("b").size)
        self.assertLessEqual(cache.bytes, 2 * (ENTRY_OVERHEAD + 400))
        self.assertEqual(cache.evictions, 2)

    def test_entry_evicts_partials_first(self) -> None:
        """
        An entry that needs room evicts partial entries before entries.
        """
        cache = self.makeCache(max_bytes=2 * (ENTRY_OVERHEAD + 400))
        old = self.makeEntry("old", b"x" * 300)
        self.put(cache, old)
        cache.add_part(partial(key="p"), 0, BODY[:300], 1 << 20)
        self.put(cache, self.makeEntry("new", b"y" * 300))
        self.assertIsNone(cache.partial("p"))
        self.assertIs(cache.lookup("old", NO_HEADERS), old)

    def test_entry_replaces_partial(self) -> None:
        """
        A complete entry stored under a key drops its partial entry.
        """
        cache = self.makeCache()
        cache.add_part(partial(), 0, BODY[:100], 1000)
        entry = self.makeEntry("k")
        self.put(cache, entry)
        self.assertIsNone(cache.partial("k"))
        self.assertEqual(cache.bytes, entry.size)

    def test_invalidation(self) -> None:
        """
        Invalidation by pattern, of everything, or of one key drops the
        matching partial entries and counts them.
        """
        cache = self.makeCache()
        for key in ("GET:/v/a", "GET:/v/b", "GET:/w"):
            cache.add_part(partial(key=key), 0, BODY[:10], 1000)
        self.assertEqual(cache.invalidate("GET:/v/*"), 2)
        self.assertEqual(cache.partial_count, 1)
        self.assertIsNotNone(cache.partial("GET:/w"))
        cache.drop("GET:/w")
        self.assertEqual((cache.partial_count, cache.bytes), (0, 0))
        cache.add_part(partial(key="GET:/x"), 0, BODY[:10], 1000)
        self.assertEqual(cache.invalidate_all(), 1)
        self.assertEqual((cache.partial_count, cache.bytes), (0, 0))
