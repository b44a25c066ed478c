"""
Upstream failures, and L{BodyRelay}: what moves a response body to a
client (streamed, with back-pressure) or into memory (bounded) for the
cache.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss, _DataLoss, _MalformedChunkedDataError
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

from phantom_frame.proxy.settle import Once


class UpstreamError(Exception):
    """
    The origin could not give us a response (refused, reset, unreachable).

    @ivar sent: for a response body that broke off while streaming, whether
        the client had been sent the response head.
    """

    sent = False


class UpstreamTimeout(UpstreamError):
    """
    The origin did not answer within C{upstream_timeout}.
    """


class BrokenBody(UpstreamError):
    """
    The origin's body broke off: the connection closed or was lost before
    its end, or its framing (chunks, a transfer coding) was malformed.

    """


def body_error(reason: Failure, received: int) -> UpstreamError:
    """
    @param reason: why a response body ended, when it did not end well.
    @param received: how many body bytes had arrived.
    @return: the origin failure it is: an L{UpstreamTimeout} for a stall,
        a L{BrokenBody} with a short reason otherwise.
    """
    if reason.check(UpstreamError):
        return reason.value
    reasons = getattr(reason.value, "reasons", None) or [reason]
    causes = [r for r in reasons if not r.check(_DataLoss)] or reasons
    cause = causes[0]
    if cause.check(ConnectionDone, _DataLoss):
        text = "the origin closed the connection"
    elif cause.check(ConnectionLost):
        text = "the connection to the origin was lost"
    elif cause.check(_MalformedChunkedDataError):
        text = f"malformed chunked data ({cause.getErrorMessage()})"
    else:
        text = cause.getErrorMessage() or type(cause.value).__name__
    return BrokenBody(f"body cut short after {received} bytes: {text}")


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A small body written in one go.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BodyRelay(Protocol):
    """
    Receives a response body, in one of three modes: I{buffer} (collect up to
    C{limit} bytes, for the cache), I{held} (origin paused, waiting to be
    handed to a client) and I{stream} (written to a request as it arrives,
    with back-pressure: the origin connection is the request's producer).

    A buffering relay that overflows pauses the origin and becomes held;
    L{stream_to} then sends what it has and the rest.

    A body that breaks off (see L{body_error}) is never mistaken for a
    whole one: L{ready} fails, and L{stream_to} fails before anything is
    written, or cuts the client's connection short after.
    """

    _BUFFER, _HELD, _STREAM = range(3)

    def __init__(
        self, clock: IReactorTime, idleTimeout: Optional[float], limit: Optional[int] = None,
        ready: Optional[Once] = None,
    ) -> None:
        """
        @param clock: for the idle timeout.
        @param idleTimeout: seconds the origin may pause between chunks;
            C{None} when the transport times that itself (an
            L{OriginResponse}).
        @param limit: bytes to buffer before overflowing; C{None} to hold the
            body for L{stream_to} from the start.
        @param ready: told what L{ready} would fire with, instead of it.
        """
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._limit = limit
        self._mode = self._HELD if limit is None else self._BUFFER
        self._chunks: List[bytes] = []
        self._size = 0
        self._received = 0
        self._request = None
        self._exchange = None
        self._idle: Optional[IDelayedCall] = None
        self._lost: Optional[Failure] = None
        self._timedOut = False
        self._ready: Any = Deferred(self._abandon) if ready is None else ready
        self._streamed: Optional[Deferred[None]] = None
        self._keep: Optional[int] = None
        self._kept: Optional[List[bytes]] = None
        self._whole = False

    def keep(self, limit: int) -> None:
        """
        While streaming, also keep a copy of the body, up to C{limit} bytes
        (see L{kept}).
        """
        self._keep, self._kept = limit, []

    def kept(self) -> Optional[bytes]:
        """
        @return: the body L{stream_to} sent, when it was kept and arrived
            whole within the limit; otherwise C{None}.
        """
        if self._kept is None or not self._whole:
            return None
        return b"".join(self._kept)

    def _write(self, request, data: bytes) -> None:
        request.write(data)
        if self._kept is not None:
            self._keep -= len(data)
            if self._keep < 0:
                self._kept = None
            else:
                self._kept.append(data)

    def ready(self) -> Deferred[bool]:
        """
        In buffer mode: fires with C{True} once the whole body is buffered
        (see L{collected}), with C{False} when it overflowed the limit (the
        relay is then held), or fails with an L{UpstreamError} (see
        L{body_error}) when the body broke off. Cancelling it aborts the
        transfer.
        """
        return self._ready

    def connectionMade(self) -> None:
        if self._idleTimeout is not None:
            self._idle = self._clock.callLater(self._idleTimeout, self._onIdle)

    def _onIdle(self) -> None:
        self._timedOut = True
        self._idle = None
        self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.reset(self._idleTimeout)
        self._received += len(data)
        if self._mode == self._STREAM:
            self._write(self._request, data)
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._mode == self._BUFFER and self._size > self._limit:
            self._mode = self._HELD
            self.transport.pauseProducing()
            self._ready.callback(False)

    def collected(self) -> bytes:
        """
        @return: the buffered body.
        """
        return b"".join(self._chunks)

    def stream_to(self, exchange) -> Deferred[None]:
        """
        Write what is buffered to the request of C{exchange} (a
        L{phantom_frame.proxy.exchange.Exchange}), then stream the rest of
        the body to it with back-pressure, and finish it. The response head
        goes out with the first body byte (or the body's end), so a body
        that breaks off before any byte came leaves the request unanswered.

        @return: a L{Deferred} firing when the request is over (finished, or
            its client gone), or failing with a L{BrokenBody} (or an
            L{UpstreamTimeout}) when the body broke off: with nothing
            written (C{sent} false: answer the request with an error), or
            after the head was sent (C{sent} true: the client's connection
            has been cut short).
        """
        streamed = self._streamed = Deferred()
        self._exchange = exchange
        request = exchange.request
        chunks, self._chunks = self._chunks, []
        if self._lost is not None and not _whole(self._lost):
            # It broke before the client was sent anything: what arrived is
            # not worth sending.
            self._streamed = None
            return fail(body_error(self._lost, self._received))
        for chunk in chunks:
            self._write(request, chunk)
        if self._lost is not None:
            self._finish(request, self._lost)
        else:
            self._mode = self._STREAM
            self._request = request
            request.registerProducer(self.transport, True)
            self.transport.resumeProducing()
        return streamed

    def _abandon(self, ready: Deferred[bool]) -> None:
        """
        L{ready} was cancelled: give up on the body.
        """
        self.abort()

    def abort(self) -> None:
        """
        Give up on the body: close the origin connection.
        """
        if self._lost is None and self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None
        if self._timedOut:
            reason = Failure(UpstreamTimeout("origin stalled while sending the body"))
        self._lost = reason
        if self._mode == self._STREAM:
            self._request.unregisterProducer()
            self._finish(self._request, reason)
        elif self._mode == self._BUFFER and not self._ready.called:
            if _whole(reason):
                self._ready.callback(True)
            else:
                self._ready.errback(body_error(reason, self._received))
        # Held: stream_to (or whoever aborted) sees _lost.

    def _finish(self, request, reason: Failure) -> None:
        streamed, self._streamed = self._streamed, None
        if not self._exchange.alive:
            pass
        elif _whole(reason):
            self._whole = True
            request.finish()
        else:
            error = body_error(reason, self._received)
            if request.startedWriting:
                # Mid-body failure: the status line is gone, so the only
                # honest signal left is to cut the connection short.
                error.sent = True
                if request.channel is not None:
                    request.channel.transport.abortConnection()
            if streamed is not None:
                streamed.errback(error)
            return
        if streamed is not None:
            streamed.callback(None)


def _whole(reason: Failure) -> bool:
    """
    @return: whether a body that ended for C{reason} arrived whole (its
        length, its last chunk, or the end of a body delimited by the
        connection's close).
    """
    return isinstance(reason.value, (ResponseDone, PotentialDataLoss))


def known_length(response: IResponse) -> Optional[int]:
    """
    @return: the response's body length, or C{None} when unknown.
    """
    length = response.length
    return None if length is UNKNOWN_LENGTH else length
