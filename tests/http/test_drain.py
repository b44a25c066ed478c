"""
Tests for L{phantom_frame.http.drain}: a proxy site's connections on a
graceful stop, in memory (raw HTTP/1.1 clients over L{twisted.test.iosim},
the proxy and its origin on a fake clock; an HTTP/2 client over a
L{StringTransport}).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.config import parse_config
from phantom_frame.http.drain import DrainingChannel, TrackedConnection

from ..memory import Proxy
from ..origin import PAGE, Origin, until


class Client(Protocol):
    """
    A raw HTTP client: keeps what it receives and when it was disconnected.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Optional[Failure] = None

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        """
        Note the disconnection.
        """
        self.lost = reason


def request(path: str, *headers: str) -> bytes:
    """
    @return: a C{GET} of C{path} with a C{Host} and C{headers}.
    """
    lines = [f"GET {path} HTTP/1.1", "Host: proxy.example", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def answers(stream: bytes) -> List[Tuple[int, dict, bytes]]:
    """
    Split what a client received into answers (C{Content-Length} framed).

    @return: each answer's status, lower-cased headers and body.
    """
    found = []
    while stream:
        head, _, stream = stream.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers[name.lower().decode()] = value.decode()
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split(b" ")[1]), headers, stream[:length]))
        stream = stream[length:]
    return found


class StreamingOrigin(Origin):
    """
    An L{Origin} whose C{/stream} sends its head and C{first}, then waits
    for the test (C{streaming} is the request).
    """

    streaming = None

    def render(self, request):
        """
        Hold C{/stream}; answer the rest as L{Origin} does.
        """
        if request.path == b"/stream":
            self.streaming = request
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"content-length", b"10")
            request.write(b"first")
            return NOT_DONE_YET
        return Origin.render(self, request)


class Rig:
    """
    A proxy (one C{"*"} server before an in-memory L{Origin}) and raw
    clients connected to its site.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.origin = StreamingOrigin()
        config = parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}})
        self.proxy = Proxy(testcase, config, self.origin)
        self.site = self.proxy.site
        self.pumps: List[iosim.IOPump] = []

    def connect(self) -> Tuple[Client, TrackedConnection, iosim.IOPump]:
        """
        @return: a new client connected to the site, the site's protocol and
            the pump between them.
        """
        client_address = IPv4Address("TCP", "203.0.113.9", 40000 + len(self.pumps))
        server_address = IPv4Address("TCP", "127.0.0.1", 3000)
        server = self.site.buildProtocol(client_address)
        client = Client()
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, hostAddress=server_address, peerAddress=client_address),
            client,
            iosim.FakeTransport(client, False, hostAddress=client_address, peerAddress=server_address),
        )
        self.pumps.append(pump)
        return client, server, pump

    def settle(self) -> None:
        """
        Let every exchange run: origin, clients and the clock.
        """
        for _ in range(10):
            self.proxy.settle()
            for pump in self.pumps:
                pump.flush()


class DrainTests(SynchronousTestCase):
    """
    L{phantom_frame.http.drain.Drain} on a L{phantom_frame.http.site.ProxySite}.
    """

    def setUp(self) -> None:
        self.rig = Rig(self)
        self.drain = self.rig.site.drain

    def test_channel(self) -> None:
        """
        A proxy site's connections are L{TrackedConnection}s around a
        L{DrainingChannel}, counted while they are open.
        """
        client, server, pump = self.rig.connect()
        self.assertIsInstance(server, TrackedConnection)
        self.assertIsInstance(server._channel, DrainingChannel)
        self.assertEqual(self.drain.open, 1)
        client.transport.loseConnection()
        self.rig.settle()
        self.assertEqual(self.drain.open, 0)

    def test_idle_closed_at_once(self) -> None:
        """
        An idle keep-alive connection is closed when draining starts;
        L{Drain.start} fires once it is closed, not before.
        """
        client, _, _ = self.rig.connect()
        client.transport.write(request("/a"))
        self.rig.settle()
        [(code, headers, _)] = answers(client.received)
        self.assertEqual(code, 200)
        self.assertNotIn("connection", headers)
        self.assertIsNone(client.lost)
        closed = self.drain.start()
        self.assertNoResult(closed)
        self.rig.settle()
        self.assertIsNotNone(client.lost)
        self.successResultOf(closed)

    def test_in_flight_finishes(self) -> None:
        """
        A request in flight when draining starts is answered in full, with
        C{Connection: close}; its connection closes after the last byte, and
        only then does L{Drain.start} fire.
        """
        self.rig.origin.gate = Deferred()
        client, _, pump = self.rig.connect()
        idle, _, _ = self.rig.connect()
        client.transport.write(request("/gated"))
        self.rig.settle()
        closed = self.drain.start()
        self.rig.settle()
        self.assertIsNotNone(idle.lost)
        self.assertIsNone(client.lost)
        self.assertNoResult(closed)
        self.rig.origin.gate.callback(None)
        self.rig.proxy.settle()
        # The answer is written but not yet delivered.
        self.assertEqual(client.received, b"")
        self.assertNoResult(closed)
        self.rig.settle()
        [(code, headers, body)] = answers(client.received)
        self.assertEqual((code, headers["connection"], body), (200, "close", PAGE))
        self.assertIsNotNone(client.lost)
        self.successResultOf(closed)

    def test_arriving_meanwhile(self) -> None:
        """
        A request that arrives on an open connection while draining (one
        whose head was coming in when draining started) is answered with
        C{Connection: close}, then the connection closes; later bytes on it
        are not read as another request.
        """
        client, _, _ = self.rig.connect()
        client.transport.write(b"GET /b HTTP/1.1\r\n")
        self.rig.settle()
        closed = self.drain.start()
        self.rig.settle()
        self.assertIsNone(client.lost)
        client.transport.write(b"Host: proxy.example\r\n\r\n" + request("/c"))
        self.rig.settle()
        [(code, headers, body)] = answers(client.received)
        self.assertEqual((code, headers["connection"]), (200, "close"))
        self.assertTrue(body.startswith(PAGE + b"/b"))
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.rig.origin.hits["/c"], 0)
        self.successResultOf(closed)

    def test_fast_path_stands_aside(self) -> None:
        """
        A hit the fast path would answer (pipelined behind an answer whose
        head was sent before draining started) is answered by the stock path
        while draining, with C{Connection: close}.
        """
        first, _, _ = self.rig.connect()
        first.transport.write(request("/a"))
        self.rig.settle()
        client, _, _ = self.rig.connect()
        client.transport.write(request("/a"))
        self.rig.settle()
        fast = self.rig.site.fastHit
        self.assertEqual(fast.answered, 1)
        client.received = b""
        client.transport.write(request("/stream", "Authorization: Basic eA==") + request("/a"))
        self.rig.settle()
        self.assertTrue(client.received.endswith(b"\r\n\r\nfirst"), client.received)
        closed = self.drain.start()
        self.rig.settle()
        self.assertIsNone(client.lost)
        self.rig.origin.streaming.write(b"later")
        self.rig.origin.streaming.finish()
        self.rig.settle()
        [(_, _, streamed), (code, headers, _)] = answers(client.received)
        self.assertEqual(streamed, b"firstlater")
        self.assertEqual((code, headers["connection"]), (200, "close"))
        self.assertEqual(headers["cache-status"], "phantom-frame; hit")
        self.assertEqual(fast.answered, 1)
        self.assertIsNotNone(client.lost)
        self.successResultOf(closed)

    def test_abort(self) -> None:
        """
        L{Drain.abort} aborts the connections still open and says how many.
        """
        self.rig.origin.gate = Deferred()
        client, _, _ = self.rig.connect()
        client.transport.write(request("/gated"))
        self.rig.settle()
        closed = self.drain.start()
        self.assertEqual(self.drain.abort(), 1)
        self.rig.settle()
        self.assertIsNotNone(client.lost)
        self.successResultOf(closed)
        self.assertEqual(self.rig.site.active, 0)

    def test_not_draining(self) -> None:
        """
        Before draining, a request's end closes nothing: keep-alive
        connections stay open.
        """
        client, _, _ = self.rig.connect()
        client.transport.write(request("/a"))
        self.rig.settle()
        self.drain.request_done()
        self.rig.settle()
        self.assertIsNone(client.lost)
        self.assertNoResult(self.drain.closed())
        client.transport.loseConnection()
        self.rig.settle()


class H2Transport(StringTransport):
    """
    A transport on which TLS negotiated HTTP/2.
    """

    negotiatedProtocol = b"h2"


class Held(Resource):
    """
    Holds every request until the test answers it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: List[Any] = []

    def render(self, request: Any) -> Any:
        """
        Hold C{request}.
        """
        self.held.append(request)
        return NOT_DONE_YET


class HTTP2DrainTests(TestCase):
    """
    Draining an HTTP/2 connection (twisted.web's HTTP/2 channel runs on the
    global reactor).
    """

    async def test_goaway_when_done(self) -> None:
        """
        An HTTP/2 connection with a stream open is left alone when draining
        starts; once the stream is answered, the client gets C{GOAWAY} and
        the connection closes.
        """
        import h2.config
        import h2.connection
        import h2.events

        from twisted.internet import reactor

        from phantom_frame.http.routing import Router
        from phantom_frame.http.site import ProxySite

        held = Held()
        site = ProxySite(Router([("*", held, "held")]), reactor=reactor, access_log=False)
        server = site.buildProtocol(IPv4Address("TCP", "203.0.113.9", 40000))
        transport = H2Transport()
        server.makeConnection(transport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        headers = [(":method", "GET"), (":path", "/a"), (":scheme", "https"), (":authority", "proxy.example")]
        client.send_headers(1, headers, end_stream=True)
        server.dataReceived(client.data_to_send())
        await until(lambda: held.held)
        self.assertTrue(server.multiplexed)
        closed = site.drain.start()
        await deferLater(reactor, 0, lambda: None)
        self.assertFalse(transport.disconnecting)
        request = held.held[0]
        request.setHeader(b"content-length", b"2")
        request.write(b"ok")
        request.finish()
        await until(lambda: transport.disconnecting)
        events = client.receive_data(transport.value())
        kinds = [type(e) for e in events]
        self.assertIn(h2.events.StreamEnded, kinds)
        self.assertEqual(kinds[-1], h2.events.ConnectionTerminated)
        server.connectionLost(Failure(ConnectionDone()))
        await closed
