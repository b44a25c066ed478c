"""
L{GuardedHTTPChannel}: twisted.web's HTTP/1.1 channel, held to the
proxy's L{phantom_frame.http.limits.ClientLimits} and to RFC 9112 where the
stock channel is lenient or waits forever.

Every request head is checked before anything is done with it: a line
ending may be CRLF or a bare LF (RFC 9112 §2.2), a bare CR is refused; the
request line and the whole head are bounded (414, 431); C{Content-Length}
must be plain digits that fit, alone, and within C{max_request_body} (400,
413, before any body byte is read); a chunked body may not grow past it
(413) and its framing must be exact (400); C{Host} must be there (HTTP/1.1),
once, and valid (400), and allowed (421); a head has
C{client_header_timeout} seconds to arrive (408). Each refusal is a short
C{text/plain} answer with C{Connection: close}, then the connection is
closed and nothing more it sent is read: the request never reaches a
resource, so never an origin.

It overrides hooks of twisted.web's L{HTTPChannel} (C{lineReceived},
C{lineLengthExceeded}, C{headerReceived}'s C{_maybeChooseTransferDecoder},
C{allHeadersReceived}, C{allContentReceived}, C{rawDataReceived},
C{_respondToBadRequestAndDisconnect}) and reads its parser state, pinned by
C{tests/http/test_guard_internals.py}.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall
from twisted.web.http import HTTPChannel, _IdentityTransferDecoder

from phantom_frame.http.limits import (
    DEFAULT_LIMITS,
    BodyTooLarge,
    BoundedChunkedDecoder,
    ClientLimits,
    content_length,
    error_answer,
    host_problem,
)
from phantom_frame.proxy.answers import http_date

#: A request line: a method token, a target of visible ASCII (and, as nginx
#: and Varnish allow, bytes past ASCII, which the path's normal form
#: percent-encodes) and an HTTP version (twisted.web checks which).
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e\x80-\xff]+ HTTP/[0-9]\.[0-9]")


#: Bytes past ASCII in a request target.
_BEYOND_ASCII = re.compile(rb"[\x80-\xff]")


def _percent(match: "re.Match[bytes]") -> bytes:
    return b"%%%02X" % match.group(0)[0]


#: How close to the end of its idle period a connection times out: the
#: timer's own time is the clock's sum, which may differ in the last bits.
_IDLE_SLACK = 1e-6


class GuardedHTTPChannel(HTTPChannel):
    """
    An L{HTTPChannel} that refuses malformed, oversized, slow and
    misdirected request heads with an answer, then closes.

    Its limits are its site's C{limits} attribute (a L{ClientLimits}), read
    whenever they are needed, so a reload that replaces them applies to the
    next request head; a site without one gets L{DEFAULT_LIMITS}.
    """

    #: Lines end at a LF; a CR before it is dropped (RFC 9112 §2.2).
    delimiter = b"\n"

    _rejected = False
    _unknownCoding = False
    _headTimer: Optional[IDelayedCall] = None
    #: When the connection was last active (see L{resetTimeout}), by the
    #: site's clock, whose C{seconds} is kept once asked.
    _lastActive = float("-inf")
    _seconds: Optional[Callable[[], float]] = None
    _idleSuspended = False
    _idleSaved: Optional[float] = None

    @property
    def limits(self) -> ClientLimits:
        """
        The limits in force: the site's, or L{DEFAULT_LIMITS}.
        """
        limits = getattr(getattr(self, "site", None), "limits", None)
        return DEFAULT_LIMITS if limits is None else limits

    @property
    def MAX_LENGTH(self) -> int:  # type: ignore[override]
        """
        L{LineReceiver}'s bound on one line: the head's, plus its CR.
        """
        return self.limits.max_header_bytes + 1

    @property
    def totalHeadersSize(self) -> int:  # type: ignore[override]
        """
        twisted.web's bound on a head: the configured one (checked here
        first, to answer 414 or 431 rather than 400).
        """
        return self.limits.max_header_bytes

    # Connection life.

    def connectionMade(self) -> None:
        """
        Start as usual, and give the first request head
        C{client_header_timeout} seconds from now.
        """
        super().connectionMade()
        self._armHeadTimer()

    def connectionLost(self, reason: Any) -> None:
        """
        Stop the head timer, then as usual.
        """
        self._cancelHeadTimer()
        super().connectionLost(reason)

    def setTimeout(self, period: Any) -> Any:
        """
        As usual; C{None}, which twisted.web's generic channel sets when it
        hands the connection to HTTP/2, also stops the head timer.
        """
        if period is None:
            self._cancelHeadTimer()
        return super().setTimeout(period)

    # The idle timeout, kept lazily.

    def resetTimeout(self) -> None:
        """
        Note that the connection is active, without moving the idle timer
        (a L{DelayedCall.reset} per request): when the timer fires,
        L{timeoutConnection} waits for what is left of the idle period since
        the last activity. Without a site's clock, as usual.
        """
        seconds = self._idleClock()
        if seconds is None:
            super().resetTimeout()
            return
        self._lastActive = seconds()

    def _idleClock(self) -> Optional[Callable[[], float]]:
        """
        @return: the site's clock's C{seconds}, by which the idle timeout is
            kept lazily, or C{None} (then it is kept as usual).
        """
        seconds = self._seconds
        if seconds is None:
            clock = getattr(getattr(self, "site", None), "reactor", None)
            if clock is None:
                return None
            seconds = self._seconds = clock.seconds
        return seconds

    def suspendIdle(self) -> None:
        """
        Stop the idle timeout counting (while the connection waits for
        nothing from the client). Kept by the site's clock, the timer is
        left alone (when it fires meanwhile, it waits a whole period again);
        without one, it is stopped.
        """
        if self._idleSuspended or self._idleSaved is not None or self.timeOut is None:
            return
        if self._idleClock() is None:
            self._idleSaved = self.setTimeout(None)
        else:
            self._idleSuspended = True

    def resumeIdle(self) -> None:
        """
        Let the idle timeout count again, from now (see L{suspendIdle}).
        """
        if self._idleSuspended:
            self._idleSuspended = False
            self.resetTimeout()
            return
        saved, self._idleSaved = self._idleSaved, None
        if saved is not None:
            self.setTimeout(saved)

    def timeoutConnection(self) -> None:
        """
        The idle timer fired: if the connection was active since, wait for
        the rest of the idle period from then; else time out as usual.
        """
        period = self.timeOut
        seconds = self._seconds
        if period is not None and seconds is not None:
            if self._idleSuspended:
                self.setTimeout(period)
                return
            left = self._lastActive + period - seconds()
            if left > _IDLE_SLACK:
                self.setTimeout(left)
                self.timeOut = period
                return
        super().timeoutConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Nothing more is read after a refusal. Bytes that start a request
        head start its timer; a partial line that already takes the head
        past its bound is refused without waiting for its end.
        """
        if self._rejected:
            return
        if self._headTimer is None and self._awaitingHead():
            self._armHeadTimer()
        HTTPChannel.dataReceived(self, data)
        if not self._rejected and not self._busyReceiving and self._awaitingHead():
            pending = self._buffer
            if b"\n" not in pending:
                size = self._receivedHeaderSize + len(pending)
                if size > self.limits.max_header_bytes + 1:
                    self._refuseLongHead()

    def _awaitingHead(self) -> bool:
        """
        @return: whether the channel reads a request head (or waits for
            one), rather than a body or a request being answered.
        """
        transport = self.transport
        return bool(
            self.line_mode
            and not self._handlingRequest
            and self.persistent
            and transport is not None
            and not getattr(transport, "disconnecting", False)
        )

    # The head timer.

    def _armHeadTimer(self) -> None:
        self._cancelHeadTimer()
        self._headTimer = self.callLater(self.limits.client_header_timeout, self._headTimedOut)

    def _cancelHeadTimer(self) -> None:
        timer, self._headTimer = self._headTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _headTimedOut(self) -> None:
        """
        A request head did not arrive in time: 408, and close.
        """
        self._headTimer = None
        if self._awaitingHead():
            self._reject(408, "the request head did not arrive in time")

    # The head.

    def lineReceived(self, line: bytes) -> None:
        """
        Drop the CR before the LF; refuse a bare CR, a request line longer
        than C{max_header_bytes} (414) and a head longer than it (431); then
        parse the line as usual.
        """
        if self._rejected:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        first = self._HTTPChannel__first_line  # type: ignore[attr-defined]
        if self.persistent or not first:
            if self._receivedHeaderSize + len(line) > self.limits.max_header_bytes:
                self._refuseLongHead()
                return
            if b"\r" in line:
                self._reject(400, "bare CR in the request head")
                return
            if first and not _REQUEST_LINE.fullmatch(line) and line:
                self._reject(400, "malformed request line")
                return
            if first and _BEYOND_ASCII.search(line):
                # twisted.web refuses them; their normal form is encoded.
                line = _BEYOND_ASCII.sub(_percent, line)
        HTTPChannel.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line longer than any head may be, without its end in sight: 414
        for the request line, 431 for a header line.
        """
        if not self._rejected:
            self._refuseLongHead()

    def _refuseLongHead(self) -> None:
        limit = self.limits.max_header_bytes
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self._reject(414, f"the request line is over {limit} bytes")
        else:
            self._reject(431, f"the request head is over {limit} bytes")

    def headerReceived(self, line: bytes) -> bool:
        """
        Parse a header line as usual, unless the request was refused.
        """
        if self._rejected:
            return False
        return HTTPChannel.headerReceived(self, line)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        """
        Choose the body's decoder from C{Content-Length} (plain digits that
        fit, within C{max_request_body}) or C{Transfer-Encoding: chunked}
        (HTTP/1.1 only); one of them, once.

        @return: whether the request may go on.
        """
        if header == b"Content-Length":
            length = content_length(data)
            if length is None:
                return self._refuseFraming(400, "Content-Length is not a length")
            if self._transferDecoder is not None or self._unknownCoding:
                return self._refuseFraming(400, "more than one Content-Length or Transfer-Encoding")
            limit = self.limits.max_request_body
            if length > limit:
                return self._refuseFraming(413, f"the request body is over {limit} bytes")
            request = self.requests[-1]
            self._transferDecoder = _IdentityTransferDecoder(
                length, request.handleContentChunk, self._finishRequestBody
            )
            self.length = length
            return True
        if header == b"Transfer-Encoding":
            if self._transferDecoder is not None or self._unknownCoding:
                return self._refuseFraming(400, "more than one Content-Length or Transfer-Encoding")
            if self._version != b"HTTP/1.1":
                return self._refuseFraming(400, "Transfer-Encoding in an HTTP/1.0 request")
            if data.lower() != b"chunked":
                # 501 once the head is whole, unless a Content-Length makes
                # it ambiguous (400).
                self._unknownCoding = True
                return True
            request = self.requests[-1]
            self._transferDecoder = BoundedChunkedDecoder(
                self.limits.max_request_body, request.handleContentChunk, self._finishRequestBody
            )
            self.length = None
            return True
        return True

    def _refuseFraming(self, code: int, detail: str) -> bool:
        self._reject(code, detail)
        self.length = None
        return False

    def allHeadersReceived(self) -> None:
        """
        The head is whole: stop its timer; refuse it when its host is
        missing, repeated or invalid (400) or not allowed (421); else go on
        as usual.
        """
        if self._rejected:
            return
        self._cancelHeadTimer()
        if self._unknownCoding:
            self._reject(501, "the only transfer coding accepted is chunked")
            return
        hosts = self.requests[-1].requestHeaders.getRawHeaders(b"host") or []
        problem = host_problem(hosts, self._version, self._path, self.limits)
        if problem is not None:
            self._reject(*problem)
            return
        HTTPChannel.allHeadersReceived(self)

    def allContentReceived(self) -> None:
        """
        Hand the request over as usual, unless it was refused.
        """
        if not self._rejected:
            HTTPChannel.allContentReceived(self)

    def rawDataReceived(self, data: bytes) -> None:
        """
        Read a body as usual, unless the request was refused; a chunked
        body past C{max_request_body} gets 413.
        """
        if self._rejected:
            return
        try:
            HTTPChannel.rawDataReceived(self, data)
        except BodyTooLarge:
            limit = self.limits.max_request_body
            self._reject(413, f"the request body is over {limit} bytes")

    # Refusals.

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        twisted.web's own refusals (a malformed request line or header,
        too many headers, broken chunked framing) get the same answer as
        the others.
        """
        self._reject(400, "malformed request")

    def _reject(self, code: int, detail: str) -> None:
        """
        Answer C{code} with C{detail}, close the connection and read
        nothing more from it.
        """
        if self._rejected:
            return
        self._rejected = True
        self._cancelHeadTimer()
        transport = self.transport
        if transport is None:
            return
        clock = getattr(getattr(self, "site", None), "reactor", None)
        date = None if clock is None else http_date(clock.seconds())
        answer = error_answer(code, detail, date)
        transport.write(answer)
        record = getattr(getattr(self, "site", None), "recordRefusal", None)
        if record is not None:
            record(self, getattr(self, "_command", None), getattr(self, "_path", None), code, len(answer))
        # As twisted.web's own timeout does: close, and abort if the client
        # does not let the answer out within abortTimeout.
        self.setTimeout(None)
        if self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()
