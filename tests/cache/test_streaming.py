"""
Tests for L{phantom_frame.cache.streaming}: compressing bodies as they
stream, with back-pressure, a slice per reactor turn.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import List

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.codec import brotli
from phantom_frame.cache.streaming import (
    MIN_LENGTH,
    CompressingConsumer,
    StreamEncoder,
    compressed_headers,
    compressible,
    stream_coding,
)

TEXT = b"<li>streamed text</li>\n" * 400


def decompressor(coding: str):
    """
    @return: an incremental decompressor for C{coding}, with a
        C{decompress(data)} method.
    """
    if coding == "br":
        d = brotli.Decompressor()
        return type("Br", (), {"decompress": staticmethod(d.process)})
    return zlib.decompressobj(zlib.MAX_WBITS + (16 if coding == "gzip" else 0))


class StreamEncoderTests(SynchronousTestCase):
    """
    L{StreamEncoder} compresses piece by piece.
    """

    def test_flushed_pieces(self) -> None:
        """
        After each flush the client can decode everything given so far;
        the finished stream is a valid body in that coding.
        """
        for coding in ("br", "gzip", "deflate"):
            encoder = StreamEncoder(coding)
            reader = decompressor(coding)
            out = []
            for piece in (TEXT[:1000], TEXT[1000:5000], TEXT[5000:]):
                chunk = encoder.compress(piece) + encoder.flush()
                out.append(chunk)
                self.assertEqual(reader.decompress(chunk), piece, coding)
            out.append(encoder.finish())
            whole = b"".join(out)
            self.assertLess(len(whole), len(TEXT) // 4, coding)
            decoded = {
                "br": brotli.decompress,
                "gzip": gzip.decompress,
                "deflate": zlib.decompress,
            }[coding](whole)
            self.assertEqual(decoded, TEXT, coding)

    def test_unknown(self) -> None:
        """
        Only br, gzip and deflate are streamed.
        """
        self.assertRaises(ValueError, StreamEncoder, "identity")
        self.assertRaises(ValueError, StreamEncoder, "zstd")


class WhatIsCompressedTests(SynchronousTestCase):
    """
    L{compressible}, L{stream_coding} and L{compressed_headers}.
    """

    def test_compressible(self) -> None:
        """
        Text, JSON, JavaScript, XML, SVG and WebAssembly are compressible;
        images, video, archives, WOFF fonts, event streams and unknown
        types are not.
        """
        for media in ("text/html", "text/css", "application/json", "application/ld+json",
                      "application/javascript", "application/xml", "application/rss+xml",
                      "image/svg+xml", "application/wasm", "application/manifest+json"):
            self.assertTrue(compressible(media), media)
        for media in ("image/png", "image/jpeg", "video/mp4", "application/zip",
                      "application/octet-stream", "font/woff2", "text/event-stream", None):
            self.assertFalse(compressible(media), media)

    def test_stream_coding(self) -> None:
        """
        A compressible answer with a body is compressed in the coding the
        client prefers; not for HEAD, 204, 206 or 304, a known length
        under L{MIN_LENGTH}, an origin coding, C{no-transform}, an
        incompressible type, or a client accepting no coding.
        """
        html = [(b"Content-Type", b"text/html; charset=utf-8")]
        self.assertEqual(stream_coding(b"gzip, br", b"GET", 200, html, None), "br")
        self.assertEqual(stream_coding(b"gzip, deflate", b"GET", 200, html, 5000), "gzip")
        self.assertEqual(stream_coding(b"gzip;q=0.4, deflate", b"POST", 404, html, MIN_LENGTH), "deflate")
        refused = [
            (b"gzip", b"HEAD", 200, html, None),
            (b"gzip", b"GET", 204, html, None),
            (b"gzip", b"GET", 206, html, None),
            (b"gzip", b"GET", 304, html, None),
            (b"gzip", b"GET", 101, html, None),
            (b"gzip", b"GET", 200, html, MIN_LENGTH - 1),
            (b"gzip", b"GET", 200, html + [(b"Content-Encoding", b"gzip")], None),
            (b"gzip", b"GET", 200, html + [(b"Cache-Control", b"private, no-transform")], None),
            (b"gzip", b"GET", 200, [(b"Content-Type", b"image/png")], None),
            (b"gzip", b"GET", 200, [], None),
            (None, b"GET", 200, html, None),
            (b"identity", b"GET", 200, html, None),
        ]
        for case in refused:
            self.assertIsNone(stream_coding(*case), case)

    def test_headers(self) -> None:
        """
        The compressed answer has no C{Content-Length} or
        C{Accept-Ranges}, a weakened strong ETag, C{Accept-Encoding}
        appended to the origin's C{Vary} (verbatim) and its
        C{Content-Encoding}.
        """
        headers = [
            (b"Content-Type", b"text/html"),
            (b"Content-Length", b"5000"),
            (b"Accept-Ranges", b"bytes"),
            (b"ETag", b'"abc"'),
            (b"Vary", b"X-Theme"),
            (b"Set-Cookie", b"a=1"),
        ]
        self.assertEqual(
            compressed_headers(headers, "br"),
            [
                (b"Content-Type", b"text/html"),
                (b"ETag", b'W/"abc"'),
                (b"Set-Cookie", b"a=1"),
                (b"Vary", b"X-Theme, Accept-Encoding"),
                (b"Content-Encoding", b"br"),
            ],
        )
        self.assertIn((b"ETag", b'W/"w"'), compressed_headers([(b"ETag", b'W/"w"')], "gzip"))
        self.assertIn((b"Vary", b"Accept-Encoding"), compressed_headers([], "gzip"))
        self.assertIn(
            (b"Vary", b"accept-encoding, Origin"),
            compressed_headers([(b"vary", b"accept-encoding, Origin")], "gzip"),
        )


class CompressingConsumerTests(SynchronousTestCase):
    """
    L{CompressingConsumer} between a producer (the origin's connection) and
    a consumer (the client's request).
    """

    def setUp(self) -> None:
        """
        A gzip L{CompressingConsumer} with 1 KiB slices between two
        transports, on a L{Clock}.
        """
        self.clock = Clock()
        self.client = StringTransport()
        self.origin = StringTransport()
        self.done: List[bool] = []
        self.alive = True
        self.consumer = CompressingConsumer(
            self.client, "gzip", self.clock, lambda: self.done.append(True), lambda: self.alive, 1024
        )
        self.consumer.registerProducer(self.origin, True)
        self.reader = decompressor("gzip")

    def received(self) -> bytes:
        """
        @return: what the client can decode of what it received so far.
        """
        data = self.client.value()
        self.client.clear()
        return self.reader.decompress(data)

    def test_small_writes(self) -> None:
        """
        Small writes are compressed at once and flushed, so the client
        decodes each as it comes; finishing ends the stream, unregisters
        and calls C{done}.
        """
        self.assertIs(self.client.producer, self.consumer)
        self.consumer.write(b"first part ")
        self.assertEqual(self.received(), b"first part ")
        self.consumer.write(b"second part")
        self.assertEqual(self.received(), b"second part")
        self.consumer.unregisterProducer()
        self.consumer.finish()
        self.assertEqual(self.done, [True])
        self.assertIsNone(self.client.producer)
        self.assertEqual(self.received(), b"")
        self.assertTrue(self.reader.eof)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slice_per_turn(self) -> None:
        """
        Of a burst, one slice is compressed (and flushed) before the reactor
        gets a turn, the producer paused while more than a slice waits; the
        rest comes in later turns, then the end, and the producer resumes.
        """
        burst = os.urandom(2500).hex().encode()
        self.consumer.write(burst)
        self.consumer.finish()
        self.assertEqual(self.received(), burst[:1024])
        self.assertEqual(self.origin.producerState, "paused")
        self.assertEqual(self.done, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.received(), burst[1024:])
        self.assertTrue(self.reader.eof)
        self.assertEqual(self.done, [True])
        self.assertEqual(self.origin.producerState, "producing")

    def test_resumed_behind_its_back(self) -> None:
        """
        A producer resumed by someone else while the backlog is large (a
        relay resumes its transport once registered) is paused again as
        soon as it writes.
        """
        self.consumer.write(os.urandom(2000).hex().encode())
        self.assertEqual(self.origin.producerState, "paused")
        self.origin.resumeProducing()
        self.consumer.write(b"more")
        self.assertEqual(self.origin.producerState, "paused")
        self.clock.advance(0)
        self.assertEqual(self.origin.producerState, "producing")

    def test_writes_wait_their_turn(self) -> None:
        """
        Many writes in one turn (what a fill buffered) are not all
        compressed in that turn: once a slice is used up, the rest waits,
        in order.
        """
        pieces = [b"%04d" % i * 64 for i in range(20)]
        for piece in pieces:
            self.consumer.write(piece)
        self.assertEqual(self.received(), b"".join(pieces)[:1024])
        self.clock.advance(0)
        self.assertEqual(self.received(), b"".join(pieces)[1024:])

    def test_client_back_pressure(self) -> None:
        """
        When the client's buffer fills, compressing stops and the producer
        is paused; when it drains, both go on.
        """
        self.client.producer.pauseProducing()
        self.assertEqual(self.origin.producerState, "paused")
        self.consumer.write(b"held back")
        self.clock.advance(0)
        self.assertEqual(self.client.value(), b"")
        self.client.producer.resumeProducing()
        self.assertEqual(self.origin.producerState, "producing")
        self.assertEqual(self.received(), b"held back")

    def test_client_gone(self) -> None:
        """
        Once the client is gone nothing more is written and C{done} is not
        called; a consumer that stops its producer stops the origin.
        """
        self.consumer.write(os.urandom(3000).hex().encode())
        self.client.clear()
        self.alive = False
        self.clock.advance(0)
        self.consumer.finish()
        self.assertEqual((self.client.value(), self.done), (b"", []))
        self.consumer.stopProducing()
        self.assertEqual(self.origin.producerState, "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])
