"""
Tests for L{phantom_frame.proxy.tunnel}: the splice, the takeover of a
twisted.web connection, the tunnel's protocol in memory, and WebSocket
upgrades end to end (autobahn on both sides, plain and TLS).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, List, Optional, Tuple

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import implementer

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.embed import default_agent
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.http.tls import ReloadableContext, tls_factory
from phantom_frame.proxy.tunnel import (
    EARLY_LIMIT,
    HEAD_LIMIT,
    STATUS_FAILED,
    close,
    origin_endpoint,
    parse_answer,
    splice,
    start_tunnel,
    take_over,
)
from phantom_frame.proxy.origin import Origin, end_to_end

from tests.http.test_tls import make_pair
from tests.origin import stalled, until

UPGRADE = (
    b"GET /ws?x=1 HTTP/1.1\r\nHost: proxy.example\r\n"
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)

#: A 101 with every WebSocket header an origin may send.
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nServer: test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
)

ORIGIN_URL = "http://origin.example:8080/base"


# In memory


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An endpoint whose single connection attempt the test completes, fails
    or sees cancelled.
    """

    def __init__(self) -> None:
        self.factory: Any = None
        self.attempt: Optional[Deferred] = None
        self.cancelled = False

    def connect(self, factory) -> Deferred:
        """
        Start the attempt; cancelling it is recorded.
        """

        def cancel(d: Deferred) -> None:
            self.cancelled = True

        self.factory = factory
        self.attempt = Deferred(cancel)
        return self.attempt

    def accept(self) -> Tuple[Protocol, StringTransport]:
        """
        Complete the attempt with a connection over a L{StringTransport}.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 8080))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.attempt.callback(protocol)
        return protocol, transport


class LoggingSite(Site):
    """
    A site that keeps the requests it logs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logged: List[Tuple[int, bytes]] = []

    def log(self, request) -> None:
        """
        Keep the request's status and C{Cache-Status}.
        """
        self.logged.append(
            (request.code, request.responseHeaders.getRawHeaders(b"cache-status", [b""])[0])
        )


class TunnelResource(Resource):
    """
    Starts a tunnel for every request, through a L{FakeEndpoint}.
    """

    isLeaf = True

    def __init__(self, clock: Clock, endpoint: FakeEndpoint) -> None:
        super().__init__()
        self.clock = clock
        self.endpoint = endpoint
        self.requests: List[Request] = []

    def render(self, request) -> Any:
        self.requests.append(request)
        origin = Origin(ORIGIN_URL, None, self.clock, 5)
        headers = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
        return start_tunnel(Exchange(request), origin, request.uri, headers, self.clock, 5, self.endpoint)


class Harness:
    """
    A twisted.web channel over a L{StringTransport} whose every request is
    tunnelled to a L{FakeEndpoint}.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.resource = TunnelResource(self.clock, self.endpoint)
        self.site = LoggingSite(self.resource, reactor=self.clock)
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1234))
        self.client = StringTransport()
        self.channel.makeConnection(self.client)
        self.origin: Any = None
        self.originTransport: Optional[StringTransport] = None

    @property
    def request(self) -> Request:
        """
        The last request rendered.
        """
        return self.resource.requests[-1]

    def send(self, data: bytes) -> None:
        """
        Bytes from the client.
        """
        self.channel.dataReceived(data)

    def accept(self) -> StringTransport:
        """
        Complete the connection to the origin.

        @return: the origin connection's transport.
        """
        self.origin, self.originTransport = self.endpoint.accept()
        return self.originTransport

    def answer(self, data: bytes) -> None:
        """
        Bytes from the origin.
        """
        self.origin.dataReceived(data)

    def switched(self, early: bytes = b"") -> StringTransport:
        """
        Upgrade, connect, and have the origin switch protocols.
        """
        self.send(UPGRADE + early)
        transport = self.accept()
        self.answer(SWITCHED)
        return transport

    def notified(self) -> List[Any]:
        """
        @return: a list that gets the outcome of the request's
            C{notifyFinish}.
        """
        outcome: List[Any] = []
        self.request.notifyFinish().addBoth(outcome.append)
        return outcome


def sent_head(early: bytes = b"") -> bytes:
    """
    @return: what the origin receives for L{UPGRADE}.
    """
    return (
        b"GET /base/ws?x=1 HTTP/1.1\r\nHost: origin.example:8080\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + early
    )


class SpliceTests(SynchronousTestCase):
    """
    L{splice} and L{close}.
    """

    def test_both_ways(self) -> None:
        """
        Each transport becomes the other's streaming producer: when one
        pauses its producer (its write buffer is full), the other stops
        reading, and resumes with it.
        """
        one, other = StringTransport(), StringTransport()
        splice(one, other)
        self.assertEqual((one.producer, one.streaming), (other, True))
        self.assertEqual((other.producer, other.streaming), (one, True))
        one.producer.pauseProducing()
        self.assertEqual((one.producerState, other.producerState), ("producing", "paused"))
        other.producer.pauseProducing()
        self.assertEqual(one.producerState, "paused")
        one.producer.resumeProducing()
        other.producer.resumeProducing()
        self.assertEqual((one.producerState, other.producerState), ("producing", "producing"))

    def test_close(self) -> None:
        """
        L{close} unregisters the producer before losing the connection (a
        transport with a producer waits for it before closing); without a
        registered producer it only loses the connection.
        """
        one, other = StringTransport(), StringTransport()
        splice(one, other)
        close(one)
        self.assertIsNone(one.producer)
        self.assertTrue(one.disconnecting)
        bare = StringTransport()
        close(bare, registered=False)
        self.assertTrue(bare.disconnecting)


class Recorder(Protocol):
    """
    Records what a taken-over connection delivers.
    """

    def __init__(self) -> None:
        self.data = b""
        self.lost: List[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


class TakeOverResource(Resource):
    """
    Takes over the connection of each request, at once or when asked.
    """

    isLeaf = True

    def __init__(self, now: bool = True) -> None:
        super().__init__()
        self.now = now
        self.requests: List[Request] = []
        self.protocol = Recorder()

    def render(self, request) -> Any:
        self.requests.append(request)
        if self.now:
            take_over(request, self.protocol)
        return NOT_DONE_YET


class TakeOverTests(SynchronousTestCase):
    """
    L{take_over} relies on these behaviours of twisted.web's L{HTTPChannel}:
    it is in raw mode while a request is handled and buffers what it
    receives in C{_dataBuffer}; it reads C{dataReceived},
    C{rawDataReceived} and C{connectionLost} from its instance (so that
    they can be replaced); it is its transport's producer; its idle timeout
    is off while a request is handled; and a non-persistent channel closes
    the connection when its request finishes.
    """

    def channel(self, resource: Resource) -> Tuple[Any, StringTransport, Clock]:
        """
        @return: a twisted.web channel serving C{resource} over a
            L{StringTransport}, the transport, and the site's clock.
        """
        clock = Clock()
        site = Site(resource, reactor=clock)
        channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport, clock

    def test_bytes_after_head(self) -> None:
        """
        Bytes that arrive with the request head, still in the channel's
        line parser when the resource renders, and later bytes reach the
        protocol, in order, and nothing is written to the client.
        """
        resource = TakeOverResource()
        channel, transport, _ = self.channel(resource)
        channel.dataReceived(UPGRADE + b"\x81\x05early")
        channel.dataReceived(b"GET /not-a-request HTTP/1.1\r\n\r\n")
        self.assertEqual(resource.protocol.data, b"\x81\x05earlyGET /not-a-request HTTP/1.1\r\n\r\n")
        self.assertEqual(len(resource.requests), 1)
        self.assertIs(resource.protocol.transport, transport)
        self.assertEqual(transport.value(), b"")

    def test_bytes_after_body(self) -> None:
        """
        Bytes after a request body, which the channel buffered in
        C{_dataBuffer} before rendering, reach the protocol first.
        """
        resource = TakeOverResource()
        channel, _, _ = self.channel(resource)
        channel.dataReceived(b"POST /ws HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyafter")
        channel.dataReceived(b"-more")
        self.assertEqual(resource.requests[0].content.getvalue(), b"body")
        self.assertEqual(resource.protocol.data, b"after-more")

    def test_later(self) -> None:
        """
        Taken over after C{render} returned: what arrived meanwhile was
        buffered by the channel, which paused its transport past 16 KiB; it
        all reaches the protocol.
        """
        resource = TakeOverResource(now=False)
        channel, transport, _ = self.channel(resource)
        early = b"x" * 20000
        channel.dataReceived(UPGRADE)
        channel.dataReceived(early)
        self.assertEqual(transport.producerState, "paused")
        take_over(resource.requests[0], resource.protocol)
        channel.dataReceived(b"y")
        self.assertEqual(resource.protocol.data, early + b"y")

    def test_producer_and_timeout(self) -> None:
        """
        The channel is its transport's producer (to be replaced by the
        protocol's), and no idle timeout closes the connection.
        """
        resource = TakeOverResource()
        channel, transport, clock = self.channel(resource)
        channel.dataReceived(UPGRADE)
        self.assertEqual((transport.producer, transport.streaming), (resource.requests[0].channel, True))
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    def test_connection_lost(self) -> None:
        """
        When the connection is lost the protocol hears it first, then the
        channel, whose request's C{notifyFinish} fails.
        """
        resource = TakeOverResource()
        channel, _, _ = self.channel(resource)
        channel.dataReceived(UPGRADE)
        order: List[str] = []
        resource.requests[0].notifyFinish().addErrback(lambda f: order.append("request"))
        resource.protocol.connectionLost = lambda reason: order.append("protocol")
        channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(order, ["protocol", "request"])

    def test_answer_after_take_over(self) -> None:
        """
        The request can still answer after the takeover; with the channel
        made non-persistent, it closes the connection after the answer and
        ignores what the client sent.
        """
        resource = TakeOverResource()
        channel, transport, _ = self.channel(resource)
        channel.dataReceived(UPGRADE + b"garbage")
        request = resource.requests[0]
        request.channel.persistent = False
        request.setResponseCode(502)
        request.setHeader(b"content-length", b"2")
        request.write(b"no")
        request.finish()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nno"))
        self.assertTrue(transport.disconnecting)


class TunnelTests(SynchronousTestCase):
    """
    L{start_tunnel} in memory: a real twisted.web channel on the client's
    side, a fake endpoint on the origin's.
    """

    def test_request_head(self) -> None:
        """
        Once connected, the origin gets the request line with its base path
        and the stripped path, C{Host} with its own name, the given
        headers; nothing is written to the client yet.
        """
        h = Harness()
        h.send(UPGRADE)
        self.assertIsNone(h.originTransport)
        transport = h.accept()
        self.assertEqual(transport.value(), sent_head())
        self.assertEqual(h.client.value(), b"")

    def test_answer_verbatim(self) -> None:
        """
        The origin's 101 reaches the client byte for byte, with every header
        and the bytes that followed it in the same read.
        """
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        h.answer(SWITCHED + b"\x81\x02hi")
        self.assertEqual(h.client.value(), SWITCHED + b"\x81\x02hi")

    def test_head_in_pieces(self) -> None:
        """
        An answer head split across reads is relayed whole.
        """
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        for i in range(0, len(SWITCHED), 7):
            h.answer(SWITCHED[i : i + 7])
        h.answer(b"\x81\x00")
        self.assertEqual(h.client.value(), SWITCHED + b"\x81\x00")

    def test_early_bytes(self) -> None:
        """
        Bytes the client sends before the origin switches protocols (with
        the head, while connecting, while waiting for the answer) are held,
        then sent after the 101, in order.
        """
        h = Harness()
        h.send(UPGRADE + b"one,")
        h.send(b"two,")
        transport = h.accept()
        h.send(b"three")
        self.assertEqual(transport.value(), sent_head())
        h.answer(SWITCHED)
        self.assertEqual(transport.value(), sent_head(b"one,two,three"))

    def test_early_limit(self) -> None:
        """
        Past L{EARLY_LIMIT} held bytes the client's connection is paused; it
        resumes after the 101 and every byte is forwarded.
        """
        h = Harness()
        h.send(UPGRADE)
        early = b"z" * (EARLY_LIMIT + 1)
        h.send(early)
        self.assertEqual(h.client.producerState, "paused")
        transport = h.accept()
        h.answer(SWITCHED)
        self.assertEqual(h.client.producerState, "producing")
        self.assertEqual(transport.value(), sent_head(early))

    def test_body(self) -> None:
        """
        A request body is sent after the head with its C{Content-Length};
        bytes after it are held like any early bytes.
        """
        h = Harness()
        h.send(
            b"POST /ws HTTP/1.1\r\nContent-Length: 4\r\nConnection: Upgrade\r\n"
            b"Upgrade: x\r\n\r\nbodyafter"
        )
        transport = h.accept()
        self.assertEqual(
            transport.value(),
            b"POST /base/ws HTTP/1.1\r\nHost: origin.example:8080\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nContent-Length: 4\r\n\r\nbody",
        )
        h.answer(SWITCHED)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nbodyafter"))

    def test_flow_control(self) -> None:
        """
        After the 101 each connection is the other's producer: a full
        buffer on one side pauses the other.
        """
        h = Harness()
        transport = h.switched()
        self.assertEqual((h.client.producer, h.client.streaming), (transport, True))
        self.assertEqual((transport.producer, transport.streaming), (h.client, True))
        h.client.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.pauseProducing()
        self.assertEqual(h.client.producerState, "paused")
        h.client.producer.resumeProducing()
        transport.producer.resumeProducing()
        self.assertEqual((h.client.producerState, transport.producerState), ("producing", "producing"))

    def test_both_ways(self) -> None:
        """
        After the 101 bytes flow both ways untouched.
        """
        h = Harness()
        transport = h.switched()
        h.client.clear()
        transport.clear()
        h.send(b"\x81\x85abcd" + bytes(range(5)))
        h.answer(b"\x82\x03\x00\xff\x10")
        self.assertEqual(transport.value(), b"\x81\x85abcd" + bytes(range(5)))
        self.assertEqual(h.client.value(), b"\x82\x03\x00\xff\x10")

    def test_client_closes(self) -> None:
        """
        When the client's connection is lost, the origin's is closed
        cleanly (producer dropped, then C{loseConnection}), the request is
        over, and the exchange is logged with the origin's status.
        """
        h = Harness()
        transport = h.switched()
        outcome = h.notified()
        h.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)
        self.assertEqual(len(outcome), 1)
        self.assertEqual(h.site.logged, [(101, b"phantom-frame; fwd=bypass; detail=upgrade")])
        h.origin.connectionLost(Failure(ConnectionRefusedError()))
        self.assertFalse(h.client.disconnecting)

    def test_origin_closes(self) -> None:
        """
        When the origin's connection is lost, the client's is closed
        cleanly; the request is over when it is gone.
        """
        h = Harness()
        h.switched()
        outcome = h.notified()
        h.origin.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(h.client.disconnecting)
        self.assertIsNone(h.client.producer)
        self.assertEqual(outcome, [])
        h.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(len(outcome), 1)
        self.assertFalse(h.originTransport.disconnecting)

    def assertAnswered(self, h: Harness, code: int, text: bytes) -> None:
        """
        Assert that the client got a short error answer, that its
        connection is closing and that no timer is left.
        """
        value = h.client.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 %d " % (code,)), value)
        head, _, body = value.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nCache-Status: " + STATUS_FAILED.header + b"\r\n", head)
        self.assertIn(b"\r\nConnection: close\r\n", head)
        self.assertEqual(body, text + b"\n")
        self.assertTrue(h.client.disconnecting)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        When the origin cannot be reached, the client gets a 502 with a short
        text body and the connection is closed; a warning names the
        origin.
        """
        h = Harness()
        h.send(UPGRADE + b"early")
        with capturedLogs() as events:
            h.endpoint.attempt.errback(ConnectionRefusedError("nope"))
        self.assertAnswered(h, 502, b"Bad Gateway")
        self.assertEqual(h.site.logged, [(502, STATUS_FAILED.header)])
        [event] = [e for e in events if "upgrade to origin" in e.get("log_format", "")]
        self.assertEqual(event["origin"], ORIGIN_URL)
        self.assertIn("nope", event["error"])

    def test_connect_timeout(self) -> None:
        """
        No connection within the timeout: the attempt is cancelled and the
        client gets a 504.
        """
        h = Harness()
        h.send(UPGRADE)
        h.clock.advance(5)
        self.assertTrue(h.endpoint.cancelled)
        self.assertAnswered(h, 504, b"Gateway Timeout")

    def test_answer_timeout(self) -> None:
        """
        Connected, but no answer head within the timeout (counted from the
        start): the origin's connection is aborted, the client gets a 504.
        """
        h = Harness()
        h.send(UPGRADE)
        h.clock.advance(2)
        transport = h.accept()
        h.answer(b"HTTP/1.1 101 Swi")
        h.clock.advance(3)
        self.assertTrue(transport.disconnected)
        self.assertAnswered(h, 504, b"Gateway Timeout")

    def test_no_answer(self) -> None:
        """
        The origin closing before it answers gives a 502.
        """
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        h.origin.connectionLost(Failure(ConnectionRefusedError()))
        self.assertAnswered(h, 502, b"Bad Gateway")

    def test_bad_answers(self) -> None:
        """
        An answer that is not HTTP, or a head longer than L{HEAD_LIMIT},
        gives a 502 and the origin's connection is aborted.
        """
        for answer in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 101" + b"x" * HEAD_LIMIT):
            h = Harness()
            h.send(UPGRADE)
            transport = h.accept()
            h.answer(answer)
            self.assertTrue(transport.disconnected)
            self.assertAnswered(h, 502, b"Bad Gateway")

    def test_client_gone(self) -> None:
        """
        A client that disconnects while the origin is being reached cancels
        the attempt; nothing is logged as a failure.
        """
        h = Harness()
        h.send(UPGRADE)
        outcome = h.notified()
        with capturedLogs() as events:
            h.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(h.endpoint.cancelled)
        self.assertEqual(len(outcome), 1)
        self.assertEqual([e for e in events if "upgrade" in e.get("log_format", "")], [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_client_gone_while_waiting(self) -> None:
        """
        A client that disconnects while the origin has not answered closes
        the origin's connection.
        """
        h = Harness()
        h.send(UPGRADE)
        transport = h.accept()
        h.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_refused_answer(self) -> None:
        """
        Another status than 101 is relayed as it is, up to its
        C{Content-Length}; then both connections close. The client's early
        bytes never reach the origin.
        """
        h = Harness()
        h.send(UPGRADE + b"early")
        transport = h.accept()
        answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n"
        h.answer(answer + b"no, ")
        self.assertFalse(h.client.disconnecting)
        self.assertIs(h.client.producer, transport)
        h.answer(b"!HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(h.client.value(), answer + b"no, !")
        self.assertTrue(h.client.disconnecting)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), sent_head())
        h.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(h.site.logged, [(403, b"phantom-frame; fwd=bypass; detail=upgrade")])

    def test_refused_answer_until_close(self) -> None:
        """
        A refusal without C{Content-Length} is relayed until the origin
        closes; one without a body (C{304}) ends with its head.
        """
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        answer = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        h.answer(answer)
        self.assertFalse(h.client.disconnecting)
        h.origin.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(h.client.value(), answer)
        self.assertTrue(h.client.disconnecting)
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        h.answer(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
        self.assertTrue(h.client.disconnecting)

    def test_interim_answers(self) -> None:
        """
        Interim answers (C{100}, C{103}) are dropped; the final answer is
        relayed.
        """
        h = Harness()
        h.send(UPGRADE)
        h.accept()
        h.answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + SWITCHED)
        self.assertEqual(h.client.value(), SWITCHED)

    def test_not_http11(self) -> None:
        """
        A request that is not on an HTTP/1.1 channel (HTTP/2) gets a 501.
        """
        request = HTTPRequest(DummyChannel())
        origin = Origin(ORIGIN_URL, None, Clock(), 5)
        body = start_tunnel(Exchange(request), origin, b"/ws", [], Clock(), 5, FakeEndpoint())
        self.assertEqual(request.code, 501)
        self.assertIsInstance(body, bytes)

    def test_finished_request(self) -> None:
        """
        A request already answered (its client gone while a gate was
        deciding) is left alone.
        """
        h = Harness()
        h.send(UPGRADE)
        h.channel.connectionLost(Failure(ConnectionRefusedError()))
        endpoint = FakeEndpoint()
        origin = Origin(ORIGIN_URL, None, h.clock, 5)
        self.assertIs(start_tunnel(Exchange(h.request), origin, b"/", [], h.clock, 5, endpoint), NOT_DONE_YET)
        self.assertIsNone(endpoint.attempt)

    def test_parse_answer(self) -> None:
        """
        L{parse_answer} gives the status and the body length, C{None} with
        C{Transfer-Encoding} or without a valid length, and rejects what is
        not an HTTP/1 status line.
        """
        self.assertEqual(parse_answer(SWITCHED), (101, None))
        self.assertEqual(parse_answer(b"HTTP/1.0 200 OK\r\ncontent-LENGTH: 12\r\n\r\n"), (200, 12))
        self.assertEqual(parse_answer(b"HTTP/1.1 200\nContent-Length: x\n\n"), (200, None))
        self.assertEqual(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (200, None),
        )
        for bad in (b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 20x\r\n\r\n", b"HTTP/1.1 2000\r\n\r\n", b"hello\r\n\r\n"):
            self.assertRaises(ValueError, parse_answer, bad)

    def test_origin_endpoint(self) -> None:
        """
        L{origin_endpoint} connects to the URL's host and port (80 and 443
        by default), over TLS for C{https}.
        """
        cases = [
            ("http://127.0.0.1:8080/base", 8080, False),
            ("http://127.0.0.1", 80, False),
            ("https://127.0.0.1", 443, True),
        ]
        for url, port, secure in cases:
            clock = MemoryReactorClock()
            endpoint = origin_endpoint(clock, Origin(url, None, clock, 5))
            endpoint.connect(Factory.forProtocol(Protocol))
            [(host, connected, factory, _, _)] = clock.tcpClients
            self.assertEqual((host, connected), ("127.0.0.1", port))
            built = factory.buildProtocol(IPv4Address("TCP", host, port))
            self.assertEqual(isinstance(built._wrappedProtocol, TLSMemoryBIOProtocol), secure, url)


# End to end, on loopback


class EchoServer(WebSocketServerProtocol):
    """
    Echoes messages; closes when asked to; chooses the C{chat}
    subprotocol when offered.

    @ivar closed: once the WebSocket is closed, whether it was closed
        cleanly (with the closing handshake) and the close code.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.lost: Deferred[None] = Deferred()
        self.closed: Optional[Tuple[bool, Optional[int]]] = None
        self.factory.connections.append(self)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Any) -> None:
        """
        Record how the WebSocket closed.
        """
        self.closed = (wasClean, code)

    def onConnect(self, request) -> Optional[str]:
        self.factory.requests.append(request)
        return "chat" if "chat" in request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"close, please":
            self.sendClose(1000, "bye")
        elif payload == b"drop, please":
            self.transport.abortConnection()
        else:
            self.sendMessage(payload, isBinary)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


def _accept_deflate(offers: List[Any]) -> Optional[PerMessageDeflateOfferAccept]:
    """
    Accept the first permessage-deflate offer.
    """
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class EchoFactory(WebSocketServerFactory):
    """
    The origin: an autobahn WebSocket echo server that accepts
    permessage-deflate.
    """

    protocol = EchoServer
    noisy = False

    def __init__(self) -> None:
        super().__init__(reactor=reactor)
        self.connections: List[EchoServer] = []
        self.requests: List[Any] = []
        self.setProtocolOptions(perMessageCompressionAccept=_accept_deflate)


class EchoClient(WebSocketClientProtocol):
    """
    A client that queues the messages it receives.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.opened: Deferred[EchoClient] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.messages: DeferredQueue = DeferredQueue()
        self.closed: Optional[Tuple[bool, Optional[int]]] = None

    def onConnect(self, response) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put((payload, isBinary))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Any) -> None:
        self.closed = (wasClean, code)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if not self.opened.called:
            self.opened.errback(reason)
        self.lost.callback(None)

    async def echo(self, payload: bytes, isBinary: bool = True) -> bytes:
        """
        Send a message and wait for the next one.
        """
        self.sendMessage(payload, isBinary)
        received, binary = await self.messages.get()
        assert binary == isBinary
        return received


class RawClient(Protocol):
    """
    A plain TCP client that collects what it receives.
    """

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[bytes] = Deferred()
        self._waiting: List[Tuple[Callable[[bytes], bool], Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for item in list(self._waiting):
            if item[0](self.data):
                self._waiting.remove(item)
                item[1].callback(self.data)

    def until(self, done: Callable[[bytes], bool]) -> Deferred:
        """
        @return: a L{Deferred} firing with what was received once C{done} of
            it is true.
        """
        d: Deferred[bytes] = Deferred()
        self._waiting.append((done, d))
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(self.data)


class TrackedRequest(Request):
    """
    A request whose end (finished or connection lost) its site waits for.
    """

    def process(self) -> None:
        self.channel.site.requestsDone.append(self.notifyFinish().addErrback(lambda _: None))
        super().process()


class Mount(Resource):
    """
    Mounts one resource at C{/NAME} (without L{Resource.putChild}, which
    sets the child's C{server} attribute).
    """

    def __init__(self, name: bytes, child: Resource) -> None:
        super().__init__()
        self._name = name
        self._child = child

    def getChild(self, path: bytes, request) -> Resource:
        if path == self._name:
            return self._child
        return super().getChild(path, request)


_PAIR: List[Tuple[str, str]] = []


def certificate(testcase) -> Tuple[str, str, Certificate]:
    """
    @return: the paths of a certificate for C{localhost} and its key (made
        once per run), and the certificate to trust.
    """
    if not _PAIR:
        cert_path, key_path, _ = make_pair(testcase)
        _PAIR.append((os.path.abspath(cert_path), os.path.abspath(key_path)))
    cert_path, key_path = _PAIR[0]
    with open(cert_path, "rb") as f:
        return cert_path, key_path, Certificate.loadPEM(f.read())


class Stack:
    """
    An autobahn echo origin, phantom-frame in front of it (mounted at
    C{/app}, the origin's base path C{/base}), and clients; every port and
    connection is closed, and the test waits for both servers to see their
    connections end.
    """

    def __init__(
        self,
        testcase: TestCase,
        config: Optional[CreateProxyConfig] = None,
        secure: bool = False,
        origin_url: Optional[str] = None,
        resource: Optional[Callable[[str], Resource]] = None,
        echo: Optional[EchoFactory] = None,
        site: Optional[Callable[[Resource], Site]] = None,
    ) -> None:
        """
        @param config: the proxy's settings (its C{proxy_url} is replaced).
        @param secure: listen with TLS (a certificate for C{localhost}).
        @param origin_url: the origin's URL, instead of the echo server
            started here.
        @param resource: builds the resource to mount instead of the proxy,
            from the origin's URL.
        @param echo: the factory of an origin the test started itself (its
            C{connections} are waited for).
        @param site: builds the site around the mounted resource (a plain
            L{Site} that tracks its requests when omitted).
        """
        self.testcase = testcase
        # A backlog for 200 clients connecting at once (past the default
        # 50, refused SYNs are retried a second later).
        self.echo = echo or EchoFactory()
        if echo is None:
            self.originPort = reactor.listenTCP(0, self.echo, backlog=256, interface="127.0.0.1")
            testcase.addCleanup(self.originPort.stopListening)
        url = origin_url or "http://127.0.0.1:%d/base" % (self.originPort.getHost().port,)
        if resource is not None:
            proxy = resource(url)
        else:
            import attr

            config = attr.evolve(config or CreateProxyConfig(), proxy_url=url)
            agent, pool = default_agent(reactor)
            testcase.addCleanup(pool.closeCachedConnections)
            proxy, handle = create_proxy(config, reactor, agent=agent, runner=runInline)
            testcase.addCleanup(handle.close)
        if site is None:
            self.site = Site(Mount(b"app", proxy))
            self.site.requestFactory = TrackedRequest
        else:
            self.site = site(Mount(b"app", proxy))
        self.site.requestsDone = []
        self.site.noisy = False
        factory: Any = self.site
        self.trust: Optional[Certificate] = None
        if secure:
            cert_path, key_path, self.trust = certificate(testcase)
            factory = tls_factory(ReloadableContext(cert_path, key_path), self.site)
        self.secure = secure
        self.port = reactor.listenTCP(0, factory, backlog=256, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        testcase.addCleanup(self.settled)
        self.clients: List[Any] = []

    def settled(self) -> Deferred:
        """
        @return: a L{Deferred} firing when every client, every origin
            connection and every proxied request is over.
        """
        idle = getattr(self.site, "whenIdle", None)
        return gatherResults(
            [c.lost for c in self.clients]
            + [c.lost for c in self.echo.connections]
            + list(self.site.requestsDone)
            + ([idle()] if idle is not None else [])
        )

    def _endpoint(self) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        if self.secure:
            endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=self.trust), endpoint)
        return endpoint

    def _drop(self, client: Any) -> Deferred:
        if not client.lost.called:
            client.transport.abortConnection()
        return client.lost

    async def connect(
        self, path: str = "/app/ws?x=1", protocols: Optional[List[str]] = None, deflate: bool = False
    ) -> EchoClient:
        """
        Open a WebSocket through the proxy.
        """
        scheme = "wss" if self.secure else "ws"
        factory = WebSocketClientFactory(
            "%s://localhost:%d%s" % (scheme, self.port.getHost().port, path),
            protocols=protocols or [],
            reactor=reactor,
        )
        factory.protocol = EchoClient
        factory.noisy = False
        if deflate:
            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=lambda response: PerMessageDeflateResponseAccept(response)
                if isinstance(response, PerMessageDeflateResponse)
                else None,
            )
        client = await self._endpoint().connect(factory)
        self.clients.append(client)
        self.testcase.addCleanup(self._drop, client)
        return await client.opened

    async def raw(self, data: bytes) -> RawClient:
        """
        Open a plain connection through the proxy and send C{data}.
        """
        client = await self._endpoint().connect(Factory.forProtocol(RawClient))
        self.clients.append(client)
        self.testcase.addCleanup(self._drop, client)
        client.transport.write(data)
        return client


@implementer(IPushProducer)
class Flood(Protocol):
    """
    An origin that answers any request head with a 101, then writes as fast
    as its transport lets it (a streaming producer), until told to finish.
    """

    chunk = b"f" * 65536
    cap = 128 * 1024 * 1024

    def connectionMade(self) -> None:
        self.head = b""
        self.sent = 0
        self.producing = False
        self.done = False
        self.lost: Deferred[None] = Deferred()
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        if self.sent or b"\r\n\r\n" not in self.head + data:
            self.head += data
            return
        self.transport.registerProducer(self, True)
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: flood\r\n\r\n")
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.producing = True
        while self.producing and not self.done and self.sent < self.cap:
            self.sent += len(self.chunk)
            self.transport.write(self.chunk)

    def pauseProducing(self) -> None:
        self.producing = False

    def stopProducing(self) -> None:
        self.producing = False

    def finish(self) -> None:
        """
        Stop writing, and close once the buffer is flushed.
        """
        self.done = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


def handshake(connection: bytes = b"Upgrade", path: bytes = b"/app/ws") -> bytes:
    """
    @return: a WebSocket opening handshake (RFC 6455's sample key).
    """
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: proxy.test\r\nConnection: " + connection
        + b"\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


def masked(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """
    @return: a short masked client frame.
    """
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


def head_of(data: bytes) -> bytes:
    """
    @return: the response head in C{data}.
    """
    return data.partition(b"\r\n\r\n")[0]


class WebSocketTests(TestCase):
    """
    WebSocket upgrades through phantom-frame, end to end on loopback, with
    autobahn on both sides.
    """

    timeout = 20

    async def test_messages(self) -> None:
        """
        Text and binary messages are echoed; the origin gets the stripped
        path under its base path, with the query, its own C{Host} and the
        forwarding headers.
        """
        stack = Stack(self)
        client = await stack.connect()
        self.assertEqual(await client.echo("héllo".encode(), isBinary=False), "héllo".encode())
        self.assertEqual(await client.echo(bytes(range(256))), bytes(range(256)))
        [request] = stack.echo.requests
        self.assertEqual((request.path, request.params), ("/base/ws", {"x": ["1"]}))
        origin_host = "127.0.0.1:%d" % (stack.originPort.getHost().port,)
        self.assertEqual(request.headers["host"], origin_host)
        self.assertEqual(request.headers["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(request.headers["x-forwarded-proto"], "http")
        self.assertEqual(request.headers["x-forwarded-host"], "localhost:%d" % (stack.port.getHost().port,))
        client.sendClose()
        await stack.settled()
        self.assertTrue(client.closed[0])

    async def test_proxy_site(self) -> None:
        """
        Through the service's L{ProxySite}, an open WebSocket counts as a
        request in flight until it closes, and then gets one access-log
        line with the origin's 101 (a bypass of the cache).
        """
        from phantom_frame.http.site import ProxySite

        stack = Stack(self, site=lambda root: ProxySite(root, reactor=reactor))
        with capturedLogs() as events:
            client = await stack.connect()
            self.assertEqual(stack.site.active, 1)
            self.assertEqual(await client.echo(b"counted"), b"counted")
            client.sendClose()
            await stack.settled()
        self.assertEqual(stack.site.active, 0)
        [line] = [e for e in events if "cache" in e and "line" in e]
        self.assertIn('"GET /app/ws?x=1 HTTP/1.1" 101 ', line["line"])
        self.assertEqual(line["cache"], "bypass")

    async def test_large_message(self) -> None:
        """
        A 10 MB message crosses both ways intact.
        """
        stack = Stack(self)
        client = await stack.connect()
        payload = os.urandom(1 << 20) * 10
        echoed = await client.echo(payload)
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(payload).digest())

    async def test_concurrent(self) -> None:
        """
        200 sockets at once each get their own echoes.
        """
        stack = Stack(self)

        async def one(i: int) -> bytes:
            client = await stack.connect()
            echoed = await client.echo(b"client %d" % (i,))
            client.sendClose()
            await client.lost
            return echoed

        results = await gatherResults([Deferred.fromCoroutine(one(i)) for i in range(200)])
        self.assertEqual(results, [b"client %d" % (i,) for i in range(200)])
        self.assertEqual(len(stack.echo.connections), 200)
        await stack.settled()

    async def test_subprotocol(self) -> None:
        """
        The subprotocol the origin chooses reaches the client.
        """
        stack = Stack(self)
        client = await stack.connect(protocols=["other", "chat"])
        self.assertEqual(client.response.protocol, "chat")
        self.assertEqual(client.response.headers["sec-websocket-protocol"], "chat")
        self.assertEqual(stack.echo.requests[0].protocols, ["other", "chat"])

    async def test_permessage_deflate(self) -> None:
        """
        permessage-deflate is negotiated end to end: offered by the client,
        accepted by the origin, active on both; compressed messages echo.
        """
        stack = Stack(self)
        client = await stack.connect(deflate=True)
        self.assertIn("permessage-deflate", client.response.headers["sec-websocket-extensions"])
        [extension] = client.websocket_extensions_in_use
        self.assertIsInstance(extension, PerMessageDeflate)
        self.assertIsInstance(stack.echo.connections[0].websocket_extensions_in_use[0], PerMessageDeflate)
        payload = b"phantom frame " * 10000
        self.assertEqual(await client.echo(payload, isBinary=False), payload)

    async def test_origin_closes(self) -> None:
        """
        The origin's closing handshake reaches the client; both
        connections end.
        """
        stack = Stack(self)
        client = await stack.connect()
        client.sendMessage(b"close, please")
        await stack.settled()
        self.assertEqual(client.closed, (True, 1000))

    async def test_origin_drops(self) -> None:
        """
        The origin dropping its connection drops the client's.
        """
        stack = Stack(self)
        client = await stack.connect()
        client.sendMessage(b"drop, please")
        await stack.settled()
        self.assertEqual(client.closed[0], False)

    async def test_client_closes(self) -> None:
        """
        The client's closing handshake reaches the origin; both connections
        end.
        """
        stack = Stack(self)
        client = await stack.connect()
        client.sendClose(1000)
        await stack.settled()
        self.assertEqual(client.closed, (True, 1000))

    async def test_client_drops(self) -> None:
        """
        The client dropping its connection drops the origin's.
        """
        stack = Stack(self)
        client = await stack.connect()
        [origin] = stack.echo.connections
        self.assertIsNone(origin.closed)
        client.transport.abortConnection()
        await origin.lost.addTimeout(10, reactor)
        # Dropped: no closing handshake reached the origin.
        self.assertEqual(origin.closed, (False, 1006))
        await stack.settled()

    async def test_back_pressure(self) -> None:
        """
        A client that stops reading stops the origin: the origin's writes
        stall well before it has sent everything it could, and once the
        client reads again every byte arrives.
        """
        flood = Factory.forProtocol(Flood)
        flood.connections = []
        port = reactor.listenTCP(0, flood, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        stack = Stack(self, origin_url="http://127.0.0.1:%d" % (port.getHost().port,), echo=flood)
        client = await stack.raw(handshake())
        client.transport.pauseProducing()
        await until(lambda: flood.connections)
        [origin] = flood.connections
        await until(lambda: not origin.producing and stalled(origin.transport.getPeer(), client.transport.getHost()))
        self.assertLess(origin.sent, Flood.cap)
        origin.finish()
        client.transport.resumeProducing()
        data = await client.lost
        self.assertEqual(len(data.partition(b"\r\n\r\n")[2]), origin.sent)
        await stack.settled()

    async def test_keep_alive_upgrade(self) -> None:
        """
        C{Connection: keep-alive, UPGRADE} is an upgrade (the token in any
        position and case); a frame sent with the handshake is echoed after
        the origin's 101, whose C{Sec-WebSocket-Accept} is the origin's.
        """
        stack = Stack(self)
        client = await stack.raw(handshake(b"keep-alive, UPGRADE") + masked(0x1, b"early"))
        data = await client.until(lambda data: data.endswith(b"\x81\x05early"))
        head = head_of(data)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertIn(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        client.transport.write(masked(0x8, b"\x03\xe8"))
        await client.lost
        await stack.settled()

    async def test_refused_upgrade(self) -> None:
        """
        An origin that refuses the upgrade has its answer relayed; the
        connection then closes.
        """
        stack = Stack(self)
        client = await stack.raw(handshake().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99"))
        data = await client.lost
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        await stack.settled()

    async def test_origin_down(self) -> None:
        """
        With the origin down, the client gets a 502 with a short text body
        and the connection closes; a warning names the origin.
        """
        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        url = "http://127.0.0.1:%d/base" % (closed.getHost().port,)
        await closed.stopListening()
        stack = Stack(self, origin_url=url)
        with capturedLogs() as events:
            client = await stack.raw(handshake())
            data = await client.lost
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), head)
        self.assertIn(b"\r\nCache-Status: phantom-frame; fwd=bypass; detail=upgrade-failed", head)
        self.assertEqual(body, b"Bad Gateway\n")
        self.assertIn(url, [e.get("origin") for e in events])
        self.assertEqual(stack.echo.connections, [])
        await stack.settled()

    async def assertNotImplemented(self, config: CreateProxyConfig) -> None:
        """
        Assert that a proxy with C{config} answers an upgrade with 501
        without contacting the origin.
        """
        stack = Stack(self, config)
        client = await stack.raw(handshake())
        data = await client.until(lambda data: b"\r\n\r\n" in data)
        self.assertTrue(data.startswith(b"HTTP/1.1 501 "), data)
        self.assertEqual(stack.echo.connections, [])

    async def test_websocket_disabled(self) -> None:
        """
        With C{enable_websocket} false, upgrades get 501 and the origin is
        not contacted.
        """
        await self.assertNotImplemented(CreateProxyConfig().with_websocket_enabled(False))

    async def test_pre_generate(self) -> None:
        """
        A pre_generate server tunnels only with fallthrough; without, 501.
        """
        config = CreateProxyConfig().with_proxy_mode("pre_generate")
        await self.assertNotImplemented(config)
        stack = Stack(self, config.with_pre_generate_fallthrough(True))
        client = await stack.connect()
        self.assertEqual(await client.echo(b"through"), b"through")

    async def test_wss(self) -> None:
        """
        Behind the TLS listener the takeover works the same: messages,
        including a large one, cross; the origin sees
        C{X-Forwarded-Proto: https}.
        """
        stack = Stack(self, secure=True)
        client = await stack.connect(protocols=["chat"], deflate=True)
        self.assertEqual(client.response.protocol, "chat")
        self.assertEqual(await client.echo(b"secure", isBinary=False), b"secure")
        payload = os.urandom(1 << 20) * 4
        self.assertEqual(await client.echo(payload), payload)
        self.assertEqual(stack.echo.requests[0].headers["x-forwarded-proto"], "https")
        client.sendClose()
        await stack.settled()

    def tls_origin(self) -> Tuple[Any, Certificate]:
        """
        @return: an echo origin's factory behind TLS (a certificate for
            C{localhost}), and the certificate to trust.
        """
        cert_path, key_path, trust = certificate(self)
        return tls_factory(ReloadableContext(cert_path, key_path), EchoFactory()), trust

    async def test_https_origin(self) -> None:
        """
        An C{https} origin is reached over TLS, its certificate checked
        against the URL's host name.
        """
        factory, trust = self.tls_origin()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        class Direct(Resource):
            isLeaf = True

            def __init__(self, url: str) -> None:
                super().__init__()
                self.origin = Origin(url, None, reactor, 5)

            def render(self, request) -> Any:
                headers = end_to_end(request.requestHeaders, frozenset({b"host"}))
                headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
                endpoint = origin_endpoint(reactor, self.origin, trustRoot=trust)
                return start_tunnel(Exchange(request), self.origin, b"/ws", headers, reactor, 5, endpoint)

        url = "https://localhost:%d" % (port.getHost().port,)
        stack = Stack(self, origin_url=url, resource=Direct, echo=factory.wrappedFactory)
        client = await stack.connect()
        self.assertEqual(await client.echo(b"to tls"), b"to tls")
        self.assertEqual(stack.echo.requests[0].path, "/ws")
        client.sendClose()
        await stack.settled()

    async def test_https_origin_untrusted(self) -> None:
        """
        An C{https} origin whose certificate is not trusted, or not for the
        URL's host, is not reached: 502.
        """
        factory, _ = self.tls_origin()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        for host in ("localhost", "127.0.0.1"):
            url = "https://%s:%d" % (host, port.getHost().port)
            stack = Stack(self, origin_url=url, echo=factory.wrappedFactory)
            client = await stack.raw(handshake())
            data = await client.lost
            self.assertTrue(data.startswith(b"HTTP/1.1 502 "), data)
            self.assertEqual(factory.wrappedFactory.requests, [])
            await stack.settled()
