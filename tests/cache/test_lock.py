"""
Tests for L{phantom_frame.cache.lock}: the fill results, L{FillLock}, and
single-flight fills through L{ResponseCache.fill}.
"""

from __future__ import annotations

import copy
import gc
import pickle
from typing import Any, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from phantom_frame.cache import lock as lock_module
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import (
    NOT_SHARED,
    Exclusive,
    FillLock,
    FillResult,
    IFillReceiver,
    NotShared,
    Shared,
    Waiter,
)
from tests.cache.support import NO_HEADERS, CacheTestMixin, FakeFetch, Private, Receiver


class FillResultTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{Shared}, L{Exclusive} and L{NOT_SHARED}.
    """

    def test_receiver(self) -> None:
        """
        The test's L{Receiver} provides L{IFillReceiver}.
        """
        self.assertTrue(verifyObject(IFillReceiver, Receiver()))

    def test_deliver(self) -> None:
        """
        Each result delivers itself to the receiver's method for its kind
        and returns what that method returns.
        """
        shared = Shared(self.makeEntry("GET:/a"))
        exclusive = Exclusive("stream", "private")
        self.assertEqual(shared.deliver(Receiver()), ("shared", shared))
        self.assertEqual(exclusive.deliver(Receiver()), ("exclusive", exclusive))
        self.assertEqual(NOT_SHARED.deliver(Receiver()), ("not_shared", NOT_SHARED))

    def test_whatTheLockReads(self) -> None:
        """
        A L{Shared} result stores its entry; an L{Exclusive} one stores
        nothing, is exclusive and releases with its C{release}; L{NOT_SHARED}
        stores and releases nothing.
        """
        entry = self.makeEntry("GET:/a")
        released: List[bool] = []
        exclusive = Exclusive("stream", "size", lambda: released.append(True))
        self.assertIs(Shared(entry, 304).to_store, entry)
        kinds = (Shared(entry), exclusive, NOT_SHARED)
        self.assertEqual([r.exclusive for r in kinds], [False, True, False])
        self.assertIsNone(exclusive.to_store)
        self.assertIsNone(NOT_SHARED.to_store)
        Shared(entry).release()
        NOT_SHARED.release()
        Exclusive("stream", "private").release()
        self.assertEqual(released, [])
        exclusive.release()
        self.assertEqual(released, [True])
        self.assertEqual((exclusive.value, exclusive.reason), ("stream", "size"))

    def test_notSharedIsOne(self) -> None:
        """
        L{NOT_SHARED} is the one L{NotShared}, a L{FillResult}: making,
        copying or pickling one gives it back.
        """
        self.assertIsInstance(NOT_SHARED, FillResult)
        self.assertIs(NotShared(), NOT_SHARED)
        self.assertIs(copy.deepcopy(NOT_SHARED), NOT_SHARED)
        self.assertIs(pickle.loads(pickle.dumps(NOT_SHARED)), NOT_SHARED)
        self.assertEqual(repr(NOT_SHARED), "NOT_SHARED")


class FillLockTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{FillLock} alone, with each kind of result.
    """

    def makeLock(self, holds: bool = True) -> Tuple[FillLock, List[Any]]:
        """
        @param holds: what the lock's C{store} answers.
        @return: a lock, and the log of what it stores and forgets (and of
            what waiters get, for the tests to append to).
        """
        events: List[Any] = []

        def store(entry: CacheEntry) -> bool:
            events.append(("store", entry))
            return holds

        lock = FillLock("site", store, lambda entry: events.append(("forget", entry)))
        return lock, events

    def waiters(self, lock: FillLock, events: List[Any], fetch: FakeFetch) -> List[Deferred[Any]]:
        """
        @return: three waiters of a fill of C{"k"}, logging their results.
        """
        ds: List[Deferred[Any]] = [lock.start("k", fetch)]
        ds += [d for d in (lock.join("k"), lock.join("k")) if d is not None]
        for d in ds:
            d.addCallback(lambda result: events.append(("got", result)))
        return ds

    def test_shared(self) -> None:
        """
        A L{Shared} result is stored before every waiter gets it; a result
        not held is forgotten once they have; a doomed fill is not stored.
        """
        for holds, doom, expected in [
            (True, False, ["store", "got", "got", "got"]),
            (False, False, ["store", "got", "got", "got", "forget"]),
            (True, True, ["got", "got", "got", "forget"]),
        ]:
            lock, events = self.makeLock(holds)
            fetch = FakeFetch()
            self.waiters(lock, events, fetch)
            if doom:
                lock.doom_matching(lambda key: key == "k")
                self.assertNotIn("k", lock)
            entry = self.makeEntry("k")
            fetch.calls[0].callback(Shared(entry))
            self.assertEqual([kind for kind, _ in events], expected)
            self.assertTrue(all(r in (entry, Shared(entry)) for _, r in events))

    def test_exclusive(self) -> None:
        """
        An exclusive result, of a kind the lock knows or not, goes to the
        first waiter and L{NOT_SHARED} to the others; nothing is stored.
        """
        for result in (Exclusive("stream", "private"), Private()):
            lock, events = self.makeLock()
            fetch = FakeFetch()
            self.waiters(lock, events, fetch)
            fetch.calls[0].callback(result)
            self.assertEqual(events, [("got", result), ("got", NOT_SHARED), ("got", NOT_SHARED)])

    def test_exclusiveNobodyWaiting(self) -> None:
        """
        An exclusive result nobody waits for is released.
        """
        lock, _ = self.makeLock()
        released: List[bool] = []
        exclusive = Exclusive("stream", "size", lambda: released.append(True))
        d = lock.start("k", lambda: Deferred(lambda fetching: fetching.callback(exclusive)))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(released, [True])
        self.assertNotIn("k", lock)

    def test_notShared(self) -> None:
        """
        A fetch answering L{NOT_SHARED} gives it to every waiter, storing
        and forgetting nothing.
        """
        lock, events = self.makeLock()
        fetch = FakeFetch()
        self.waiters(lock, events, fetch)
        fetch.calls[0].callback(NOT_SHARED)
        self.assertEqual(events, [("got", NOT_SHARED)] * 3)

    def test_failure(self) -> None:
        """
        A failure fails every waiter and frees the key; one nobody waits
        for is logged, but for a cancellation.
        """
        lock, events = self.makeLock()
        fetch = FakeFetch()
        ds = self.waiters(lock, events, fetch)
        fetch.calls[0].errback(ValueError("down"))
        for d in ds:
            self.failureResultOf(d, ValueError)
        self.assertEqual((events, "k" in lock), ([], False))
        d = lock.start("k", lambda: Deferred(lambda fetching: fetching.errback(KeyError())))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        d = lock.start("k", fetch)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_startAndJoin(self) -> None:
        """
        L{FillLock.join} without a fill in flight is L{None}; starting a
        second fill of a key in flight is refused; L{FillLock.doom_all}
        frees every key.
        """
        lock, _ = self.makeLock()
        fetch = FakeFetch()
        self.assertIsNone(lock.join("k"))
        lock.start("k", fetch)
        lock.start("j", fetch)
        self.assertRaises(ValueError, lock.start, "k", fetch)
        lock.doom_all()
        self.assertNotIn("k", lock)
        self.assertIsNone(lock.join("j"))


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


class WaiterTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{Waiter}: a waiter told of the fill's result by a plain call,
    beside waiters that wait through a L{Deferred}.
    """

    def test_told(self) -> None:
        """
        A L{Waiter} that starts a fill, or joins one, is told of the result
        (after it is stored) as the L{Deferred} waiters are, and once.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        told: List[Any] = []
        first = Waiter(lambda result: told.append(("first", result, cache.lookup("GET:/a", NO_HEADERS))))
        self.assertEqual(cache.fill("GET:/a", fetch, first), (first, False))
        other, _ = cache.fill("GET:/a", fetch)
        joined = Waiter(lambda result: told.append(("joined", result)))
        self.assertEqual(cache.fill("GET:/a", fetch, joined), (joined, True))
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(told, [("first", Shared(entry), entry), ("joined", Shared(entry))])
        self.assertEqual(self.successResultOf(other), Shared(entry))
        self.assertTrue(first.called)
        first.callback("again")
        first.cancel()
        self.assertEqual(len(told), 2)
        self.assertEqual(len(fetch.calls), 1)

    def test_failure(self) -> None:
        """
        A fill that fails tells the waiter of a L{Failure} of its own; one
        whose fetch raises at once tells it before the fill returns.
        """
        cache = self.makeCache()
        told: List[Any] = []
        cache.fill("GET:/a", lambda: 1 / 0, Waiter(told.append))
        [failure] = told
        failure.trap(ZeroDivisionError)
        self.assertFalse(cache.in_flight("GET:/a"))

    def test_cancel(self) -> None:
        """
        Cancelling a L{Waiter} tells it of a C{CancelledError} and detaches
        it alone; the fetch is cancelled with the last waiter.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        told: List[Any] = []
        first = Waiter(told.append)
        cache.fill("GET:/a", fetch, first)
        second, _ = cache.fill("GET:/a", fetch)
        first.cancel()
        [failure] = told
        failure.trap(CancelledError)
        self.assertEqual(fetch.cancelled, [])
        second.cancel()
        self.assertEqual(fetch.cancelled, [fetch.calls[0]])
        self.failureResultOf(second, CancelledError)
        self.assertEqual(len(told), 1)

    def test_listenerRaises(self) -> None:
        """
        A listener that raises is logged; the waiters after it are told all
        the same, and what the fill stored stays stored.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        cache.fill("GET:/a", fetch, Waiter(lambda result: 1 / 0))
        told: List[Any] = []
        cache.fill("GET:/a", fetch, Waiter(told.append))
        entry = self.makeEntry("GET:/a")
        fetch.calls[0].callback(Shared(entry))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(told, [Shared(entry)])
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), entry)

    def test_letsGo(self) -> None:
        """
        Told, a waiter holds neither its listener nor the flight.
        """
        cache = self.makeCache()
        fetch = FakeFetch()
        waiter = Waiter(lambda result: None)
        cache.fill("GET:/a", fetch, waiter)
        self.assertIsNotNone(waiter._flight)
        fetch.calls[0].callback(Shared(self.makeEntry("GET:/a")))
        self.assertIsNone(waiter._flight)
        self.assertIs(waiter._listener, lock_module._told)
