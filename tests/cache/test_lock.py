"""
Tests for L{phantom_frame.cache.lock}: single-flight fills through
L{ResponseCache.fill}.
"""

from __future__ import annotations

import gc
from typing import Any, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import NOT_SHARED, Exclusive, Shared
from tests.cache.support import NO_HEADERS, CacheTestMixin, FakeFetch


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
