"""
Single-flight fills: L{FillLock} runs one fetch per key however many ask
for it, and hands its L{FillResult} out to the waiters.

A fill's result is one of three values: L{Shared} (a storable response,
for every waiter), L{Exclusive} (a response only one waiter may take; the
others get L{NOT_SHARED}) or L{NOT_SHARED} (make your own request). Each
delivers itself to an L{IFillReceiver}, so that whoever consumes it
implements one method per kind rather than testing types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Dict, List, Optional

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from phantom_frame.cache.entry import CacheEntry

log = Logger()


class IFillReceiver(Interface):
    """
    Takes a fill's result, one method per kind of L{FillResult}: pass it to
    L{FillResult.deliver} and the result calls the method for its kind,
    returning what it returns.
    """

    def shared(result: Shared) -> Any:
        """
        Take a storable response every waiter gets.

        @param result: the fill's result.
        @return: whatever the receiver makes of it.
        """

    def exclusive(result: Exclusive) -> Any:
        """
        Take a response that is this waiter's alone (to stream, or to
        release).

        @param result: the fill's result.
        @return: whatever the receiver makes of it.
        """

    def not_shared(result: NotShared) -> Any:
        """
        Take the news that the fill's response went to another waiter:
        make a request of your own.

        @param result: L{NOT_SHARED}.
        @return: whatever the receiver makes of it.
        """


class FillResult(ABC):
    """
    What a fill gives its waiters: L{Shared}, L{Exclusive} or L{NOT_SHARED}.

    @cvar exclusive: whether only the first waiter may take it (the others
        get L{NOT_SHARED}).
    """

    exclusive: ClassVar[bool] = False

    @property
    def to_store(self) -> Optional[CacheEntry]:
        """
        The entry the fill stores, or L{None} when it stores nothing.
        """
        return None

    def release(self) -> None:
        """
        Let go of what the result holds, when no waiter takes it; nothing
        to let go of here.
        """

    @abstractmethod
    def deliver(self, receiver: IFillReceiver) -> Any:
        """
        Hand this result to the method of C{receiver} for its kind.

        @param receiver: an L{IFillReceiver}.
        @return: what that method returns.
        """


@attr.s(frozen=True, auto_attribs=True)
class Shared(FillResult):
    """
    A fill's result every waiter may use: a storable response.

    @ivar entry: the response (stored unless an invalidation overtook it).
    @ivar origin_status: what the origin answered (304 when it revalidated
        a stored entry, which is then C{entry}, freshened in place).
    @ivar identity: the decoded body, when the fill had it and stored
        another coding: the answers of this fill in identity are made from
        it, not by decoding the stored body again (it lives as long as the
        result).
    """

    entry: CacheEntry
    origin_status: int = 200
    identity: Optional[bytes] = attr.ib(default=None, repr=False, eq=False)

    @property
    def to_store(self) -> Optional[CacheEntry]:
        """
        L{entry}: a shared result is stored.
        """
        return self.entry

    def deliver(self, receiver: IFillReceiver) -> Any:
        """
        @return: C{receiver.shared(self)}.
        """
        return receiver.shared(self)


def _nothing() -> None:
    """
    Release nothing.
    """


@attr.s(frozen=True, auto_attribs=True)
class Exclusive(FillResult):
    """
    A fill's result only one waiter may use (a private or oversized response
    streaming from the origin). The others get L{NOT_SHARED}.

    Made as C{Exclusive(value, reason, release)}.

    @ivar value: what the first waiter takes (to stream).
    @ivar reason: why it is not shared, for C{Cache-Status}.
    """

    exclusive: ClassVar[bool] = True

    value: Any
    reason: str
    _release: Callable[[], None] = _nothing

    def release(self) -> None:
        """
        Let go of L{value} (abort the stream) when nobody takes it: call the
        C{release} it was made with.
        """
        self._release()

    def deliver(self, receiver: IFillReceiver) -> Any:
        """
        @return: C{receiver.exclusive(self)}.
        """
        return receiver.exclusive(self)


class NotShared(FillResult):
    """
    What a waiter gets when a fill's result was not its to share: make your
    own request. It has one instance, L{NOT_SHARED}: C{NotShared()} is it.
    """

    _instance: ClassVar[Optional[NotShared]] = None

    def __new__(cls) -> NotShared:
        """
        @return: L{NOT_SHARED}, made on the first call.
        """
        if NotShared._instance is None:
            NotShared._instance = super().__new__(cls)
        return NotShared._instance

    def __repr__(self) -> str:
        """
        @return: C{"NOT_SHARED"}.
        """
        return "NOT_SHARED"

    def __reduce__(self) -> str:
        """
        Pickled and copied as the module's L{NOT_SHARED}, so that it stays
        the one instance.
        """
        return "NOT_SHARED"

    def deliver(self, receiver: IFillReceiver) -> Any:
        """
        @return: C{receiver.not_shared(self)}.
        """
        return receiver.not_shared(self)


#: What a waiter gets when a fill's result was not its to share: make your
#: own request. The one instance of L{NotShared}.
NOT_SHARED = NotShared()


class Waiter:
    """
    A waiter told of a fill's result by a plain call rather than through a
    L{Deferred} of its own (see L{FillLock.start}): its listener is called
    once with the L{FillResult} or a L{Failure}, as a waiter's L{Deferred}
    would call its callback; L{cancel} detaches it as cancelling that
    L{Deferred} does (the listener is told of a C{CancelledError}).

    @ivar called: whether it was told.
    """

    __slots__ = ("called", "_listener", "_flight")

    def __init__(self, listener: Callable[[Any], object]) -> None:
        """
        @param listener: told of the result; what it raises is logged (the
            other waiters are told all the same).
        """
        self.called = False
        self._listener = listener
        self._flight: Optional[_Flight] = None

    def callback(self, result: Any) -> None:
        """
        Tell the listener of C{result}, unless told already.
        """
        if not self.called:
            self.called = True
            listener, self._listener, self._flight = self._listener, _told, None
            try:
                listener(result)
            except BaseException:
                log.failure("answering a fill's waiter failed")

    errback = callback

    def cancel(self) -> None:
        """
        Stop waiting: the fetch is cancelled when no waiter is left.
        """
        flight = self._flight
        if not self.called and flight is not None:
            flight._cancelWaiter(self)


def _told(result: Any) -> None:
    """
    What a waiter that was told calls no more.
    """


class _Flight:
    """
    One in-flight fill and the Deferreds of those waiting for it.

    @ivar doomed: an invalidation overtook the fill: its result is not
        stored.
    @ivar fetching: what the fetch gave (see L{FillLock}), until it fires.
    """

    def __init__(self, lock: FillLock, key: str) -> None:
        """
        @param lock: the lock this fill belongs to.
        @param key: the key it fills.
        """
        self.lock = lock
        self.key = key
        self.doomed = False
        self.waiters: List[Any] = []
        self.fetching: Any = None

    def join(self, waiter: Optional[Waiter] = None) -> Any:
        """
        @param waiter: the new waiter, told by a plain call; without it,
            the new waiter is a L{Deferred}.
        @return: the new waiter, cancellable on its own.
        """
        if waiter is None:
            waiter = Deferred(self._cancelWaiter)
        else:
            waiter._flight = self
        self.waiters.append(waiter)
        return waiter

    def _cancelWaiter(self, waiter: Any) -> None:
        """
        Detach a cancelled waiter; cancel the fetch when it was the last.
        """
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        waiter.errback(Failure(CancelledError()))
        if not self.waiters and self.fetching is not None:
            self.lock._land(self)
            self.fetching.cancel()

    def _landed(self) -> List[Any]:
        """
        The fetch has fired: free the key for new fills.

        @return: the waiters still waiting.
        """
        self.lock._land(self)
        waiters, self.waiters = self.waiters, []
        self.fetching = None
        return waiters

    def succeeded(self, result: FillResult) -> None:
        """
        Hand the fetch's result out: an exclusive one to the first waiter
        (L{NOT_SHARED} to the others, released when nobody waits), any other
        to every waiter, after storing what it has to store.
        """
        waiters = self._landed()
        if result.exclusive:
            if not waiters:
                result.release()
                return
            first, rest = waiters[0], waiters[1:]
            first.callback(result)
            for waiter in rest:
                if not waiter.called:
                    waiter.callback(NOT_SHARED)
            return
        entry = result.to_store
        stored = entry is not None and not self.doomed and self.lock._store(entry)
        for waiter in waiters:
            # A waiter's callback may have cancelled a later waiter.
            if not waiter.called:
                waiter.callback(result)
        if entry is not None and not stored:
            # Not held by the cache: its body goes once the waiters have
            # started reading it.
            self.lock._forget(entry)

    def landed(self, result: Any) -> None:
        """
        The fetch fired: hand its result out (L{succeeded}) or its failure
        (L{failed}).
        """
        if isinstance(result, Failure):
            self.failed(result)
        else:
            self.succeeded(result)

    def failed(self, failure: Failure) -> None:
        """
        Fail every waiter, each with a L{Failure} of its own; log a failure
        nobody waited for (but a cancellation).
        """
        waiters = self._landed()
        if not waiters and not failure.check(CancelledError):
            log.failure(
                "fill of {key!r} on server {server} failed with nobody waiting",
                failure,
                key=self.key,
                server=self.lock.name,
            )
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(Failure(failure.value, failure.type, failure.tb))


class FillLock:
    """
    One fill per key at a time, with any number of waiters.

    The first caller of L{start} runs the fetch; L{join} waits for the fill
    in flight. The fetch gives a L{Deferred}, or anything with the two
    methods the lock uses of one (C{addBoth}, told once of the outcome, and
    C{cancel}: a L{phantom_frame.proxy.fetch.Fetch}); it fires with a
    L{FillResult} or fails:

      - a result whose C{exclusive} is true goes to the first waiter still
        waiting and L{NOT_SHARED} to the others; with nobody waiting, it is
        released;
      - any other result goes to every waiter, once its C{to_store} entry
        (if any) is handed to C{store} (unless an invalidation doomed the
        fill); an entry not held is handed to C{forget} once the waiters
        have had it;
      - a failure goes to every waiter, each a L{Failure} of its own.

    A waiter is a L{Deferred}, or a L{Waiter} told by a plain call.
    Cancelling a waiter detaches that waiter only; the fetch is cancelled
    when no waiter is left.

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

    def start(self, key: str, fetch: Callable[[], Any], waiter: Optional[Waiter] = None) -> Any:
        """
        Start the fill of C{key}: call C{fetch} (a fetch that raises fails
        at once), which gives a L{Deferred} of the L{FillResult} or its like
        (see L{FillLock}).

        @param waiter: the first waiter, told by a plain call (possibly
            before this returns, when the fetch fails at once).
        @raise ValueError: a fill of C{key} is in flight already (L{join}
            it).
        @return: the first waiter: C{waiter}, or else a L{Deferred}.
        """
        if key in self._flights:
            raise ValueError(f"a fill of {key!r} is in flight already")
        flight = _Flight(self, key)
        self._flights[key] = flight
        waiter = flight.join(waiter)
        try:
            fetching = fetch()
        except BaseException:
            fetching = Deferred()
            fetching.errback()
        flight.fetching = fetching
        fetching.addBoth(flight.landed)
        return waiter

    def join(self, key: str, waiter: Optional[Waiter] = None) -> Any:
        """
        Wait for the fill of C{key} in flight, if there is one, without
        starting one.

        @param waiter: the waiter, told by a plain call.
        @return: the waiter (C{waiter}, or else a L{Deferred}; as
            L{start}'s), or L{None} when no fill is in flight.
        """
        flight = self._flights.get(key)
        if flight is None:
            return None
        return flight.join(waiter)

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
