"""
Tests for L{phantom_frame.ops.control_site}: refusals sent as soon as a
request's head is complete, before any body byte is read.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.store import StoredBody
from phantom_frame.cache.threads import runInline
from phantom_frame.config.loader import parse_config
from phantom_frame.ops.control import ControlResource
from phantom_frame.ops.control_limits import MAX_BODY, UNAUTHORIZED
from phantom_frame.ops.control_site import ControlChannel, ControlRequest, ControlSite, refusal_bytes
from phantom_frame.service import build_service

TOKEN = "s3cret"
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
HUGE = 100 * 1024 * 1024

Response = Tuple[int, Dict[bytes, List[bytes]], bytes]


def parse(data: bytes) -> List[Response]:
    """
    Split the bytes a server wrote into responses.

    @param data: responses, each with a C{Content-Length}.
    @return: the status code, the headers (lower-case names) and the body
        of each.
    """
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        size = int(headers.get(b"content-length", [b"0"])[0])
        responses.append((code, headers, data[:size]))
        data = data[size:]
    return responses


def make_handle(clock: Clock):
    """
    @return: a cache handle with one server holding three entries.
    """
    _, handle = create_proxy(
        CreateProxyConfig("http://127.0.0.1:1"), clock, agent=object(), name="site", runner=runInline
    )
    for server in handle.servers():
        for key in ("GET:/a", "GET:/b/1", "GET:/b/2"):
            server.cache._store(CacheEntry(key, 200, b"OK", (), "identity", StoredBody(1, b"x", None), 1, 0.0))
    return handle


class ControlSiteTests(SynchronousTestCase):
    """
    L{ControlSite} driven in memory over a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.handle = make_handle(self.clock)
        self.control = ControlResource(self.handle, TOKEN)
        self.site = ControlSite(self.control, reactor=self.clock)

    def connect(self) -> Tuple[ControlChannel, StringTransport]:
        """
        @return: a channel of the site connected to a transport.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
        return channel, transport

    def entries(self) -> int:
        """
        @return: how many entries the cache holds.
        """
        return self.handle.stats()["site"]["entries"]

    def test_channelAndRequest(self) -> None:
        """
        The site speaks HTTP/1.1 only, through L{ControlChannel} and
        L{ControlRequest}, and shows no tracebacks.
        """
        channel, _ = self.connect()
        self.assertIsInstance(channel, ControlChannel)
        self.assertIs(channel.requestFactory, ControlRequest)
        self.assertEqual(self.site.acceptableProtocols(), [b"http/1.1"])
        self.assertFalse(self.site.displayTracebacks)

    def test_unauthenticatedUpload(self) -> None:
        """
        An unauthenticated C{POST} announcing 100 MiB is answered 401 with
        C{WWW-Authenticate: Bearer} as soon as its head is complete, and the
        connection closed: no body file is made, no body byte is kept, and
        no C{100 Continue} is sent.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /invalidate HTTP/1.1\r\nHost: control\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % (HUGE,)
        )
        [(code, headers, body)] = parse(transport.value())
        self.assertEqual(code, 401)
        self.assertTrue(headers[b"www-authenticate"][0].startswith(b"Bearer"))
        self.assertEqual(headers[b"connection"], [b"close"])
        self.assertEqual(json.loads(body), {"error": "unauthorized"})
        self.assertTrue(transport.disconnecting)
        [request] = channel.requests
        self.assertIsNone(request.content)
        written = transport.value()
        channel.dataReceived(b'{"pattern": "*"}' + b" " * 65536)
        self.assertEqual(transport.value(), written)
        self.assertIsNone(request.content)
        self.assertEqual(self.entries(), 3)

    def test_badTokens(self) -> None:
        """
        A wrong token, another scheme or no credentials is 401 at once; two
        C{Authorization} headers, even wrong then right, are 400 at once.
        """
        for auth, expected in [
            (b"Authorization: Bearer wrong\r\n", 401),
            (b"Authorization: Basic " + TOKEN.encode() + b"\r\n", 401),
            (b"Authorization: Bearer\r\n", 401),
            (b"Authorization: " + TOKEN.encode() + b"\r\n", 401),
            (b"Authorization: Bearer wrong\r\n" + AUTH, 400),
            (AUTH + AUTH, 400),
        ]:
            channel, transport = self.connect()
            channel.dataReceived(b"POST /refresh-cache HTTP/1.1\r\n" + auth + b"Content-Length: 5\r\n\r\n")
            [(code, headers, _)] = parse(transport.value())
            self.assertEqual(code, expected, auth)
            self.assertEqual(b"www-authenticate" in headers, expected == 401)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.entries(), 3)

    def test_lowerCaseScheme(self) -> None:
        """
        The scheme is matched whatever its case.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /refresh-cache HTTP/1.1\r\nAuthorization: bearer " + TOKEN.encode() + b"\r\n\r\n")
        [(code, _, body)] = parse(transport.value())
        self.assertEqual((code, json.loads(body)["invalidated"]), (200, 3))

    def test_tooLarge(self) -> None:
        """
        With the token, a body announced over 1 MiB is 413 at once, unread.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /invalidate HTTP/1.1\r\n" + AUTH + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1,))
        [(code, headers, _)] = parse(transport.value())
        self.assertEqual(code, 413)
        self.assertNotIn(b"www-authenticate", headers)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(channel.requests[0].content)

    def test_authBeforeLength(self) -> None:
        """
        A request both unauthenticated and too large is 401: auth comes
        first.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /invalidate HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (HUGE,))
        self.assertEqual(parse(transport.value())[0][0], 401)

    def test_largestBody(self) -> None:
        """
        A body of exactly 1 MiB is read and answered by the route.
        """
        channel, transport = self.connect()
        body = b'{"pattern": "/b/*"}'
        body += b" " * (MAX_BODY - len(body))
        channel.dataReceived(b"POST /invalidate HTTP/1.1\r\n" + AUTH + b"Content-Length: %d\r\n\r\n" % (len(body),))
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(body)
        [(code, _, answer)] = parse(transport.value())
        self.assertEqual((code, json.loads(answer)["invalidated"]), (200, 2))
        self.assertFalse(transport.disconnecting)

    def test_chunkedTooLarge(self) -> None:
        """
        A chunked body is read until it goes over 1 MiB, then answered 413
        at once; what follows is not read.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /invalidate HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        for _ in range(MAX_BODY // 65536):
            channel.dataReceived(chunk)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"1\r\n \r\n")
        [(code, _, _)] = parse(transport.value())
        self.assertEqual(code, 413)
        self.assertTrue(transport.disconnecting)
        content = channel.requests[0].content
        content.seek(0, 2)
        self.assertEqual(content.tell(), MAX_BODY)
        written = transport.value()
        channel.dataReceived(chunk + b"0\r\n\r\n")
        self.assertEqual(transport.value(), written)
        self.assertEqual(content.tell(), MAX_BODY)
        self.assertEqual(self.entries(), 3)

    def test_chunkedSmall(self) -> None:
        """
        A small chunked body reaches the route.
        """
        channel, transport = self.connect()
        body = b'{"pattern": "/a"}'
        channel.dataReceived(
            b"POST /invalidate HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        [(code, _, answer)] = parse(transport.value())
        self.assertEqual((code, json.loads(answer)["invalidated"]), (200, 1))

    def test_head(self) -> None:
        """
        A refused C{HEAD} gets the head of the answer, without its body.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"HEAD /stats HTTP/1.1\r\n\r\n")
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 401 Unauthorized\r\n"))
        self.assertIn(b"\r\nContent-Length: ", head)
        self.assertEqual(rest, b"")

    def test_health(self) -> None:
        """
        C{GET /health} needs no token and keeps the connection; a body
        announced over 1 MiB is 413 there too.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /health HTTP/1.1\r\nAuthorization: Bearer wrong\r\n" + AUTH + b"\r\n")
        [(code, _, body)] = parse(transport.value())
        self.assertEqual((code, json.loads(body)), (200, {"status": "ok"}))
        self.assertFalse(transport.disconnecting)
        channel, transport = self.connect()
        channel.dataReceived(b"GET /health/?x=1 HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (HUGE,))
        self.assertEqual(parse(transport.value())[0][0], 413)

    def test_pipelined(self) -> None:
        """
        An authorized request is answered and the connection kept; an
        unauthenticated one pipelined after it is refused once the first is
        answered.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET /stats HTTP/1.1\r\n" + AUTH + b"\r\n"
            b"POST /refresh-cache HTTP/1.1\r\nContent-Length: %d\r\n\r\n{}" % (HUGE,)
        )
        [(first, _, _), (second, _, _)] = parse(transport.value())
        self.assertEqual((first, second), (200, 401))
        self.assertTrue(transport.disconnecting)

    def test_newToken(self) -> None:
        """
        A token changed on the resource (by a reload) applies to the next
        head at once.
        """
        self.control.set_token("other")
        channel, transport = self.connect()
        channel.dataReceived(b"POST /refresh-cache HTTP/1.1\r\n" + AUTH + b"Content-Length: %d\r\n\r\n" % (HUGE,))
        self.assertEqual(parse(transport.value())[0][0], 401)

    def test_openSite(self) -> None:
        """
        Without a token, only the length is checked at the head.
        """
        site = ControlSite(ControlResource(self.handle, None), reactor=self.clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
        channel.dataReceived(b"POST /refresh-cache HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1,))
        self.assertEqual(parse(transport.value())[0][0], 413)

    def test_refusalBytes(self) -> None:
        """
        A refusal is a complete HTTP/1.1 response with a JSON body.
        """
        data = refusal_bytes(UNAUTHORIZED)
        self.assertTrue(data.startswith(b"HTTP/1.1 401 Unauthorized\r\n"))
        [(code, headers, body)] = parse(data)
        self.assertEqual(headers[b"cache-control"], [b"no-store"])
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(json.loads(body), {"error": "unauthorized"})


class ServiceTests(SynchronousTestCase):
    """
    The service's control listener.
    """

    def test_controlSite(self) -> None:
        """
        L{build_service} serves the control resource through a
        L{ControlSite}.
        """
        config = parse_config(
            {
                "http_listen": "tcp:0:interface=127.0.0.1",
                "control_listen": "tcp:0:interface=127.0.0.1",
                "control_auth": "tok",
                "server": {"site": {"proxy_url": "http://127.0.0.1:9"}},
            }
        )
        top = build_service(config, MemoryReactorClock())
        factory = list(top)[-1].factory
        self.assertIsInstance(factory, ControlSite)
        self.assertIs(factory.control, top.control)
        self.assertFalse(factory.noisy)


class _Client(Protocol):
    """
    Writes a request head and collects the answer until the server closes.

    @ivar done: fires with the bytes received when the connection is lost.
    """

    def __init__(self, head: bytes) -> None:
        """
        @param head: what to write once connected.
        """
        self.head = head
        self.received: List[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the head, and nothing more.
        """
        self.transport.write(self.head)

    def dataReceived(self, data: bytes) -> None:
        """
        Keep what the server sends.
        """
        self.received.append(data)

    def connectionLost(self, reason: Failure = None) -> None:
        """
        Report what was received.
        """
        self.done.callback(b"".join(self.received))


class LoopbackTests(TestCase):
    """
    L{ControlSite} on a real loopback socket.
    """

    def test_unauthenticatedUpload(self) -> None:
        """
        A client that sends only the head of a 100 MiB upload gets 401 and
        the connection closed, without sending a body byte; the server's
        channel has read no body.
        """
        site = ControlSite(ControlResource(make_handle(Clock()), TOKEN), reactor=reactor)
        channels: List[ControlChannel] = []
        lost: List[Deferred[None]] = []
        build = site.buildProtocol

        def buildProtocol(addr: Any) -> ControlChannel:
            channel = build(addr)
            channels.append(channel)
            closed: Deferred[None] = Deferred()
            lost.append(closed)
            original = channel.connectionLost
            channel.connectionLost = lambda reason: (original(reason), closed.callback(None))  # type: ignore[method-assign]
            return channel

        site.buildProtocol = buildProtocol  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Client(b"POST /invalidate HTTP/1.1\r\nHost: control\r\nContent-Length: %d\r\n\r\n" % (HUGE,))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

        def check(data: bytes) -> Deferred[None]:
            [(code, headers, _)] = parse(data)
            self.assertEqual(code, 401)
            self.assertTrue(headers[b"www-authenticate"][0].startswith(b"Bearer"))
            return lost[0].addCallback(lambda _: self.assertIsNone(channels[0].requests[0].content))

        return connectProtocol(endpoint, client).addCallback(lambda _: client.done).addCallback(check)
