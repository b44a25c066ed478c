"""
Tests for L{phantom_frame.cache.brotli_native}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache import brotli_native
from phantom_frame.cache.codec import decode, encode
from phantom_frame.cache.streaming import StreamEncoder

PAGE = b"<p>phantom frame</p>" * 600


class RoundTripTests(SynchronousTestCase):
    """
    Bodies compressed and decompressed here are brotli streams any decoder
    reads.
    """

    def test_roundTrip(self) -> None:
        """
        L{brotli_native.compress} gives a brotli stream smaller than the
        body that L{brotli_native.decompress} and the module's own decoder
        both read back.
        """
        compressed = brotli_native.compress(PAGE, 5)
        self.assertLess(len(compressed), len(PAGE) // 10)
        self.assertEqual(brotli_native.decompress(compressed), PAGE)
        self.assertEqual(brotli_native.brotli.decompress(compressed), PAGE)

    def test_codec(self) -> None:
        """
        The codec's C{br} coding goes through this module both ways.
        """
        self.assertEqual(decode(encode(PAGE, "br"), "br"), PAGE)
        self.assertEqual(decode(brotli_native.compress(PAGE, 5), "br"), PAGE)

    def test_invalid(self) -> None:
        """
        Data that is not a brotli stream raises, and leaves nothing behind.
        """
        self.assertRaises(Exception, brotli_native.decompress, b"not brotli at all")

    def test_large(self) -> None:
        """
        A body larger than the output buffer kept so far is compressed
        whole (the buffer grows).
        """
        body = bytes(range(256)) * 2048
        self.assertEqual(brotli_native.decompress(brotli_native.compress(body, 1)), body)
        self.assertEqual(brotli_native.decompress(brotli_native.compress(PAGE, 5)), PAGE)


class ReleaseTests(SynchronousTestCase):
    """
    A streaming compressor's native state is released when its stream ends.
    """

    def test_finish(self) -> None:
        """
        Finishing a brotli stream drops the compressor (released at once
        with C{brotlicffi}), and the stream is whole.
        """
        encoder = StreamEncoder("br")
        out = encoder.compress(PAGE) + encoder.finish()
        self.assertIsNone(encoder._brotli)
        self.assertEqual(brotli_native.decompress(out), PAGE)

    def test_close(self) -> None:
        """
        Closing an abandoned stream drops its compressor; closing again does
        nothing.
        """
        encoder = StreamEncoder("br")
        encoder.compress(PAGE)
        encoder.close()
        encoder.close()
        self.assertIsNone(encoder._brotli)

    def test_release(self) -> None:
        """
        L{brotli_native.release} frees a C{brotlicffi} coder's state (its
        handle is gone); CPython's coders are left alone.
        """
        compressor = brotli_native.brotli.Compressor(quality=5)
        compressor.process(PAGE)
        compressor.finish()
        brotli_native.release(compressor)
        if brotli_native.CFFI:
            self.assertIsNone(compressor._encoder)
        else:
            self.assertFalse(hasattr(compressor, "_encoder"))
