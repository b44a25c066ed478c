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

from typing import Any, Dict, List, Optional

from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from phantom_frame.cache.codec import decode_content
from phantom_frame.http.optimistic import send
from phantom_frame.http.request_id import acceptable, new_request_id
from phantom_frame.proxy.answers import http_date
from phantom_frame.proxy.decision import Full, Hit
from phantom_frame.proxy.serve import entry_headers, needs_date
from phantom_frame.proxy.view import RequestView

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


class Wire:
    """
    The pre-serialised parts of a stored entry's answer for one coding:
    everything but the per-request C{Age}, C{Cache-Status}, C{X-Request-Id}
    (and C{Date} when the origin sent none), plus the body to send.
    """

    __slots__ = ("head", "body", "needs_date")

    def __init__(self, head: bytes, body: bytes, needs_date: bool) -> None:
        self.head = head
        self.body = body
        self.needs_date = needs_date


def build_wire(entry: Any, coding: str) -> Optional[Wire]:
    """
    Serialise the answer from C{entry} in C{coding}, with the headers the
    stock path sends (L{entry_headers}).

    @return: the wire form, or C{None} when the body is not in memory.
    """
    data = entry.body.data
    if data is None:
        return None
    if coding != entry.coding:
        data = decode_content(data, entry.coding.encode("ascii"))
    headers = entry_headers(entry, coding, None)
    headers.append((b"Content-Length", b"%d" % len(data)))
    lines = [b" %d %s\r\n" % (entry.status, entry.phrase)]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    return Wire(b"".join(lines), data, needs_date(entry))


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
    Recognises and answers hits for a site whose resource is a
    L{phantom_frame.http.routing.Router} (or a single proxy resource): the
    request is parsed here, the server's
    L{phantom_frame.proxy.decision.Decider} decides, and a L{Hit} with a
    L{Full} answer is written from its pre-serialised L{Wire}. Any other
    decision is left to the stock path, which decides again: deciding
    changes nothing.

    @ivar answered: how many requests this fast path answered.
    """

    def __init__(self, site: Any, clock: Any) -> None:
        self._site = site
        self._clock = clock
        self.answered = 0

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
        prefix = b""
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
                prefix = b"/" + b"/".join(segments[:depth])
                path = b"/" + b"/".join(segments[depth:])
        if not server.fast_path_ok:
            return None
        decider = server.decider
        view = RequestView(method, path, query, headers, None, None, False, prefix)
        decision = decider.decide(view)
        if type(decision) is not Hit:
            return None
        answer = decision.answer
        if type(answer) is not Full:
            return None
        entry = decision.entry
        wires = entry.wire
        if wires is None:
            wires = entry.wire = {}
        coding = answer.coding
        wire = wires.get(coding)
        if wire is None:
            wire = build_wire(entry, coding)
            if wire is None:
                return None
            wires[coding] = wire
        decider.note(decision)
        self.answered += 1
        now = self._clock.seconds()
        status = decision.status
        rid = headers.get("x-request-id")
        if rid is None or not acceptable(rid):
            rid = headers["x-request-id"] = new_request_id()
        tail = b"Age: %d\r\nCache-Status: %s\r\nX-Request-Id: %s\r\n" % (
            int(entry.age(now)), status.header, rid.encode("latin-1"))
        if wire.needs_date:
            tail += b"Date: " + http_date(now) + b"\r\n"
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
