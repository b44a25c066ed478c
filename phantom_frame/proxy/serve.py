"""
Answers from a stored entry: the headers every answer from an entry
carries (L{entry_headers}, L{not_modified_headers}), used by the fast path
and by twisted.web alike, and L{EntryRenderer}, which writes an
L{phantom_frame.proxy.negotiation.EntryAnswer} to a twisted.web request
(and a range from a partial entry's parts: L{part_headers}).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from phantom_frame.cache.alternates import Alternates
from phantom_frame.cache.codec import Codec, varies_by_coding
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.freshness import weakened
from phantom_frame.cache.partial import PartialEntry
from phantom_frame.proxy.answers import http_date, send_error
from phantom_frame.proxy.negotiation import (
    EntryAnswer,
    NotAcceptable,
    NotModified,
    Partial,
    Unsatisfiable,
)
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.status import CacheStatus

Header = Tuple[bytes, bytes]

#: What a 304 from the cache carries (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = frozenset(
    {
        b"date",
        b"etag",
        b"last-modified",
        b"cache-control",
        b"expires",
        b"content-location",
        b"vary",
    }
)

#: The C{Content-Encoding} value of each stored coding but C{identity}.
CODING_NAMES = {"br": b"br", "gzip": b"gzip", "deflate": b"deflate"}


def entry_headers(entry: CacheEntry, coding: str, date: Optional[bytes]) -> List[Header]:
    """
    @param coding: the content coding the body is sent in.
    @param date: the C{Date} to send when the origin sent none (C{None}:
        leave it to the caller).
    @return: the headers of an answer from C{entry} in C{coding}, but the
        per-request C{Age} and C{Cache-Status} and the C{Content-Length}:
        the stored ones, with C{ETag} (weakened for a body phantom-frame
        encoded), C{Date}, C{Vary} (see L{vary_value}), C{Accept-Ranges}
        (for a 200) and C{Content-Encoding}.
    """
    return dated_entry_headers(entry, coding, date)[0]


def dated_entry_headers(entry: CacheEntry, coding: str, date: Optional[bytes]) -> Tuple[List[Header], bool]:
    """
    @return: L{entry_headers}, and whether the origin sent a C{Date}.
    """
    etag = entry.etag
    headers: List[Header] = []
    has_date = False
    for name, value in entry.headers:
        if len(name) == 4:
            # (The two names looked for are four letters long.)
            lowered = name.lower()
            if lowered == b"etag" and etag is not None:
                continue
            if lowered == b"date":
                has_date = True
        headers.append((name, value))
    if etag is not None:
        headers.append((b"Etag", etag if coding == "identity" else weakened(etag)))
    if not has_date and date is not None:
        headers.append((b"Date", date))
    vary = vary_value(entry)
    if vary is not None:
        headers.append((b"Vary", vary))
    if entry.status == 200:
        headers.append((b"Accept-Ranges", b"bytes"))
    if coding != "identity":
        headers.append((b"Content-Encoding", CODING_NAMES[coding]))
    return headers, has_date


def vary_value(entry: CacheEntry) -> Optional[bytes]:
    """
    @return: the C{Vary} of every answer from C{entry}: the origin's,
        verbatim, with C{Accept-Encoding} appended when phantom-frame's own
        negotiation can change the body (L{varies_by_coding}, or the body
        is to be compressed: L{CacheEntry.compress_pending}) and the
        origin did not list it; L{None} for no C{Vary} at all.
    """
    vary = entry.vary_header
    if not (varies_by_coding(entry.coding) or entry.compress_pending):
        return vary
    if vary is None:
        return b"Accept-Encoding"
    names = [name.strip().lower() for name in vary.split(b",")]
    if b"accept-encoding" in names or b"*" in names:
        return vary
    return vary + b", Accept-Encoding"


def not_modified_headers(headers: List[Header]) -> List[Header]:
    """
    @return: of an entry's answer headers, those a 304 carries.
    """
    return [(n, v) for n, v in headers if n.lower() in NOT_MODIFIED_HEADERS]


def needs_date(entry: CacheEntry) -> bool:
    """
    @return: whether C{entry}'s answers need a C{Date} of their own.
    """
    return not any(name.lower() == b"date" for name, _ in entry.headers)


def part_headers(partial: PartialEntry, first: int, last: int, date: Optional[bytes]) -> List[Header]:
    """
    @param date: the C{Date} to send when the origin sent none (C{None}:
        leave it to the caller).
    @return: the headers of the 206 with bytes C{first} to C{last} of
        C{partial}, but the per-request C{Age} and C{Cache-Status}: the
        stored ones, with C{Date}, C{Accept-Ranges}, C{Content-Range} and
        C{Content-Length}.
    """
    headers = list(partial.headers)
    if date is not None and not any(name.lower() == b"date" for name, _ in headers):
        headers.append((b"Date", date))
    headers.append((b"Accept-Ranges", b"bytes"))
    headers.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, partial.length)))
    headers.append((b"Content-Length", b"%d" % (last - first + 1)))
    return headers


class EntryRenderer:
    """
    Writes answers from stored entries to twisted.web requests.

    @ivar alternates: gives each answer its body in the coding it needs.
    """

    def __init__(self, clock: IReactorTime, cache: Any, codec: Codec) -> None:
        """
        @param clock: gives C{Age} and C{Date}.
        @param cache: reads bodies that are not in memory, and keeps the
            other codings made of them.
        @param codec: decodes a stored body for a client that does not
            accept its coding, and makes the other codings.
        """
        self._clock = clock
        self.alternates = Alternates(cache, codec)

    def render(
        self, exchange: Exchange, entry: CacheEntry, answer: EntryAnswer, status: CacheStatus,
        identity: Optional[bytes] = None,
    ) -> Deferred[None]:
        """
        Answer C{exchange} from C{entry} as C{answer} says (L{answer}).

        @return: a L{Deferred} firing once the answer is written (cancelling
            it while the body is read or made gives the answer up).
        """
        return self.answer(exchange, entry, answer, status, identity) or succeed(None)

    def answer(
        self, exchange: Exchange, entry: CacheEntry, answer: EntryAnswer, status: CacheStatus,
        identity: Optional[bytes] = None,
    ) -> Optional[Deferred[None]]:
        """
        Answer C{exchange} from C{entry} as C{answer} says: at once when the
        body it needs is at hand (the stored bytes in memory, or
        C{identity}); else once the body is read or made. An exchange that
        writes pre-serialised answers writes it itself when it can
        (L{Exchange.write_entry}).

        @param identity: C{entry}'s decoded body when the caller has it (the
            fill that stored it), for an answer in identity.
        @return: L{None} when the answer is written; else a L{Deferred}
            firing once it is (cancelling it gives the answer up).
        """
        if isinstance(answer, NotAcceptable):
            send_error(exchange, 406, "Not Acceptable: no acceptable content-coding", status)
            return None
        now = self._clock.seconds()
        if exchange.write_entry(entry, answer, status, now):
            return None
        base = entry_headers(entry, answer.coding, http_date(now))
        if isinstance(answer, (NotModified, Unsatisfiable)):
            self._write(exchange, entry, answer, status, now, base, b"")
            return None
        coding = answer.coding
        if identity is not None and coding == "identity":
            self._write(exchange, entry, answer, status, now, base, identity)
            return None
        data = entry.body.data
        if data is not None and coding == entry.coding:
            # The stored bytes in memory: what reading them gives at once.
            if exchange.alive:
                self._write(exchange, entry, answer, status, now, base, data)
            return None
        return self.alternates.body(entry, coding).addCallback(self._read, exchange, entry, answer, status, now, base)

    def _read(
        self, body: bytes, exchange: Exchange, entry: CacheEntry, answer: EntryAnswer, status: CacheStatus,
        now: float, base: List[Header],
    ) -> None:
        """
        The body L{render} waited for: answer with it, unless the client is
        gone.
        """
        if exchange.alive:
            self._write(exchange, entry, answer, status, now, base, body)

    def _write(
        self, exchange: Exchange, entry: CacheEntry, answer: EntryAnswer, status: CacheStatus, now: float,
        base: List[Header], body: bytes,
    ) -> None:
        """
        Write the answer L{render} prepared: its head (from C{base}, the
        entry's headers) and C{body} (the whole body in C{answer}'s coding).
        """
        request = exchange.request
        if isinstance(answer, NotModified):
            headers = not_modified_headers(base)
            self._write_head(exchange, 304, b"Not Modified", headers, entry, now, status)
            request.write(b"")
            request.finish()
            return
        code, phrase = entry.status, entry.phrase
        if isinstance(answer, Unsatisfiable):
            code, phrase = 416, b"Range Not Satisfiable"
            base = [(n, v) for n, v in base if n.lower() != b"content-type"]
            base.append((b"Content-Range", b"bytes */%d" % entry.identity_length))
        elif isinstance(answer, Partial):
            code, phrase = 206, b"Partial Content"
            base.append((b"Content-Range", b"bytes %d-%d/%d" % (answer.first, answer.last, len(body))))
            body = body[answer.first : answer.last + 1]
        base.append((b"Content-Length", b"%d" % len(body)))
        self._write_head(exchange, code, phrase, base, entry, now, status)
        request.write(body)
        request.finish()

    def render_part(
        self, exchange: Exchange, partial: PartialEntry, first: int, last: int, status: CacheStatus
    ) -> None:
        """
        Answer C{exchange} with a 206 of bytes C{first} to C{last} of the
        stored parts of C{partial} (held in memory).
        """
        if not exchange.alive:
            return
        now = self._clock.seconds()
        headers = part_headers(partial, first, last, http_date(now))
        self._write_head(exchange, 206, b"Partial Content", headers, partial, now, status)
        request = exchange.request
        request.write(partial.slice(first, last))
        request.finish()

    def _write_head(
        self,
        exchange: Exchange,
        code: int,
        phrase: bytes,
        headers: List[Header],
        entry: CacheEntry,
        now: float,
        status: CacheStatus,
    ) -> None:
        request = exchange.request
        out = Headers()
        for name, value in headers:
            out.addRawHeader(name, value)
        out.setRawHeaders(b"age", [b"%d" % int(entry.age(now))])
        exchange.set_status(status, out)
        request.setResponseCode(code, phrase)
        request.responseHeaders = out
