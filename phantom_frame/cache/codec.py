"""
Content codings: compressing stored bodies, decoding origin bodies, and
negotiating with a client's C{Accept-Encoding}.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from twisted.internet.defer import Deferred

from phantom_frame.cache import brotli_native
from phantom_frame.cache.threads import runInline
from phantom_frame.cache.strategy import CompressStrategy

try:
    import brotli
except ImportError:  # PyPy
    import brotlicffi as brotli  # type: ignore[no-redef]

STORED_CODING: Dict[CompressStrategy, str] = {
    CompressStrategy.BROTLI: "br",
    CompressStrategy.GZIP: "gzip",
    CompressStrategy.DEFLATE: "deflate",
    CompressStrategy.NONE: "identity",
}
"""
The content coding stored bodies have under each C{compress_strategy}.
"""

BROTLI_QUALITY = 5
ZLIB_LEVEL = 6

MADE_CODINGS: Tuple[str, ...] = ("br", "gzip", "deflate")
"""
The codings phantom-frame makes itself, best first: when a client accepts
several with the same quality, the earlier one is chosen.
"""


class DecodeError(ValueError):
    """
    A body could not be decoded: its data is invalid or its coding unknown.
    """


def encode(body: bytes, coding: str) -> bytes:
    """
    Compress a body.

    @param body: the identity body.
    @param coding: C{"br"} (brotli quality 5), C{"gzip"} (level 6, with a
        zero timestamp so the output is reproducible), C{"deflate"} (the
        zlib format, level 6) or C{"identity"}.
    @return: the encoded body.
    @raise ValueError: for another coding.
    """
    if coding == "br":
        return brotli_native.compress(body, BROTLI_QUALITY)
    if coding == "gzip":
        return gzip.compress(body, compresslevel=ZLIB_LEVEL, mtime=0)
    if coding == "deflate":
        return zlib.compress(body, ZLIB_LEVEL)
    if coding == "identity":
        return body
    raise ValueError(f"unknown content coding {coding!r}")


def _inflate(body: bytes) -> bytes:
    """
    Decode a C{deflate} body: the zlib format, or raw deflate as some servers
    send it (browsers accept both).
    """
    try:
        return zlib.decompress(body)
    except zlib.error:
        pass
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    data = decompressor.decompress(body) + decompressor.flush()
    if not decompressor.eof:
        raise zlib.error("truncated deflate stream")
    return data


def decode(body: bytes, coding: str) -> bytes:
    """
    Undo one content coding.

    @param body: the encoded body.
    @param coding: C{"br"}, C{"gzip"}, C{"x-gzip"}, C{"deflate"} (the zlib
        format, or raw deflate) or C{"identity"}, in any case.
    @return: the decoded body.
    @raise DecodeError: when the data is invalid or the coding unknown.
    """
    coding = coding.strip().lower()
    try:
        if coding == "br":
            return brotli_native.decompress(body)
        if coding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if coding == "deflate":
            return _inflate(body)
    except Exception as e:
        raise DecodeError(f"invalid {coding} data: {e}") from e
    if coding == "identity":
        return body
    raise DecodeError(f"unknown content coding {coding!r}")


def _codings(content_encoding: Union[bytes, str, None]) -> List[str]:
    """
    Split a C{Content-Encoding} value into codings, in the order applied.
    """
    if content_encoding is None:
        return []
    if isinstance(content_encoding, bytes):
        content_encoding = content_encoding.decode("latin-1")
    return [
        coding
        for coding in (item.strip().lower() for item in content_encoding.split(","))
        if coding and coding != "identity"
    ]


def decode_content(body: bytes, content_encoding: Union[bytes, str, None]) -> bytes:
    """
    Undo every coding a C{Content-Encoding} header lists.

    @param body: the body as received.
    @param content_encoding: the header's value (several codings, as in
        C{gzip, br}, are undone last first), or L{None} when absent.
    @return: the identity body; C{body} itself when there is nothing to undo.
    @raise DecodeError: when a coding is unknown or its data invalid.
    """
    for coding in reversed(_codings(content_encoding)):
        body = decode(body, coding)
    return body


_QVALUE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def parse_accept_encoding(value: Optional[bytes]) -> Dict[str, float]:
    """
    Parse an C{Accept-Encoding} value.

    @param value: the header's value (repeated headers joined with commas),
        or L{None}.
    @return: lower-cased codings (C{"*"} included) mapped to their quality,
        1.0 unless a C{q} parameter says otherwise; q is clamped to [0, 1].
        An item whose q is not a number is ignored, as are empty items; when
        a coding is listed twice, its first quality counts.
    """
    result: Dict[str, float] = {}
    if not value:
        return result
    for item in value.decode("latin-1").split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality: Optional[float] = 1.0
        for param in params:
            name, _, raw = param.partition("=")
            if name.strip().lower() != "q":
                continue
            raw = raw.strip()
            quality = float(raw) if _QVALUE.fullmatch(raw) else None
            break
        if quality is None:
            continue
        result.setdefault(coding, min(1.0, max(0.0, quality)))
    return result


def _quality(prefs: Dict[str, float], coding: str) -> Optional[float]:
    """
    @return: the quality a parsed C{Accept-Encoding} gives C{coding}: its
        own, else that of C{*}, else L{None} (not listed).
    """
    quality = prefs.get(coding)
    return prefs.get("*") if quality is None else quality


def _preferred(
    prefs: Dict[str, float], candidates: Sequence[str], made: Sequence[str]
) -> Optional[str]:
    """
    @return: of C{candidates} and C{made}, the coding with the highest
        quality in C{prefs} (q > 0): at equal quality one in C{made}, then
        the earliest of L{MADE_CODINGS}; L{None} when none is acceptable.
    """
    best: Optional[Tuple[float, bool, int]] = None
    chosen = None
    for rank, coding in enumerate(MADE_CODINGS):
        if coding not in candidates and coding not in made:
            continue
        quality = _quality(prefs, coding)
        if not quality:
            continue
        score = (quality, coding in made, -rank)
        if best is None or score > best:
            best, chosen = score, coding
    return chosen


def _preferences(accept_encoding: bytes) -> Dict[str, float]:
    """
    @return: the parsed C{Accept-Encoding}, C{x-gzip} counting as C{gzip}.
    """
    prefs = parse_accept_encoding(accept_encoding)
    if "x-gzip" in prefs:
        prefs.setdefault("gzip", prefs["x-gzip"])
    return prefs


def preferred_coding(
    accept_encoding: Optional[bytes],
    candidates: Sequence[str] = MADE_CODINGS,
    made: Sequence[str] = (),
) -> Optional[str]:
    """
    Choose the coding phantom-frame makes for a client.

    @param accept_encoding: the request's C{Accept-Encoding} value, or
        L{None} when absent (then nothing is chosen: see L{choose_coding}).
    @param candidates: the codings that may be made (of L{MADE_CODINGS}).
    @param made: those already made, preferred at equal quality.
    @return: the acceptable candidate (q > 0, or covered by C{*} with
        q > 0) the client prefers; at equal quality C{br}, then C{gzip},
        then C{deflate}; L{None} when the client accepts none.
    """
    if accept_encoding is None:
        return None
    return _preferred(_preferences(accept_encoding), candidates, made)


def alternative_codings(stored: str) -> Tuple[str, ...]:
    """
    @param stored: the coding of a stored body.
    @return: the codings phantom-frame may make from it for a client that
        does not accept C{stored}: none for an identity body (see
        L{varies_by_coding}), every other of L{MADE_CODINGS} for a
        compressed one.
    """
    if not varies_by_coding(stored):
        return ()
    return tuple(coding for coding in MADE_CODINGS if coding != stored)


def choose_coding(
    accept_encoding: Optional[bytes],
    stored: str,
    made: Sequence[str] = (),
    makeable: Sequence[str] = (),
) -> Optional[str]:
    """
    Choose how to send a stored body to a client.

    Without an C{Accept-Encoding} header the client gets the identity body.
    RFC 9110 lets a server send any coding then, but clients that send no
    header (curl without C{--compressed}, scripts, health checks) expect an
    uncompressed body, and nginx and Varnish answer them so.

    @param accept_encoding: the request's C{Accept-Encoding} value, or
        L{None} when absent.
    @param stored: the coding of the stored body (C{x-gzip} counts as
        C{gzip}).
    @param made: the codings already made beside the stored body.
    @param makeable: the codings that may be made from it (see
        L{alternative_codings}).
    @return: C{stored} when the client accepts it (listed with q > 0, or
        covered by C{*} with q > 0 when not listed); otherwise the coding
        of C{made} and C{makeable} it prefers (see L{preferred_coding});
        otherwise C{"identity"} when identity is acceptable (it is unless
        listed with q = 0, or excluded by C{*;q=0} without being listed);
        otherwise L{None}, to be answered with 406.
    """
    if accept_encoding is None:
        return "identity"
    prefs = _preferences(accept_encoding)

    def acceptable(coding: str, default: bool) -> bool:
        quality = _quality(prefs, coding)
        if quality is None:
            return default
        return quality > 0

    stored = stored.lower()
    if stored == "x-gzip":
        stored = "gzip"
    identity = acceptable("identity", True)
    if stored == "identity":
        return "identity" if identity else None
    if acceptable(stored, False):
        return stored
    if made or makeable:
        other = _preferred(prefs, makeable, made)
        if other is not None:
            return other
    return "identity" if identity else None


def varies_by_coding(stored: str) -> bool:
    """
    Whether phantom-frame's own negotiation can change the body sent from a
    body stored in C{stored}: a compressed body may go out decoded, or in
    another coding (see L{alternative_codings}); an identity body, left
    uncompressed on purpose (too small, compressed media, not shrinking, or
    C{compress_strategy = "none"}), only ever goes out as it is.

    @param stored: the stored body's coding.
    """
    return stored != "identity"


class Codec:
    """
    Encodes and decodes bodies, off the reactor thread when they are large.
    """

    def __init__(
        self, runner: Callable[..., Deferred], threshold: int = 64 * 1024
    ) -> None:
        """
        @param runner: runs blocking work, C{runner(f, *args) -> Deferred}
            (see L{phantom_frame.cache.threads}).
        @param threshold: bodies of at most this many bytes are handled
            inline; larger ones go through C{runner}.
        """
        self._runner = runner
        self._threshold = threshold

    def _run(self, body: bytes, f: Callable[..., bytes], *args: object) -> Deferred:
        """
        Call C{f(body, *args)} inline for a small body, else in the runner.
        """
        if len(body) <= self._threshold:
            return runInline(f, body, *args)
        return self._runner(f, body, *args)

    def encode(self, body: bytes, coding: str) -> Deferred[bytes]:
        """
        Compress a body (see L{encode}).

        @param body: the identity body.
        @param coding: the coding to apply.
        @return: a L{Deferred} firing with the encoded body, already fired
            for small bodies; failing with L{ValueError} for an unknown
            coding.
        """
        return self._run(body, encode, coding)

    def decode(
        self, body: bytes, content_encoding: Union[bytes, str, None]
    ) -> Deferred[bytes]:
        """
        Undo the codings of a C{Content-Encoding} value (see
        L{decode_content}).

        @param body: the body as received.
        @param content_encoding: the header's value, or L{None}.
        @return: a L{Deferred} firing with the identity body, already fired
            for small bodies; failing with L{DecodeError}.
        """
        return self._run(body, decode_content, content_encoding)
