"""
Compressing a body while it streams, for answers that are not stored but
were fetched in identity (a fill whose response turned out private, too
large, with cookies...): which responses are worth it
(L{stream_coding}), the headers they then carry (L{compressed_headers}),
an incremental encoder (L{StreamEncoder}) and L{CompressingConsumer},
which compresses what a producer writes, a slice per reactor turn, on its
way to a consumer, keeping back-pressure both ways.

Each slice is small (L{STREAM_SLICE}), so compressing it on the reactor
thread costs about a millisecond: less than handing it to a thread and
back, and never long enough to hold up other connections. Memory is
bounded per stream: the compressor's state (under 1 MiB for brotli with a
window of L{BROTLI_STREAM_WINDOW}, about 256 KiB for zlib) and at most
about one slice of backlog before the producer is paused.
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from phantom_frame.cache import brotli_native
from phantom_frame.cache.codec import BROTLI_QUALITY, ZLIB_LEVEL, preferred_coding
from phantom_frame.cache.freshness import weakened
from phantom_frame.cache.policy import header_values, media_type, parse_cache_control

try:
    import brotli
except ImportError:  # PyPy
    import brotlicffi as brotli  # type: ignore[no-redef]

Header = Tuple[bytes, bytes]

#: The most bytes compressed in one reactor turn.
STREAM_SLICE = 32 * 1024

#: The brotli window of a streamed body (2**16 bytes: 64 KiB), smaller
#: than brotli's default (4 MiB): a stream's compressor then holds under
#: 1 MiB instead of about 2, and is faster, for nearly the same ratio on
#: pages and API answers.
BROTLI_STREAM_WINDOW = 16

#: Bodies of a known length below this are sent as they are.
MIN_LENGTH = 128

#: Compressible media types besides C{text/*}.
_COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/wasm",
        "application/x-ndjson",
        "application/vnd.ms-fontobject",
        "font/ttf",
        "font/otf",
        "image/svg+xml",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/bmp",
    }
)

#: Text types never compressed on the fly: events are read as they come.
_STREAMED_TEXT = frozenset({"text/event-stream"})

#: Statuses whose answers have no body to compress (besides 1xx), and 206,
#: whose C{Content-Range} counts the identity bytes.
_NO_BODY = frozenset({204, 206, 304})


def compressible(media: Optional[str]) -> bool:
    """
    @param media: a lower-cased media type without parameters, or L{None}.
    @return: whether bodies of that type shrink when compressed: text
        (but event streams), JSON, JavaScript, XML (C{+json} and C{+xml}
        types included), SVG, WebAssembly, icons and uncompressed fonts;
        never images, audio, video, archives, WOFF fonts or an unknown type.
    """
    if media is None:
        return False
    if media.startswith("text/"):
        return media not in _STREAMED_TEXT
    return media in _COMPRESSIBLE or media.endswith(("+json", "+xml"))


def stream_coding(
    accept_encoding: Optional[bytes],
    method: bytes,
    status: int,
    headers: Sequence[Header],
    length: Optional[int],
) -> Optional[str]:
    """
    Whether to compress a response on the fly, and in which coding.

    @param accept_encoding: the client's C{Accept-Encoding}, or L{None}.
    @param method: the client's method.
    @param status: the response's status.
    @param headers: the response's end-to-end headers.
    @param length: its body's length, L{None} when unknown.
    @return: the coding the client prefers among C{br}, C{gzip} and
        C{deflate} (see L{preferred_coding}) when the body is worth
        compressing: a compressible type (L{compressible}), no
        C{Content-Encoding} yet, no C{Cache-Control: no-transform}, a
        status with a whole body, not for C{HEAD}, and at least
        L{MIN_LENGTH} bytes when the length is known; L{None} otherwise.
    """
    if method == b"HEAD" or status < 200 or status in _NO_BODY:
        return None
    if length is not None and length < MIN_LENGTH:
        return None
    if any(value.strip() for value in header_values(headers, b"content-encoding")):
        return None
    if "no-transform" in parse_cache_control(header_values(headers, b"cache-control")):
        return None
    if not compressible(media_type(headers)):
        return None
    return preferred_coding(accept_encoding)


def compressed_headers(headers: Sequence[Header], coding: str) -> List[Header]:
    """
    @param headers: the origin's end-to-end response headers.
    @param coding: the coding the body is compressed in on the way.
    @return: the headers to send instead: without C{Content-Length} (the
        body is sent chunked) and C{Accept-Ranges} (ranges of the identity
        body do not apply), with a strong C{ETag} weakened (the bytes
        differ from the origin's), C{Vary} gaining C{Accept-Encoding}
        (appended to the origin's, verbatim, unless it lists it or C{*}),
        and C{Content-Encoding}.
    """
    out: List[Header] = []
    vary: List[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in (b"content-length", b"accept-ranges"):
            continue
        if lowered == b"vary":
            vary.append(value)
            continue
        if lowered == b"etag":
            value = weakened(value.strip())
        out.append((name, value))
    names = [item.strip().lower() for value in vary for item in value.split(b",")]
    if b"accept-encoding" not in names and b"*" not in names:
        vary.append(b"Accept-Encoding")
    out.append((b"Vary", b", ".join(value for value in vary if value.strip())))
    out.append((b"Content-Encoding", coding.encode("ascii")))
    return out


class StreamEncoder:
    """
    One body compressed piece by piece with an incremental brotli or zlib
    compressor.
    """

    def __init__(self, coding: str) -> None:
        """
        @param coding: C{"br"} (quality 5, window L{BROTLI_STREAM_WINDOW}),
            C{"gzip"} or C{"deflate"} (the zlib format; both level 6).
        @raise ValueError: for another coding.
        """
        self.coding = coding
        if coding == "br":
            self._brotli: Any = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=BROTLI_STREAM_WINDOW)
            self._zlib: Any = None
        elif coding in ("gzip", "deflate"):
            bits = zlib.MAX_WBITS + (16 if coding == "gzip" else 0)
            self._brotli = None
            self._zlib = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, bits)
        else:
            raise ValueError(f"cannot stream content coding {coding!r}")

    def compress(self, data: bytes) -> bytes:
        """
        @return: compressed bytes ready so far (the compressor may hold
            some back until L{flush}).
        """
        if self._brotli is not None:
            return self._brotli.process(data)
        return self._zlib.compress(data)

    def flush(self) -> bytes:
        """
        @return: the rest of what was given so far, so that the client can
            decode all of it now.
        """
        if self._brotli is not None:
            return self._brotli.flush()
        return self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """
        @return: the end of the compressed stream.
        """
        if self._brotli is not None:
            compressor, self._brotli = self._brotli, None
            try:
                return compressor.finish()
            finally:
                brotli_native.release(compressor)
        return self._zlib.flush(zlib.Z_FINISH)

    def close(self) -> None:
        """
        Drop the compressor's state now (the stream is abandoned or
        finished; see L{phantom_frame.cache.brotli_native}).
        """
        compressor, self._brotli = self._brotli, None
        if compressor is not None:
            brotli_native.release(compressor)


@implementer(IConsumer, IPushProducer)
class CompressingConsumer:
    """
    Compresses what its producer writes on its way to a consumer.

    At most a slice (L{STREAM_SLICE} bytes) is compressed before the
    reactor gets a turn; the rest waits for later turns, with the producer
    paused while more than a slice waits, so a burst (the body a fill
    buffered before it turned out too large) never blocks the reactor and
    memory stays bounded. The consumer's back-pressure reaches the
    producer: this object is the consumer's producer for as long as the
    body streams. Each slice is flushed to the consumer as soon as it is
    compressed, so a streamed page (React server components, a progressive
    render) reaches the client as the origin sends it.
    """

    def __init__(
        self,
        consumer: Any,
        coding: str,
        clock: IReactorTime,
        done: Callable[[], None],
        alive: Callable[[], bool],
        slice_size: int = STREAM_SLICE,
    ) -> None:
        """
        @param consumer: where the compressed bytes go (a twisted.web
            request): C{write}, C{registerProducer}, C{unregisterProducer}.
        @param coding: the coding (see L{StreamEncoder}).
        @param clock: schedules the later slices.
        @param done: called once the whole compressed body is written (and
            this object unregistered from C{consumer}): it finishes the
            answer.
        @param alive: whether C{consumer} may still be written to; once not,
            what is left is dropped.
        @param slice_size: the most bytes compressed per reactor turn.
        """
        self._consumer = consumer
        self._encoder = StreamEncoder(coding)
        self._clock = clock
        self._done = done
        self._alive = alive
        self._slice = slice_size
        self._pending: Deque[bytes] = deque()
        self._size = 0
        self._producer: Any = None
        self._throttled = False
        self._paused = False
        self._closing = False
        self._over = False
        self._budget = slice_size
        self._call: Optional[IDelayedCall] = None
        consumer.registerProducer(self, True)

    # What the producer sees: a consumer.

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Take C{producer} (a push producer) as what writes the body.
        """
        self._producer = producer
        self._throttled = False
        self._throttle()

    def unregisterProducer(self) -> None:
        """
        The producer is done writing (L{finish} follows).
        """
        self._producer = None

    def write(self, data: bytes) -> None:
        """
        Compress C{data}: at once as far as this turn's slice allows, the
        rest in later turns.
        """
        if self._over or not data:
            return
        self._pending.append(data)
        self._size += len(data)
        self._pump()
        # The producer is producing, whatever was last asked of it (a
        # relay resumes its transport once registered).
        self._throttle(writing=True)

    def finish(self) -> None:
        """
        End the body once everything written is compressed: then the end
        of the compressed stream is written and C{done} called.
        """
        if self._over:
            return
        self._closing = True
        self._pump()

    # What the consumer sees: a producer.

    def pauseProducing(self) -> None:
        """
        The consumer's buffer is full: stop compressing, pause the producer.
        """
        self._paused = True
        self._throttle()

    def resumeProducing(self) -> None:
        """
        The consumer drained: go on.
        """
        self._paused = False
        self._pump()
        self._throttle()

    def stopProducing(self) -> None:
        """
        The consumer is gone: drop what is left and stop the producer.
        """
        self._stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    # Work.

    def _take(self, wanted: int) -> bytes:
        """
        @return: up to C{wanted} bytes of what waits, in order.
        """
        pieces = []
        while self._pending and wanted > 0:
            data = self._pending.popleft()
            if len(data) > wanted:
                self._pending.appendleft(data[wanted:])
                data = data[:wanted]
            pieces.append(data)
            wanted -= len(data)
        taken = b"".join(pieces)
        self._size -= len(taken)
        return taken

    def _pump(self) -> None:
        """
        Compress what this turn's slice allows, flushed for the client, and
        schedule the next turn when more waits or the slice is used up.
        """
        if self._over:
            return
        if not self._alive():
            self._stop()
            return
        if self._pending and self._paused:
            return
        if self._pending and self._budget > 0:
            data = self._take(self._budget)
            self._budget -= len(data)
            out = self._encoder.compress(data) + self._encoder.flush()
            if out:
                self._consumer.write(out)
        if self._call is None and (self._pending or self._budget <= 0):
            self._call = self._clock.callLater(0, self._turn)
        if not self._pending and self._closing:
            self._end()

    def _turn(self) -> None:
        """
        A later reactor turn: a new slice.
        """
        self._call = None
        self._budget = self._slice
        self._pump()
        self._throttle()

    def _end(self) -> None:
        """
        Write the end of the compressed stream and hand over to C{done}.
        """
        self._over = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if not self._alive():
            return
        tail = self._encoder.finish()
        if tail:
            self._consumer.write(tail)
        self._consumer.unregisterProducer()
        self._done()

    def _stop(self) -> None:
        """
        Give up: nothing more is written.
        """
        self._over = True
        self._pending.clear()
        self._size = 0
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._encoder.close()

    def _throttle(self, writing: bool = False) -> None:
        """
        Pause the producer while the consumer is paused or more than a
        slice waits; resume it once neither holds.

        @param writing: whether the producer is writing now (so producing,
            even if it was paused).
        """
        producer = self._producer
        if producer is None:
            return
        wanted = not self._over and (self._paused or self._size > self._slice)
        if wanted and (writing or not self._throttled):
            self._throttled = True
            producer.pauseProducing()
        elif not wanted and self._throttled:
            self._throttled = False
            producer.resumeProducing()
