"""
Tests for L{phantom_frame.cache.alternates} and the accounting of other
codings in L{phantom_frame.cache.responses.ResponseCache.add_coding}.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Callable, List

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.alternates import Alternates
from phantom_frame.cache.codec import Codec, encode
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import StoredBody
from phantom_frame.cache.threads import runInline
from tests.cache.support import NO_HEADERS, CacheTestMixin, ids

PAGE = b"<html>" + b"<p>alternate coding</p>" * 300 + b"</html>"


class HeldRunner:
    """
    A runner that holds every call until the test releases it.

    @ivar calls: the functions called, in order.
    """

    def __init__(self) -> None:
        """
        Nothing held yet.
        """
        self.calls: List[Callable[..., Any]] = []
        self._pending: List[Deferred] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        @return: a L{Deferred} firing with C{f(*args)} once released.
        """
        self.calls.append(f)
        d: Deferred = Deferred()
        d.addCallback(lambda _: f(*args))
        self._pending.append(d)
        return d

    def release(self) -> None:
        """
        Run every held call (and those they lead to).
        """
        while self._pending:
            self._pending.pop(0).callback(None)


class AlternatesTests(SynchronousTestCase, CacheTestMixin):
    """
    L{Alternates.body} gives a body in any coding, making other codings
    once and keeping them beside the entry.
    """

    def stored(self, cache: ResponseCache, key: str = "GET:/a", coding: str = "br", body: bytes = PAGE) -> CacheEntry:
        """
        @return: an entry of C{body} stored in C{coding}, held by C{cache}.
        """
        data = encode(body, coding)
        entry = self.makeEntry(key, data)
        entry.coding = coding
        entry.identity_length = len(body)
        self.put(cache, entry)
        return entry

    def test_stored_and_identity(self) -> None:
        """
        The stored coding is the stored bytes and identity the decoded
        body; neither is kept.
        """
        cache = self.makeCache()
        entry = self.stored(cache)
        alternates = Alternates(cache, Codec(runInline))
        self.assertIs(self.successResultOf(alternates.body(entry, "br")), entry.body.data)
        self.assertEqual(self.successResultOf(alternates.body(entry, "identity")), PAGE)
        self.assertIsNone(entry.alternates)
        self.assertEqual(alternates.made, 0)

    def test_made_once_and_counted(self) -> None:
        """
        Another coding is made from the stored body once, kept beside the
        entry and counted in its size and the cache's bytes; later asks get
        the kept bytes.
        """
        cache = self.makeCache()
        entry = self.stored(cache)
        size, total = entry.size, cache.bytes
        alternates = Alternates(cache, Codec(runInline))
        made = self.successResultOf(alternates.body(entry, "gzip"))
        self.assertEqual(gzip.decompress(made), PAGE)
        self.assertEqual(list(entry.alternates), ["gzip"])
        self.assertEqual(entry.size, size + len(made))
        self.assertEqual(cache.bytes, total + len(made))
        self.assertIs(self.successResultOf(alternates.body(entry, "gzip")), made)
        deflated = self.successResultOf(alternates.body(entry, "deflate"))
        self.assertEqual(zlib.decompress(deflated), PAGE)
        self.assertEqual(alternates.made, 2)
        self.assertEqual(cache.bytes, total + len(made) + len(deflated))

    def test_off_the_reactor_and_shared(self) -> None:
        """
        A large body is decoded and encoded through the runner; clients
        asking while it is made wait for that one making, and a client that
        goes away leaves it to the others.
        """
        cache = self.makeCache()
        entry = self.stored(cache)
        runner = HeldRunner()
        alternates = Alternates(cache, Codec(runner, threshold=16))
        first = alternates.body(entry, "gzip")
        second = alternates.body(entry, "gzip")
        gone = alternates.body(entry, "gzip")
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.assertNoResult(first)
        runner.release()
        self.assertEqual(len(runner.calls), 2)
        made = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), made)
        self.assertEqual(gzip.decompress(made), PAGE)
        self.assertEqual(alternates.made, 1)

    def test_not_kept_when_gone(self) -> None:
        """
        An entry invalidated while its coding was made does not keep it:
        the client still gets it, and its stored body is deleted.
        """
        cache = self.makeCache()
        entry = self.stored(cache)
        runner = HeldRunner()
        d = Alternates(cache, Codec(runner, threshold=16)).body(entry, "gzip")
        cache.invalidate_all()
        runner.release()
        self.assertEqual(gzip.decompress(self.successResultOf(d)), PAGE)
        self.assertIsNone(entry.alternates)
        self.assertEqual(len(self.store.deleted), 2)

    def test_forgotten_with_entry(self) -> None:
        """
        The codings kept beside an entry are deleted with it.
        """
        cache = self.makeCache()
        entry = self.stored(cache)
        self.successResultOf(Alternates(cache, Codec(runInline)).body(entry, "gzip"))
        kept = entry.alternates["gzip"]
        cache.invalidate("GET:/a")
        self.assertEqual(sorted(ids(self.store.deleted)), sorted(ids([entry.body, kept])))
        self.assertEqual(cache.bytes, 0)


class AddCodingTests(SynchronousTestCase, CacheTestMixin):
    """
    L{ResponseCache.add_coding} keeps other codings within C{max_bytes}.
    """

    def body(self, size: int) -> bytes:
        """
        @return: C{size} bytes.
        """
        return b"z" * size

    def test_evicts_least_recently_used(self) -> None:
        """
        A coding that takes the cache past its bound evicts the least
        recently used entries, not the entry it grows.
        """
        cache = self.makeCache(max_bytes=3000)
        old = self.makeEntry("GET:/old", self.body(1000))
        entry = self.makeEntry("GET:/new", self.body(1000))
        self.put(cache, old)
        self.put(cache, entry)
        self.assertTrue(self.successResultOf(cache.add_coding(entry, "gzip", self.body(800))))
        self.assertIsNone(cache.lookup("GET:/old", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/new", NO_HEADERS), entry)
        self.assertEqual(cache.evictions, 1)
        self.assertEqual(cache.bytes, entry.size)
        self.assertIn(old.body, self.store.deleted)

    def test_too_large(self) -> None:
        """
        A coding that would make the entry larger than the bound is not
        kept.
        """
        cache = self.makeCache(max_bytes=2000)
        entry = self.makeEntry("GET:/a", self.body(1000))
        self.put(cache, entry)
        size = entry.size
        self.assertFalse(self.successResultOf(cache.add_coding(entry, "gzip", self.body(900))))
        self.assertEqual((entry.size, cache.bytes, entry.alternates), (size, size, None))
        self.assertEqual(len(self.store.deleted), 1)

    def test_once_per_coding(self) -> None:
        """
        A second body in a coding already kept is not kept.
        """
        cache = self.makeCache()
        entry = self.makeEntry("GET:/a")
        self.put(cache, entry)
        self.assertTrue(self.successResultOf(cache.add_coding(entry, "gzip", b"1")))
        first = entry.alternates["gzip"]
        self.assertFalse(self.successResultOf(cache.add_coding(entry, "gzip", b"2")))
        self.assertIs(entry.alternates["gzip"], first)

    def test_pinned(self) -> None:
        """
        A snapshot's codings count in its pinned bytes, never evicting.
        """
        cache = self.makeCache(max_bytes=1000)
        entry = self.makeEntry("GET:/s", self.body(100))
        self.put(cache, entry)
        cache.pin(entry)
        self.assertTrue(self.successResultOf(cache.add_coding(entry, "br", self.body(5000))))
        self.assertEqual(cache.bytes, entry.size)
        self.assertIsInstance(entry.alternates["br"], StoredBody)

    def test_not_found_bound(self) -> None:
        """
        Codings of a 404 entry count against the 404 cache's quarter of the
        bound.
        """
        cache = self.makeCache(max_bytes=8000)
        first = self.makeEntry("GET:/x", self.body(500), not_found=True)
        second = self.makeEntry("GET:/y", self.body(500), not_found=True)
        self.put(cache, first)
        self.put(cache, second)
        self.assertTrue(self.successResultOf(cache.add_coding(second, "br", self.body(500))))
        self.assertIsNone(cache.lookup("GET:/x", NO_HEADERS))
        self.assertIs(cache.lookup("GET:/y", NO_HEADERS), second)
        self.assertLessEqual(cache.bytes, 2000)

    def test_resize_keeps_codings(self) -> None:
        """
        Updating an entry's headers (a 304 revalidation) keeps its codings
        in its size.
        """
        cache = self.makeCache()
        entry = self.makeEntry("GET:/a")
        self.put(cache, entry)
        self.successResultOf(cache.add_coding(entry, "gzip", self.body(300)))
        cache.update(entry, ((b"X-New", b"1"),))
        self.assertEqual(cache.bytes, entry.size)
        self.assertEqual(entry.size, entry.body.size + 300 + len(b"X-New1") + len(entry.key) + 512)
