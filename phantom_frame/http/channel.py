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

The fast path's parser is stricter than the stock one: a head it would
not read exactly as L{phantom_frame.http.guard.GuardedHTTPChannel} does (a
bare LF or CR, a control character, a header name that is not a token, a
C{Host} that is not valid or not allowed, a head over C{max_header_bytes})
is left to the stock path, which gives the answer.

It leans on twisted.web internals (the channel's parser state), pinned by
C{tests/http/test_fastpath.py}.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.http_headers import Headers

from phantom_frame.http.byterequest import ByteFill
from phantom_frame.http.fasthits import BODY_METHODS, FastHits
from phantom_frame.http.guard import GuardedHTTPChannel
from phantom_frame.proxy.optimistic import send_parts
from phantom_frame.http.records import FastHitRecord
from phantom_frame.http.relay import ByteRelay
from phantom_frame.http.wires import Wire

__all__ = ["BODY_METHODS", "FastHTTPChannel", "FastHitRecord", "FastHits", "Wire", "fast_channel_factory"]


class FastHTTPChannel(GuardedHTTPChannel):
    """
    A L{GuardedHTTPChannel} that answers simple cache hits itself.
    """

    _secure: Optional[bool] = None

    @property
    def secure(self) -> bool:
        """
        Whether the connection is over TLS (asked of the transport once).
        """
        secure = self._secure
        if secure is None:
            secure = self._secure = bool(self.isSecure())
        return secure

    def dataReceived(self, data: bytes) -> None:
        """
        Answer the plain hits at the start of C{data} when the channel is
        idle; give the rest to the stock path.
        """
        if self._rejected or self._closing:
            return
        if self._discard:
            dropped = data[:self._discard]
            self._discard -= len(dropped)
            data = data[len(dropped):]
            if not data:
                return
        relay = self._relay
        if relay is not None:
            left = relay.body_left
            if left:
                # The request body, streamed to the origin as it comes: the
                # idle timeout counts from its last bytes, as on the stock
                # path, until it is whole.
                chunk = data[:left] if len(data) > left else data
                self.resetTimeout()
                relay.feed(chunk)
                if not relay.body_left and self._relay is relay:
                    self._suspendIdle()
                data = data[len(chunk):]
                if not data:
                    return
            if self._relay is None:
                self.dataReceived(data)
                return
            # An answer is being relayed: later requests wait their turn.
            self._held += data
            if len(self._held) > self.limits.max_header_bytes and not self._heldPaused:
                self._heldPaused = True
                self.transport.pauseProducing()
            return
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
                self._cancelHeadTimer()
                self.resetTimeout()
                data = data[consumed:]
                if not data or self.transport is None or self._closing:
                    return
        GuardedHTTPChannel.dataReceived(self, data)

    _closing = False
    _relay: Any = None
    _held = b""
    _heldPaused = False
    _starting = False
    _discard = 0
    _bodyHeld = False

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
        window = self.limits.max_header_bytes
        while position < size:
            end = data.find(b"\r\n\r\n", position, position + window)
            if end < 0:
                break
            answer = fast(self, data, position, end)
            if answer is None:
                break
            if answer.__class__ is ByteRelay or answer.__class__ is ByteFill:
                position = end + 4
                left = answer.body_left
                self._relay = answer
                started = getattr(self.site, "byteRequestStarted", None)
                if started is not None:
                    started()
                self._starting = True
                try:
                    answer.start()
                finally:
                    self._starting = False
                if left:
                    chunk = data[position:position + left]
                    position += len(chunk)
                    if self._relay is not None:
                        answer.feed(chunk)
                    else:
                        # It ended before its body came: drop the body.
                        self._discard -= len(chunk)
                if self._relay is not None:
                    if not answer.body_left:
                        # Nothing more to read of this request: the answer
                        # may take as long as the origin allows.
                        self._suspendIdle()
                    self._held = data[position:]
                    return size
                if self._closing:
                    break
                continue
            send_parts(self.transport, answer[0])
            position = end + 4
            if answer[1]:
                self._closing = True
                self.transport.loseConnection()
                break
        return position

    def _suspendIdle(self) -> None:
        """
        Stop the idle timeout while a request passed through waits for
        nothing from the client (its body is whole, or the origin takes no
        more of it), as the stock path does while it answers a request.
        """
        self.suspendIdle()

    def _restoreIdle(self) -> None:
        """
        Start the idle timeout again (from now), if it was stopped.
        """
        if self._closing:
            self._idleSuspended, self._idleSaved = False, None
        else:
            self.resumeIdle()

    def holdBody(self) -> None:
        """
        The origin takes no more of the request body being passed through
        for now: stop reading the client, and stop its idle timeout (the
        client is not the one that is slow).
        """
        if not self._bodyHeld:
            self._bodyHeld = True
            self._suspendIdle()
            if self.transport is not None:
                self.transport.pauseProducing()

    def releaseBody(self) -> None:
        """
        The origin takes more of the request body: read the client again
        (unless its transport is full or later requests wait), the idle
        timeout running again while body bytes are awaited.
        """
        if not self._bodyHeld:
            return
        self._bodyHeld = False
        relay = self._relay
        if relay is not None and relay.body_left:
            self._restoreIdle()
        if self.transport is not None and not self._waitingForTransport and not self._heldPaused:
            self.transport.resumeProducing()

    def resumeProducing(self) -> None:
        """
        The client's transport takes more: as usual, but the client is not
        read again while the origin holds the request body back or later
        requests wait (see L{holdBody}).
        """
        if self._relay is not None and (self._bodyHeld or self._heldPaused):
            self._waitingForTransport = False
            if self._requestProducer is not None:
                self._requestProducer.resumeProducing()
            return
        GuardedHTTPChannel.resumeProducing(self)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any, body: Optional[bytes] = None
    ) -> None:
        """
        Write an answer head as twisted.web does, as one string: the same
        bytes, without a check of every fragment of every line.

        @param body: the bytes that follow the head (the first of the
            body, framed), for a writer that has them (a
            L{phantom_frame.http.byterequest.ByteRequest}): head and body
            are sent together, at once when the socket takes them
            (L{send_parts}).
        """
        if not isinstance(headers, Headers):
            GuardedHTTPChannel.writeHeaders(self, version, code, reason, headers)
            if body:
                self.transport.write(body)
            return
        lines = [version + b" " + code + b" " + reason + b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        if body is None:
            self.transport.write(b"".join(lines))
        else:
            send_parts(self.transport, [b"".join(lines), body] if body else [b"".join(lines)])

    @property
    def relaying(self) -> bool:
        """
        Whether an answer is being passed through at the byte level.
        """
        return self._relay is not None

    def _draining(self) -> bool:
        """
        @return: whether the site drains (see
            L{phantom_frame.http.drain.DrainingChannel}).
        """
        return False

    def relayDone(self, relay: ByteRelay, close: bool, recorded: bool = True) -> None:
        """
        A relayed answer is complete (or was cut short): count and log it,
        then read the requests that waited, or close.

        @param close: whether the connection closes after it.
        @param recorded: whether it is counted and logged.
        """
        self._relay = None
        if relay.body_left:
            # The rest of an abandoned request body is read and dropped.
            self._discard = relay.body_left
            relay.body_left = 0
        if self._bodyHeld:
            self._bodyHeld = False
            if not close and self.transport is not None and not self._waitingForTransport:
                self.transport.resumeProducing()
        if recorded:
            record = getattr(self.site, "recordFastHit", None)
            if record is not None:
                record(
                    self, relay.server, relay.method, relay.target, relay.headers, relay.code,
                    relay.sent, relay.status, relay.headers.get("x-request-id", ""),
                    relay.duration(), relay.upstream,
                )
        if close:
            self._closing = True
            self._held = b""
            if self.transport is not None:
                self.transport.loseConnection()
            self._byteRequestDone()
            return
        self._restoreIdle()
        self.resetTimeout()
        if self._starting:
            self._byteRequestDone()
            return
        held, self._held = self._held, b""
        if self._discard and held:
            dropped = held[:self._discard]
            self._discard -= len(dropped)
            held = held[len(dropped):]
        if self._heldPaused:
            self._heldPaused = False
            if not self._waitingForTransport:
                self.transport.resumeProducing()
        if held:
            self.dataReceived(held)
        self._byteRequestDone()

    def _byteRequestDone(self) -> None:
        done = getattr(self.site, "byteRequestDone", None)
        if done is not None:
            done()

    def connectionLost(self, reason: Any) -> None:
        """
        Abandon an answer being relayed, then as usual.
        """
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.cancel()
            self._byteRequestDone()
        GuardedHTTPChannel.connectionLost(self, reason)


def fast_channel_factory(*site: Any) -> _GenericHTTPChannelProtocol:
    """
    The L{Site.protocol} of a proxy site (as a class attribute, it is
    called with the site; as an instance attribute, with nothing):
    twisted.web's generic channel (so TLS with ALPN still chooses HTTP/2
    when available, and so does a cleartext connection opening with the
    HTTP/2 preface: see L{phantom_frame.http.h2c}) around a
    L{FastHTTPChannel}.
    """
    from phantom_frame.http.h2c import PriorKnowledgeChannel

    return PriorKnowledgeChannel(FastHTTPChannel())
