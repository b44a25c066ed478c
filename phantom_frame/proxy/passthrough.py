"""
L{Passthrough}: forwarding a request the cache does not answer, relaying the
origin's response back as it streams, answering 502 or 504 when the origin
fails, and dropping what a successful unsafe request invalidates.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from phantom_frame.cache.streaming import CompressingConsumer, compressed_headers, stream_coding
from phantom_frame.proxy.answers import http_date, send_error
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.origin import (
    HOP_BY_HOP,
    BodyRelay,
    Header,
    Origin,
    OriginResponse,
    UpstreamError,
    UpstreamTimeout,
    body_producer,
    connection_named,
)
from phantom_frame.proxy.rules import NO_RULES, HeaderRules, variables_of
from phantom_frame.proxy.status import CacheStatus, forwarded
from phantom_frame.proxy.view import RequestView

#: Logged as the server's own events (namespace C{phantom_frame.proxy}).
log = Logger(namespace="phantom_frame.proxy")

_SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS", b"TRACE")

#: Request headers the proxy sets itself (the origin client frames the body
#: it sends).
_REPLACED = frozenset(
    {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)


def request_body(request):
    """
    @return: the client's request body (as twisted.web spooled it) for
        L{Origin.request}, or C{None} when it sent none.
    """
    rh = request.requestHeaders
    if not (rh.hasHeader(b"content-length") or rh.hasHeader(b"transfer-encoding")):
        return None
    content = request.content
    content.seek(0, 2)
    return body_producer(content, content.tell())


def forward_headers(view: RequestView, drop: frozenset = frozenset(), rules: HeaderRules = NO_RULES) -> List[Header]:
    """
    @param drop: more request headers (lower-cased) not to forward.
    @return: the request's end-to-end headers for the origin, with the
        C{X-Forwarded-For}, C{X-Forwarded-Proto} and C{X-Forwarded-Host}
        the proxy sets, and the server's request header C{rules} applied.
    """
    raw = view.pairs()
    excluded = HOP_BY_HOP | drop | _REPLACED
    connection = view.values(b"connection")
    if connection:
        excluded = excluded | frozenset(connection_named(connection))
    pairs = [(n, v) for n, v in raw if n.lower() not in excluded]
    forwarded_for = view.values(b"x-forwarded-for")
    if view.client:
        forwarded_for = forwarded_for + [view.client.encode("ascii")]
    if forwarded_for:
        pairs.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    pairs.append((b"X-Forwarded-Proto", b"https" if view.secure else b"http"))
    host = view.values(b"host")
    if host:
        pairs.append((b"X-Forwarded-Host", host[0]))
    if rules.request_set or rules.request_remove:
        pairs = rules.request(pairs, variables_of(view))
    return pairs


class Passthrough:
    """
    How a server passes requests through to its origin.
    """

    def __init__(
        self,
        name: str,
        origin: Origin,
        clock: IReactorTime,
        timeout: float,
        invalidates: Callable[[RequestView, object], None],
        adopts: Optional[Callable[[RequestView, object, bytes, float, float], None]] = None,
        keep_limit: int = 0,
    ) -> None:
        """
        @param name: the server's name, for logs.
        @param origin: where requests go.
        @param clock: for body timeouts.
        @param timeout: seconds the origin may pause within a body.
        @param invalidates: called with the request and the origin's
            response after a successful unsafe request (RFC 9111 §4.4), or
            C{None} when nothing is invalidated so.
        @param adopts: called with the request, the origin's response, its
            whole body and the request's and response's times after a
            C{POST} answered with a C{Content-Location} (it may answer
            later C{GET}s: RFC 9111 §4), or C{None}.
        @param keep_limit: the largest body kept for C{adopts}.
        """
        self._name = name
        self._origin = origin
        self._clock = clock
        self._timeout = timeout
        self._invalidates = invalidates
        self._adopts = adopts
        self._keep_limit = keep_limit

    @property
    def adopts(self) -> bool:
        """
        Whether a C{POST} answer may be stored for C{GET}s (see
        L{__init__}): its body is then kept as it is relayed.
        """
        return self._adopts is not None

    def answered_unsafe(self, view: RequestView, response: Any) -> None:
        """
        An unsafe request was answered with C{response} (with C{code} or
        C{status}, and C{values(name)}): drop what it invalidates when it
        succeeded (RFC 9111 §4.4).
        """
        code = getattr(response, "code", None) or response.status
        if self._invalidates is not None and view.method not in _SAFE_METHODS and 200 <= code < 400:
            self._invalidates(view, response)

    def origin_failed(self, exchange: Exchange, error: UpstreamError, fwd: str) -> None:
        """
        Answer 504 for a timeout, 502 for any other origin failure, and log
        it with the server and origin.
        """
        code, text, detail = self.failed(error)
        send_error(exchange, code, text, forwarded(fwd, detail))

    def failed(self, error: UpstreamError) -> Tuple[int, str, str]:
        """
        Log an origin failure with the server and origin.

        @return: the answer's status code and text, and the C{Cache-Status}
            C{fwd} detail: 504 for a timeout, 502 for any other failure.
        """
        log.warn(
            "server {server}: origin {origin} failed: {error}",
            server=self._name,
            origin=self._origin.url,
            error=str(error),
        )
        if isinstance(error, UpstreamTimeout):
            return 504, "Gateway Timeout", "timeout"
        return 502, "Bad Gateway", "origin-error"

    def failed_mid_body(self, error: UpstreamError) -> None:
        """
        Log an origin failure after the client was sent the answer's head.
        """
        log.warn(
            "server {server}: origin {origin} failed mid-body, connection to the client"
            " closed: {error}",
            server=self._name,
            origin=self._origin.url,
            error=str(error),
        )

    async def forward(self, exchange: Exchange, status: CacheStatus) -> None:
        """
        Forward the request to the origin, uncached, and relay the answer
        with C{status}.
        """
        view = exchange.view
        request = exchange.request
        request_time = self._clock.seconds()
        try:
            response = await self._origin.request(
                view.method, view.target, forward_headers(view, rules=exchange.rules), request_body(request)
            )
        except UpstreamError as e:
            self.origin_failed(exchange, e, "bypass")
            return
        response_time = self._clock.seconds()
        if (
            self._invalidates is not None
            and view.method not in _SAFE_METHODS
            and 200 <= response.code < 400
        ):
            self._invalidates(view, response)
        relay = BodyRelay(self._clock, None)
        adopting = (
            self._adopts is not None
            and view.method == b"POST"
            and bool(response.values(b"content-location"))
        )
        if adopting:
            relay.keep(self._keep_limit)
        response.deliverBody(relay)
        await self.relay(exchange, response, relay, status)
        body = relay.kept() if adopting else None
        if body is not None:
            self._adopts(view, response, body, request_time, response_time)

    async def relay(
        self,
        exchange: Exchange,
        response: OriginResponse,
        relay: BodyRelay,
        status: CacheStatus,
        fwd: str = "bypass",
        identity: bool = False,
    ) -> None:
        """
        Answer with the origin's C{response}, its body streaming from
        C{relay} (dropped when the client is gone or asked for C{HEAD}).

        A body that breaks off before its first byte is answered like an
        origin that failed (502, or 504 for a stall); after, the client's
        connection is cut short. Either way one warning is logged.

        @param fwd: the C{Cache-Status} C{fwd} of an error answer.
        @param identity: whether the origin was asked for identity on the
            client's behalf (a fill whose response turned out not
            storable): the body is then compressed on the fly, in a coding
            the client accepts, when it is worth it (see
            L{stream_coding}).
        """
        if not exchange.alive:
            relay.abort()
            return
        request = exchange.request
        request.setResponseCode(response.code, response.phrase)
        pairs = response.pairs
        length = response.length
        coding = None
        if identity:
            accept = exchange.view.values(b"accept-encoding")
            coding = stream_coding(
                b", ".join(accept) if accept else None, request.method, response.code, pairs, length
            )
            if coding is not None:
                pairs = compressed_headers(pairs, coding)
        headers = Headers()
        for name, value in pairs:
            headers.addRawHeader(name, value)
        if not headers.hasHeader(b"date"):
            headers.setRawHeaders(b"date", [http_date(self._clock.seconds())])
        if (
            length is not None
            and coding is None
            and request.method != b"HEAD"
            and response.code not in (204, 304)
        ):
            # twisted.web's client keeps the length out of the headers:
            # give it back, so the client gets it instead of chunks.
            headers.setRawHeaders(b"content-length", [b"%d" % length])
        exchange.set_status(status, headers)
        request.responseHeaders = headers
        if request.method == b"HEAD" and response.method != b"HEAD":
            # A GET fill answering a HEAD: the headers are the answer.
            request.write(b"")
            request.finish()
            relay.abort()
            return
        target = exchange if coding is None else _Compressing(exchange, coding, self._clock)
        try:
            await relay.stream_to(target)
        except CancelledError:
            relay.abort()
            raise
        except UpstreamError as e:
            if not e.sent:
                self.origin_failed(exchange, e, fwd)
                return
            self.failed_mid_body(e)


def content_location_is_target(view: RequestView, response) -> bool:
    """
    @return: whether C{response}'s C{Content-Location} names the request's
        own target on this server (RFC 9110 §9.3.3: a POST answer that may
        then be stored for GETs of it).
    """
    values = response.values(b"content-location")
    return len(values) == 1 and _local_target(view, values[0]) == view.target


def _local_target(view: RequestView, value: bytes) -> Optional[bytes]:
    """
    @return: the stripped target (path and query) a C{Location} or
        C{Content-Location} value names on this server, or C{None} when it
        names another host, another server behind this proxy, or no path.
    """
    parts = urlsplit(value.decode("latin-1"))
    host = (view.values(b"host") or [b""])[0].lower()
    if parts.netloc and parts.netloc.encode("latin-1").lower() != host:
        return None  # another origin
    path = parts.path.encode("latin-1")
    if not path.startswith(b"/"):
        return None
    prefix = view.prefix
    if prefix:
        if path != prefix and not path.startswith(prefix + b"/"):
            return None  # another server behind this proxy
        path = path[len(prefix):] or b"/"
    return path + (b"?" + parts.query.encode("latin-1") if parts.query else b"")


class _Compressing:
    """
    An exchange whose body is compressed on its way to the client: what a
    L{BodyRelay} streams to (its C{request} takes the body, its C{alive}
    is the client's).
    """

    def __init__(self, exchange: Exchange, coding: str, clock: IReactorTime) -> None:
        self._exchange = exchange
        self.view = exchange.view
        self.request = _CompressedRequest(exchange, coding, clock)

    @property
    def alive(self) -> bool:
        """
        @return: whether the client may still be written to.
        """
        return self._exchange.alive


class _CompressedRequest(CompressingConsumer):
    """
    The request side a L{BodyRelay} writes to: a L{CompressingConsumer} in
    front of the twisted.web request, finishing it once the compressed body
    is all written, and giving the relay the request's C{channel} (to cut
    the connection when the origin fails mid-body).
    """

    def __init__(self, exchange: Exchange, coding: str, clock: IReactorTime) -> None:
        request = exchange.request
        self._request = request
        super().__init__(request, coding, clock, request.finish, lambda: exchange.alive)

    @property
    def channel(self):
        """
        The twisted.web request's channel.
        """
        return self._request.channel

    @property
    def startedWriting(self) -> bool:
        """
        Whether the twisted.web request has sent its head.
        """
        return bool(self._request.startedWriting)


def unsafe_targets(view: RequestView, response) -> List[bytes]:
    """
    RFC 9111 §4.4: what a successful unsafe request invalidates: its
    target, and its C{Location} and C{Content-Location} when they are on
    this server.

    @return: stripped targets (path and query).
    """
    targets = [view.target]
    for name in (b"location", b"content-location"):
        for value in response.values(name):
            target = _local_target(view, value)
            if target is not None:
                targets.append(target)
    return targets
