"""
Tests for L{phantom_frame.http.channel.FastHTTPChannel.writeHeaders}: the
head twisted.web would write, as one string.
"""

from __future__ import annotations

from typing import List

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from phantom_frame.http.channel import FastHTTPChannel


class _Counting(StringTransport):
    """
    A transport that counts its writes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: List[object] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, data: List[bytes]) -> None:
        self.writes.append(list(data))
        super().writeSequence(data)


class WriteHeadersTests(SynchronousTestCase):
    """
    The channel writes a head as twisted.web does, byte for byte.
    """

    def heads(self, headers: object) -> List[_Counting]:
        transports = []
        for channel in (HTTPChannel(), FastHTTPChannel()):
            transport = _Counting()
            channel.transport = transport
            channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
            transports.append(transport)
        return transports

    def test_same_bytes(self) -> None:
        """
        Repeated and folded values, canonical names: the same bytes, in
        one write.
        """
        headers = Headers()
        headers.addRawHeader(b"content-type", b"text/html")
        headers.addRawHeader(b"set-cookie", b"a=1")
        headers.addRawHeader(b"set-cookie", b"b=2\r\nX-Evil: 1")
        stock, fast = self.heads(headers)
        self.assertEqual(fast.value(), stock.value())
        self.assertIn(b"Set-Cookie: b=2 X-Evil: 1\r\n", fast.value())
        self.assertEqual(len(fast.writes), 1)

    def test_pairs(self) -> None:
        """
        Pairs rather than L{Headers} (twisted.web's older form) are
        sanitised as twisted.web does.
        """
        stock, fast = self.heads([(b"x-a", b"1\r\n2")])
        self.assertEqual(fast.value(), stock.value())

    def test_withBody(self) -> None:
        """
        Given the bytes that follow it, the head goes out with them in one
        write: twisted.web's head, then the body.
        """
        headers = Headers()
        headers.addRawHeader(b"content-length", b"5")
        stock, _ = self.heads(headers)
        channel = FastHTTPChannel()
        fast = channel.transport = _Counting()
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers, b"hello")
        self.assertEqual(fast.value(), stock.value() + b"hello")
        self.assertEqual(len(fast.writes), 1)

    def test_withNoBody(self) -> None:
        """
        An empty body: the head alone, in one write.
        """
        stock, _ = self.heads(Headers())
        channel = FastHTTPChannel()
        fast = channel.transport = _Counting()
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", Headers(), b"")
        self.assertEqual((fast.value(), len(fast.writes)), (stock.value(), 1))
