"""
Origins for the origin client's tests: in memory (a memory endpoint whose
connections are L{StringTransport}s, a receiver that notes what it gets)
and on loopback (a twisted.web site that counts its connections).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from phantom_frame.proxy.client import IResponseReceiver
from phantom_frame.proxy.pool import OriginPool

#: The clients' timeout, in seconds.
TIMEOUT = 10.0

#: A complete answer with a 5-byte body.
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

#: A complete chunked answer (an extension, a space, a trailer) whose
#: body is C{b"Wikipedia in\r\n\r\nchunks."}.
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;name=value\r\nWiki\r\n5\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n"
    b"0\r\nX-Trailer: 1\r\n\r\n"
)


class Wire:
    """
    One memory connection: the client's protocol and its transport.
    """

    def __init__(self, protocol: Any, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def sent(self) -> bytes:
        """
        @return: what the client wrote since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def answer(self, *pieces: bytes) -> None:
        """
        Deliver C{pieces} from the origin, one read each.
        """
        for piece in pieces:
            self.protocol.dataReceived(piece)

    def lose(self, reason: Exception = ConnectionDone()) -> None:
        """
        The connection ends for C{reason}.
        """
        self.protocol.connectionLost(Failure(reason))


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects at once over a L{StringTransport}, or (C{hold}) when told, or
    (C{refuse}) never.
    """

    def __init__(self) -> None:
        self.wires: List[Wire] = []
        self.pending: List[Tuple[Any, Deferred]] = []
        self.cancelled = 0
        self.refuse: Optional[Exception] = None
        self.hold = False

    def connect(self, factory: Any) -> Deferred:
        """
        @return: a L{Deferred} of a protocol of C{factory}.
        """
        if self.refuse is not None:
            return fail(self.refuse)
        if self.hold:
            d: Deferred = Deferred(lambda _: self._cancel())
            self.pending.append((factory, d))
            return d
        return succeed(self._make(factory))

    def _cancel(self) -> None:
        self.cancelled += 1

    def _make(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 8080))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.2", 8080))
        protocol.makeConnection(transport)
        self.wires.append(Wire(protocol, transport))
        return protocol

    def complete(self) -> Wire:
        """
        Complete the oldest pending connection.
        """
        factory, d = self.pending.pop(0)
        d.callback(self._make(factory))
        return self.wires[-1]


@implementer(IResponseReceiver)
class Recorder:
    """
    Notes every delivery in order; optionally pauses its producer after the
    first body chunk.
    """

    def __init__(self, pause_after: Optional[int] = None) -> None:
        self.events: List[Tuple[str, Any]] = []
        self.producer: Any = None
        self.head: Any = None
        self._pause_after = pause_after

    def interimReceived(self, head: Any) -> None:
        """
        Note an interim head's status.
        """
        self.events.append(("interim", head.status))

    def headReceived(self, head: Any, producer: Any) -> None:
        """
        Note the final head's status; keep it and the producer.
        """
        self.events.append(("head", head.status))
        self.head = head
        self.producer = producer

    def bodyReceived(self, data: bytes) -> None:
        """
        Note body bytes; pause once past C{pause_after} bytes.
        """
        self.events.append(("body", data))
        if self._pause_after is not None and len(self.body()) >= self._pause_after:
            self._pause_after = None
            self.producer.pauseProducing()

    def body(self) -> bytes:
        """
        @return: the body delivered so far.
        """
        return b"".join(data for kind, data in self.events if kind == "body")


@implementer(IPushProducer)
class Source:
    """
    A push producer that notes how it is driven.
    """

    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        """
        Note the pause.
        """
        self.state = "paused"

    def resumeProducing(self) -> None:
        """
        Note the resumption.
        """
        self.state = "producing"

    def stopProducing(self) -> None:
        """
        Note the stop.
        """
        self.state = "stopped"


def make(
    testcase: SynchronousTestCase, **options: Any
) -> Tuple[Clock, MemoryEndpoint, OriginPool, Any]:
    """
    @return: a clock, a memory endpoint, a pool over them (with
        C{options}) and the client of C{http://origin.example:8080}.
    """
    clock = Clock()
    endpoint = MemoryEndpoint()
    pool = OriginPool(clock, lambda address: endpoint, **options)
    return clock, endpoint, pool, pool.client("http://origin.example:8080/base", timeout=TIMEOUT)


def answered(testcase: SynchronousTestCase, client: Any, wire: Any, method: bytes = b"GET") -> None:
    """
    Make a request, check it went out on C{wire}, answer it there.
    """
    d = client.request(method, b"/", [], Recorder())
    testcase.assertTrue(wire.sent().startswith(method + b" / HTTP/1.1\r\n"))
    wire.answer(OK)
    testcase.successResultOf(d)


class Next:
    """
    The wire the next request makes (looked up once it exists).
    """

    def __init__(self, endpoint: MemoryEndpoint) -> None:
        self._endpoint = endpoint

    def sent(self) -> bytes:
        """
        @return: what the client wrote on the newest wire.
        """
        return self._endpoint.wires[-1].sent()

    def answer(self, *pieces: bytes) -> None:
        """
        Answer on the newest wire.
        """
        self._endpoint.wires[-1].answer(*pieces)


class CountedChannel(HTTPChannel):
    """
    A server connection that its site counts.
    """

    def connectionMade(self) -> None:
        """
        Count the connection.
        """
        super().connectionMade()
        self.site.opened += 1

    def connectionLost(self, reason: Any) -> None:
        """
        Count the connection closed; wake who waits for that.
        """
        super().connectionLost(reason)
        self.site.open -= 1
        waiters, self.site.waiters = self.site.waiters, []
        for waiter in waiters:
            waiter.callback(None)


class CountingSite(Site):
    """
    A site counting the connections it accepted.
    """

    protocol = CountedChannel

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.opened = 0
        self.open = 0
        self.waiters: List[Deferred] = []

    def buildProtocol(self, addr: Any) -> Any:
        """
        Count an open connection.
        """
        self.open += 1
        return super().buildProtocol(addr)

    async def all_closed(self) -> None:
        """
        Wait until every accepted connection is closed.
        """
        while self.open:
            d: Deferred[None] = Deferred()
            self.waiters.append(d)
            await d


class Page(Resource):
    """
    C{/page}: a 10 KB page; C{/stream}: 1 MB written in pieces (chunked);
    C{/echo}: the request body's length.
    """

    isLeaf = True
    page = b"phantom frame " * 730

    def render_GET(self, request: Any) -> Any:
        """
        The page, or the stream.
        """
        if request.path == b"/stream":
            for _ in range(16):
                request.write(b"s" * 65536)
            request.finish()
            return NOT_DONE_YET
        return self.page

    def render_POST(self, request: Any) -> bytes:
        """
        The length of the request body.
        """
        return b"%d" % (len(request.content.read()),)
