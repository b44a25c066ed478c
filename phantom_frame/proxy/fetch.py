"""
L{Fetch}: one fill's request to its origin, from the request to what the
fill gives (see L{phantom_frame.proxy.fill.Filler.fetch}), told through
plain callbacks: the head to the filler, which decides what becomes of the
response, the whole body back to it to be stored, and one L{Deferred} for
the outcome.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.proxy.heads import Fields
from phantom_frame.proxy.origin import Header, Origin
from phantom_frame.proxy.settle import Once

__all__ = ["Fetch", "PENDING"]

#: What the filler's decision on a head gives when the body is being read:
#: the outcome comes later (L{Fetch.land}).
PENDING = object()


class Fetch:
    """
    One fill's request to the origin.

    @ivar key: the key filled.
    @ivar header: reads the client request's headers (for the variant).
    @ivar snapshot: whether it is a snapshot fetch.
    @ivar stale: the entry it revalidates, or C{None}.
    @ivar authorized: whether the request carried credentials.
    @ivar private: whether the request's cookies make it private.
    @ivar ranged: whether a 206 is a part.
    @ivar request_time: when the request was sent.
    """

    __slots__ = (
        "key", "header", "snapshot", "stale", "authorized", "private", "ranged", "request_time",
        "_filler", "_result", "_response",
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
        self._result: Deferred[Any] = Deferred(self._cancel)
        self._response: Any = None

    def start(
        self, origin: Origin, method: bytes, path_qs: bytes, headers: Union[List[Header], Fields], body: Any,
        now: float,
    ) -> Deferred[Any]:
        """
        Send the request.

        @param now: the time it is sent.
        @return: the L{Deferred} of the outcome: cancelling it cancels the
            request, or abandons the body.
        """
        self.request_time = now
        result = self._result
        response = origin.request_then(method, path_qs, headers, body, self._answered, self.fail)
        if self._result is not None:
            self._response = response
        return result

    def ready(self, complete: Callable[[bool], Any]) -> Once:
        """
        @param complete: called once the body is read (C{True}), or
            overflowed (C{False}), with what the fill gives.
        @return: what a L{phantom_frame.proxy.body.BodyRelay} tells, for it.
        """
        return Once(lambda whole: self._land(complete, whole), self.fail)

    def _answered(self, response: Any) -> None:
        """
        The head came: the filler decides.
        """
        if self._result is not None:
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
        if isinstance(outcome, Deferred):
            outcome.addCallbacks(self.land, self.fail)
            return
        self.land(outcome)

    def land(self, outcome: Any) -> None:
        """
        The fill gives C{outcome}.
        """
        result = self._over()
        if result is not None:
            result.callback(outcome)

    def fail(self, error: Any) -> None:
        """
        The fill fails with C{error} (an exception or a L{Failure}).
        """
        result = self._over()
        if result is not None:
            result.errback(error)

    def _over(self) -> Optional[Deferred[Any]]:
        """
        @return: the outcome's L{Deferred}, unless it fired, let go of with
            the response (they refer back to this).
        """
        result, self._result = self._result, None
        self._response = None
        return None if result is None or result.called else result

    def _cancel(self, result: Deferred[Any]) -> None:
        """
        The outcome is no longer wanted: cancel the request, or abandon the
        body.
        """
        if self._response is not None:
            self._response.stopProducing()
