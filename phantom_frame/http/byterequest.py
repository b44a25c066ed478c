"""
Fills on the HTTP/1.1 listener without twisted.web's C{Request}:
L{ByteRequest} is the small part of a request the proxy's renderers write
to (status, headers, body, producer, finish), writing straight to the
channel; L{ByteFill} renders a L{phantom_frame.proxy.decision.Fill} decision
with the server's own renderers onto one, so the answer is the stock
path's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, RESPONSES
from twisted.web.http_headers import Headers

from phantom_frame.http.routing import current_request
from phantom_frame.http.wires import answer_parts, wire_answer
from phantom_frame.proxy.answers import send_error
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.negotiation import NotModified
from phantom_frame.proxy.optimistic import send_parts
from phantom_frame.proxy.status import NONE, CacheStatus

log = Logger()


def _finished(request: "ByteRequest") -> None:
    """
    What a finished L{ByteRequest} calls instead of its owner.
    """


#: The attributes of a L{ByteRequest} made when first asked for.
_MADE_WHEN_ASKED: Dict[str, Callable[[], Any]] = {
    "prepath": list, "postpath": list, "requestHeaders": Headers, "responseHeaders": Headers,
}


class ByteRequest:
    """
    What the proxy's renderers use of a twisted.web request, over an
    L{phantom_frame.http.channel.FastHTTPChannel}.

    @ivar phantomStatus: the answer's L{CacheStatus} (set by the renderer).
    @ivar phantomUpstream: seconds spent waiting for the origin, if asked.
    """

    clientproto = b"HTTP/1.1"
    content = None
    #: Whether the connection closes after this answer (the client asked).
    closing = False

    def __init__(self, channel: Any, method: bytes, uri: bytes, done: Callable[[ByteRequest], None]) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.path = uri.split(b"?", 1)[0]
        self.code = 200
        self.code_message = b"OK"
        self.startedWriting = False
        self.finished = False
        self.sentLength = 0
        #: Its C{X-Request-Id}, sent with the answer.
        self.requestId = ""
        self.phantomStatus: CacheStatus = NONE
        self.phantomUpstream: Optional[float] = None
        self._chunked = False
        self._silent = False
        self._gone = False
        self._done = done
        self._finishes: Optional[List[Deferred[None]]] = None

    def __getattr__(self, name: str) -> Any:
        """
        Make C{prepath}, C{postpath} (empty lists), C{requestHeaders} and
        C{responseHeaders} (empty L{Headers}) when first asked for: most
        answers never read them, or replace the response headers whole.
        """
        make = _MADE_WHEN_ASKED.get(name)
        if make is None:
            raise AttributeError(name)
        value = make()
        setattr(self, name, value)
        return value

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        """
        Set the answer's status.
        """
        self.code = code
        self.code_message = message or RESPONSES.get(code, b"Unknown Status")

    def setHeader(self, name: bytes, value: bytes) -> None:
        """
        Set a response header.
        """
        self.responseHeaders.setRawHeaders(name, [value])

    def notifyFinish(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing when the answer is finished, failing
            when the client went away first.
        """
        d: Deferred[None] = Deferred()
        if self._finishes is None:
            self._finishes = []
        self._finishes.append(d)
        return d

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Have C{producer} paused while the client is slow.
        """
        self.channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """
        Forget the producer.
        """
        self.channel.unregisterProducer()

    def write(self, data: bytes) -> None:
        """
        Write body bytes; the head, as twisted.web writes it, first.
        """
        if self.finished:
            raise RuntimeError("write after finish")
        if self._gone:
            return
        channel = self.channel
        if not self.startedWriting:
            self.startedWriting = True
            headers = self.responseHeaders
            silent = self._silent = self.method == b"HEAD" or self.code in NO_BODY_CODES
            if headers.getRawHeaders(b"Content-Length") is None and not silent:
                headers.setRawHeaders(b"Transfer-Encoding", [b"chunked"])
                self._chunked = True
            if self.requestId:
                headers.setRawHeaders(b"X-Request-Id", [self.requestId.encode("latin-1")])
            if self.closing:
                headers.setRawHeaders(b"Connection", [b"close"])
            # The head goes out with the first body bytes, in one send.
            first = b""
            if data and not silent:
                self.sentLength += len(data)
                first = b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data
            channel.writeHeaders(self.clientproto, b"%d" % (self.code,), self.code_message, headers, first)
            return
        if self._silent:
            return
        self.sentLength += len(data)
        if data:
            if self._chunked:
                channel.transport.writeSequence([b"%x\r\n" % (len(data),), data, b"\r\n"])
            else:
                channel.transport.write(data)

    def send_whole(self, code: int, parts: List[bytes], sent: int) -> None:
        """
        Send a whole answer made beforehand, head and body, in one go, and
        finish.

        @param parts: its bytes.
        @param sent: how many of them are body bytes.
        """
        if self.finished:
            raise RuntimeError("write after finish")
        if self._gone:
            return
        self.startedWriting = True
        self.code = code
        self.sentLength = sent
        send_parts(self.channel.transport, parts)
        self.finish()

    def finish(self) -> None:
        """
        The answer is complete.
        """
        if self.finished or self._gone:
            return
        if not self.startedWriting:
            self.write(b"")
        if self._chunked:
            self.channel.transport.write(b"0\r\n\r\n")
        self.finished = True
        finishes, self._finishes = self._finishes, None
        if finishes:
            for d in finishes:
                d.callback(None)
        # (Dropped once called: it refers back to this request's owner.)
        done, self._done = self._done, _finished
        done(self)

    def lost(self) -> None:
        """
        The client went away.
        """
        if not self.finished and not self._gone:
            self._gone = True
            for d in self._finishes or ():
                d.errback(Failure(CancelledError("the client went away")))

    @property
    def gone(self) -> bool:
        """
        Whether the client went away before the answer was finished.
        """
        return self._gone


class _ByteExchange(Exchange):
    """
    The L{Exchange} of a L{ByteRequest}: whether its client is still there
    is read off the request (finished, or gone), without a C{notifyFinish}
    L{Deferred} per answer.
    """

    __slots__ = ()

    def __init__(self, request: ByteRequest, view: Any, rules: Any, shared: Any = None) -> None:
        self.request = request
        self.view = view
        self.rules = rules
        self.shared = shared
        self._over = False

    @property
    def alive(self) -> bool:
        """
        @return: whether the request may still be written to.
        """
        request = self.request
        return not request.finished and not request.gone

    def write_entry(self, entry: Any, answer: Any, status: CacheStatus, now: float) -> bool:
        """
        Write the answer from C{entry} as a hit's is written: from the
        entry's pre-serialised head for its coding (made here, not kept,
        when it is the entry's first answer), with
        the per-request C{Age}, C{Cache-Status}, C{X-Request-Id} (and
        C{Date}, C{Connection: close}), head and body in one send.

        @return: whether it was written (not with header rules, nor for an
            answer that has no pre-serialised form: L{wire_answer}).
        """
        rules = self.rules
        request = self.request
        if rules.response_set or rules.response_remove or not request.requestId:
            return False
        wires = entry.wire
        if answer.coding != entry.coding and type(answer) is not NotModified and (
            wires is None or answer.coding not in wires
        ):
            # (An answer in another coding than the stored one's is the
            # renderer's: it has the fill's decoded body at hand.)
            return False
        chunks = wire_answer(entry, answer, keep=False)
        if chunks is None:
            return False
        request.phantomStatus = status
        if request.finished or request.gone:
            return True
        channel = request.channel
        close = request.closing
        if not close and channel._draining():
            channel.persistent = False
            close = True
        bodied = request.method != b"HEAD"
        parts = answer_parts(chunks, int(entry.age(now)), status.header, request.requestId, now, close, bodied)
        request.send_whole(chunks[0], parts, len(chunks[3]) if bodied else 0)
        return True


class ByteFill:
    """
    A L{phantom_frame.proxy.decision.Fill} answered on the channel through
    a L{ByteRequest} (for L{phantom_frame.http.channel.FastHTTPChannel}, as
    a L{phantom_frame.http.relay.ByteRelay} is).
    """

    body_left = 0

    def __init__(self, channel: Any, server: Any, view: Any, decision: Any, target: bytes,
                 headers: Any, close: bool, clock: Any, shared: Any = None) -> None:
        """
        @param view: the request's own view.
        @param shared: the view the channel remembers for its head, that
            C{view} copies (see L{Exchange.shared}), or C{None}.
        """
        self._channel = channel
        self._shared = shared
        self._clock = clock
        self._decision = decision
        self._close = close
        self.server = server
        self.view = view
        self.method = view.method
        self.target = target
        self.headers = headers
        self.request = ByteRequest(channel, view.method, target, self._finished)
        self.request.requestId = headers.get("x-request-id", "")
        self.request.closing = close
        self._started = clock.seconds()
        #: What gives the answer up (see ProxyServer.render_fill).
        self._waiter: Any = None
        self._exchange: Any = None

    @property
    def code(self) -> int:
        """The answer's status."""
        return self.request.code

    @property
    def sent(self) -> int:
        """The body bytes written."""
        return self.request.sentLength

    @property
    def status(self) -> CacheStatus:
        """The answer's C{Cache-Status}."""
        return self.request.phantomStatus

    @property
    def upstream(self) -> Optional[float]:
        """Seconds spent waiting for the origin, if asked."""
        return self.request.phantomUpstream

    def duration(self) -> float:
        """
        @return: seconds since the request came.
        """
        return max(0.0, self._clock.seconds() - self._started)

    def start(self) -> None:
        """
        Render the decision.
        """
        exchange = self._exchange = _ByteExchange(self.request, self.view, self.server.config.headers, self._shared)
        token = current_request.set(self.request)
        try:
            self._waiter = self.server.render_fill(exchange, self._decision, self._unexpected)
        finally:
            current_request.reset(token)

    def cancel(self) -> None:
        """
        The client went away: stop.
        """
        self.request.lost()
        if self._waiter is not None:
            self._waiter.cancel()

    def _unexpected(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        exchange = self._exchange
        log.failure(
            "unexpected error answering {method} {uri} for server {server}",
            failure, method=self.method, uri=self.target, server=self.server.name,
        )
        send_error(exchange, 500, "Internal Server Error")

    def _finished(self, request: ByteRequest) -> None:
        self._channel.relayDone(self, self._close or not self._channel.persistent)
