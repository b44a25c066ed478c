"""
Tests for L{phantom_frame.http.limits}: reading lengths, the limits value,
the refusal answers and the bounded chunked decoder.
"""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import _ChunkedTransferDecoder, _MalformedChunkedDataError

from phantom_frame.http.limits import (
    REASONS,
    BodyTooLarge,
    BoundedChunkedDecoder,
    ClientLimits,
    content_length,
    error_answer,
)
from tests.http.rig import answers


class ContentLengthTests(SynchronousTestCase):
    """
    L{content_length} reads plain decimal lengths that fit in 63 bits.
    """

    def test_valid(self) -> None:
        """
        Digits give their value, leading zeros included.
        """
        for value, length in ((b"0", 0), (b"42", 42), (b"0007", 7), (b"0" * 5000 + b"1", 1),
                              (b"9223372036854775807", 2**63 - 1)):
            self.assertEqual(content_length(value), length)

    def test_invalid(self) -> None:
        """
        Signs, spaces, lists, other digits and lengths over 63 bits are not
        lengths (even thousands of digits, which C{int()} refuses to read).
        """
        for value in (b"", b"+1", b"-1", b"1 ", b"1,1", b"0x1", b"1e3", "\u0661".encode(),
                      b"9223372036854775808", b"18446744073709551621", b"1" * 5000):
            self.assertIsNone(content_length(value), value)


class ClientLimitsTests(SynchronousTestCase):
    """
    L{ClientLimits} checks its values.
    """

    def test_invalid(self) -> None:
        """
        Negative sizes, a head bound below 1 and a timeout that is not
        positive are refused.
        """
        for kwargs in ({"max_request_body": -1}, {"max_header_bytes": 0}, {"client_header_timeout": 0},
                       {"allowed_hosts": ["a b"]}):
            self.assertRaises(ValueError, ClientLimits, **kwargs)

    def test_equality(self) -> None:
        """
        Limits with the same values are equal, whatever was compiled.
        """
        self.assertEqual(ClientLimits(allowed_hosts=["a.example"]), ClientLimits(allowed_hosts=("a.example",)))


class ErrorAnswerTests(SynchronousTestCase):
    """
    L{error_answer} writes short closing answers.
    """

    def test_answer(self) -> None:
        """
        The answer has the status, a C{text/plain} body naming it and the
        detail, its length, C{Connection: close} and the given date.
        """
        for code in REASONS:
            data = error_answer(code, "what went wrong", b"Thu, 01 Jan 1970 00:00:00 GMT")
            self.assertTrue(data.startswith(b"HTTP/1.1 %d %s\r\n" % (code, REASONS[code])))
            ((status, headers, body),) = answers(data)
            self.assertEqual(status, code)
            self.assertEqual(body, REASONS[code] + b": what went wrong\n")
            self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
            self.assertEqual(headers[b"connection"], [b"close"])
            self.assertEqual(headers[b"date"], [b"Thu, 01 Jan 1970 00:00:00 GMT"])
        self.assertNotIn(b"Date:", error_answer(400, "x"))


class BoundedChunkedDecoderTests(SynchronousTestCase):
    """
    L{BoundedChunkedDecoder} is twisted.web's chunked decoder, bounded and
    strict.
    """

    def decoder(self, limit: int = 100):
        """
        @return: a decoder, the body it gives and what follows the body.
        """
        body: List[bytes] = []
        rest: List[bytes] = []
        return BoundedChunkedDecoder(limit, body.append, rest.append), body, rest

    def test_decodes(self) -> None:
        """
        A body up to the limit is decoded, in any pieces, with extensions
        and trailers; what follows it is handed on.
        """
        data = b"5;a=b\r\nhello\r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n"
        decoder, body, rest = self.decoder(10)
        for byte in range(len(data)):
            decoder.dataReceived(data[byte : byte + 1])
        self.assertEqual((b"".join(body), rest), (b"helloworld", [b""]))
        decoder, body, rest = self.decoder(10)
        decoder.dataReceived(data + b"NEXT")
        self.assertEqual((b"".join(body), rest), (b"helloworld", [b"NEXT"]))

    def test_tooLarge(self) -> None:
        """
        A chunk size that takes the body past the limit raises
        L{BodyTooLarge} before any byte of that chunk is given.
        """
        decoder, body, _ = self.decoder(10)
        decoder.dataReceived(b"6\r\nabcdef\r\n")
        self.assertRaises(BodyTooLarge, decoder.dataReceived, b"5\r\nghijk")
        self.assertEqual(body, [b"abcdef"])

    def test_doesNotFit(self) -> None:
        """
        A chunk size over 63 bits is malformed, whatever the limit.
        """
        decoder, _, _ = self.decoder(2**70)
        self.assertRaises(_MalformedChunkedDataError, decoder.dataReceived, b"ffffffffffffffffffffff\r\n")

    def test_bareLF(self) -> None:
        """
        A bare LF ending a chunk size, a chunk or a trailer is malformed at
        once.
        """
        for data in (b"5\n", b"\n", b"1\r\na\n", b"0\r\nX: y\n", b"0\r\n\n"):
            decoder, _, _ = self.decoder()
            self.assertRaises(_MalformedChunkedDataError, decoder.dataReceived, data)

    def test_decoderInternals(self) -> None:
        """
        twisted.web's chunked decoder has the per-state methods and the
        C{_buffer}, C{_start} and C{length} L{BoundedChunkedDecoder} reads,
        and raises L{_MalformedChunkedDataError} for broken framing.
        """
        for name in ("_dataReceived_CHUNK_LENGTH", "_dataReceived_CRLF", "_dataReceived_TRAILER"):
            self.assertTrue(callable(getattr(_ChunkedTransferDecoder, name, None)), name)
        body: List[bytes] = []
        decoder = _ChunkedTransferDecoder(body.append, lambda rest: None)
        self.assertIsInstance(decoder._buffer, bytearray)
        self.assertEqual(decoder._start, 0)
        decoder.dataReceived(b"a\r\n")
        self.assertEqual((decoder.state, decoder.length), ("BODY", 10))
        decoder.dataReceived(b"01")
        self.assertEqual(decoder.length, 8)
        self.assertRaises(_MalformedChunkedDataError, decoder.dataReceived, b"23456789xx")
