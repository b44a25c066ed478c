"""
A real origin server for end-to-end tests, and helpers to run the proxy and
a client against it on loopback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from typing import Any, Callable, Dict, List, Optional

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.task import deferLater
from twisted.trial.unittest import FailTest
from io import BytesIO

from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from phantom_frame import CreateProxyConfig, create_proxy

PAGE = b"<!doctype html><html><body>" + b"phantom frame " * 200 + b"</body></html>"


@implementer(IPushProducer)
class StreamingBody:
    """
    Writes C{total} bytes to a request in chunks, honouring pause/resume, and
    records how far it got (to observe back-pressure).
    """

    chunk = b"x" * 65536

    def __init__(self, request, total: int) -> None:
        self.request = request
        self.remaining = total
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.stopped = False
        request.registerProducer(self, True)
        reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        while not self.paused and not self.stopped and self.remaining > 0:
            data = self.chunk[: min(len(self.chunk), self.remaining)]
            self.remaining -= len(data)
            self.sent += len(data)
            self.request.write(data)
        if self.remaining <= 0 and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            reactor.callLater(0, self._produce)

    def stopProducing(self) -> None:
        self.stopped = True


class Origin(Resource):
    """
    The test origin. Every request is counted in C{hits} by path; paths
    choose the behaviour.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter = Counter()
        self.requests: List[Dict[str, Any]] = []
        self.pending: List[Any] = []
        self.streams: List[StreamingBody] = []
        self.gate: Optional[Deferred] = None
        self.version = 1
        self.inFlight = 0
        self.maxInFlight = 0

    def render(self, request) -> Any:
        path = request.path.decode()
        self.hits[path] += 1
        body = request.content.read()
        self.requests.append(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "body": body,
            }
        )
        if path.startswith("/echo"):
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"set-cookie", b"echo=1")
            return json.dumps(
                {
                    "method": request.method.decode(),
                    "uri": request.uri.decode(),
                    "headers": self.requests[-1]["headers"],
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            ).encode()
        if path == "/gated":
            # Answer only when the test fires self.gate.
            def answer(_: Any) -> None:
                request.setHeader(b"content-type", b"text/html")
                request.write(PAGE)
                request.finish()

            self.gate.addCallback(answer)
            return NOT_DONE_YET
        if path.startswith("/slowpage/"):
            # Answers after a short delay, counting how many are in flight.
            self.inFlight += 1
            self.maxInFlight = max(self.maxInFlight, self.inFlight)

            def later() -> None:
                self.inFlight -= 1
                if not request._disconnected:
                    request.setHeader(b"content-type", b"text/html")
                    request.write(b"slow page " + path.encode())
                    request.finish()

            self.pending.append(reactor.callLater(0.02, later))
            return NOT_DONE_YET
        if path.startswith("/versioned"):
            request.setHeader(b"content-type", b"text/html")
            if self.gate is not None and self.version > 1:
                def answer(_: Any, version: int = self.version) -> None:
                    request.write(b"version %d" % version)
                    request.finish()

                self.gate.addCallback(answer)
                return NOT_DONE_YET
            return b"version %d" % self.version
        if path == "/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        if path == "/big":
            total = int(request.args.get(b"n", [b"1048576"])[0])
            request.setHeader(b"content-type", b"application/octet-stream")
            if b"length" in request.args:
                request.setHeader(b"content-length", b"%d" % total)
            self.streams.append(StreamingBody(request, total))
            return NOT_DONE_YET
        if path == "/cookie":
            request.responseHeaders.setRawHeaders(b"set-cookie", [b"a=1", b"b=2"])
            request.setHeader(b"content-type", b"text/html")
            return b"cookie " + str(self.hits[path]).encode()
        if path == "/nostore":
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"content-type", b"text/html")
            return b"nostore " + str(self.hits[path]).encode()
        if path == "/private":
            request.setHeader(b"cache-control", b"private, max-age=60")
            request.setHeader(b"content-type", b"text/html")
            return b"private " + str(self.hits[path]).encode()
        if path == "/redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/page/target")
            return b""
        if path.startswith("/status/"):
            request.setResponseCode(int(path.split("/")[2]))
            request.setHeader(b"content-type", b"text/plain")
            return b"status " + path.split("/")[2].encode()
        if path == "/gzip":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"content-encoding", b"gzip")
            return gzip.compress(PAGE)
        if path == "/weird-encoding":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"content-encoding", b"x-custom")
            return b"opaque"
        if path.endswith(".png"):
            request.setHeader(b"content-type", b"image/png")
            return b"\x89PNG fake image " + str(self.hits[path]).encode()
        if path.endswith(".css"):
            request.setHeader(b"content-type", b"text/css; charset=utf-8")
            return b"body { color: red }"
        if path.endswith(".json"):
            request.setHeader(b"content-type", b"application/json")
            return b'{"ok": true}'
        if path == "/vary":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"vary", b"Accept-Language")
            lang = request.getHeader(b"accept-language") or b"none"
            return b"lang=" + lang
        if path == "/soft404":
            request.setHeader(b"content-type", b"text/html")
            return b'<html><head><meta name="phantom-404" content="true"></head></html>'
        if path == "/plain":
            request.defaultContentType = None
            return b"no content type"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE + path.encode() + b" " + str(self.hits[path]).encode()


class Running:
    """
    An origin, a proxy in front of it and a client, all on loopback; every
    port, pooled connection and pending request is cleaned up.
    """

    def __init__(
        self, testcase, config: Optional[CreateProxyConfig] = None, gated: bool = False, **proxy: Any
    ) -> None:
        self.testcase = testcase
        self.origin = Origin()
        if gated:
            self.origin.gate = Deferred()
        self.originSite = Site(self.origin)
        self.originPort = reactor.listenTCP(0, self.originSite, interface="127.0.0.1")
        testcase.addCleanup(self._stopOrigin)
        url = "http://127.0.0.1:%d" % (self.originPort.getHost().port,)
        if config is None:
            config = CreateProxyConfig(url)
        else:
            import attr

            config = attr.evolve(config, proxy_url=url)
        from phantom_frame.embed import default_agent

        self.agent, self.webhookPool = default_agent(reactor)
        self.resource, self.handle = create_proxy(config, reactor, agent=self.agent, **proxy)
        self.server = next(self.handle.servers())
        self.upstreamPool = self.server.origin_pool
        testcase.addCleanup(self.handle.close)
        testcase.addCleanup(self.upstreamPool.close)
        testcase.addCleanup(self.webhookPool.closeCachedConnections)
        self.site = Site(self.resource)
        self.site.displayTracebacks = False
        self.site.noisy = False
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        testcase.addCleanup(self.pool.closeCachedConnections)
        self.client = Agent(reactor, pool=self.pool)
        self.base = "http://127.0.0.1:%d" % (self.port.getHost().port,)

    def _stopOrigin(self) -> Deferred:
        for request in self.origin.pending:
            if hasattr(request, "cancel"):
                if request.active():
                    request.cancel()
            elif not request.finished and not request._disconnected:
                request.finish()
        for stream in self.origin.streams:
            stream.stopProducing()
        return self.originPort.stopListening()

    async def stopOrigin(self) -> None:
        """
        Take the origin down: stop listening and close the proxy's pooled
        connections to it.
        """
        await self.originPort.stopListening()
        await self.upstreamPool.close()

    def request(
        self, method: str, path: str, headers: Optional[Dict[str, str]] = None, data: Optional[bytes] = None
    ) -> Deferred:
        """
        Send a request through the proxy with a plain L{Agent}: no redirects
        followed, no content decoding, headers sent as given.
        """
        h = Headers({k: [v] for k, v in (headers or {}).items()})
        body = None if data is None else FileBodyProducer(BytesIO(data))
        return self.client.request(method.encode(), (self.base + path).encode(), h, body)

    def fetch(self, method: str, path: str, **kw: Any) -> Deferred:
        """
        @return: a L{Deferred} firing with the response and its whole body.
        """
        return Deferred.fromCoroutine(self._fetch(method, path, **kw))

    async def _fetch(self, method: str, path: str, **kw: Any):
        response = await self.request(method, path, **kw)
        body = await treq.content(response)
        return response, body


def header(response, name: str) -> Optional[str]:
    """
    @return: the response header's first value, decoded.
    """
    values = response.headers.getRawHeaders(name.encode("latin-1"))
    return values[0].decode("latin-1") if values else None


def gather(ds) -> Deferred:
    """
    @return: a L{Deferred} firing with the results of C{ds}, failing on the
        first failure.
    """
    return DeferredList(list(ds), fireOnOneErrback=True, consumeErrors=True).addCallback(
        lambda results: [r for _, r in results]
    )


async def until(condition: Callable[[], Any], timeout: float = 10, interval: float = 0.01) -> None:
    """
    Wait (on the global reactor) until C{condition()} is true.

    @param timeout: seconds to wait at most.
    @param interval: seconds between two checks.
    @raise FailTest: when C{timeout} passes first.
    """
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise FailTest(f"not true within {timeout:g}s: {condition}")
        await deferLater(reactor, interval, lambda: None)


def _address(connection: Any, which: str) -> Optional[IAddress]:
    """
    @return: C{connection.getHost()} or C{getPeer()} (C{which}), or L{None}
        for a reader or writer that is not a connection.
    """
    try:
        return getattr(connection, which)()
    except Exception:
        return None


def stalled(upstream: IAddress, downstream: IAddress) -> bool:
    """
    Whether the proxy's flow control holds a response back: its connection
    to the client has bytes the client does not take (the reactor waits to
    write them) and it has stopped reading its connection to the origin
    (the reactor does not read it). Nothing more moves from the origin
    until the client reads again; without flow control this never holds.

    @param upstream: the proxy's own address on its connection to the
        origin (the origin's peer).
    @param downstream: the client's address on its connection to the proxy.
    """
    writing = any(_address(w, "getPeer") == downstream for w in reactor.getWriters())
    reading = any(_address(r, "getHost") == upstream for r in reactor.getReaders())
    return writing and not reading
