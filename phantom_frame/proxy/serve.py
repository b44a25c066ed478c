"""
Answering from a stored entry: content negotiation, conditional requests
(304), byte ranges (206/416), C{Age} and C{Cache-Status}, in
L{EntryAnswers}, a part of L{phantom_frame.proxy.server.ProxyServer}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from phantom_frame.proxy.answers import GET_HEAD, alive, send_error
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.codec import Codec, choose_coding
from phantom_frame.cache.freshness import (
    etag_matches_strong,
    etag_matches_weak,
    parse_http_date,
    parse_range,
    weakened,
)

#: What a 304 from the cache carries (RFC 9110 §15.4.5).
_NOT_MODIFIED_HEADERS = (
    b"date",
    b"etag",
    b"last-modified",
    b"cache-control",
    b"expires",
    b"content-location",
    b"vary",
    b"age",
    b"cache-status",
)

#: The C{Content-Encoding} value of each stored coding but C{identity}.
CODING_NAMES = {"br": b"br", "gzip": b"gzip", "deflate": b"deflate"}


class EntryAnswers:
    """
    The answers a server gives from its stored entries.

    A mixin: the class using it provides the attributes annotated here.

    @ivar _clock: the server's clock, for C{Age}.
    @ivar codec: decodes a stored body for a client that does not accept
        its coding.
    @ivar cache: where bodies not kept in memory are read from.
    """

    _clock: IReactorTime
    codec: Codec
    cache: ResponseCache

    async def _serve(self, request, entry: CacheEntry, status: bytes) -> None:
        """
        Answer from a stored entry: content negotiation, conditional
        requests (304), byte ranges (206/416), C{Age} and C{Cache-Status}.
        """
        rh = request.requestHeaders
        accept = rh.getRawHeaders(b"accept-encoding")
        coding = choose_coding(b", ".join(accept) if accept is not None else None, entry.coding)
        if coding is None:
            send_error(request, 406, "Not Acceptable: no acceptable content-coding", status)
            return
        ranged = None
        if entry.status == 200 and request.method == b"GET" and rh.hasHeader(b"range"):
            ranged = self._range(request, entry)
            if ranged is not None:
                coding = "identity"
        if 200 <= entry.status < 300 and self._not_modified(request, entry):
            self._send_not_modified(request, entry, coding, status)
            return
        stored = entry.body
        body = stored.data
        if body is None:
            body = await self.cache.store.read(stored)
        if coding != entry.coding:
            body = await self.codec.decode(body, entry.coding.encode("ascii"))
        if not alive(request):
            return
        headers = self.entry_headers(entry, coding, status)
        code, phrase = entry.status, entry.phrase
        if ranged == "unsatisfiable":
            code, phrase, body = 416, b"Range Not Satisfiable", b""
            headers.setRawHeaders(b"content-range", [b"bytes */%d" % entry.identity_length])
            headers.removeHeader(b"content-type")
        elif ranged is not None:
            first, last = ranged
            code, phrase = 206, b"Partial Content"
            headers.setRawHeaders(b"content-range", [b"bytes %d-%d/%d" % (first, last, len(body))])
            body = body[first : last + 1]
        headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        request.setResponseCode(code, phrase)
        request.responseHeaders = headers
        request.write(body)
        request.finish()

    def entry_headers(self, entry: CacheEntry, coding: str, status: bytes) -> Headers:
        """
        @param coding: the content coding the body is sent in.
        @param status: the C{Cache-Status} to send.
        @return: the headers of an answer from C{entry} in C{coding}: the
            stored ones, with C{ETag} (weakened for a body phantom-frame
            encoded), C{Date} (when the origin sent none), C{Vary}, C{Age},
            C{Cache-Status}, C{Accept-Ranges} (for a 200) and
            C{Content-Encoding}; no C{Content-Length}.
        """
        headers = Headers()
        for name, value in entry.headers:
            headers.addRawHeader(name, value)
        etag = entry.etag
        if etag is not None:
            headers.setRawHeaders(b"etag", [etag if coding == "identity" else weakened(etag)])
        if not headers.hasHeader(b"date"):
            headers.setRawHeaders(b"date", [datetimeToString()])
        vary = [b"Accept-Encoding"] + [n.encode("latin-1") for n in entry.vary]
        headers.setRawHeaders(b"vary", [b", ".join(vary)])
        headers.setRawHeaders(b"age", [b"%d" % int(entry.age(self._clock.seconds()))])
        headers.setRawHeaders(b"cache-status", [status])
        if entry.status == 200:
            headers.setRawHeaders(b"accept-ranges", [b"bytes"])
        if coding != "identity":
            headers.setRawHeaders(b"content-encoding", [CODING_NAMES[coding]])
        return headers

    def _not_modified(self, request, entry: CacheEntry) -> bool:
        """
        RFC 9110 §13.2.2: C{If-None-Match} (weak comparison, lists, C{*}),
        else C{If-Modified-Since}, for GET and HEAD.
        """
        if request.method not in GET_HEAD:
            return False
        rh = request.requestHeaders
        inm = rh.getRawHeaders(b"if-none-match")
        if inm is not None:
            return etag_matches_weak(b", ".join(inm), entry.etag)
        ims = rh.getRawHeaders(b"if-modified-since")
        if ims and entry.last_modified is not None:
            since = parse_http_date(ims[0])
            modified = parse_http_date(entry.last_modified)
            return since is not None and modified is not None and modified <= since
        return False

    def _send_not_modified(self, request, entry: CacheEntry, coding: str, status: bytes) -> None:
        full = self.entry_headers(entry, coding, status)
        headers = Headers()
        for name in _NOT_MODIFIED_HEADERS:
            values = full.getRawHeaders(name)
            if values is not None:
                headers.setRawHeaders(name, values)
        request.setResponseCode(304, b"Not Modified")
        request.responseHeaders = headers
        request.write(b"")
        request.finish()

    def _range(self, request, entry: CacheEntry):
        """
        @return: what C{Range} asks of C{entry}'s identity body: C{None} (the
            whole body: no or an ignored range, or C{If-Range} not matching),
            C{"unsatisfiable"} or C{(first, last)}.
        """
        rh = request.requestHeaders
        if_range = rh.getRawHeaders(b"if-range")
        if if_range is not None:
            value = if_range[0].strip()
            if value.startswith((b'"', b"W/")):
                if not etag_matches_strong(value, entry.etag):
                    return None
            else:
                date = parse_http_date(value)
                modified = parse_http_date(entry.last_modified)
                if date is None or modified is None or date != modified:
                    return None
        return parse_range(rh.getRawHeaders(b"range")[0], entry.identity_length)
