"""
Misbehaving origins made of raw sockets, for what only the wire shows: an
origin is a protocol on a loopback port that writes exactly the bytes a
test scripts, and the proxy in front of it (on a fake clock, so that its
entries age and its timeouts fire only when the test says) is read by a
raw client that sees every byte, and how the connection ended.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

import attr
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.proxy.pool import OriginPool, endpoint_factory

#: What the origin does with one request: bytes to write before closing
#: the connection, or a function given its transport.
Answer = Union[bytes, Callable[[Any], None]]


def response(status: str = "200 OK", body: bytes = b"", *headers: str, length: bool = True) -> bytes:
    """
    @param status: the status line's code and phrase.
    @param headers: C{"Name: value"} lines.
    @param length: whether to add C{Content-Length} for C{body}.
    @return: a whole HTTP/1.1 response, with C{Connection: close} unless a
        C{Connection} header is given.
    """
    lines = ["HTTP/1.1 " + status] + list(headers)
    if not any(h.lower().startswith("connection:") for h in headers):
        lines.append("Connection: close")
    if length:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def reset(transport: Any) -> None:
    """
    An answer: reset the connection without a byte.
    """
    transport.abortConnection()


def hold(transport: Any) -> None:
    """
    An answer: say nothing, keep the connection open.
    """


class _OriginProtocol(Protocol):
    """
    One connection to a L{RawOrigin}: each request head gets the next answer.
    """

    def __init__(self, origin: RawOrigin) -> None:
        self._origin = origin
        self._buffer = b""

    def connectionMade(self) -> None:
        self._origin.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            self._origin.heads.append(head)
            answer = self._origin.next_answer()
            waiting, self._origin.waiting = self._origin.waiting, []
            if isinstance(answer, bytes):
                self.transport.write(answer)
                self.transport.loseConnection()
            else:
                answer(self.transport)
            for d in waiting:
                d.callback(head)

    def connectionLost(self, reason: Failure = None) -> None:
        self._origin.connections.remove(self)


class RawOrigin(Factory):
    """
    An origin that answers each request with the next scripted answer (the
    last one again when they run out), and closes the connection.

    @ivar heads: the request heads it received, in order.
    """

    def __init__(self, answers: List[Answer]) -> None:
        self.answers = list(answers)
        self.heads: List[bytes] = []
        self.waiting: List[Deferred] = []
        self.connections: List[_OriginProtocol] = []

    def buildProtocol(self, addr: Any) -> _OriginProtocol:
        return _OriginProtocol(self)

    def next_answer(self) -> Answer:
        """
        @return: the answer to the request just received.
        """
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def received(self) -> Deferred:
        """
        @return: a L{Deferred} firing with the next request head received.
        """
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d


@attr.s(auto_attribs=True, frozen=True)
class RawAnswer:
    """
    What a client received, byte for byte, and how its connection ended.

    @ivar data: every byte received.
    @ivar clean: whether the proxy closed the connection cleanly (not
        reset or aborted).
    """

    data: bytes
    clean: bool

    @property
    def code(self) -> Optional[int]:
        """
        @return: the status code, or C{None} when no status line came.
        """
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data[9:12])

    @property
    def headers(self) -> Dict[str, str]:
        """
        @return: the header fields, lower-cased names (repeated ones joined).
        """
        head = self.data.partition(b"\r\n\r\n")[0].decode("latin-1")
        fields: Dict[str, str] = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = fields[name] + ", " + value.strip() if name in fields else value.strip()
        return fields

    @property
    def body(self) -> bytes:
        """
        @return: the bytes after the head (de-chunked when chunked).
        """
        body = self.data.partition(b"\r\n\r\n")[2]
        if self.headers.get("transfer-encoding") != "chunked":
            return body
        out = b""
        while body:
            size, _, body = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, body = out + body[:n], body[n + 2 :]
        return out


class _Client(Protocol):
    """
    Sends one request and keeps every byte of the answer.
    """

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._data = b""
        self.done: Deferred[RawAnswer] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._data += data

    def connectionLost(self, reason: Failure = None) -> None:
        self.done.callback(RawAnswer(self._data, bool(reason is not None and reason.check(ConnectionDone))))


class RawProxy:
    """
    A proxy (built with L{create_proxy}, the standalone server's default
    origin pool) in front of a L{RawOrigin}, on a fake clock; its warnings
    and errors are collected in C{warnings}.

    @ivar clock: the proxy's clock, at a realistic time.
    """

    def __init__(self, testcase: Any, config: CreateProxyConfig, answers: List[Answer]) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.origin = RawOrigin(answers)
        port = reactor.listenTCP(0, self.origin, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        testcase.addCleanup(self._closeOrigin)
        url = "http://127.0.0.1:%d" % (port.getHost().port,)
        config = attr.evolve(config, proxy_url=url)
        # The standalone server's origin client, its timeouts on the fake clock.
        pool = OriginPool(self.clock, endpoint_factory(reactor))
        testcase.addCleanup(pool.close)
        resource, self.handle = create_proxy(
            config,
            self.clock,
            agent=object(),
            client=pool.client(url, config.upstream_timeout, config.upstream_keepalive_timeout),
            runner=runInline,
        )
        testcase.addCleanup(self.handle.close)
        site = Site(resource)
        site.displayTracebacks = False
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        testcase.addCleanup(listening.stopListening)
        self._port = listening.getHost().port
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def _closeOrigin(self) -> None:
        for connection in list(self.origin.connections):
            connection.transport.abortConnection()

    def date(self, offset: float = 0) -> str:
        """
        @return: a C{Date} value on the proxy's clock.
        """
        return "Date: " + datetimeToString(self.clock.seconds() + offset).decode("ascii")

    def warnings(self) -> List[str]:
        """
        @return: the formatted warnings and errors phantom-frame logged so far.
        """
        from twisted.logger import formatEvent

        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)
            and str(e.get("log_namespace", "")).startswith("phantom_frame")
        ]

    def tracebacks(self) -> List[Dict[str, Any]]:
        """
        @return: the events logged with a failure (a traceback).
        """
        return [e for e in self.events if "log_failure" in e]

    def send(self, path: str = "/page", method: str = "GET", *headers: str) -> Deferred:
        """
        Send one request (with C{Connection: close}).

        @return: a L{Deferred} firing with the L{RawAnswer}.
        """
        lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test", "Connection: close"] + list(headers)
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        client = _Client(request)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self._port)
        return connectProtocol(endpoint, client).addCallback(lambda _: client.done)

    def get(self, path: str = "/page", *headers: str) -> Deferred:
        """
        @return: L{send} of a GET.
        """
        return self.send(path, "GET", *headers)

