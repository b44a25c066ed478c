"""
Tests for L{phantom_frame.proxy.optimistic}.
"""

from __future__ import annotations

from typing import List

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.proxy import optimistic


class FakeSocket:
    """
    A socket that takes at most C{room} bytes per send.
    """

    def __init__(self, room: int, error: Exception = None) -> None:
        self.room = room
        self.error = error
        self.sent: List[bytes] = []

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        taken = data[: self.room]
        self.sent.append(taken)
        return len(taken)

    def sendmsg(self, buffers: List[bytes]) -> int:
        return self.send(b"".join(buffers))


class FakeTCP(StringTransport):
    """
    The C{FileDescriptor} state L{optimistic.send_now} reads.
    """

    connected = True
    disconnecting = False
    dataBuffer = b""

    def __init__(self, socket: FakeSocket) -> None:
        super().__init__()
        self.socket = socket
        self._tempDataBuffer: List[bytes] = []


class SendNowTests(SynchronousTestCase):
    """
    L{optimistic.send_now}.
    """

    def test_all_at_once(self) -> None:
        """
        With nothing buffered, the socket gets the data and nothing is
        written the ordinary way.
        """
        transport = FakeTCP(FakeSocket(1000))
        optimistic.send_now(transport, b"hello")
        self.assertEqual((transport.socket.sent, transport.value()), ([b"hello"], b""))

    def test_partial(self) -> None:
        """
        What the socket does not take is written the ordinary way.
        """
        transport = FakeTCP(FakeSocket(3))
        optimistic.send_now(transport, b"hello")
        self.assertEqual((transport.socket.sent, transport.value()), ([b"hel"], b"lo"))

    def test_buffered_or_closing(self) -> None:
        """
        With data already waiting, or the connection closing, the ordinary
        write keeps the order.
        """
        for attribute, value in (("dataBuffer", b"x"), ("_tempDataBuffer", [b"x"]), ("disconnecting", True)):
            transport = FakeTCP(FakeSocket(1000))
            setattr(transport, attribute, value)
            optimistic.send_now(transport, b"hello")
            self.assertEqual((transport.socket.sent, transport.value()), ([], b"hello"), attribute)

    def test_socket_error(self) -> None:
        """
        A socket error leaves the data to the ordinary path.
        """
        transport = FakeTCP(FakeSocket(1000, BlockingIOError()))
        optimistic.send_now(transport, b"hello")
        self.assertEqual(transport.value(), b"hello")

    def test_other_transports(self) -> None:
        """
        Anything but a plain TCP server transport is written to normally.
        """
        transport = FakeTCP(FakeSocket(1000))
        optimistic.send(transport, b"hello")
        self.assertEqual((transport.socket.sent, transport.value()), ([], b"hello"))

    def test_file_descriptor_state(self) -> None:
        """
        The private state read exists on twisted's TCP transports.
        """
        from twisted.internet.abstract import FileDescriptor
        from twisted.internet.testing import MemoryReactor

        descriptor = FileDescriptor(MemoryReactor())
        self.assertEqual((descriptor.dataBuffer, descriptor._tempDataBuffer), (b"", []))
        descriptor.connected = True
        descriptor.startWriting = lambda: None
        descriptor.write(b"queued")
        self.assertEqual(descriptor._tempDataBuffer, [b"queued"])
        self.assertTrue(issubclass(tcp.Server, FileDescriptor))
        self.assertFalse(tcp.Server.TLS)


class SendPartsNowTests(SynchronousTestCase):
    """
    L{optimistic.send_parts_now}: as L{optimistic.send_now}, for data in
    parts.
    """

    def test_all_at_once(self) -> None:
        """
        With nothing buffered, the socket gets every part in one call.
        """
        transport = FakeTCP(FakeSocket(1000))
        optimistic.send_parts_now(transport, [b"he", b"", b"llo"])
        self.assertEqual((transport.socket.sent, transport.value()), ([b"hello"], b""))

    def test_partial(self) -> None:
        """
        What the socket does not take (across parts) is written the
        ordinary way.
        """
        transport = FakeTCP(FakeSocket(3))
        optimistic.send_parts_now(transport, [b"he", b"llo"])
        self.assertEqual((transport.socket.sent, transport.value()), ([b"hel"], b"lo"))

    def test_buffered_or_failing(self) -> None:
        """
        With data already waiting, the connection closing, or a socket
        error, the ordinary write gets all of it.
        """
        for attribute, value in (("dataBuffer", b"x"), ("_tempDataBuffer", [b"x"]), ("disconnecting", True)):
            transport = FakeTCP(FakeSocket(1000))
            setattr(transport, attribute, value)
            optimistic.send_parts_now(transport, [b"he", b"llo"])
            self.assertEqual((transport.socket.sent, transport.value()), ([], b"hello"), attribute)
        transport = FakeTCP(FakeSocket(1000, BlockingIOError()))
        optimistic.send_parts_now(transport, [b"he", b"llo"])
        self.assertEqual(transport.value(), b"hello")

    def test_other_transports(self) -> None:
        """
        Anything but a plain TCP server transport is written to normally.
        """
        transport = FakeTCP(FakeSocket(1000))
        optimistic.send_parts(transport, [b"he", b"llo"])
        self.assertEqual((transport.socket.sent, transport.value()), ([], b"hello"))


class LoopbackTests(TestCase):
    """
    On a real TCP connection the data arrives whole and in order.
    """

    async def test_order(self) -> None:
        """
        Optimistic sends, interleaved with ordinary writes, arrive in order.
        """
        server_side: List[Protocol] = []
        received: List[bytes] = []
        done: Deferred = Deferred()

        class Server(Protocol):
            def connectionMade(self) -> None:
                server_side.append(self)
                optimistic.send_parts(self.transport, [b"zero", b" "])
                optimistic.send(self.transport, b"one ")
                self.transport.write(b"two " * 100000)
                optimistic.send(self.transport, b"three")
                optimistic.send_parts(self.transport, [b" four", b" five"])
                self.transport.loseConnection()

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason) -> None:
                done.callback(None)

        port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Client))
        await done
        self.assertIs(type(server_side[0].transport), tcp.Server)
        self.assertEqual(b"".join(received), b"zero one " + b"two " * 100000 + b"three four five")
