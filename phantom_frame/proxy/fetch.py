"""
L{Fetch}: one fill's request to its origin, from the request to what the
fill gives (see L{phantom_frame.proxy.fill.Filler.fetch}), told through
plain callbacks: the head to the filler, which decides what becomes of the
response, the whole body back to it to be stored, and the outcome to one
listener (the fill lock's flight), with no L{Deferred} on the way.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Union

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.proxy.heads import Fields
from phantom_frame.proxy.origin import Header, Origin
from phantom_frame.proxy.settle import Once, is_deferred

__all__ = ["Fetch", "PENDING"]

#: Logged as the server's own events (namespace C{phantom_frame.proxy}).
log = Logger(namespace="phantom_frame.proxy")

#: What the filler's decision on a head gives when the body is being read:
#: the outcome comes later (L{Fetch.land}).
PENDING = object()


class Fetch:
    """
    One fill's request to the origin, and its outcome: told to one
    listener (L{addBoth}) as a L{Deferred} would tell its callback, or
    through a L{Deferred} (L{deferred}, or awaiting it).

    @ivar key: the key filled.
    @ivar header: reads the client request's headers (for the variant).
    @ivar snapshot: whether it is a snapshot fetch.
    @ivar stale: the entry it revalidates, or C{None}.
    @ivar authorized: whether the request carried credentials.
    @ivar private: whether the request's cookies make it private.
    @ivar ranged: whether a 206 is a part.
    @ivar request_time: when the request was sent.
    @ivar reading: what the filler keeps of a response whose body is read
        to be stored (L{ready}), for its C{_buffered(complete, fetch)}.
    """

    __slots__ = (
        "key", "header", "snapshot", "stale", "authorized", "private", "ranged", "request_time", "reading",
        "_filler", "_listener", "_outcome", "_over", "_response",
    )

    def __init__(
        self, filler: Any, key: str, header: Callable[[str], Optional[str]], snapshot: bool,
        stale: Optional[CacheEntry], authorized: bool, private: bool, ranged: bool,
    ) -> None:
        """
        @param filler: the L{phantom_frame.proxy.fill.Filler}: its
            C{_answered(response, fetch)} decides on the head.
        """
        self._filler = filler
        self.key = key
        self.header = header
        self.snapshot = snapshot
        self.stale = stale
        self.authorized = authorized
        self.private = private
        self.ranged = ranged
        self.request_time = 0.0
        self.reading: Any = None
        #: Told of the outcome; the outcome itself while nobody listens.
        self._listener: Optional[Callable[[Any], object]] = None
        self._outcome: Any = _NOTHING
        self._over = False
        self._response: Any = None

    def start(
        self, origin: Origin, method: bytes, path_qs: bytes, headers: Union[List[Header], Fields], body: Any,
        now: float,
    ) -> Fetch:
        """
        Send the request: with the stored validators when it revalidates
        C{stale} (RFC 9111 §4.3.1).

        @param now: the time it is sent.
        @return: this fetch, whose outcome L{addBoth} tells (L{cancel}
            cancels the request, or abandons the body).
        """
        self.request_time = now
        stale = self.stale
        if stale is not None:
            headers = list(headers)
            if stale.etag is not None and not stale.etag.startswith(b'"pf-'):
                headers.append((b"If-None-Match", stale.etag))
            if stale.last_modified is not None:
                headers.append((b"If-Modified-Since", stale.last_modified))
        response = origin.request_then(method, path_qs, headers, body, self._answered, self.fail)
        if not self._over:
            self._response = response
        return self

    def addBoth(self, listener: Callable[[Any], object]) -> Fetch:
        """
        Tell C{listener} of the outcome, as a L{Deferred}'s callback is
        told: what the fill gives, or a L{Failure}; at once when it came
        already. A fetch has one listener; what it raises is logged.

        @return: this fetch.
        """
        outcome, self._outcome = self._outcome, _NOTHING
        if outcome is not _NOTHING:
            _tell(listener, outcome)
        elif not self._over:
            self._listener = listener
        return self

    def deferred(self) -> Deferred[Any]:
        """
        @return: a L{Deferred} of the outcome (its listener): cancelling it
            cancels this fetch.
        """
        result: Deferred[Any] = Deferred(lambda _: self.cancel())
        self.addBoth(result.callback)
        return result

    def __await__(self) -> Any:
        """
        Awaiting a fetch awaits its L{deferred}.
        """
        return self.deferred().__await__()

    def cancel(self) -> None:
        """
        The outcome is no longer wanted: cancel the request, or abandon the
        body; the outcome is a C{CancelledError} unless stopping gave
        another.
        """
        if not self._over:
            if self._response is not None:
                self._response.stopProducing()
            self.fail(CancelledError())

    def ready(self) -> Once:
        """
        @return: what a L{phantom_frame.proxy.body.BodyRelay} tells once
            the body is read (C{True}) or overflowed (C{False}): the
            filler's C{_buffered(complete, fetch)} gives the outcome.
        """
        return Once(self._read, self.fail)

    def _read(self, complete: bool) -> None:
        """
        The body was read, or overflowed: the filler stores it, or hands
        the response on.
        """
        self._land(self._filler._buffered, complete, self)

    def _answered(self, response: Any) -> None:
        """
        The head came: the filler decides.
        """
        if not self._over:
            self._response = response
            self._land(self._filler._answered, response, self)

    def _land(self, step: Callable[..., Any], *args: Any) -> None:
        """
        Run C{step}: what it returns, or raises, is the outcome (a
        L{Deferred}: what it fires with), unless it is L{PENDING}.
        """
        try:
            outcome = step(*args)
        except BaseException:
            self.fail(Failure())
            return
        if outcome is PENDING:
            return
        if is_deferred(outcome):
            outcome.addCallbacks(self.land, self.fail)
            return
        self.land(outcome)

    def land(self, outcome: Any) -> None:
        """
        The fill gives C{outcome}.
        """
        if not self._over:
            self._give(outcome)

    def fail(self, error: Any) -> None:
        """
        The fill fails with C{error} (an exception or a L{Failure}).
        """
        if not self._over:
            self._give(error if isinstance(error, Failure) else Failure(error))

    def _give(self, outcome: Any) -> None:
        """
        The outcome came: tell the listener, or hold it for the one to
        come; let go of the response and what was kept of it (which refer
        back to this).
        """
        self._over = True
        self._response = self.reading = None
        listener, self._listener = self._listener, None
        if listener is None:
            self._outcome = outcome
        else:
            _tell(listener, outcome)


#: What a fetch holds before its outcome came, or once told.
_NOTHING = object()


def _tell(listener: Callable[[Any], object], outcome: Any) -> None:
    """
    Call C{listener} with C{outcome}; log what it raises (as a failing
    L{Deferred} callback would be): the origin's connection, which tells
    the outcome, goes on.
    """
    try:
        listener(outcome)
    except BaseException:
        log.failure("telling the outcome of a fill failed")
