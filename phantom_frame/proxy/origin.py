"""
Talking to an origin: L{Origin} sends the request through the byte-level
client, L{OriginResponse} reads its answer (errors mapped to
L{UpstreamError}s) and hands the body to a L{BodyRelay}
(L{phantom_frame.proxy.body}).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers
from zope.interface import implementer

from phantom_frame.proxy.client import (
    Framing,
    IOriginClient,
    IRelayReceiver,
    OriginTimeout,
    RequestBody,
    ResponseHead,
    StalledBody,
)
from phantom_frame.proxy.heads import Fields
from phantom_frame.proxy.settle import Once
from phantom_frame.proxy.body import (
    BodyRelay,
    BrokenBody,
    UpstreamError,
    UpstreamTimeout,
    _BytesProducer,
    body_error,
    known_length,
)
from phantom_frame.proxy.transfer import (
    HOP_BY_HOP,
    Inflater,
    TransferDecodeError,
    connection_named,
)

Header = Tuple[bytes, bytes]

#: Also here (their old home) for the modules that import them from here.
__all__ = [
    "BodyRelay", "BrokenBody", "FILL_DROPPED", "HOP_BY_HOP", "Header", "Origin", "OriginResponse",
    "UpstreamError", "UpstreamTimeout", "_BytesProducer", "body_error", "body_producer", "upstream_error",
    "connection_tokens", "end_to_end", "known_length",
]

#: Request headers a cache fill never forwards: the fill wants the whole,
#: unconditional representation, in a coding we can store.
FILL_DROPPED = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
        b"accept-encoding",
        b"content-length",
    }
)


def connection_tokens(headers: Headers) -> frozenset:
    """
    @return: the lower-cased tokens of every C{Connection} header.
    """
    return frozenset(connection_named(headers.getRawHeaders(b"connection", [])))


def end_to_end(headers: Headers, drop: frozenset = frozenset()) -> List[Header]:
    """
    The headers of a message that travel past a proxy, in order, repeated
    headers kept.

    @param headers: the received headers.
    @param drop: further lower-case names to leave out.
    @return: C{(name, value)} pairs without hop-by-hop headers, without
        those named in C{Connection}, and without C{drop}.
    """
    excluded = HOP_BY_HOP | connection_tokens(headers) | drop
    pairs = []
    for name, values in headers.getAllRawHeaders():
        if name.lower() in excluded:
            continue
        for value in values:
            pairs.append((name, value))
    return pairs


class Origin:
    """
    One origin server (a C{proxy_url}) reached through an L{IOriginClient}
    (the pooled byte-level client of L{phantom_frame.proxy.pool}).
    """

    def __init__(
        self, proxy_url: str, client: IOriginClient, clock: IReactorTime, timeout: float
    ) -> None:
        """
        @param proxy_url: C{http[s]://host[:port][/base]}; the base path
            prefixes every upstream path.
        @param client: sends the requests.
        @param clock: the server's clock.
        @param timeout: seconds to wait for response headers, and at most
            between two chunks of a response body (the client's own).
        """
        parts = urlsplit(proxy_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host, got {proxy_url!r}")
        self.url = proxy_url
        self.scheme = parts.scheme.encode("ascii")
        self.netloc = parts.netloc.encode("idna" if not parts.netloc.isascii() else "ascii")
        self.base_path = parts.path.rstrip("/").encode("utf-8")
        self._prefix = self.scheme + b"://" + self.netloc + self.base_path
        self.host = (b"Host", self.netloc)
        self.client = client
        self._clock = clock
        self.timeout = timeout

    def url_for(self, path_and_query: bytes) -> bytes:
        """
        @param path_and_query: the stripped path, starting with C{/}, with
            its query.
        @return: the absolute upstream URL.
        """
        return self._prefix + path_and_query

    def request(
        self,
        method: bytes,
        path_and_query: bytes,
        headers: List[Header],
        body: Union[None, bytes, RequestBody] = None,
    ) -> Deferred[OriginResponse]:
        """
        Send a request and wait (at most C{timeout}) for the response head.

        @param headers: the fields to send, as pairs (C{Host} is the
            origin's), or L{Fields} made with the origin's C{Host} (see
            L{phantom_frame.proxy.forwarded.forwarded_fields}).
        @param body: see L{IOriginClient.request}.
        @return: a L{Deferred} firing with the L{OriginResponse}, or failing
            with L{UpstreamTimeout} or L{UpstreamError}. Cancelling it
            cancels the request.
        """
        return self.send(OriginResponse(self, method), method, path_and_query, headers, body)

    def request_then(
        self,
        method: bytes,
        path_and_query: bytes,
        headers: Union[List[Header], Fields],
        body: Union[None, bytes, RequestBody],
        answered: Callable[[OriginResponse], object],
        failed: Callable[[Exception], object],
    ) -> OriginResponse:
        """
        L{request}, its outcome told to plain functions rather than through
        a L{Deferred}: C{answered} with the L{OriginResponse} once its head
        came, or C{failed} with the L{UpstreamTimeout}, L{UpstreamError} or
        C{CancelledError} before it (C{stopProducing} on the response
        cancels the request).
        """
        response = OriginResponse(self, method, Once(answered, failed))
        self.send(response, method, path_and_query, headers, body)
        return response

    def send(
        self, response: OriginResponse, method: bytes, path_and_query: bytes,
        headers: Union[List[Header], Fields], body: Union[None, bytes, RequestBody],
    ) -> Optional[Deferred[OriginResponse]]:
        """
        Send a request whose answer C{response} reads.

        @return: C{response}'s L{Deferred} of the head (see L{request}).
        """
        if headers.__class__ is not Fields:
            headers = [self.host] + headers
        client = self.client
        # A relaying client tells the response of its end itself: no
        # Deferred per request (see IRelayingClient).
        relay = getattr(client, "relay", None)
        try:
            if relay is not None:
                response.started = self._clock.seconds()
                return response.relayed(relay(method, self.base_path + path_and_query, headers, response, body))
            done = client.request(method, self.base_path + path_and_query, headers, response, body)
        except ValueError as e:
            waiting, response._waiting = response._waiting, None
            waiting.errback(UpstreamError(f"cannot forward the request: {e}"))
            return response._result
        return response.start(done)


#: Why a whole body ended (one for all: it carries no traceback, and its
#: readers only check it).
_WHOLE = Failure(ResponseDone())


def upstream_error(failure: Failure, origin: Origin) -> Exception:
    """
    @param failure: why an exchange with C{origin} failed before its head.
    @return: the L{UpstreamTimeout} or L{UpstreamError} it is, or a
        C{CancelledError} when the caller gave up.
    """
    if failure.check(CancelledError):
        return CancelledError()
    if failure.check(OriginTimeout):
        return UpstreamTimeout(f"no answer from {origin.url} within {origin.timeout:g}s")
    return UpstreamError(failure.getErrorMessage() or failure.type.__name__)


@implementer(IRelayReceiver, IPushProducer)
class OriginResponse:
    """
    An origin's answer as the proxy reads it: the final head's status and
    end-to-end fields, and the body, handed to one L{Protocol} (a
    L{BodyRelay}) with L{deliverBody} as an L{IResponse} does; transfer
    codings other than C{chunked} are undone on the way. The receiver of
    its request: told of the end by the client's L{Deferred}
    (L{start}), or by the client itself (L{relayed}).

    @ivar code: the status code.
    @ivar phrase: the reason phrase.
    @ivar pairs: the end-to-end fields, in order; C{Content-Length} only
        when no body follows (an answer to C{HEAD}, a 204 or 304).
    @ivar length: the body's length, C{None} when unknown.
    @ivar method: the request's method.
    @ivar head: the L{ResponseHead}.
    @ivar timing: see L{IRelayReceiver.timing}.
    @ivar started: when a relayed request was made (for L{timing}).
    @cvar attributed: its origin time is added to that of the client
        request being answered (see
        L{phantom_frame.ops.timing.TimingClient.relay}).
    """

    attributed = True

    def __init__(self, origin: Origin, method: bytes, waiting: Optional[Once] = None) -> None:
        """
        @param waiting: told of the head (or of the failure before it)
            instead of the L{Deferred} of L{start} and L{relayed}.
        """
        self._origin = origin
        self.method = method
        self.head: Optional[ResponseHead] = None
        self.code = 0
        self.phrase = b""
        self.pairs: List[Header] = []
        self.length: Optional[int] = None
        self._result: Optional[Deferred[OriginResponse]] = None
        if waiting is None:
            waiting = self._result = Deferred(self._cancel)
        self._waiting: Any = waiting
        #: The client's Deferred of the exchange, or the relayed exchange:
        #: what cancels the request.
        self._done: Any = None
        self.timing: Any = None
        self.started = 0.0
        self._producer: Any = None
        self._protocol: Optional[Protocol] = None
        self._pending: Optional[List[bytes]] = None
        self._end: Optional[Failure] = None
        self._inflater: Optional[Inflater] = None
        self._paused = False

    def start(self, done: Deferred[ResponseHead]) -> Deferred[OriginResponse]:
        """
        @param done: the client's L{Deferred} of this exchange (the answer
            may have come already).
        @return: the L{Deferred} of the head (see L{Origin.request}).
        """
        self._done = done
        done.addCallbacks(self._whole, self._broken)
        return self._result

    def relayed(self, exchange: Any) -> Deferred[OriginResponse]:
        """
        @param exchange: what a relaying client returned for the request
            (its C{cancel()} abandons it); the client tells this response
            of the end (L{responseDone}, L{responseFailed}), possibly
            before this is called.
        @return: the L{Deferred} of the head (see L{Origin.request}).
        """
        if self._end is None:  # (one that ended has nothing left to cancel)
            self._done = exchange
        return self._result

    def _timed(self, failed: bool) -> None:
        """
        Tell the timing client, once, how long the request took to its
        final head (or to its failure before it).
        """
        timing = self.timing
        if timing is not None:
            self.timing = None
            timing.timed(self._origin._clock.seconds() - self.started, failed)

    def _cancel(self, waiting: Deferred[OriginResponse]) -> None:
        if self._done is not None:
            self._done.cancel()

    def values(self, name: bytes) -> List[bytes]:
        """
        @param name: a lower-case field name.
        @return: the values of the end-to-end fields so named, in order.
        """
        return [v for n, v in self.pairs if n.lower() == name]

    # IResponseReceiver

    def interimReceived(self, head: ResponseHead) -> None:
        """
        Interim answers are not relayed on this path.
        """

    def headReceived(self, head: ResponseHead, producer: Any) -> None:
        """
        The final head: fire the head's L{Deferred}; hold the body until a
        protocol takes it.
        """
        if self.timing is not None:
            self._timed(False)
        self.head = head
        self.code = head.status
        self.phrase = head.phrase
        framing = head.framing
        if framing is Framing.EMPTY:
            self.length = 0
            self.pairs = head.end_to_end()
        else:
            self.length = head.length if framing is Framing.LENGTH else None
            self.pairs = head.end_to_end(head.length is None and framing is not Framing.CHUNKED)
        if head.codings:
            self._inflater = Inflater(head.codings)
        self._producer = producer
        waiting, self._waiting = self._waiting, None
        waiting.callback(self)
        if self._protocol is None and self._end is None:
            self.pauseProducing()

    def bodyReceived(self, data: bytes) -> None:
        """
        Body bytes: decoded, to the protocol (held until there is one).
        """
        if self._inflater is not None:
            data = self._inflater.decode(data)
            if not data:
                return
        if self._protocol is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
        else:
            self._protocol.dataReceived(data)

    # The end

    def responseDone(self, head: ResponseHead) -> None:
        """
        The whole answer came (a relaying client's word).
        """
        self._whole(head)

    def responseFailed(self, failure: Failure) -> None:
        """
        The request failed, or its body broke off (a relaying client's
        word).
        """
        if self.timing is not None:
            self._timed(True)
        self._broken(failure)

    def _whole(self, head: ResponseHead) -> None:
        if self._inflater is not None:
            try:
                tail = self._inflater.finish()
            except TransferDecodeError as e:
                self._ended(Failure(e))
                return
            if tail:
                self.bodyReceived(tail)
        self._ended(_WHOLE)

    def _broken(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            if failure.check(StalledBody):
                failure = Failure(UpstreamTimeout("origin stalled while sending the body"))
            self._ended(failure)
            return
        waiting.errback(upstream_error(failure, self._origin))

    def _ended(self, reason: Failure) -> None:
        self._end = reason
        protocol = self._protocol
        if protocol is not None and not self._pending:
            protocol.connectionLost(reason)
            self._let_go()

    def _let_go(self) -> None:
        """
        The body was handed over whole (or broke): drop what refers back
        to this answer (its protocol, the exchange producing it, the
        head's L{Deferred} and its canceller), so that nothing of it waits
        for the cycle collector.
        """
        self._protocol = None
        self._producer = None
        self._result = None
        self._done = None

    # The body's consumer

    def deliverBody(self, protocol: Protocol) -> None:
        """
        Hand the body to C{protocol}: what came so far, the rest as it
        comes, then C{connectionLost} with L{ResponseDone} for a whole body,
        or the failure that broke it. Its C{transport} is this answer: an
        L{IPushProducer} of the body.
        """
        self._protocol = protocol
        protocol.makeConnection(self)
        pending, self._pending = self._pending, None
        if pending:
            for data in pending:
                protocol.dataReceived(data)
        if self._end is not None:
            protocol.connectionLost(self._end)
            self._let_go()
        elif self._paused:
            self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop reading the body for now.
        """
        if not self._paused and self._end is None:
            self._paused = True
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read the body again.
        """
        if self._paused:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()

    def stopProducing(self) -> None:
        """
        Abandon the body: the origin connection is closed.
        """
        if self._end is None and self._done is not None:
            self._done.cancel()


def body_producer(content, length: Optional[int]) -> Union[None, bytes, RequestBody]:
    """
    The body of a client's request, as twisted.web stored it, for
    L{Origin.request}.

    @param content: the request's C{content} file (memory or a temp file).
    @param length: the body's length from the request head; C{None} when
        the request had no body.
    @return: C{None} for no body, its bytes when small, else a
        L{RequestBody} read from C{content} with back-pressure.
    """
    if not length:
        return None if length is None else b""
    content.seek(0, 0)
    if length <= 65536:
        return content.read()
    body = RequestBody(length)
    producer = FileBodyProducer(content)
    body.registerProducer(producer, True)

    def read(_: Any) -> None:
        body.unregisterProducer()
        body.finish()

    producer.startProducing(body).addCallbacks(read, lambda _: None)
    return body

