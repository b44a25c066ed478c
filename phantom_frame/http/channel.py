"""
The cache-hit fast path: an L{HTTPChannel} that answers complete, plain
C{GET}/C{HEAD} requests for fresh stored entries straight from
C{dataReceived}, before twisted.web builds a L{Request}, parses headers into
objects or traverses resources.

Only the simplest hits take it; everything else (a request with validators,
a range, credentials, a body, an upgrade, caching directives, webhooks, a
custom key function, Vary, filesystem storage, a stale entry...) and
everything after it on the connection goes to the stock twisted.web path in
order, so behaviour is identical either way: the answer is the one
L{phantom_frame.proxy.server.ProxyServer} would give, byte for byte but for header
order.

It leans on twisted.web internals (the channel's parser state), pinned by
C{tests/test_fastpath.py}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol, datetimeToString
from twisted.web.http_headers import Headers

from phantom_frame.cache.codec import choose_coding, decode_content
from phantom_frame.proxy.answers import hit_status
from phantom_frame.http.optimistic import send

#: Request headers that send a request down the stock path.
_DISQUALIFYING = frozenset(
    {
        "authorization",
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "expect",
        "cache-control",
        "pragma",
    }
)

#: The biggest header block the fast path looks at.
_MAX_HEAD = 16384


class _Clock:
    """
    The current HTTP date, formatted once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._date = b""

    def date(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._date = datetimeToString(second)
        return self._date


_dates = _Clock()


class Wire:
    """
    The pre-serialised parts of a stored entry's answer for one coding:
    everything but the per-request C{Age}, C{Cache-Status} (and C{Date} when
    the origin sent none), plus the body to send.
    """

    __slots__ = ("head", "body", "needs_date")

    def __init__(self, head: bytes, body: bytes, needs_date: bool) -> None:
        self.head = head
        self.body = body
        self.needs_date = needs_date


def build_wire(server: Any, entry: Any, coding: str) -> Optional[Wire]:
    """
    Serialise what L{ProxyServer._serve} would send for C{entry} in
    C{coding} (the same headers, built by the same code).

    @return: the wire form, or C{None} when the body is not in memory.
    """
    data = entry.body.data
    if data is None:
        return None
    if coding != entry.coding:
        data = decode_content(data, entry.coding.encode("ascii"))
    headers: Headers = server.entry_headers(entry, coding, b"")
    headers.removeHeader(b"age")
    headers.removeHeader(b"cache-status")
    needs_date = not any(name.lower() == b"date" for name, _ in entry.headers)
    if needs_date:
        headers.removeHeader(b"date")
    headers.setRawHeaders(b"content-length", [b"%d" % len(data)])
    lines = [b" %d %s\r\n" % (entry.status, entry.phrase)]
    for name, values in headers.getAllRawHeaders():
        for value in values:
            lines.append(name + b": " + value + b"\r\n")
    return Wire(b"".join(lines), data, needs_date)


class FastHTTPChannel(HTTPChannel):
    """
    An L{HTTPChannel} that answers simple cache hits itself.
    """

    def dataReceived(self, data: bytes) -> None:
        if (
            not self.requests
            and not self._handlingRequest
            and self.line_mode
            and not self._busyReceiving
            and not self._buffer
            and self._HTTPChannel__first_line == 1
            and not self._HTTPChannel__header
            and not self.paused
        ):
            consumed = self._fastHits(data)
            if consumed:
                self.resetTimeout()
                data = data[consumed:]
                if not data or self.transport is None or self._closing:
                    return
        HTTPChannel.dataReceived(self, data)

    _closing = False

    def _fastHits(self, data: bytes) -> int:
        """
        Answer the complete plain hits at the start of C{data}.

        @return: how many bytes were answered.
        """
        site = self.site
        fast = getattr(site, "fastHit", None)
        if fast is None:
            return 0
        position = 0
        size = len(data)
        while position < size:
            end = data.find(b"\r\n\r\n", position, position + _MAX_HEAD)
            if end < 0:
                break
            answer = fast(self, data, position, end)
            if answer is None:
                break
            send(self.transport, b"".join(answer[0]))
            position = end + 4
            if answer[1]:
                self._closing = True
                self.transport.loseConnection()
                break
        return position


def fast_channel_factory(*site: Any) -> _GenericHTTPChannelProtocol:
    """
    The L{Site.protocol} of a proxy site (as a class attribute, it is
    called with the site; as an instance attribute, with nothing):
    twisted.web's generic channel (so TLS with ALPN still chooses HTTP/2
    when available) around a L{FastHTTPChannel}.
    """
    return _GenericHTTPChannelProtocol(FastHTTPChannel())


class FastHits:
    """
    Recognises and answers simple hits for a site whose resource is a
    L{phantom_frame.http.routing.Router} (or a single proxy resource).
    """

    def __init__(self, site: Any, clock: Any) -> None:
        self._site = site
        self._clock = clock
        self._codings: Dict[Tuple[Optional[str], str], Optional[str]] = {}

    def __call__(self, channel: Any, data: bytes, start: int, end: int):
        """
        @param channel: the connection the request came on.
        @return: C{(chunks to write, close after)} for a hit, else C{None}.
        """
        line_end = data.find(b"\r\n", start, end + 2)
        parts = data[start:line_end].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1":
            return None
        method, target = parts[0], parts[1]
        if method != b"GET" and method != b"HEAD":
            return None
        if not target.startswith(b"/") or b"%" in target or b"#" in target:
            return None
        headers: Dict[str, str] = {}
        if line_end < end:
            try:
                block = data[line_end + 2 : end].decode("latin-1")
            except Exception:
                return None
            for line in block.split("\r\n"):
                name, sep, value = line.partition(":")
                if not sep or not name or name[0] in " \t" or name[-1] in " \t" or "\n" in line or "\r" in line:
                    return None
                name = name.lower()
                if name in _DISQUALIFYING or name in headers:
                    return None
                headers[name] = value.strip()
        if "host" not in headers:
            return None
        close = "close" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
        path, _, query = target.partition(b"?")
        resource = self._site.resource
        server = getattr(resource, "proxy_server", None)
        if server is None:
            match = getattr(resource, "match", None)
            if match is None:
                return None
            segments = path[1:].split(b"/")
            routed, depth = match(segments)
            if routed is None:
                return None
            server = getattr(routed, "proxy_server", None)
            if server is None:
                return None
            if depth:
                path = b"/" + b"/".join(segments[depth:])
        if not server.fast_path_ok:
            return None
        text_path = path.decode("latin-1")
        if server.filter.bypass_reason(method.decode("ascii"), text_path) is not None:
            return None
        key = "GET:" + text_path + ("?" + query.decode("latin-1") if query else "")
        entry = server.cache.lookup(key, headers.get)
        if entry is None or entry.vary:
            return None
        now = self._clock.seconds()
        age = entry.age(now)
        if age >= entry.lifetime:
            return None
        accept = headers.get("accept-encoding")
        cached = (accept, entry.coding)
        coding = self._codings.get(cached, "")
        if coding == "":
            coding = choose_coding(accept.encode("latin-1") if accept is not None else None, entry.coding)
            if len(self._codings) < 1024:
                self._codings[cached] = coding
        if coding is None:
            return None
        wires = entry.wire
        if wires is None:
            wires = entry.wire = {}
        wire = wires.get(coding)
        if wire is None:
            wire = build_wire(server, entry, coding)
            if wire is None:
                return None
            wires[coding] = wire
        server.cache.hits += 1
        status = hit_status(entry, age)
        tail = b"Age: %d\r\nCache-Status: %s\r\n" % (int(age), status)
        if wire.needs_date:
            tail += b"Date: " + _dates.date(now) + b"\r\n"
        if close:
            tail += b"Connection: close\r\n"
        chunks: List[bytes] = [b"HTTP/1.1", wire.head, tail, b"\r\n"]
        if method == b"GET":
            chunks.append(wire.body)
        record = self._site.recordFastHit
        if record is not None:
            record(channel, server, method, target, headers, entry.status, len(wire.body), status)
        return chunks, close


class FastHitRecord:
    """
    What an access-log formatter reads of a request, for a hit answered by
    the fast path (which builds no L{Request}).
    """

    clientproto = b"HTTP/1.1"

    def __init__(self, channel: Any, method: bytes, uri: bytes, headers: Dict[str, str],
                 code: int, length: int) -> None:
        self._channel = channel
        self.method = method
        self.uri = uri
        self._headers = headers
        self.code = code
        self.sentLength = length

    def getClientAddress(self) -> Any:
        return self._channel.transport.getPeer()

    def getHeader(self, name: bytes) -> Optional[bytes]:
        value = self._headers.get(name.decode("latin-1").lower())
        return None if value is None else value.encode("latin-1")
