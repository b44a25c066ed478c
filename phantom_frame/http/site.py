"""
L{ProxySite}, the proxy listeners' site: no tracebacks, the access log,
request metrics, a count of requests in flight and the open connections
for graceful stops (L{phantom_frame.http.drain}); and L{ProxyRequest}, the
request it makes.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import combinedLogFormatter, datetimeToLogString

from phantom_frame.http.channel import FastHitRecord, FastHits
from phantom_frame.http.drain import Drain, tracked_channel_factory
from phantom_frame.http.guard import GuardedHTTPChannel
from phantom_frame.http.limits import DEFAULT_LIMITS, REASONS, ClientLimits, host_problem
from phantom_frame.http.request_id import HEADER as REQUEST_ID, request_id
from phantom_frame.proxy.answers import is_upgrade
from phantom_frame.proxy.status import NONE, CacheStatus

#: The access log's logger: one event per answered request.
access = Logger(namespace="phantom_frame.access")


class ProxyRequest(server.Request):
    """
    A request that counts itself in its site's in-flight total (and, for an
    upgrade, in its open tunnels), notes when it arrived, and adds no
    default C{Content-Type} of its own.

    @ivar phantomServer: the name of the server that took it, set by
        L{phantom_frame.http.routing.Router}.
    @ivar phantomUpstream: seconds spent waiting for origin response heads
        on its behalf, set by L{phantom_frame.ops.timing.TimingClient}; L{None}
        when the origin was not asked.
    @ivar phantomStarted: when it arrived, on the site's clock.
    @ivar phantomStatus: the cache's part in its answer, set by whoever
        answered it.
    @ivar phantomTarget: its raw path and query, set by the router.
    @ivar phantomRequestId: its C{X-Request-Id} (the client's, when
        acceptable, else a new one): in its headers for the origin, on its
        answer and in its access-log line.
    """

    defaultContentType = None
    phantomServer: Optional[str] = None
    phantomUpstream: Optional[float] = None
    phantomStarted: Optional[float] = None
    phantomStatus: CacheStatus = NONE
    phantomTarget = None
    phantomRequestId = b""

    def process(self) -> None:
        """
        Give the request its id, count it, then process it as usual; a
        request that came other than through a L{GuardedHTTPChannel} (an
        HTTP/2 stream) whose host is missing, invalid or not allowed gets 400
        or 421.
        """
        headers = self.requestHeaders
        given = headers.getRawHeaders(REQUEST_ID)
        self.phantomRequestId = rid = request_id(given)
        if given != [rid]:
            headers.setRawHeaders(REQUEST_ID, [rid])
        site = self.channel.site
        site.active += 1
        self.phantomStarted = site.clock.seconds()
        self.notifyFinish().addBoth(site._requestDone)
        if is_upgrade(self):
            site.tunnels += 1
            self.notifyFinish().addBoth(site._tunnelDone)
        if not isinstance(self.channel, GuardedHTTPChannel):
            # HTTP/2 streams: their channel did not check the host.
            hosts = self.requestHeaders.getRawHeaders(b"host") or []
            limits = getattr(site, "limits", DEFAULT_LIMITS)
            problem = host_problem(hosts, self.clientproto, self.uri, limits)
            if problem is not None:
                self._refuse(*problem)
                return
        super().process()

    def _refuse(self, code: int, detail: str) -> None:
        """
        Answer C{code} with a short text body, as the HTTP/1.1 channel
        refuses.
        """
        body = REASONS[code] + b": " + detail.encode("ascii") + b"\n"
        self.setResponseCode(code)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def write(self, data: bytes) -> None:
        """
        Write part of the answer; the first write sends the head, with the
        request's C{X-Request-Id}.
        """
        if not self.startedWriting and self.phantomRequestId:
            self.responseHeaders.setRawHeaders(REQUEST_ID, [self.phantomRequestId])
        super().write(data)


class ProxySite(server.Site):
    """
    The proxy's HTTP site: no tracebacks, an access log through
    L{twisted.logger} (combined format plus the cache result, or JSON),
    request metrics, and a count of requests in flight for graceful stops.

    @ivar access_log: whether each answered request is logged.
    @ivar log_format: C{"text"} or C{"json"}.
    @ivar metrics: counts every answered request, whether or not it is
        logged: anything with an C{observe(server, method, code, result,
        duration, sent)} method (C{sent}: body bytes), such as
        L{phantom_frame.ops.metrics.Metrics}; or L{None}.
    @ivar active: requests in flight.
    @ivar tunnels: upgrade requests in flight: tunnels connecting or open.
    @ivar clock: times requests.
    @ivar drain: its open connections, closed on a graceful stop.
    @ivar limits: what clients may send (see
        L{phantom_frame.http.guard.GuardedHTTPChannel}); replacing it applies
        to the next request head on every connection.
    """

    requestFactory = ProxyRequest
    protocol = tracked_channel_factory
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource,
        reactor=None,
        access_log: bool = True,
        log_format: str = "text",
        metrics: Optional[Any] = None,
        fast_path: bool = True,
        limits: ClientLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor
        self.clock = reactor
        #: Answers plain hits in the channel (see L{phantom_frame.http.channel}).
        self.fastHit = FastHits(self, reactor) if fast_path else None
        self.active = 0
        self.tunnels = 0
        self._idle: List[Deferred] = []
        self.drain = Drain(reactor)
        self.access_log = access_log
        self.log_format = log_format
        self.metrics = metrics
        self.limits = limits

    def byteRequestStarted(self) -> None:
        """
        A request the channel answers without a L{Request} (see
        L{phantom_frame.http.relay}) is in flight; L{byteRequestDone} ends it.
        """
        self.active += 1

    def byteRequestDone(self) -> None:
        """
        A request of L{byteRequestStarted} is over.
        """
        self._requestDone(None)

    def _requestDone(self, result: Any) -> None:
        self.active -= 1
        if not self.active:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)
        self.drain.request_done()

    def _tunnelDone(self, result: Any) -> None:
        self.tunnels -= 1

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing when no request is in flight.
        """
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def recordFastHit(
        self, channel: Any, server: Any, method: bytes, uri: bytes, headers: Any,
        code: int, length: int, status: CacheStatus, request_id: str = "",
        duration: float = 0.0, upstream: Optional[float] = None,
    ) -> None:
        """
        Count (and log) a request the fast path answered (a hit, or a
        pass-through relayed at the byte level), as L{log} does for the
        others.

        @param duration: seconds it took.
        @param upstream: seconds spent waiting for the origin, if asked.
        """
        if self.metrics is not None:
            self.metrics.observe(
                server.name, method, code, status.result, duration, 0 if method == b"HEAD" else length
            )
        if not self.access_log:
            return
        record = FastHitRecord(
            channel, method, uri, headers, code, 0 if method == b"HEAD" else length, request_id
        )
        self._write(record, status, server.name, upstream, duration)

    def recordRefusal(
        self, channel: Any, method: Optional[bytes], uri: Optional[bytes], code: int, length: int
    ) -> None:
        """
        Count (and log) a request head the channel refused (no server took
        it), as L{log} does for answered requests.

        @param method: its method, if its request line was read.
        @param uri: its request target, if its request line was read.
        @param code: the refusal's status.
        @param length: the bytes of the refusal's answer.
        """
        method = method or b"-"
        if self.metrics is not None:
            self.metrics.observe(None, method, code, NONE.result, 0.0)
        if not self.access_log:
            return
        record = FastHitRecord(channel, method, uri or b"-", {}, code, length)
        self._write(record, NONE, None, None, 0.0)

    def log(self, request) -> None:
        """
        Count an answered request in the metrics and, unless the access log
        is off, log it: in C{text} format, the combined log format followed
        by C{request_id=ID cache=RESULT server=NAME upstream_ms=MS
        duration_ms=MS} (C{-} for no id, no server or no origin request); in
        C{json} format, a JSON object, whose fields are also the event's.
        """
        metrics = self.metrics
        if metrics is None and not self.access_log:
            return
        status = getattr(request, "phantomStatus", NONE)
        name = getattr(request, "phantomServer", None)
        started = getattr(request, "phantomStarted", None)
        duration = 0.0 if started is None else max(0.0, self.clock.seconds() - started)
        if metrics is not None:
            metrics.observe(name, request.method, request.code, status.result, duration, request.sentLength)
        if not self.access_log:
            return
        self._write(
            request,
            status,
            name,
            getattr(request, "phantomUpstream", None),
            duration,
        )

    def _write(
        self,
        request,
        status: CacheStatus,
        name: Optional[str],
        upstream: Optional[float],
        duration: float,
    ) -> None:
        """
        Write one access-log line (text or JSON) for C{request}.

        @param status: the cache's part in its answer.
        @param upstream: seconds spent waiting for the origin, if asked.
        """
        upstream_ms = None if upstream is None else round(upstream * 1000, 1)
        duration_ms = round(duration * 1000, 1)
        if self.log_format == "json":
            fields = {
                "method": request.method.decode("latin-1"),
                "uri": request.uri.decode("latin-1"),
                "protocol": request.clientproto.decode("latin-1"),
                "status": request.code,
                "bytes": request.sentLength,
                "client": getattr(request.getClientAddress(), "host", None),
                "user_agent": _header(request, b"user-agent"),
                "referer": _header(request, b"referer"),
                "cache": status.result,
                "cache_status": status.header.decode("latin-1") or None,
                "server": name,
                "upstream_ms": upstream_ms,
                "duration_ms": duration_ms,
                "request_id": _header(request, REQUEST_ID),
            }
            access.info("{access_json}", access_json=json.dumps(fields, separators=(",", ":")), **fields)
            return
        timestamp = self._logDateTime or datetimeToLogString(self.clock.seconds())
        line = combinedLogFormatter(timestamp, request)
        access.info(
            "{line} request_id={request_id} cache={cache} server={server}"
            " upstream_ms={upstream_ms} duration_ms={duration_ms}",
            line=line,
            cache=status.result,
            server=name or "-",
            upstream_ms="-" if upstream_ms is None else upstream_ms,
            duration_ms=duration_ms,
            request_id=_header(request, REQUEST_ID) or "-",
        )


def _header(request, name: bytes) -> Optional[str]:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")
