"""
Tests for request bodies passed through by the HTTP/1.1 channel
(L{phantom_frame.http.channel}, L{phantom_frame.http.relay}): a body still
arriving keeps its connection alive past the idle timeout, the idle
timeout stops while the client is not the one that is slow (the origin
takes no more of the body, or the answer is awaited) and counts again
after the answer; on loopback, a large body reaches the origin while the
client is still sending it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CacheStrategy, CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.limits import ClientLimits
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.proxy.pool import OriginPool
from tests.proxy.origins import MemoryEndpoint, Wire

PASSTHROUGH = CreateProxyConfig("http://origin.test").with_cache_strategy(CacheStrategy.NONE)

#: The channel's idle timeout in these tests, and the origin client's.
IDLE = 10.0
UPSTREAM = 30.0

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def post_head(length: int, path: bytes = b"/upload") -> bytes:
    """
    @return: the head of a C{POST} with a C{length}-byte body.
    """
    return b"POST %s HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: %d\r\n\r\n" % (path, length)


class BodyRig:
    """
    A pass-through proxy site on a fake clock, its origin a
    L{MemoryEndpoint} answered by hand; C{fast} chooses whether the channel
    may pass requests through at the byte level.
    """

    def __init__(self, testcase: SynchronousTestCase, fast: bool = True) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint()
        pool = OriginPool(self.clock, lambda address: self.endpoint)
        resource, handle = create_proxy(
            PASSTHROUGH, self.clock, agent=object(), client=pool.client("http://origin.test", timeout=UPSTREAM),
            runner=runInline,
        )
        testcase.addCleanup(handle.close)
        # A long header timeout: only the idle timeout is under test.
        self.site = ProxySite(
            Router([("*", resource)]), reactor=self.clock, access_log=False, fast_path=fast,
            limits=ClientLimits(client_header_timeout=1000.0),
        )
        self.site.timeOut = IDLE

    def connect(self) -> Tuple[Any, StringTransport]:
        """
        @return: a new client connection and its transport.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4321))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4321))
        protocol.makeConnection(transport)
        return protocol, transport

    def wire(self) -> Wire:
        """
        @return: the one origin connection.
        """
        [wire] = self.endpoint.wires
        return wire

    def relayed(self) -> int:
        """
        @return: how many requests the byte path passed through.
        """
        fast = self.site.fastHit
        return 0 if fast is None else fast.relayed


class IdleTimeoutTests(SynchronousTestCase):
    """
    The channel's idle timeout while a request body is passed through.
    """

    def slow_body(self, rig: BodyRig, pieces: int, gap: float) -> Tuple[Any, StringTransport, bytes]:
        """
        Send a body of C{pieces} 5-byte pieces, C{gap} seconds apart,
        checking that the connection stays open.

        @return: the connection, its transport and the body.
        """
        body = b"".join(b"%05d" % (i,) for i in range(pieces))
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(len(body)))
        for i in range(pieces):
            rig.clock.advance(gap)
            self.assertFalse(transport.disconnecting, f"cut after {i} pieces")
            protocol.dataReceived(body[i * 5:(i + 1) * 5])
        return protocol, transport, body

    def test_body_arriving_keeps_the_connection(self) -> None:
        """
        A body whose bytes keep coming, each piece within the idle timeout
        but the whole over it, is passed through whole by the byte path and
        the answer reaches the client.
        """
        rig = BodyRig(self)
        protocol, transport, body = self.slow_body(rig, 6, IDLE * 0.6)
        wire = rig.wire()
        self.assertTrue(wire.sent().endswith(b"\r\n\r\n" + body))
        wire.answer(OK)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(rig.relayed(), 1)

    def test_stock_path_too(self) -> None:
        """
        The stock twisted.web path (a site whose channel passes nothing
        through) keeps the connection of a body still arriving as well.
        """
        rig = BodyRig(self, fast=False)
        protocol, transport, body = self.slow_body(rig, 6, IDLE * 0.6)
        wire = rig.wire()
        self.assertTrue(wire.sent().endswith(b"\r\n\r\n" + body))
        wire.answer(OK)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(rig.relayed(), 0)

    def test_stalled_body_times_out(self) -> None:
        """
        A client that stops sending its body for the idle timeout is cut
        off, as on the stock path.
        """
        rig = BodyRig(self)
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(10) + b"hello")
        rig.clock.advance(IDLE - 1)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_answer_awaited(self) -> None:
        """
        Once the body is whole, the answer may take as long as the origin
        client allows (longer than the idle timeout); after it, the idle
        timeout counts again.
        """
        rig = BodyRig(self)
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(5) + b"hello")
        rig.clock.advance(IDLE * 2)
        self.assertFalse(transport.disconnecting)
        rig.wire().answer(OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        rig.clock.advance(IDLE - 1)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_body_head_first(self) -> None:
        """
        A body that comes after its head, in a later read, and ends the
        request: the answer is awaited past the idle timeout too.
        """
        rig = BodyRig(self)
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(5))
        rig.clock.advance(IDLE - 1)
        protocol.dataReceived(b"hello")
        rig.clock.advance(IDLE * 2)
        self.assertFalse(transport.disconnecting)
        rig.wire().answer(OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))

    def test_origin_holds_the_body(self) -> None:
        """
        While the origin takes no more of the body, the client is not read
        and its idle timeout does not run; once the origin takes more, the
        client is read again and the rest of the body goes through.
        """
        rig = BodyRig(self)
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(10) + b"hello")
        wire = rig.wire()
        wire.transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        rig.clock.advance(IDLE * 2)
        self.assertFalse(transport.disconnecting)
        wire.transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"world")
        self.assertTrue(wire.sent().endswith(b"\r\n\r\nhelloworld"))
        wire.answer(OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))

    def test_client_full_while_body_held(self) -> None:
        """
        When the origin answers before the body is whole and the client's
        transport fills up and drains meanwhile, the client is still not
        read while the origin holds the body back.
        """
        rig = BodyRig(self)
        protocol, transport = rig.connect()
        protocol.dataReceived(post_head(10) + b"hello")
        wire = rig.wire()
        wire.transport.producer.pauseProducing()
        wire.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
        channel = transport.producer
        channel.pauseProducing()
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        wire.transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")


class _Sink(Protocol):
    """
    An origin that reads one request with a C{Content-Length} body, fires
    C{first} at its first body byte and answers once it is whole.
    """

    def __init__(self, first: Deferred, whole: Deferred) -> None:
        self.first = first
        self.whole = whole
        self.head = b""
        self.left: Optional[int] = None
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Read the head, then count the body.
        """
        if self.left is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            for line in self.head[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.left = int(value)
            data = self.head[end + 4:]
        if data and not self.first.called:
            self.first.callback(self.received)
        self.received += len(data)
        self.left -= len(data)
        if self.left <= 0:
            self.transport.write(OK)
            self.whole.callback(self.received)


class _Client(Protocol):
    """
    Collects what the proxy answers; fires C{done} when the connection
    closes.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.answered: Deferred = Deferred()
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Keep the answer's bytes; fire C{answered} once the short answer is
        whole.
        """
        self.data.append(data)
        if not self.answered.called and b"".join(self.data).endswith(b"\r\n\r\nok"):
            self.answered.callback(None)

    def connectionLost(self, reason: Any) -> None:
        """
        The connection is closed.
        """
        self.done.callback(b"".join(self.data))


class LoopbackTests(TestCase):
    """
    A large request body through the byte path on real sockets.
    """

    timeout = 30

    async def test_streams_to_origin(self) -> None:
        """
        A 16 MiB body reaches the origin while the client is still sending
        it: the origin's first body byte comes before the client sent the
        second half; the whole body arrives and the answer reaches the
        client.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        first: Deferred = Deferred()
        whole: Deferred = Deferred()
        origin_port = reactor.listenTCP(0, Factory.forProtocol(lambda: _Sink(first, whole)), interface="127.0.0.1")
        self.addCleanup(origin_port.stopListening)
        url = "http://127.0.0.1:%d" % (origin_port.getHost().port,)
        import attr

        resource, handle = create_proxy(attr.evolve(PASSTHROUGH, proxy_url=url), reactor, agent=object())
        self.addCleanup(handle.close)
        server = next(handle.servers())
        self.addCleanup(server.origin_pool.close)
        site = ProxySite(
            Router([("*", resource)]), reactor=reactor, access_log=False,
            limits=ClientLimits(max_request_body=64 * 1048576),
        )
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        size = 16 * 1048576
        half = b"x" * (size // 2)
        client = _Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        client.transport.write(post_head(size) + half)
        # (A proxy that waited for the whole body would never get here.)
        await first
        client.transport.write(half)
        self.assertEqual(await whole, size)
        await client.answered
        client.transport.loseConnection()
        answer = await client.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:100])
        self.assertTrue(answer.endswith(b"\r\n\r\nok"))
        self.assertEqual(site.fastHit.relayed, 1)

