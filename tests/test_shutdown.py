"""
A graceful stop end to end: a real C{twistd -n phantom-frame} process gets
C{SIGTERM} while it waits for a slow origin, and still answers in full.
"""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Any, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from .test_plugin import spawn_twistd

CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
shutdown_grace = 20

[server.site]
proxy_url = "http://127.0.0.1:{origin}"
"""

#: Bigger than the socket buffers: the proxy still holds some of it when the
#: answer is finished.
BODY = os.urandom(8 * 1024 * 1024 - 1)


class Held(Resource):
    """
    An origin that answers only when the test fires L{release}.

    @ivar arrived: fires when the request arrives.
    @ivar release: fire it to answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()

    def render(self, request: Any) -> Any:
        """
        Hold the request until L{release} fires, then answer L{BODY}.
        """

        def answer(_: Any) -> None:
            if request._disconnected:
                return
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % len(BODY))
            request.write(BODY)
            request.finish()

        self.release.addCallback(answer)
        if not self.arrived.called:
            self.arrived.callback(None)
        return NOT_DONE_YET


class RawClient(Protocol):
    """
    Sends one keep-alive request and keeps everything the server sends
    until it closes the connection.

    @ivar received: the bytes received.
    @ivar closed: fires when the server has closed the connection.
    """

    def __init__(self) -> None:
        self.received: List[bytes] = []
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        """
        Ask for C{/slow}, keeping the connection open afterwards.
        """
        self.transport.write(b"GET /slow HTTP/1.1\r\nHost: proxy.example\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received.append(data)

    def connectionLost(self, reason: Any) -> None:
        """
        Fire L{closed}.
        """
        self.closed.callback(None)


class ShutdownTests(TestCase):
    """
    C{SIGTERM} on a real C{twistd -n phantom-frame}.
    """

    timeout = 60

    async def test_sigterm_during_slow_request(self) -> None:
        """
        A request in flight on a keep-alive connection when C{SIGTERM}
        arrives gets its whole answer, which says C{Connection: close}, then
        the proxy closes the connection; meanwhile the listener accepts no
        connection; then the process exits 0.
        """
        origin = Held()
        port = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: origin.release.called or origin.release.callback(None))
        child = spawn_twistd(self, CONFIG.format(origin=port.getHost().port))
        http, _ = await child.ports()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", http)
        client = await endpoint.connect(Factory.forProtocol(RawClient))
        self.addCleanup(lambda: client.closed.called or client.transport.abortConnection())
        await origin.arrived
        os.kill(child.transport.pid, signal.SIGTERM)
        await child.matches(rb"stopping: 1 request\(s\) in flight")
        refused: Optional[BaseException] = None
        try:
            connected = await endpoint.connect(Factory.forProtocol(Protocol))
            connected.transport.abortConnection()
        except ConnectionRefusedError as e:
            refused = e
        self.assertIsNotNone(refused, "the listener still accepts connections")
        origin.release.callback(None)
        await client.closed
        head, _, body = b"".join(client.received).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        self.assertEqual(lines[0], b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(int(headers[b"content-length"]), len(BODY))
        self.assertEqual(len(body), len(BODY))
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(BODY).digest())
        code = await child.ended
        self.assertEqual(code, 0, child.text())
