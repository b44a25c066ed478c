"""
Passing requests through to the origin: L{OriginRelay}, the part of
L{phantom_frame.proxy.server.ProxyServer} that forwards a request the cache does
not answer, relays the origin's response back as it streams, answers 502 or
504 when the origin fails, and drops what a successful unsafe request
invalidates.
"""

from __future__ import annotations

from typing import Callable, List
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from phantom_frame.proxy.answers import alive, cache_status, send_error
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.keys import RequestInfo
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.origin import (
    BodyRelay,
    Header,
    Origin,
    UpstreamError,
    UpstreamTimeout,
    body_producer,
    end_to_end,
    known_length,
)

#: Logged as the server's own events (namespace C{phantom_frame.proxy}).
log = Logger(namespace="phantom_frame.proxy")

_SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS", b"TRACE")

#: Request headers the proxy sets itself (the Agent sets Content-Length from
#: the body it sends).
_REPLACED = frozenset(
    {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)


def request_body(request):
    """
    @return: a producer of the client's request body (as twisted.web
        spooled it), or C{None} when it sent none.
    """
    rh = request.requestHeaders
    if not (rh.hasHeader(b"content-length") or rh.hasHeader(b"transfer-encoding")):
        return None
    content = request.content
    content.seek(0, 2)
    return body_producer(content, content.tell())


class OriginRelay:
    """
    How a server passes requests through to its origin.

    A mixin: the class using it provides the attributes annotated here.

    @ivar name: the server's name, for logs.
    @ivar config: the server's settings.
    @ivar _clock: the server's clock.
    @ivar origin: where requests are forwarded.
    @ivar http_policy: whether the http cache policy (RFC 9111) applies.
    @ivar cache: what a successful unsafe request invalidates entries of.
    @ivar key_fn: the cache key of a request.
    """

    name: str
    config: CreateProxyConfig
    _clock: IReactorTime
    origin: Origin
    http_policy: bool
    cache: ResponseCache
    key_fn: Callable[[RequestInfo], str]

    def _forward_headers(self, request, drop: frozenset = frozenset()) -> List[Header]:
        """
        @param drop: more request headers (lower-cased) not to forward.
        @return: the request's end-to-end headers for the origin, with the
            C{X-Forwarded-For}, C{X-Forwarded-Proto} and C{X-Forwarded-Host}
            the proxy sets.
        """
        headers = request.requestHeaders
        pairs = end_to_end(
            headers,
            drop | _REPLACED,
        )
        client = getattr(request.getClientAddress(), "host", None)
        forwarded = headers.getRawHeaders(b"x-forwarded-for", [])
        if client:
            forwarded = forwarded + [client.encode("ascii")]
        if forwarded:
            pairs.append((b"X-Forwarded-For", b", ".join(forwarded)))
        pairs.append((b"X-Forwarded-Proto", b"https" if request.isSecure() else b"http"))
        host = headers.getRawHeaders(b"host")
        if host:
            pairs.append((b"X-Forwarded-Host", host[0]))
        return pairs

    def _origin_failed(self, request, error: UpstreamError, fwd: str) -> None:
        """
        Answer 504 for a timeout, 502 for any other origin failure, and log
        it with the server and origin.
        """
        if isinstance(error, UpstreamTimeout):
            code, text, detail = 504, "Gateway Timeout", "detail=timeout"
        else:
            code, text, detail = 502, "Bad Gateway", "detail=origin-error"
        send_error(request, code, text, cache_status(fwd, detail))
        log.warn(
            "server {server}: origin {origin} failed: {error}",
            server=self.name,
            origin=self.origin.url,
            error=str(error),
        )

    async def _passthrough(self, request, path_qs: bytes, status: bytes) -> None:
        """
        Forward C{request} to the origin, uncached, and relay the answer
        with C{Cache-Status} C{status}.
        """
        try:
            response = await self.origin.request(
                request.method,
                path_qs,
                self._forward_headers(request),
                request_body(request),
            )
        except UpstreamError as e:
            self._origin_failed(request, e, "fwd=bypass")
            return
        if self.http_policy and request.method not in _SAFE_METHODS and 200 <= response.code < 400:
            self._invalidate_unsafe(request, path_qs, response)
        relay = BodyRelay(self._clock, self.config.upstream_timeout)
        response.deliverBody(relay)
        await self._relay(request, response, relay, status)

    def _invalidate_unsafe(self, request, path_qs: bytes, response) -> None:
        """
        RFC 9111 §4.4: a successful unsafe request invalidates what is
        stored for its target, and for its C{Location} and
        C{Content-Location} when they are on this server.
        """
        targets = [path_qs]
        prefix = b"/" + b"/".join(request.prepath) if request.prepath else b""
        host = (request.requestHeaders.getRawHeaders(b"host") or [b""])[0].lower()
        for name in (b"location", b"content-location"):
            for value in response.headers.getRawHeaders(name, ()):
                parts = urlsplit(value.decode("latin-1"))
                if parts.netloc and parts.netloc.encode("latin-1").lower() != host:
                    continue  # another origin
                path = parts.path.encode("latin-1")
                if not path.startswith(b"/"):
                    continue
                if prefix:
                    if path != prefix and not path.startswith(prefix + b"/"):
                        continue  # another server behind this proxy
                    path = path[len(prefix):] or b"/"
                targets.append(path + (b"?" + parts.query.encode("latin-1") if parts.query else b""))
        for target in targets:
            plain, _, query = target.partition(b"?")
            info = RequestInfo.from_raw(b"GET", plain, query, ())
            try:
                self.cache.drop(self.key_fn(info))
            except Exception:
                log.failure("cache key function failed for {path!r}", path=target)

    async def _relay(self, request, response, relay: BodyRelay, status: bytes) -> None:
        """
        Answer C{request} with the origin's C{response}, its body streaming
        from C{relay} (dropped when the client is gone or asked for C{HEAD}).
        """
        if not alive(request):
            relay.abort()
            return
        request.setResponseCode(response.code, response.phrase)
        headers = Headers()
        for name, value in end_to_end(response.headers):
            headers.addRawHeader(name, value)
        if not headers.hasHeader(b"date"):
            headers.setRawHeaders(b"date", [datetimeToString()])
        length = known_length(response)
        if length is not None and request.method != b"HEAD" and response.code not in (204, 304):
            # twisted.web's client keeps the length out of the headers:
            # give it back, so the client gets it instead of chunks.
            headers.setRawHeaders(b"content-length", [b"%d" % length])
        headers.setRawHeaders(b"cache-status", [status])
        request.responseHeaders = headers
        if request.method == b"HEAD" and response.request.method != b"HEAD":
            # A GET fill answering a HEAD: the headers are the answer.
            request.write(b"")
            request.finish()
            relay.abort()
            return
        try:
            await relay.stream_to(request)
        except CancelledError:
            relay.abort()
            raise

