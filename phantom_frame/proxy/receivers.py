"""
How a client is answered with what a fill (or a snapshot fetch it waited
for) gave: receivers of L{phantom_frame.cache.lock.Shared}, L{Exclusive}
and C{NOT_SHARED} (L{phantom_frame.cache.lock.IFillReceiver}) for a
L{phantom_frame.proxy.server.ProxyServer}, and its short refusals.
"""

from __future__ import annotations

from contextvars import Context, copy_context
from typing import Any, Callable, Coroutine, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from phantom_frame.cache.lock import Exclusive, Shared, Waiter
from phantom_frame.cache.variance import variant_of
from phantom_frame.proxy import status as statuses
from phantom_frame.proxy.answers import error_response, send_error
from phantom_frame.proxy.decision import NOT_PRE_GENERATED, Fill, Reject
from phantom_frame.proxy.exchange import Exchange, set_status
from phantom_frame.proxy.parts import PART_STORED
from phantom_frame.proxy.settle import is_deferred
from phantom_frame.proxy.snapshots import SnapshotError

__all__ = ["FillAnswer", "FillWaiting", "SnapshotAnswer", "SnapshotLanded", "reject_now", "release", "send_reject"]


def reject_now(request, decision: Reject) -> bytes:
    """
    @return: the body of a L{Reject} answered from C{render}.
    """
    if decision.status.header:
        request.responseHeaders.setRawHeaders(b"cache-status", [decision.status.header])
    set_status(request, decision.status)
    return error_response(request, decision.code, decision.text, decision.headers)


def send_reject(exchange: Exchange, decision: Reject) -> None:
    """
    Answer C{exchange} with the short error of C{decision}.
    """
    send_error(exchange, decision.code, decision.text, decision.status, decision.headers)


class SnapshotAnswer:
    """
    How a client of a pure pre-generated server that waited for a snapshot
    fetch is answered (an L{phantom_frame.cache.lock.IFillReceiver}): with
    the snapshot, whatever its variant; with a 404 when the fetch gave
    nothing to store.
    """

    def __init__(self, server: Any, exchange: Exchange) -> None:
        self._server = server
        self._exchange = exchange

    async def shared(self, result: Shared) -> None:
        server, exchange = self._server, self._exchange
        entry = result.entry
        answer = server.decider.answer(exchange.view, entry)
        await server.entries.render(exchange, entry, answer, statuses.COLLAPSED)

    async def exclusive(self, result: Exclusive) -> None:
        result.release()
        send_reject(self._exchange, NOT_PRE_GENERATED)

    async def not_shared(self, result: Any) -> None:
        send_reject(self._exchange, NOT_PRE_GENERATED)


class FillAnswer:
    """
    How a client is answered with its fill's result (a receiver of
    L{phantom_frame.cache.lock.Shared}, L{Exclusive} and C{NOT_SHARED}:
    an L{phantom_frame.cache.lock.IFillReceiver}). Each method returns a
    L{Deferred} firing once the client is answered, or L{None} when it was
    answered at once.
    """

    def __init__(
        self, server: Any, exchange: Exchange, collapsed: bool, fill: Fill, context: Optional[Context] = None
    ) -> None:
        """
        @param context: the context variables of the request being answered
            (the current ones when omitted): an answer that asks the origin
            again, or streams, runs in a copy of them, as the fill's own
            request did.
        """
        self._server = server
        self._exchange = exchange
        self._collapsed = collapsed
        self._fill = fill
        self._fwd = "stale" if fill.stale is not None else "uri-miss"
        self._context = copy_context() if context is None else context

    def take(self, result: Any) -> Any:
        """
        Answer with C{result}: a L{FillResult} delivered to this receiver,
        or the L{Failure} of the fill (the server's C{_fill_failed}).

        @return: what answering gives (a L{Deferred}, L{None}, or the
            failure when it is not one to answer for).
        """
        if isinstance(result, Failure):
            return self._server._fill_failed(result, self._exchange, self._fill, self._context)
        return result.deliver(self)

    def _run(self, answer: Coroutine[Any, Any, None]) -> Deferred[None]:
        """
        @return: the L{Deferred} of C{answer}, run in the request's context.
        """
        return self._context.run(Deferred.fromCoroutine, answer)

    def shared(self, result: Shared) -> Optional[Deferred[None]]:
        """
        Answer from the entry the fill gave (or forward a request of
        another variant); a stored body in memory is written at once
        (L{None}).
        """
        server, exchange = self._server, self._exchange
        view = exchange.view
        entry = result.entry
        if entry.vary and entry.variant != variant_of(entry.vary, view.headers.get):
            return self._run(server.passthrough.forward(exchange, statuses.forwarded(self._fwd, "vary")))
        if self._fill.stale is not None:
            status = statuses.revalidated(result.origin_status)
        else:
            status = statuses.COLLAPSED if self._collapsed else statuses.STORED
        return server.entries.answer(exchange, entry, server.decider.answer(view, entry), status, result.identity)

    def exclusive(self, result: Exclusive) -> Deferred[None]:
        """
        Relay the response that is this client's alone (or a stale entry
        standing in for an origin error).
        """
        return self._run(self._exclusive(result))

    async def _exclusive(self, result: Exclusive) -> None:
        server, exchange = self._server, self._exchange
        response, relay = result.value
        stale = self._fill.stale
        if (
            stale is not None
            and response.code >= 500
            and server.decider.may_serve_stale(stale, self._fill.directives)
        ):
            result.release()
            await server._serve_stale(exchange, stale)
            return
        await server.passthrough.relay(
            exchange,
            response,
            relay,
            statuses.STORED if result.reason == PART_STORED else statuses.forwarded(self._fwd, result.reason),
            self._fwd,
            identity=True,
        )

    def not_shared(self, result: Any) -> Deferred[None]:
        """
        Forward a request of the client's own.
        """
        return self._run(
            self._server.passthrough.forward(self._exchange, statuses.forwarded(self._fwd, "not-shared"))
        )


class FillWaiting(FillAnswer):
    """
    A L{FillAnswer} that is the listener of its request's
    L{phantom_frame.cache.lock.Waiter}: told the fill's result by a plain
    call, it answers as the server answers from a waiter's L{Deferred}
    (L{take}); what fails unexpectedly goes to C{failed}.
    """

    def __init__(self, server: Any, exchange: Exchange, fill: Fill, failed: Callable[[Failure], object]) -> None:
        """
        @param failed: told of what fails unexpectedly.
        """
        super().__init__(server, exchange, False, fill)
        self._failed = failed

    def start(self) -> Waiter:
        """
        Start (or join) the fill, without a request body (the channel fills
        only for requests without one). Whether it joined one another
        request started is known once this returns: a result told before is
        that of a fill it started.

        @return: the request's L{Waiter} (its C{cancel()} gives the answer
            up).
        """
        exchange, fill = self._exchange, self._fill
        waiter, self._collapsed = self._server.filler.fill(
            exchange.view, fill.key, fill.stale, None, fill.private, fill.ranged, exchange.shared, Waiter(self)
        )
        return waiter

    def __call__(self, result: Any) -> None:
        """
        Answer with C{result} (a L{FillResult}, or a L{Failure}).
        """
        try:
            answered = self.take(result)
        except BaseException:
            answered = Failure()
        if is_deferred(answered):
            answered.addErrback(self._failed)
        elif isinstance(answered, Failure):
            self._failed(answered)


class _Discard:
    """
    Lets go of a fill result nobody answers a client with.
    """

    def shared(self, result: Shared) -> None:
        pass

    def exclusive(self, result: Exclusive) -> None:
        result.release()

    def not_shared(self, result: Any) -> None:
        pass


def release(result: Any) -> None:
    """
    Let go of the fill result C{result}, which no client is answered with
    (a background refresh's, a stored POST answer's).
    """
    result.deliver(_Discard())


class SnapshotLanded:
    """
    What a snapshot fetch's fill result means: pinned, or a failure.
    """

    def __init__(self, cache: Any) -> None:
        """
        @param cache: where the snapshot is pinned.
        """
        self._cache = cache

    def shared(self, result: Shared) -> None:
        """
        Pin the stored entry (unless it is already).
        """
        if not result.entry.pinned:
            self._cache.pin(result.entry)

    def exclusive(self, result: Exclusive) -> None:
        """
        @raise SnapshotError: the response cannot be stored.
        """
        result.release()
        raise SnapshotError(f"not storable ({result.reason})")

    def not_shared(self, result: Any) -> None:
        """
        @raise SnapshotError: nothing was stored.
        """
        raise SnapshotError("not storable")
