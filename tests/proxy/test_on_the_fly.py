"""
Answers that turned out not storable after phantom-frame asked the origin
for identity, compressed on the fly: in memory on a L{task.Clock}, and on
loopback for back-pressure.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import NOT_DONE_YET

from phantom_frame.cache.codec import brotli
from tests.origin import Origin, Running, StreamingBody, stalled, until
from tests.proxy.test_compression import PAGE, Client, Collector, vary
from tests.proxy.test_http_semantics import PRERENDER, Harness, header


class OnTheFlyTests(SynchronousTestCase):
    """
    A response that turned out not storable after phantom-frame asked the
    origin for identity is compressed on the fly, streaming, in a coding
    the client accepts, when its type is compressible.
    """

    def setUp(self) -> None:
        """
        A brotli-storing proxy and a plain client.
        """
        self.h = Harness(PRERENDER, compress="brotli")
        self.c = Client(self.h)

    def test_unstorable_answers(self) -> None:
        """
        An answer with C{Set-Cookie}, a private one and one too large to
        store are compressed in the coding the client prefers: chunked
        (no C{Content-Length}), without C{Accept-Ranges}, C{Accept-Encoding}
        appended to the origin's C{Vary}, the ETag weakened.
        """
        h = Harness(PRERENDER._with(max_cacheable_bytes=1000), compress="brotli")
        c = Client(h)
        common = {"etag": '"o1"', "vary": "X-Theme", "accept_ranges": "bytes"}
        h.serve("/cookie", body=PAGE, set_cookie="session=1", **common)
        h.serve("/private", body=PAGE, cache_control="private", **common)
        h.serve("/large", body=PAGE, **common)
        for path, reason in (("/cookie", "set-cookie"), ("/private", "private"), ("/large", "size")):
            for accept, coding, decode in (
                ("gzip, deflate, br", "br", brotli.decompress),
                ("gzip, deflate", "gzip", gzip.decompress),
                ("deflate;q=0.9, gzip;q=0.1", "deflate", zlib.decompress),
            ):
                response, body, status = c.get(path, accept_encoding=accept)
                self.assertEqual(status, "phantom-frame; fwd=uri-miss; detail=" + reason)
                self.assertEqual(header(response, "content-encoding"), coding, (path, accept))
                self.assertEqual(decode(body), PAGE)
                self.assertEqual(response.length, UNKNOWN_LENGTH)
                self.assertIsNone(header(response, "accept-ranges"))
                self.assertEqual(vary(response), "X-Theme, Accept-Encoding")
                self.assertEqual(header(response, "etag"), 'W/"o1"')
        [(_, _, sent)] = h.origin.requests[:1]
        self.assertNotIn("accept-encoding", sent)

    def test_left_alone(self) -> None:
        """
        Incompressible types, bodies the origin encoded (in a coding
        phantom-frame knows or not), C{no-transform}, tiny bodies,
        bodiless statuses, HEAD and clients accepting no coding get the
        origin's answer as it is, with its length.
        """
        h, c = self.h, self.c
        h.serve("/img", body=PAGE, set_cookie="a=1", content_type="image/png")
        h.serve("/coded", body=gzip.compress(PAGE), set_cookie="a=1", content_encoding="gzip")
        h.serve("/odd", body=PAGE, content_encoding="x-custom")
        h.serve("/nt", body=PAGE, cache_control="private, no-transform")
        h.serve("/tiny", body=b"x" * 100, set_cookie="a=1")
        h.serve("/empty", code=204, body=b"", set_cookie="a=1")
        h.serve("/page", body=PAGE, set_cookie="a=1")
        cases = [
            ("/img", "GET", "gzip, br", PAGE),
            ("/coded", "GET", "br", gzip.compress(PAGE)),
            ("/odd", "GET", "gzip, br", PAGE),
            ("/nt", "GET", "gzip, br", PAGE),
            ("/tiny", "GET", "gzip, br", b"x" * 100),
            ("/empty", "GET", "gzip, br", b""),
            ("/page", "HEAD", "gzip, br", b""),
            ("/page", "GET", None, PAGE),
            ("/page", "GET", "identity", PAGE),
        ]
        for path, method, accept, expected in cases:
            headers = {} if accept is None else {"accept_encoding": accept}
            response, body, _ = c.get(path, method, **headers)
            self.assertEqual(body, expected, (path, method, accept))
            coding = header(response, "content-encoding")
            self.assertEqual(coding, {"/coded": "gzip", "/odd": "x-custom"}.get(path), path)
            if method == "GET" and response.code == 200:
                self.assertEqual(response.length, len(expected), path)

    def test_streams(self) -> None:
        """
        The body is compressed as it comes: what the origin sent so far
        reaches the client, decodable, before the origin is done.
        """
        h, c = self.h, self.c
        h.origin.answers["/s"] = lambda headers: None
        d = c.agent.request(b"GET", b"http://proxy.test/s", Headers({"accept-encoding": ["gzip"]}))
        c.flush()
        [origin] = h.origin.held
        origin.setHeader(b"content-type", b"text/html")
        origin.setHeader(b"set-cookie", b"a=1")
        origin.write(PAGE[:2000])
        c.flush()
        response = self.successResultOf(d)
        self.assertEqual(header(response, "content-encoding"), "gzip")
        collector = Collector()
        response.deliverBody(collector)
        c.flush()
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.assertEqual(reader.decompress(b"".join(collector.data)), PAGE[:2000])
        del collector.data[:]
        origin.write(PAGE[2000:])
        origin.finish()
        c.flush()
        self.assertTrue(collector.done)
        self.assertEqual(reader.decompress(b"".join(collector.data)), PAGE[2000:])
        self.assertTrue(reader.eof)

    def test_buffered_then_streamed(self) -> None:
        """
        A body of unknown length that outgrew C{max_cacheable_bytes} while
        the fill buffered it is compressed from what was buffered on, a
        slice per reactor turn, and arrives whole.
        """
        h = Harness(PRERENDER._with(max_cacheable_bytes=40000), compress="brotli")
        c = Client(h)
        body = os.urandom(60000).hex().encode()
        h.origin.answers["/big"] = lambda headers: None
        d = c.agent.request(b"GET", b"http://proxy.test/big", Headers({"accept-encoding": ["br"]}))
        c.flush()
        [origin] = h.origin.held
        origin.setHeader(b"content-type", b"text/plain")
        for start in range(0, len(body), 10000):
            origin.write(body[start : start + 10000])
        h.agent.flush()
        c.agent.flush()
        self.assertTrue(h.clock.getDelayedCalls(), "compressing the buffered body waits for a turn")
        origin.finish()
        c.flush()
        response = self.successResultOf(d)
        self.assertEqual(header(response, "content-encoding"), "br")
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; detail=size")
        collector = Collector()
        response.deliverBody(collector)
        c.flush()
        self.assertTrue(collector.done)
        self.assertEqual(brotli.decompress(b"".join(collector.data)), body)


    def test_origin_fails_mid_body(self) -> None:
        """
        When the origin's connection breaks in the middle of a compressed
        body, the client's connection is cut: the body never looks whole.
        """
        h, c = self.h, self.c
        h.origin.answers["/cut"] = lambda headers: None
        d = c.agent.request(b"GET", b"http://proxy.test/cut", Headers({"accept-encoding": ["gzip"]}))
        c.flush()
        [origin] = h.origin.held
        origin.setHeader(b"content-type", b"text/html")
        origin.setHeader(b"set-cookie", b"a=1")
        origin.write(PAGE[:2000])
        c.flush()
        response = self.successResultOf(d)
        collector = Collector()
        response.deliverBody(collector)
        c.flush()
        origin.channel.transport.abortConnection()
        c.flush()
        self.assertTrue(collector.done)
        self.assertFalse(collector.reason.check(ResponseDone), collector.reason)


#: Random bytes, more than a brotli window's worth.
NOISE = os.urandom(1 << 20)


class RandomText(StreamingBody):
    """
    Streams random bytes, which do not shrink, labelled as text: what the
    proxy compresses still fills the client's socket.
    """

    @property
    def chunk(self) -> bytes:  # type: ignore[override]
        """
        @return: the next 64 KiB of L{NOISE}, round and round: a repeat is
            further back than the compressor's window.
        """
        start = self.sent % len(NOISE)
        return NOISE[start : start + 65536]


class TextOrigin(Origin):
    """
    The loopback test origin, with C{/bigtext?n=N}: N bytes of private text
    streamed with back-pressure.
    """

    def render(self, request: Any) -> Any:
        """
        Stream C{/bigtext}; anything else as L{Origin} does.
        """
        if request.path != b"/bigtext":
            return super().render(request)
        self.hits["/bigtext"] += 1
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"set-cookie", b"a=1")
        self.streams.append(RandomText(request, int(request.args[b"n"][0])))
        return NOT_DONE_YET


def dechunked(stream: bytes) -> Tuple[bytes, bytes]:
    """
    @return: the head of a chunked HTTP/1.1 response and its body.
    """
    end = stream.index(b"\r\n\r\n")
    position = end + 4
    body = []
    while True:
        line_end = stream.index(b"\r\n", position)
        size = int(stream[position:line_end].split(b";")[0], 16)
        if size == 0:
            return stream[:end], b"".join(body)
        position = line_end + 2
        body.append(stream[position : position + size])
        position += size + 2


class BackPressureTests(TestCase):
    """
    On loopback: compressing on the fly keeps back-pressure end to end.
    """

    async def test_compressed_back_pressure(self) -> None:
        """
        While the client does not read a large compressed answer, the
        origin is paused and the proxy holds a bounded amount; once the
        client reads, the whole body arrives, compressed.
        """
        run = Running(self)
        origin = run.origin = TextOrigin()
        run.originSite.resource = origin
        total = 24 * 1024 * 1024
        received: List[bytes] = []
        done: Deferred = Deferred()

        class Slow(Protocol):
            """
            A client that asks, then does not read until told.
            """

            def connectionMade(self) -> None:
                self.transport.write(
                    b"GET /bigtext?n=%d HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n"
                    b"Connection: close\r\n\r\n" % total
                )
                self.transport.pauseProducing()

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason: Any) -> None:
                done.callback(None)

        client = Slow()
        reactor.connectTCP("127.0.0.1", run.port.getHost().port, ClientFactory.forProtocol(lambda: client))
        await until(lambda: origin.streams)
        stream = origin.streams[0]
        upstream = stream.request.getClientAddress()
        await until(lambda: stream.paused and stalled(upstream, client.transport.getHost()))
        self.assertLess(stream.sent, 16 * 1024 * 1024)
        client.transport.resumeProducing()
        await done
        head, body = dechunked(b"".join(received))
        self.assertIn(b"\r\nContent-Encoding: br", head)
        self.assertEqual(len(brotli.decompress(body)), total)
        self.assertEqual(stream.sent, total)
