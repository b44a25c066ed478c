"""
Single-flight fills: L{FillLock} runs one fetch per key however many ask
for it, and hands its result to every waiter: L{Shared} (a storable
response, for every waiter), L{Exclusive} (a response only one waiter may
take; the others get L{NOT_SHARED}) or a failure.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.entry import CacheEntry

log = Logger()


@attr.s(frozen=True, auto_attribs=True)
class Shared:
    """
    A fill's result every waiter may use: a storable response.

    @ivar entry: the response (stored unless an invalidation overtook it).
    @ivar origin_status: what the origin answered (304 when it revalidated
        a stored entry, which is then C{entry}, freshened in place).
    """

    entry: CacheEntry
    origin_status: int = 200


@attr.s(frozen=True, auto_attribs=True)
class Exclusive:
    """
    A fill's result only one waiter may use (a private or oversized response
    streaming from the origin). The others get L{NOT_SHARED}.

    @ivar value: what the first waiter takes (to stream).
    @ivar reason: why it is not shared, for C{Cache-Status}.
    @ivar release: called when nobody takes the value.
    """

    value: Any
    reason: str
    release: Callable[[], None] = lambda: None


#: What a waiter gets when a fill's result was not its to share: make your
#: own request.
NOT_SHARED = object()


class _Flight:
    """
    One in-flight fill and the Deferreds of those waiting for it.

    @ivar doomed: an invalidation overtook the fill: its result is not
        stored.
    @ivar fetching: the fetch's Deferred, until it fires.
    """

    def __init__(self, lock: FillLock, key: str) -> None:
        """
        @param lock: the lock this fill belongs to.
        @param key: the key it fills.
        """
        self.lock = lock
        self.key = key
        self.doomed = False
        self.waiters: List[Deferred[Any]] = []
        self.fetching: Optional[Deferred[Any]] = None

    def join(self) -> Deferred[Any]:
        """
        @return: a new waiter's L{Deferred}, cancellable on its own.
        """
        waiter: Deferred[Any] = Deferred(self._cancelWaiter)
        self.waiters.append(waiter)
        return waiter

    def _cancelWaiter(self, waiter: Deferred[Any]) -> None:
        """
        Detach a cancelled waiter; cancel the fetch when it was the last.
        """
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        waiter.errback(Failure(CancelledError()))
        if not self.waiters and self.fetching is not None:
            self.lock._land(self)
            self.fetching.cancel()

    def _landed(self) -> List[Deferred[Any]]:
        """
        The fetch has fired: free the key for new fills.

        @return: the waiters still waiting.
        """
        self.lock._land(self)
        waiters, self.waiters = self.waiters, []
        self.fetching = None
        return waiters

    def finish(self, result: Any) -> None:
        """
        Hand the fetch's result out: a failure to every waiter (logged when
        nobody waits, but for a cancellation); an L{Exclusive} one to the
        first waiter (L{NOT_SHARED} to the others, released when nobody
        waits); any other to every waiter, after storing a L{Shared} one.
        """
        waiters = self._landed()
        if isinstance(result, Failure):
            if not waiters and not result.check(CancelledError):
                log.failure(
                    "fill of {key!r} on server {server} failed with nobody waiting",
                    result,
                    key=self.key,
                    server=self.lock.name,
                )
            for waiter in waiters:
                if not waiter.called:
                    waiter.errback(Failure(result.value, result.type, result.tb))
            return
        if isinstance(result, Exclusive):
            if not waiters:
                result.release()
                return
            first, rest = waiters[0], waiters[1:]
            first.callback(result)
            for waiter in rest:
                if not waiter.called:
                    waiter.callback(NOT_SHARED)
            return
        stored = False
        if isinstance(result, Shared) and not self.doomed:
            stored = self.lock._store(result.entry)
        for waiter in waiters:
            # A waiter's callback may have cancelled a later waiter.
            if not waiter.called:
                waiter.callback(result)
        if isinstance(result, Shared) and not stored:
            # Not held by the cache: its body goes once the waiters have
            # started reading it.
            self.lock._forget(result.entry)


class FillLock:
    """
    One fill per key at a time, with any number of waiters.

    The first caller of L{start} runs the fetch; L{join} waits for the fill
    in flight. The fetch fires with a result or fails:

      - an L{Exclusive} result goes to the first waiter still waiting and
        L{NOT_SHARED} to the others; with nobody waiting, it is released;
      - any other result goes to every waiter, once the entry of a
        L{Shared} one is handed to C{store} (unless an invalidation doomed
        the fill); an entry not held is handed to C{forget} once the
        waiters have had it;
      - a failure goes to every waiter, each a L{Failure} of its own.

    Cancelling a waiter's Deferred detaches that waiter only; the fetch is
    cancelled when no waiter is left.

    @ivar name: the server's name, for logs.
    """

    def __init__(
        self,
        name: str,
        store: Callable[[CacheEntry], bool],
        forget: Callable[[CacheEntry], None],
    ) -> None:
        """
        @param name: see L{name}.
        @param store: holds an entry a fill gives; returns whether it is
            held.
        @param forget: deletes the body of an entry a fill gave that is not
            held.
        """
        self.name = name
        self._store = store
        self._forget = forget
        self._flights: Dict[str, _Flight] = {}

    def __contains__(self, key: object) -> bool:
        """
        @return: whether a fill of C{key} is in flight (and not doomed).
        """
        return key in self._flights

    def start(self, key: str, fetch: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """
        Start the fill of C{key}: call C{fetch} (a fetch that raises fails
        at once).

        @raise ValueError: a fill of C{key} is in flight already (L{join}
            it).
        @return: the first waiter's L{Deferred}.
        """
        if key in self._flights:
            raise ValueError(f"a fill of {key!r} is in flight already")
        flight = _Flight(self, key)
        self._flights[key] = flight
        waiter = flight.join()
        try:
            fetching = fetch()
        except BaseException:
            fetching = Deferred()
            fetching.errback()
        flight.fetching = fetching
        fetching.addBoth(flight.finish)
        return waiter

    def join(self, key: str) -> Optional[Deferred[Any]]:
        """
        Wait for the fill of C{key} in flight, if there is one, without
        starting one.

        @return: a waiter's L{Deferred} (as L{start}'s), or L{None}.
        """
        flight = self._flights.get(key)
        if flight is None:
            return None
        return flight.join()

    def doom_matching(self, matches: Callable[[str], bool]) -> None:
        """
        Keep the fills in flight of the keys C{matches} accepts from
        storing, and let new fills of those keys start.
        """
        for key in [k for k in self._flights if matches(k)]:
            self._flights.pop(key).doomed = True

    def doom_all(self) -> None:
        """
        Keep every fill in flight from storing, and let new fills start.
        """
        for flight in self._flights.values():
            flight.doomed = True
        self._flights.clear()

    def _land(self, flight: _Flight) -> None:
        """
        Free the key of C{flight}, unless a newer fill holds it.
        """
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
