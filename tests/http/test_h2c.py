"""
Tests for L{phantom_frame.http.h2c}: a cleartext connection opening with the
HTTP/2 preface is served HTTP/2 by the same site (same answers), any other
is served HTTP/1.1 as before, and without HTTP/2 support a preface gets the
HTTP/1.1 channel's answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from zope.interface import implementer

from phantom_frame.config import parse_config
from phantom_frame.http.channel import FastHTTPChannel
from phantom_frame.http.h2c import PREFACE, PriorKnowledgeChannel, h2_available
from phantom_frame.http.site import ProxySite
from tests.memory import Proxy
from tests.origin import Origin, Running, _address, until

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError:  # pragma: no cover - without the h2 extra
    h2 = None

#: Why the HTTP/2 tests are skipped; CI fails when it sees this reason.
NO_H2 = "HTTP/2 needs the h2 extra: pip install '.[h2]'"

Answer = Tuple[Dict[bytes, bytes], bytes]


class H2Client(Protocol):
    """
    A minimal HTTP/2 client with prior knowledge, on the C{h2} library: it
    opens with the connection preface and collects each stream's answer.

    @ivar answers: the Deferred answer of each stream, by stream id.
    @ivar lost: fires when the connection is lost.
    """

    def __init__(self, authority: bytes = b"proxy.example") -> None:
        self._authority = authority
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.answers: Dict[int, Deferred[Answer]] = {}
        self._heads: Dict[int, Dict[bytes, bytes]] = {}
        self._bodies: Dict[int, List[bytes]] = {}
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the preface and our settings.
        """
        self.conn.initiate_connection()
        self._flush()

    def get(self, path: bytes, headers: Tuple[Tuple[bytes, bytes], ...] = ()) -> Deferred[Answer]:
        """
        Send C{GET path} on a new stream.

        @return: a L{Deferred} firing with the answer's headers (pseudo
            headers included) and body.
        """
        stream = self.conn.get_next_available_stream_id()
        request = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", self._authority),
            (b":path", path),
        ]
        self.conn.send_headers(stream, request + list(headers), end_stream=True)
        self.answers[stream] = Deferred()
        self._bodies[stream] = []
        self._flush()
        return self.answers[stream]

    def dataReceived(self, data: bytes) -> None:
        """
        Collect headers and data by stream; a stream's end fires its answer.
        """
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self._heads[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._bodies[event.stream_id].append(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = b"".join(self._bodies.pop(event.stream_id))
                self.answers[event.stream_id].callback((self._heads.pop(event.stream_id), body))
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:
        """
        Note the end of the connection; answers still awaited fail with
        C{reason}.
        """
        for stream, answer in list(self.answers.items()):
            if not answer.called:
                answer.errback(reason)
        self.lost.callback(None)


@implementer(ISSLTransport)
class TLSTransport(StringTransport):
    """
    A L{StringTransport} that says it is TLS on which ALPN chose nothing.
    """

    negotiatedProtocol = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Nothing to do in memory.
        """

    def getPeerCertificate(self) -> None:
        """
        @return: L{None}: the client sent no certificate.
        """
        return None


def config() -> Any:
    """
    @return: one C{"*"} server in front of C{http://origin.example}.
    """
    return parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}})


class MemoryTests(SynchronousTestCase):
    """
    HTTP/2 with prior knowledge to a whole proxy in memory, next to
    HTTP/1.1 on the same site.
    """

    if h2 is None:
        skip = NO_H2

    def setUp(self) -> None:
        self.origin = Origin()
        self.proxy = Proxy(self, config(), self.origin)

    def connect(self) -> Tuple[H2Client, Any, iosim.IOPump]:
        """
        @return: an HTTP/2 client connected to the proxy's site in memory,
            the server's protocol and the pump between them.
        """
        client_address = IPv4Address("TCP", "203.0.113.9", 50000)
        server_address = IPv4Address("TCP", "127.0.0.1", 3000)
        server = self.proxy.site.buildProtocol(client_address)
        client = H2Client()
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=server_address, peerAddress=client_address),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=client_address, peerAddress=server_address),
        )
        return client, server, pump

    def settle(self, pump: iosim.IOPump) -> None:
        """
        Move every byte between client, proxy and origin.
        """
        for _ in range(10):
            pump.flush()
            self.proxy.settle()

    def test_sameAnswers(self) -> None:
        """
        A cleartext connection that opens with the preface is served by
        HTTP/2, by the same proxy: the first request fills the cache, the
        second is a hit, each with the body and C{Cache-Status} an
        HTTP/1.1 client gets.
        """
        client, server, pump = self.connect()
        first = client.get(b"/page/a")
        self.settle(pump)
        head, body = self.successResultOf(first)
        self.assertEqual(head[b":status"], b"200")
        self.assertTrue(body.endswith(b"/page/a 1"), body[-20:])
        self.assertIn(b"stored", head[b"cache-status"])
        second = client.get(b"/page/a")
        self.settle(pump)
        head2, body2 = self.successResultOf(second)
        self.assertEqual(body2, body)
        self.assertEqual(self.origin.hits["/page/a"], 1)
        response, plain = self.proxy.get(self, "/page/a")
        self.assertEqual(plain, body)
        self.assertEqual(
            head2[b"cache-status"], response.headers.getRawHeaders(b"cache-status")[0]
        )
        self.assertEqual(head2[b"content-type"], response.headers.getRawHeaders(b"content-type")[0])
        self.assertIsInstance(server._channel, http.H2Connection)

    def test_prefaceInPieces(self) -> None:
        """
        A preface that arrives a byte at a time is still recognised.
        """
        server = self.proxy.site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 50000))
        transport = StringTransport()
        server.makeConnection(transport)
        client = H2Client()
        client.makeConnection(StringTransport())
        client.get(b"/page/b")
        sent = client.transport.value()
        self.assertTrue(sent.startswith(PREFACE))
        for i in range(len(sent)):
            server.dataReceived(sent[i : i + 1])
        self.assertIsInstance(server._channel, http.H2Connection)
        self.proxy.settle()
        client.dataReceived(transport.value())
        head, body = self.successResultOf(client.answers[1])
        self.assertEqual(head[b":status"], b"200")
        self.assertTrue(body.endswith(b"/page/b 1"))

    def test_notOverTLS(self) -> None:
        """
        Over TLS the protocol is the one ALPN chose: a preface on a TLS
        connection that negotiated nothing gets the HTTP/1.1 answer.
        """
        server = self.proxy.site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 50000))
        transport = TLSTransport()
        server.makeConnection(transport)
        server.dataReceived(PREFACE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), transport.value())
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(ConnectionDone()))


class HTTP11Tests(SynchronousTestCase):
    """
    Every connection that does not open with the preface, and every
    connection when HTTP/2 is off or not installed, is HTTP/1.1 as before.
    """

    def setUp(self) -> None:
        self.origin = Origin()
        self.proxy = Proxy(self, config(), self.origin)

    def exchange(self, server: Any, chunks: List[bytes]) -> StringTransport:
        """
        Feed C{chunks} to C{server} on a fresh transport.

        @return: the transport, with what the server wrote.
        """
        transport = StringTransport()
        server.makeConnection(transport)
        for chunk in chunks:
            server.dataReceived(chunk)
            self.proxy.settle()
        return transport

    def test_http11(self) -> None:
        """
        An HTTP/1.1 request is answered by HTTP/1.1, even when its first
        bytes could still have been the preface's (C{P}, then the rest).
        """
        server = self.proxy.site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 50000))
        request = b"POST /page/c HTTP/1.1\r\nHost: proxy.example\r\nContent-Length: 0\r\n\r\n"
        transport = self.exchange(server, [request[:1], request[1:]])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"), transport.value()[:80])
        self.assertIsInstance(server._channel, FastHTTPChannel)

    def test_chosen(self) -> None:
        """
        While the first bytes could still be the preface, they are held;
        once the protocol is chosen, later bytes go straight to the chosen
        channel, and the next request is answered by it.
        """
        server = self.proxy.site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 50000))
        request = b"POST /page/c HTTP/1.1\r\nHost: proxy.example\r\nContent-Length: 0\r\n\r\n"
        transport = self.exchange(server, [request[:1]])
        self.assertNotEqual(server.dataReceived, server._channel.dataReceived)
        server.dataReceived(request[1:])
        self.proxy.settle()
        self.assertEqual(server.dataReceived, server._channel.dataReceived)
        server.dataReceived(request)
        self.proxy.settle()
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK\r\n"), 2)

    def test_prefaceWithoutHTTP2(self) -> None:
        """
        With HTTP/2 off, a preface gets the HTTP/1.1 channel's answer: 400,
        then the connection closes.
        """
        server = PriorKnowledgeChannel(FastHTTPChannel(), http2=False)
        server.factory = self.proxy.site
        server.site = self.proxy.site
        transport = self.exchange(server, [PREFACE])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), transport.value())
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(ConnectionDone()))

    def test_prefaceWithoutExtra(self) -> None:
        """
        Without twisted.web's HTTP/2 support (the h2 extra not installed),
        the proxy site's channel answers a preface as it always did: 400,
        then the connection closes.
        """
        self.patch(http, "H2_ENABLED", False)
        self.assertFalse(h2_available())
        server = self.proxy.site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 50000))
        self.assertIsInstance(server, PriorKnowledgeChannel)
        transport = self.exchange(server, [PREFACE])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), transport.value())
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(ConnectionDone()))


class LoopbackTests(TestCase):
    """
    HTTP/2 with prior knowledge end to end on loopback: a real HTTP/2
    client, the proxy's site and a real origin.
    """

    if h2 is None:
        skip = NO_H2

    timeout = 10

    async def test_priorKnowledge(self) -> None:
        """
        An HTTP/2 client with prior knowledge gets, on one connection, a
        miss then a hit, with the body an HTTP/1.1 client gets from the
        same listener.
        """
        run = Running(self)
        site = ProxySite(run.resource, reactor=reactor, access_log=False)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        client = H2Client(b"127.0.0.1:%d" % (address.port,))
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), client)
        first_head, first = await client.get(b"/page/h2c")
        second_head, second = await client.get(b"/page/h2c")
        client_address = client.transport.getHost()
        client.transport.loseConnection()
        await client.lost
        await until(
            lambda: not any(_address(r, "getPeer") == client_address for r in reactor.getReaders())
        )
        self.assertEqual(first_head[b":status"], b"200")
        self.assertIn(b"stored", first_head[b"cache-status"])
        self.assertEqual(second_head[b"cache-status"], b"phantom-frame; hit")
        self.assertEqual(second, first)
        self.assertEqual(run.origin.hits["/page/h2c"], 1)
        run.base = "http://127.0.0.1:%d" % (address.port,)
        response, plain = await run.fetch("GET", "/page/h2c")
        self.assertEqual(plain, first)
        self.assertEqual(response.headers.getRawHeaders(b"cache-status"), [b"phantom-frame; hit"])
