"""
L{FastHits}: what the HTTP/1.1 channel answers itself. A request head is
parsed, normalised and routed here (once: the outcome is remembered for
heads that come again), the server's
L{phantom_frame.proxy.decision.Decider} decides, and the decision is
rendered as bytes: hits from pre-serialised L{Wire}s, pass-through by a
L{ByteRelay}, fills by a L{ByteFill}. Anything else is left to the stock
twisted.web path, which decides again: deciding changes nothing.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from phantom_frame.http.byterequest import ByteFill
from phantom_frame.http.limits import DEFAULT_LIMITS, parse_host
from phantom_frame.http.relay import ByteRelay
from phantom_frame.http.request_id import acceptable, new_request_id
from phantom_frame.http.wires import Wire, _serialise, answer_parts, wire_answer
from phantom_frame.proxy.decision import Bypass, Fill, Hit, PartHit, Stale
from phantom_frame.proxy.rules import apply_rewrite
from phantom_frame.proxy.serve import needs_date, part_headers
from phantom_frame.proxy.target import TargetError, normalise_path
from phantom_frame.proxy.view import RequestView

__all__ = ["BODY_METHODS", "FastHits"]

#: Request headers that send a request down the stock path: a body, an
#: upgrade, preconditions the stock path evaluates.
_DISQUALIFYING = frozenset(
    {
        "if-match",
        "if-unmodified-since",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)

#: A request line the fast path takes: GET or HEAD of an origin-form target
#: of visible ASCII without C{#} (the path is normalised as the stock path
#: does: L{normalise_path}), in HTTP/1.1; or another method whose request
#: the channel may pass through (L{BODY_METHODS}).
_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[\x21\x22\x24-\x7e]*) HTTP/1\.1")

#: Methods whose requests may carry a C{Content-Length} body on the byte
#: path (never answered from the cache by the channel).
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})

#: The header lines the fast path takes: each a token, a colon, a value of
#: visible ASCII, spaces and tabs (no control characters, nothing
#: non-ASCII), CRLF between them.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_BLOCK = re.compile(rb"%s:[\t -~]*(?:\r\n%s:[\t -~]*)*" % (_TOKEN, _TOKEN))

#: How many C{Host} values the fast path remembers the verdict of.
_HOSTS_KEPT = 256


def _render_part(decision: PartHit):
    """
    @return: the parts of the 206 a L{PartHit} answers with, as
        L{phantom_frame.http.wires.wire_answer} gives them.
    """
    partial, first, last = decision.partial, decision.first, decision.last
    headers = part_headers(partial, first, last, None)
    wire = Wire(_serialise(b" 206 Partial Content\r\n", headers), b"", needs_date(partial))
    return 206, wire, b"", partial.slice(first, last)


#: A client address not asked for yet (see L{FastHits._own}).
_UNKNOWN = object()

#: What L{FastHits} remembers of a request head it cannot answer.
_NOT_FAST = object()
#: Request heads remembered, parsed and routed (the same clients send the
#: same heads again and again), and the longest remembered.
_HEADS_KEPT = 1024
_HEAD_KEPT_BYTES = 2048


def _header_fields(block: bytes, bodied: bool) -> Optional[Dict[str, str]]:
    """
    @param block: a request head's header lines, without the request line.
    @param bodied: whether the request's method has a body.
    @return: its fields by lower-cased name, or C{None} when the channel
        may not answer it (malformed, repeated or disqualifying fields).
    """
    if _HEADER_BLOCK.fullmatch(block) is None:
        return None
    headers: Dict[str, str] = {}
    for line in block.decode("ascii").split("\r\n"):
        name, _, value = line.partition(":")
        name = name.lower()
        if name in headers or (name in _DISQUALIFYING and not (bodied and name == "content-length")):
            return None
        headers[name] = value.strip(" \t")
    return headers


class FastHits:
    """
    Recognises and answers hits for a site whose resource is a
    L{phantom_frame.http.routing.Router} (or a single proxy resource): the
    request is parsed here, the server's
    L{phantom_frame.proxy.decision.Decider} decides, and a L{Hit} with a
    L{Full} answer is written from its pre-serialised L{Wire}. Any other
    decision is left to the stock path, which decides again: deciding
    changes nothing.

    A L{Bypass} of a server whose C{byte_path_ok} is set is passed through
    by a L{ByteRelay} instead; a L{Fill} (not a revalidation) of a server
    whose fast path is on is answered by a L{ByteFill}.

    @ivar answered: how many requests this fast path answered from the
        cache.
    @ivar relayed: how many it passed through to the origin.
    @ivar filled: how many fills it answered (through a L{ByteFill}).
    """

    def __init__(self, site: Any, clock: Any) -> None:
        self._site = site
        self._clock = clock
        self.answered = 0
        self.relayed = 0
        self.filled = 0
        self._hosts: Dict[str, Tuple[Any, bool]] = {}
        self._heads: Dict[bytes, Any] = {}
        #: The headers of the header blocks seen (those of new paths are
        #: often the same), by whether the method has a body and the bytes.
        self._blocks: Dict[Any, Optional[Dict[str, str]]] = {}
        self._memoResource: Any = None
        self._memoLimits: Any = None

    def _host_ok(self, value: str) -> bool:
        """
        @param value: a request's C{Host} value.
        @return: whether it is a valid host that the site's limits allow
            (remembered for the limits in force).
        """
        limits = self._limits()
        known = self._hosts.get(value)
        if known is not None and known[0] is limits:
            return known[1]
        host = parse_host(value.encode("ascii"))
        ok = host is not None and limits.host_allowed(host)
        if len(self._hosts) >= _HOSTS_KEPT:
            self._hosts.clear()
        self._hosts[value] = (limits, ok)
        return ok

    def __call__(self, channel: Any, data: bytes, start: int, end: int):
        """
        @param channel: the connection the request came on.
        @return: C{(chunks to write, close after)} for a hit, else C{None}.
        """
        site = self._site
        resource = site.resource
        limits = getattr(site, "limits", None)
        if resource is not self._memoResource or limits is not self._memoLimits:
            self._heads.clear()
            self._blocks.clear()
            self._memoResource, self._memoLimits = resource, limits
        head = data[start:end]
        secure = channel.secure
        memo = (secure, head)
        parsed = self._heads.get(memo)
        if parsed is None:
            parsed = self._parse(data, start, end, resource, secure)
            if len(head) <= _HEAD_KEPT_BYTES:
                if len(self._heads) >= _HEADS_KEPT:
                    self._heads.clear()
                self._heads[memo] = parsed
        if parsed is _NOT_FAST:
            return None
        server, view, close, length, target = parsed
        method = view.method
        headers = view.headers
        decider = server.decider
        decision = decider.decide(view)
        kind = type(decision)
        bodied = method in BODY_METHODS
        limiter = decider.limiter
        if bodied or limiter is not None:
            # Every request counts against rate limits, hits too; a refusal
            # is the stock path's to answer (refusing takes no token: it
            # refuses again).
            if limiter is not None and limiter.needs_client:
                view.client = getattr(channel.transport.getPeer(), "host", None)
            if limiter is not None and not limiter.answers_now(view):
                return None  # the stock path waits for the shared buckets
            if decider.admit(view, False) is not None:
                return None
        if kind is Bypass and server.byte_path_ok and not (bodied and server.passthrough.adopts):
            return self._relay(channel, server, view, decision, target, close, length)
        if kind is Fill and not bodied and decision.stale is None and server.fast_path_ok:
            # (On a Redis tier, the fill reads Redis first: ByteFill.)
            own = self._own(channel, view)
            self.filled += 1
            return ByteFill(channel, server, own, decision, target, own.headers, close, self._clock, view)
        if bodied or not server.fast_path_ok:
            return None
        rules = server.config.headers
        if rules.response_set or rules.response_remove:
            # Answers from the cache with header rules: the stock path
            # applies them (the pre-serialised heads are the entry's).
            return None
        if kind is PartHit:
            entry = decision.partial
            chunks = _render_part(decision)
        elif kind is Hit or kind is Stale:
            entry = decision.entry
            chunks = wire_answer(entry, decision.answer)
        else:
            return None
        if chunks is None:
            return None
        decider.note(decision)
        if kind is Stale and decision.refresh:
            client = getattr(channel.transport.getPeer(), "host", None)
            refresh = RequestView(method, view.path, view.query, headers, None, client, view.secure, view.prefix)
            server.filler.refresh_behind(refresh, decision.key, entry)
        self.answered += 1
        now = self._clock.seconds()
        status = decision.status
        rid = headers.get("x-request-id")
        if rid is None or not acceptable(rid):
            rid = new_request_id()
        out = answer_parts(chunks, int(entry.age(now)), status.header, rid, now, close, method == b"GET")
        code, body = chunks[0], chunks[3]
        record = self._site.recordFastHit
        if record is not None:
            record(channel, server, method, target, headers, code, len(body), status, rid)
        return out, close

    def _parse(self, data: bytes, start: int, end: int, resource: Any, secure: bool) -> Any:
        """
        Parse, normalise and route one request head (C{data[start:end]}),
        received over TLS when C{secure}.

        @return: C{(server, view, close, body length or None, target)} for a
            request the channel may answer, else L{_NOT_FAST}. It depends on nothing but the head's
            bytes, the site's resource and its limits, so L{__call__}
            remembers it for heads that come again.
        """
        line_end = data.find(b"\r\n", start, end + 2)
        request_line = _REQUEST_LINE.fullmatch(data, start, line_end)
        if request_line is None:
            return _NOT_FAST
        method, target = request_line.group(1), request_line.group(2)
        bodied = method in BODY_METHODS
        headers: Optional[Dict[str, str]] = {}
        if line_end < end:
            block = data[line_end + 2 : end]
            memo = (bodied, block)
            headers = self._blocks.get(memo, _NOT_FAST)
            if headers is _NOT_FAST:
                headers = _header_fields(block, bodied)
                if len(block) <= _HEAD_KEPT_BYTES:
                    if len(self._blocks) >= _HEADS_KEPT:
                        self._blocks.clear()
                    # (Shared by the views of every head with this block:
                    # never changed, copied by whoever adds to it.)
                    self._blocks[memo] = headers
            if headers is None:
                return _NOT_FAST
        length = None
        if bodied and "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit() or len(text) > 15:
                return _NOT_FAST
            length = int(text)
            if length > self._limits().max_request_body:
                return _NOT_FAST
        host = headers.get("host")
        if host is None or not self._host_ok(host):
            return _NOT_FAST
        close = "close" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
        path, _, query = target.partition(b"?")
        prefix = b""
        server = getattr(resource, "proxy_server", None)
        try:
            if server is None:
                match_raw = getattr(resource, "match_raw", None)
                if match_raw is None:
                    return _NOT_FAST
                path = normalise_path(path, lambda segments: match_raw(segments)[1])
            else:
                path = normalise_path(path)
        except TargetError:
            return _NOT_FAST
        if server is None:
            match = resource.match
            segments = path[1:].split(b"/")
            routed, depth = match(segments)
            if routed is None:
                return _NOT_FAST
            server = getattr(routed, "proxy_server", None)
            if server is None:
                return _NOT_FAST
            if depth:
                prefix = b"/" + b"/".join(segments[:depth])
                path = b"/" + b"/".join(segments[depth:])
        if not server.fast_path_ok and not server.byte_path_ok:
            return _NOT_FAST
        view = RequestView(method, path, query, headers, None, None, secure, prefix)
        if server.config.rewrite:
            apply_rewrite(server.config.rewrite, view)
        return server, view, close, length, view.target if not view.prefix else view.prefix + view.target

    @staticmethod
    def _own(channel: Any, view: RequestView) -> RequestView:
        """
        @return: a view of its own for a request the channel forwards (the
            remembered one is shared by every request of the same head):
            with the client's address, and its request id (the client's, or
            a new one) among its headers.
        """
        peer = getattr(channel, "_phantomPeer", _UNKNOWN)
        if peer is _UNKNOWN:
            # The client's address, asked of the transport once.
            peer = channel._phantomPeer = getattr(channel.transport.getPeer(), "host", None)
        headers = view.headers.copy()
        rid = headers.get("x-request-id")
        if rid is None or not acceptable(rid):
            headers["x-request-id"] = new_request_id()
        return RequestView(view.method, view.path, view.query, headers, None, peer, view.secure, view.prefix)

    def _relay(self, channel: Any, server: Any, view: RequestView, decision: Bypass, target: bytes,
               close: bool, length: Optional[int]) -> ByteRelay:
        """
        @param view: the view remembered for the request's head.
        @param length: the request body's length, or C{None} for none.
        @return: the L{ByteRelay} that passes the request through.
        """
        self.relayed += 1
        relay = ByteRelay(channel, server, self._own(channel, view), decision.status, close, self._clock, target)
        relay.shared = view
        if length is not None:
            relay.take_body(length)
        return relay

    def _limits(self) -> Any:
        return getattr(self._site, "limits", None) or DEFAULT_LIMITS
