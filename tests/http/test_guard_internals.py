"""
Tests for L{phantom_frame.http.guard} that lean on the outside: the
twisted.web internals L{GuardedHTTPChannel} relies on, and refusals over
real loopback TCP.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol, _IdentityTransferDecoder

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.channel import FastHTTPChannel
from phantom_frame.http.guard import GuardedHTTPChannel
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from tests.http.rig import RecordingOrigin, Rig, request
from tests.memory import MemoryOrigin


class ChannelInternalsTests(SynchronousTestCase):
    """
    The twisted.web internals L{GuardedHTTPChannel} relies on.
    """

    def test_hooks(self) -> None:
        """
        The hooks overridden exist on L{HTTPChannel}, and the fast channel
        is a guarded one.
        """
        for name in (
            "lineReceived", "lineLengthExceeded", "headerReceived", "_maybeChooseTransferDecoder",
            "allHeadersReceived", "allContentReceived", "rawDataReceived",
            "_respondToBadRequestAndDisconnect", "_finishRequestBody",
        ):
            self.assertTrue(callable(getattr(HTTPChannel, name, None)), name)
        self.assertTrue(issubclass(FastHTTPChannel, GuardedHTTPChannel))

    def test_stockCallsHooks(self) -> None:
        """
        The stock channel reports malformed input through
        C{_respondToBadRequestAndDisconnect}, hands C{Content-Length} and
        C{Transfer-Encoding} to C{_maybeChooseTransferDecoder}, counts head
        bytes in C{_receivedHeaderSize}, and keeps C{__first_line},
        C{_command}, C{_path}, C{_version} and C{persistent} as read here.
        """
        calls: List[Any] = []

        class Spy(HTTPChannel):
            def _respondToBadRequestAndDisconnect(self):
                calls.append("bad")
                HTTPChannel._respondToBadRequestAndDisconnect(self)

            def _maybeChooseTransferDecoder(self, header, data):
                calls.append((header, data))
                return HTTPChannel._maybeChooseTransferDecoder(self, header, data)

        channel = Spy()
        channel.makeConnection(StringTransport())
        self.assertEqual(channel._HTTPChannel__first_line, 1)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n")
        self.assertEqual(channel._HTTPChannel__first_line, 0)
        self.assertEqual((channel._command, channel._path, channel._version), (b"POST", b"/x", b"HTTP/1.1"))
        self.assertTrue(channel.persistent)
        self.assertEqual(channel._receivedHeaderSize, len(b"POST /x HTTP/1.1Content-Length: 5"))
        channel.dataReceived(b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(calls, [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked"), "bad"])
        channel.connectionLost(None)

    def test_identityDecoder(self) -> None:
        """
        twisted.web's identity decoder takes a length, a body callback and
        a callback for what follows the body, as L{GuardedHTTPChannel}
        makes it.
        """
        body: List[bytes] = []
        rest: List[bytes] = []
        decoder = _IdentityTransferDecoder(3, body.append, rest.append)
        decoder.dataReceived(b"abcd")
        self.assertEqual((body, rest), ([b"abc"], [b"d"]))

    def test_abort(self) -> None:
        """
        After a refusal the connection is aborted if it is still there
        C{abortTimeout} seconds later (twisted.web's C{_abortingCall} and
        C{forceAbortClient}, cancelled by C{connectionLost}).
        """
        self.assertEqual(HTTPChannel.abortTimeout, 15)
        for lose in (False, True):
            rig = Rig(self)
            connection = rig.connect()
            connection.send(b"GET /\x00 HTTP/1.1\r\n")
            self.assertTrue(connection.closing)
            if lose:
                connection.close()
            rig.clock.advance(15)
            self.assertEqual(connection.transport.disconnected, not lose)
            self.assertEqual(rig.clock.getDelayedCalls(), [])

    def test_lineReceiverReadsInstance(self) -> None:
        """
        L{LineReceiver} splits on the instance's C{delimiter} and bounds
        lines with its C{MAX_LENGTH}, read at each call (a property works).
        """
        got: List[bytes] = []

        class Lines(LineReceiver):
            delimiter = b"\n"

            @property
            def MAX_LENGTH(self):
                return 4

            def lineReceived(self, line):
                got.append(line)

            def lineLengthExceeded(self, line):
                got.append(b"long")

        lines = Lines()
        lines.makeConnection(StringTransport())
        lines.dataReceived(b"ab\r\ncd\n12345")
        self.assertEqual(got, [b"ab\r", b"cd", b"long"])


class _Client(Protocol):
    """
    Sends C{data} at once, keeps what comes back, and fires C{done} with it
    when the connection is lost.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.received)


class LoopbackTests(TestCase):
    """
    Over real TCP, a refusal reaches a client that is still sending, and
    the server closes its side.
    """

    def serve(self) -> Tuple[int, List[Deferred[None]], RecordingOrigin]:
        """
        Listen on a loopback port with a proxy site.

        @return: the port number, the Deferreds that fire when each
            server-side connection is lost, and the origin.
        """
        from twisted.internet import reactor

        origin = RecordingOrigin()
        config = CreateProxyConfig("http://origin.test")
        resource, handle = create_proxy(
            config, reactor, agent=object(), client=MemoryOrigin(origin, reactor).client_for(config), runner=runInline
        )
        self.addCleanup(handle.close)
        site = ProxySite(Router([("*", resource)]), reactor=reactor, access_log=False)
        lost: List[Deferred[None]] = []

        class Tracked(FastHTTPChannel):
            def connectionMade(self) -> None:
                lost.append(Deferred())
                super().connectionMade()

            def connectionLost(self, reason: Any) -> None:
                super().connectionLost(reason)
                lost[-1].callback(None)

        site.protocol = lambda *args: _GenericHTTPChannelProtocol(Tracked())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, lost, origin

    async def test_refusalsReachClient(self) -> None:
        """
        A 1 MB request line gets 414 and a 100 MiB declared body (8 MB of it
        sent at once) 413: the client reads the answer, then the close.
        """
        from twisted.internet import reactor

        number, lost, origin = self.serve()
        for data, code in (
            (b"GET /" + b"a" * 1_000_000, b"414"),
            (request("/x", "POST", content_length="104857600") + b"x" * 8_000_000, b"413"),
        ):
            client = _Client(data)
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
            await endpoint.connect(Factory.forProtocol(lambda: client))
            received = await client.done
            self.assertEqual(received[9:12], code, received[:100])
            self.assertIn(b"\r\nConnection: close\r\n", received)
            await lost[-1]
        self.assertEqual(origin.received, [])
