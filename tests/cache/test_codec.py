"""
Tests for L{phantom_frame.cache.codec}.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Callable, List, Tuple

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.codec import (
    MADE_CODINGS,
    STORED_CODING,
    Codec,
    DecodeError,
    alternative_codings,
    choose_coding,
    decode,
    decode_content,
    encode,
    parse_accept_encoding,
    preferred_coding,
    varies_by_coding,
)
from phantom_frame.proxy.settings import CompressStrategy

try:
    import brotli
except ImportError:
    import brotlicffi as brotli  # type: ignore[no-redef]

BODY = b"<html>" + b"phantom frame " * 500 + b"</html>"


class EncodeDecodeTests(SynchronousTestCase):
    """
    Tests for L{encode}, L{decode} and L{decode_content}.
    """

    def test_storedCoding(self) -> None:
        """
        Every compress strategy has a stored coding.
        """
        self.assertEqual(
            STORED_CODING,
            {
                CompressStrategy.BROTLI: "br",
                CompressStrategy.GZIP: "gzip",
                CompressStrategy.DEFLATE: "deflate",
                CompressStrategy.NONE: "identity",
            },
        )

    def test_roundTrip(self) -> None:
        """
        Every coding decodes back to the original body, and compresses it.
        """
        for coding in ["br", "gzip", "deflate"]:
            encoded = encode(BODY, coding)
            self.assertLess(len(encoded), len(BODY), coding)
            self.assertEqual(decode(encoded, coding), BODY, coding)
        self.assertEqual(encode(b"", "br") and decode(encode(b"", "br"), "br"), b"")

    def test_identity(self) -> None:
        """
        C{identity} leaves the body alone.
        """
        self.assertIs(encode(BODY, "identity"), BODY)
        self.assertIs(decode(BODY, "identity"), BODY)

    def test_formats(self) -> None:
        """
        C{br} is brotli, C{gzip} the gzip format with a zero timestamp (so
        the output is reproducible), C{deflate} the zlib format.
        """
        self.assertEqual(brotli.decompress(encode(BODY, "br")), BODY)
        gzipped = encode(BODY, "gzip")
        self.assertEqual(gzip.decompress(gzipped), BODY)
        self.assertEqual(gzipped[4:8], b"\x00\x00\x00\x00")
        self.assertEqual(gzipped, encode(BODY, "gzip"))
        self.assertEqual(zlib.decompress(encode(BODY, "deflate")), BODY)

    def test_xGzip(self) -> None:
        """
        C{x-gzip} decodes as C{gzip}; codings are case-insensitive.
        """
        self.assertEqual(decode(gzip.compress(BODY), "x-gzip"), BODY)
        self.assertEqual(decode(gzip.compress(BODY), "GZIP"), BODY)

    def test_rawDeflate(self) -> None:
        """
        A C{deflate} body in raw deflate (no zlib header) is decoded too.
        """
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = compressor.compress(BODY) + compressor.flush()
        self.assertEqual(decode(raw, "deflate"), BODY)

    def test_invalidData(self) -> None:
        """
        Invalid or truncated data raises L{DecodeError}, a L{ValueError}.
        """
        for coding in ["br", "gzip", "x-gzip", "deflate"]:
            self.assertRaises(DecodeError, decode, b"\xff not compressed \x00", coding)
            truncated = encode(BODY, "gzip" if coding == "x-gzip" else coding)[:-8]
            self.assertRaises(DecodeError, decode, truncated, coding)
        self.assertTrue(issubclass(DecodeError, ValueError))

    def test_unknownCoding(self) -> None:
        """
        An unknown coding raises L{ValueError} to encode and L{DecodeError}
        to decode.
        """
        self.assertRaises(ValueError, encode, BODY, "zstd")
        self.assertRaises(DecodeError, decode, BODY, "zstd")

    def test_decodeContentStacked(self) -> None:
        """
        Several codings are undone last first.
        """
        body = brotli.compress(gzip.compress(BODY))
        self.assertEqual(decode_content(body, b"gzip, br"), BODY)
        self.assertEqual(decode_content(body, "GZIP ,BR"), BODY)

    def test_decodeContentNothing(self) -> None:
        """
        No header, an empty one or identity leave the body alone.
        """
        for value in [None, b"", b"identity", b" , identity"]:
            self.assertIs(decode_content(BODY, value), BODY)

    def test_decodeContentErrors(self) -> None:
        """
        An unknown coding among several, or bad data, raises L{DecodeError}.
        """
        self.assertRaises(DecodeError, decode_content, gzip.compress(BODY), b"gzip, zstd")
        self.assertRaises(DecodeError, decode_content, BODY, b"gzip")


class ParseAcceptEncodingTests(SynchronousTestCase):
    """
    Tests for L{parse_accept_encoding}.
    """

    def test_qualities(self) -> None:
        """
        Codings are lower-cased with their quality, 1.0 by default.
        """
        self.assertEqual(
            parse_accept_encoding(b"GZIP, br;q=0.8, *;q=0, identity; Q=0.5"),
            {"gzip": 1.0, "br": 0.8, "*": 0.0, "identity": 0.5},
        )

    def test_absent(self) -> None:
        """
        No header or an empty one gives no codings.
        """
        self.assertEqual(parse_accept_encoding(None), {})
        self.assertEqual(parse_accept_encoding(b""), {})

    def test_clamped(self) -> None:
        """
        Qualities are clamped to [0, 1].
        """
        self.assertEqual(
            parse_accept_encoding(b"br;q=7, gzip;q=-1"), {"br": 1.0, "gzip": 0.0}
        )

    def test_malformedQuality(self) -> None:
        """
        An item whose quality is not a number is ignored.
        """
        self.assertEqual(
            parse_accept_encoding(b"br;q=high, gzip;q=, deflate;q=nan, x;q=1e3, zstd"),
            {"zstd": 1.0},
        )

    def test_junk(self) -> None:
        """
        Junk never raises: empty items, stray separators and other
        parameters are skipped, and a C{q} without a value is malformed.
        """
        self.assertEqual(
            parse_accept_encoding(b",, ;q=1, br;foo=bar;q=0.5 ,\xff;;, gzip;q"),
            {"br": 0.5, "\xff": 1.0},
        )

    def test_firstWins(self) -> None:
        """
        A coding listed twice keeps its first quality.
        """
        self.assertEqual(parse_accept_encoding(b"br;q=0, br"), {"br": 0.0})


class ChooseCodingTests(SynchronousTestCase):
    """
    Tests for L{choose_coding}.
    """

    def test_accepted(self) -> None:
        """
        A client listing the stored coding with q > 0 gets it.
        """
        self.assertEqual(choose_coding(b"gzip, deflate, br", "br"), "br")
        self.assertEqual(choose_coding(b"br;q=0.1", "br"), "br")
        self.assertEqual(choose_coding(b"GZIP", "gzip"), "gzip")

    def test_xGzip(self) -> None:
        """
        C{x-gzip} counts as C{gzip}.
        """
        self.assertEqual(choose_coding(b"x-gzip", "gzip"), "gzip")

    def test_refused(self) -> None:
        """
        A client not accepting the stored coding gets identity.
        """
        self.assertEqual(choose_coding(b"gzip", "br"), "identity")
        self.assertEqual(choose_coding(b"br;q=0, gzip", "br"), "identity")

    def test_star(self) -> None:
        """
        C{*} with q > 0 covers unlisted codings, but not listed ones.
        """
        self.assertEqual(choose_coding(b"*", "br"), "br")
        self.assertEqual(choose_coding(b"br;q=0, *", "br"), "identity")
        self.assertEqual(choose_coding(b"*;q=0, br", "br"), "br")

    def test_identityRefused(self) -> None:
        """
        With identity refused and the stored coding not accepted there is
        no acceptable answer.
        """
        self.assertIsNone(choose_coding(b"gzip, identity;q=0", "br"))
        self.assertIsNone(choose_coding(b"gzip, *;q=0", "br"))
        self.assertEqual(choose_coding(b"gzip, *;q=0, identity", "br"), "identity")

    def test_storedIdentity(self) -> None:
        """
        An identity body is sent unless identity is refused.
        """
        self.assertEqual(choose_coding(b"br", "identity"), "identity")
        self.assertEqual(choose_coding(None, "identity"), "identity")
        self.assertIsNone(choose_coding(b"identity;q=0", "identity"))
        self.assertIsNone(choose_coding(b"*;q=0", "identity"))

    def test_absentHeader(self) -> None:
        """
        Without an C{Accept-Encoding} header the client gets identity.
        """
        self.assertEqual(choose_coding(None, "br"), "identity")
        self.assertEqual(choose_coding(None, "gzip"), "identity")

    def test_emptyHeader(self) -> None:
        """
        An empty C{Accept-Encoding} accepts identity only.
        """
        self.assertEqual(choose_coding(b"", "br"), "identity")

    def test_junk(self) -> None:
        """
        Junk in the header does not raise.
        """
        self.assertEqual(choose_coding(b";;,=,br;q=x", "br"), "identity")
        self.assertEqual(choose_coding(b"\xff, br", "br"), "br")


class OtherCodingTests(SynchronousTestCase):
    """
    Tests for the codings phantom-frame makes itself: L{choose_coding} with
    made and makeable codings, L{preferred_coding},
    L{alternative_codings} and L{varies_by_coding}.
    """

    def choose(self, accept: bytes, stored: str = "br", made=()) -> object:
        """
        @return: what L{choose_coding} gives with every other coding
            makeable from C{stored}.
        """
        return choose_coding(accept, stored, made, alternative_codings(stored))

    def test_gzipOnly(self) -> None:
        """
        A client that accepts only codings other than the stored one gets
        one phantom-frame can make, not identity.
        """
        self.assertEqual(self.choose(b"gzip, deflate"), "gzip")
        self.assertEqual(self.choose(b"deflate"), "deflate")
        self.assertEqual(self.choose(b"x-gzip"), "gzip")
        self.assertEqual(self.choose(b"br", "gzip"), "br")
        self.assertIsNone(self.choose(b"gzip;q=0, zstd, identity;q=0"))

    def test_storedFirst(self) -> None:
        """
        The stored coding wins whenever it is accepted, whatever the
        qualities; no header still means identity.
        """
        self.assertEqual(self.choose(b"br;q=0.1, gzip"), "br")
        self.assertEqual(self.choose(b"*"), "br")
        self.assertEqual(self.choose(None), "identity")  # type: ignore[arg-type]

    def test_qualities(self) -> None:
        """
        Among the codings phantom-frame can make, the client's qualities
        decide; at equal quality one already made, then br, gzip, deflate.
        """
        self.assertEqual(self.choose(b"gzip;q=0.5, deflate;q=0.8"), "deflate")
        self.assertEqual(self.choose(b"deflate, gzip"), "gzip")
        self.assertEqual(self.choose(b"deflate, gzip", made=("deflate",)), "deflate")
        self.assertEqual(self.choose(b"gzip, deflate;q=0.5", made=("deflate",)), "gzip")
        self.assertEqual(self.choose(b"br;q=0, *"), "gzip")
        self.assertEqual(self.choose(b"br;q=0, gzip;q=0, *;q=0.3"), "deflate")

    def test_madeOnly(self) -> None:
        """
        A coding already made is chosen even when no more may be made.
        """
        self.assertEqual(choose_coding(b"deflate", "br", ("deflate",)), "deflate")
        self.assertEqual(choose_coding(b"gzip", "br", ("deflate",)), "identity")

    def test_identityStorage(self) -> None:
        """
        Nothing is made from an identity body: it was left uncompressed on
        purpose, and only ever goes out as it is.
        """
        self.assertEqual(alternative_codings("identity"), ())
        self.assertFalse(varies_by_coding("identity"))
        self.assertEqual(self.choose(b"gzip", "identity"), "identity")

    def test_alternatives(self) -> None:
        """
        From a compressed body every other coding may be made.
        """
        self.assertEqual(alternative_codings("br"), ("gzip", "deflate"))
        self.assertEqual(alternative_codings("gzip"), ("br", "deflate"))
        self.assertTrue(varies_by_coding("deflate"))

    def test_preferred(self) -> None:
        """
        L{preferred_coding} picks what a client prefers among the codings
        phantom-frame makes: br, gzip, deflate at equal quality; none
        without a header or when none is accepted.
        """
        self.assertEqual(MADE_CODINGS, ("br", "gzip", "deflate"))
        self.assertEqual(preferred_coding(b"gzip, deflate, br"), "br")
        self.assertEqual(preferred_coding(b"gzip, deflate"), "gzip")
        self.assertEqual(preferred_coding(b"br;q=0.2, gzip;q=0.9"), "gzip")
        self.assertEqual(preferred_coding(b"*"), "br")
        self.assertEqual(preferred_coding(b"br", ("gzip",)), None)
        self.assertIsNone(preferred_coding(None))
        self.assertIsNone(preferred_coding(b""))
        self.assertIsNone(preferred_coding(b"identity, zstd"))


class FakeRunner:
    """
    A runner that records its calls and runs them at once.
    """

    def __init__(self) -> None:
        """
        Start with no calls.
        """
        self.calls: List[Tuple[Callable[..., Any], tuple]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Record the call and run it.
        """
        self.calls.append((f, args))
        d: Deferred = Deferred()
        try:
            result = f(*args)
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)
        return d


class CodecTests(SynchronousTestCase):
    """
    Tests for L{Codec}.
    """

    def setUp(self) -> None:
        """
        Make a codec with a small threshold and a recording runner.
        """
        self.runner = FakeRunner()
        self.codec = Codec(self.runner, threshold=100)

    def test_smallInline(self) -> None:
        """
        Bodies up to the threshold are encoded and decoded inline, the
        L{Deferred} already fired.
        """
        body = b"x" * 100
        encoded = self.successResultOf(self.codec.encode(body, "gzip"))
        self.assertEqual(gzip.decompress(encoded), body)
        self.assertEqual(self.successResultOf(self.codec.decode(encoded, b"gzip")), body)
        self.assertEqual(self.runner.calls, [])

    def test_largeRunner(self) -> None:
        """
        Larger bodies go through the runner.
        """
        body = b"y" * 5000
        encoded = self.successResultOf(self.codec.encode(body, "br"))
        self.assertEqual(len(self.runner.calls), 1)
        self.assertEqual(brotli.decompress(encoded), body)
        big = bytes(range(256)) * 10
        compressed = gzip.compress(big)
        self.assertGreater(len(compressed), 100)
        self.assertEqual(self.successResultOf(self.codec.decode(compressed, b"gzip")), big)
        self.assertEqual(len(self.runner.calls), 2)

    def test_pending(self) -> None:
        """
        The result of a large body arrives when the runner delivers it.
        """
        pending: List[Deferred] = []

        def runner(f: Callable[..., Any], *args: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        d = Codec(runner, threshold=10).encode(b"z" * 11, "deflate")
        self.assertNoResult(d)
        pending[0].callback(None)
        self.assertEqual(zlib.decompress(self.successResultOf(d)), b"z" * 11)

    def test_decodeStacked(self) -> None:
        """
        L{Codec.decode} undoes stacked codings.
        """
        body = gzip.compress(zlib.compress(b"abc"))
        self.assertEqual(
            self.successResultOf(self.codec.decode(body, b"deflate, gzip")), b"abc"
        )
        self.assertIs(self.successResultOf(self.codec.decode(b"abc", None)), b"abc")

    def test_failures(self) -> None:
        """
        Errors arrive as failures, inline or through the runner.
        """
        self.failureResultOf(self.codec.decode(b"junk", b"br"), DecodeError)
        self.failureResultOf(self.codec.decode(b"junk" * 100, b"br"), DecodeError)
        self.failureResultOf(self.codec.encode(b"x", "zstd"), ValueError)
