"""
Byte-level pass-through on the HTTP/1.1 listener: L{ByteRelay} forwards a
request the channel parsed itself (see L{phantom_frame.http.channel}) to
the origin through its L{phantom_frame.proxy.client.IOriginClient} and
writes the answer to the client's transport as bytes, without twisted.web's
C{Request}: the head as the stock path would write it (end-to-end fields,
C{Date}, C{Cache-Status}, C{Content-Length} or chunked re-framing), the body
with back-pressure both ways (the client's channel is the consumer; the
origin connection pauses while the client is slow).
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from phantom_frame.http.relayheads import error_head, forwarded_fields, relay_head, relay_start
from phantom_frame.proxy.optimistic import send
from phantom_frame.proxy.answers import http_date
from phantom_frame.proxy.client import IRelayReceiver, RequestBody, ResponseHead, StalledBody
from phantom_frame.proxy.origin import BrokenBody, UpstreamError, UpstreamTimeout, upstream_error
from phantom_frame.proxy.rules import variables_of
from phantom_frame.proxy.status import CacheStatus, forwarded
from phantom_frame.proxy.transfer import Inflater, TransferDecodeError


@implementer(IPushProducer)
class ClientBodyReads:
    """
    The client's side of a request body passed through: the producer of
    its L{RequestBody}, paused while the origin takes no more. Pausing and
    resuming go through the channel (its C{holdBody} and C{releaseBody}),
    which also pauses its transport for a full write buffer and for
    pipelined requests, and stops its idle timeout while the client is not
    the one that is slow.
    """

    def __init__(self, channel: Any) -> None:
        """
        @param channel: the client's connection.
        """
        self._channel = channel

    def pauseProducing(self) -> None:
        """
        Stop reading the client.
        """
        self._channel.holdBody()

    def resumeProducing(self) -> None:
        """
        Read the client again.
        """
        self._channel.releaseBody()

    def stopProducing(self) -> None:
        """
        Nothing: the exchange's end lets the body go (see
        L{ByteRelay._let_go}).
        """


@implementer(IRelayReceiver, IPushProducer)
class ByteRelay:
    """
    One request passed through at the byte level, and its answer.

    The channel provides C{transport}, C{registerProducer},
    C{unregisterProducer} and C{relayDone(relay, close)}. The origin's
    client tells it of the end (L{responseDone}, L{responseFailed}) when it
    is an L{phantom_frame.proxy.client.IRelayingClient}; else the end is
    the request's L{Deferred}.

    @ivar code: the answer's status, once known.
    @ivar sent: the body bytes written to the client.
    @ivar upstream: seconds from the request to the origin's final head
        (or its failure before it), once known.
    @ivar timing: see L{IRelayReceiver.timing}.
    """

    def __init__(
        self,
        channel: Any,
        server: Any,
        view: Any,
        status: CacheStatus,
        close: bool,
        clock: Any,
        target: Optional[bytes] = None,
    ) -> None:
        """
        @param channel: the client's connection.
        @param server: the L{phantom_frame.proxy.server.ProxyServer}.
        @param view: the request's L{phantom_frame.proxy.view.RequestView}.
        @param status: the C{Cache-Status} of the answer (a bypass).
        @param close: whether the client asked to close after this answer.
        @param clock: gives the C{Date}.
        @param target: the request's target as the client sent it (its
            view's, under the server's prefix); the view's when C{None}.
        """
        self._channel = channel
        self._server = server
        self._view = view
        self._status = status
        self._close = close
        self._clock = clock
        self._producer: Any = None
        self._pending: Optional[List[bytes]] = None
        self._chunked = False
        self._inflater: Optional[Inflater] = None
        self._request: Any = None
        self._over = False
        self._started = clock.seconds()
        self.code = 0
        self.sent = 0
        self.server = server
        self.method = view.method
        self.target = view.target if target is None else target
        self.headers = view.headers
        self.upstream: Optional[float] = None
        self.timing: Any = None
        self.body: Optional[RequestBody] = None
        self.body_left = 0
        #: The view remembered for the request's head, of which C{view} is
        #: a copy (see L{forwarded_fields}), or C{None}.
        self.shared: Any = None

    def take_body(self, length: int) -> None:
        """
        The request has a body of C{length} bytes, to be streamed to the
        origin as the channel reads it (see L{feed}); while the origin takes
        no more of it, the channel stops reading the client (see
        L{ClientBodyReads}).
        """
        self.body = RequestBody(length)
        self.body_left = length
        if length:
            self.body.registerProducer(ClientBodyReads(self._channel), True)

    def feed(self, data: bytes) -> None:
        """
        The next bytes of the request body (at most C{body_left}).
        """
        self.body_left -= len(data)
        body = self.body
        body.write(data)
        if not self.body_left:
            body.finish()

    def duration(self) -> float:
        """
        @return: seconds since the request was forwarded.
        """
        elapsed = self._clock.seconds() - self._started
        return elapsed if elapsed > 0.0 else 0.0

    def start(self) -> None:
        """
        Send the request to the origin.
        """
        view = self._view
        origin = self._server.origin
        body = self.body
        if body is not None and not self.body_left:
            body = b""
        client = origin.client
        relay = getattr(client, "relay", None)
        try:
            headers = forwarded_fields(self.shared, view, origin, self._server.config.headers)
            target = origin.base_path + view.target
            if relay is not None:
                exchange = relay(view.method, target, headers, self, body)
                if not self._over:
                    # (An answer that came at once has ended the relay.)
                    self._request = exchange
                return
            d = client.request(view.method, target, headers, self, body)
        except ValueError as e:
            # Never sent: not an origin request to time.
            self.timing = None
            self.responseFailed(Failure(UpstreamError(f"cannot forward the request: {e}")))
            return
        self._request = d
        d.addCallbacks(self.responseDone, self.responseFailed)

    def cancel(self) -> None:
        """
        The client went away: abandon the origin request.
        """
        if not self._over:
            self._over = True
            if self._producer is None:
                self._timed(True)
            if self._request is not None:
                self._request.cancel()

    def _timed(self, failed: bool) -> float:
        """
        Note the time to the final head (or to the failure before it), and
        tell the timing client once.

        @return: the time noted, in seconds.
        """
        now = self._clock.seconds()
        upstream = now - self._started
        self.upstream = upstream = upstream if upstream > 0.0 else 0.0
        timing = self.timing
        if timing is not None:
            self.timing = None
            timing.timed(upstream, failed)
        return now

    # IResponseReceiver

    def interimReceived(self, head: ResponseHead) -> None:
        """
        Relay a C{103 Early Hints} (other interim answers are the
        proxy's own business).
        """
        if head.status == 103 and not self._over:
            lines = [b"HTTP/1.1 103 Early Hints\r\n"]
            lines.extend(n + b": " + v + b"\r\n" for n, v in head.end_to_end())
            lines.append(b"\r\n")
            self._channel.transport.writeSequence(lines)

    def headReceived(self, head: ResponseHead, producer: Any) -> None:
        """
        Make the answer's head; it goes out with the first body bytes (or
        the end), so that a body that breaks before any byte came is
        answered as an origin failure.
        """
        self._producer = producer
        now = self._timed(False)
        self.code = head.status
        if self.body is not None:
            self._server.passthrough.answered_unsafe(self._view, head)
        rules = self._server.config.headers
        known = relay_head(head, rules)
        header = self._status.header
        if known[3] and not rules.response_set:
            # Nothing of this request before Cache-Status: the start is
            # the same for every answer with this head.
            lines = [relay_start(known, header)]
        else:
            lines = [known[2]]
            if rules.response_set:
                lines.append(rules.response_lines(variables_of(self._view)))
            if not known[3]:
                lines.append(b"Date: " + http_date(now) + b"\r\n")
            if header:
                lines.append(b"Cache-Status: " + header + b"\r\n")
        if head.codings:
            self._inflater = Inflater(head.codings)
        self._chunked = known[4]
        rid = self.headers.get("x-request-id")
        if rid:
            lines.append(b"X-Request-Id: " + rid.encode("latin-1") + b"\r\n")
        if not self._close and self._channel._draining():
            self._close = True
        if self._close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self._pending = lines
        self._channel.registerProducer(self, True)

    def bodyReceived(self, data: bytes) -> None:
        """
        Write body bytes (re-chunked when the length is unknown).
        """
        if self._inflater is not None:
            data = self._inflater.decode(data)
            if not data:
                return
        self.sent += len(data)
        pending = self._pending
        if self._chunked:
            if pending is None:
                self._channel.transport.writeSequence([b"%x\r\n" % (len(data),), data, b"\r\n"])
                return
            pending.extend((b"%x\r\n" % (len(data),), data, b"\r\n"))
        elif pending is None:
            self._channel.transport.write(data)
            return
        else:
            pending.append(data)
        self._pending = None
        send(self._channel.transport, b"".join(pending))

    # IPushProducer, for the client's channel

    def pauseProducing(self) -> None:
        """
        The client is slow: stop reading the origin.
        """
        if self._producer is not None and not self._over:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The client takes more: read the origin again.
        """
        if self._producer is not None and not self._over:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        """
        The client's connection is going: abandon the origin request.
        """
        self.cancel()

    # The end

    def responseDone(self, head: ResponseHead) -> None:
        """
        The whole answer came: write what is left of it and end.
        """
        if self._over:
            return
        tail: List[bytes] = []
        if self._inflater is not None:
            try:
                rest = self._inflater.finish()
            except TransferDecodeError as e:
                self.responseFailed(Failure(e))
                return
            if rest:
                self.sent += len(rest)
                tail.extend((b"%x\r\n" % (len(rest),), rest, b"\r\n"))
        if self._chunked:
            tail.append(b"0\r\n\r\n")
        pending, self._pending = self._pending, None
        if pending is not None:
            tail = pending + tail
        if tail:
            send(self._channel.transport, b"".join(tail))
        self._end(self._close)

    def responseFailed(self, failure: Failure) -> None:
        """
        The request failed: answer as an origin that failed when nothing
        was sent yet, else cut the answer short.
        """
        if self._over:
            return
        passthrough = self._server.passthrough
        if self._producer is None or self._pending is not None:
            # Nothing was sent: answer as an origin that failed.
            if self._producer is None:
                self._timed(True)
                error = upstream_error(failure, self._server.origin)
            elif failure.check(UpstreamError):
                error = failure.value
            else:
                error = _body_error(failure)
            if not isinstance(error, UpstreamError):
                self._over = True
                return
            code, text, detail = passthrough.failed(error)
            self._status = forwarded("bypass", detail)
            self._pending = None
            self.code = code
            self.sent = len(text) + 1
            self._channel.transport.writeSequence(
                error_head(code, text, self._status, self._close, self.headers.get("x-request-id", ""))
            )
            self._end(self._close)
            return
        passthrough.failed_mid_body(_body_error(failure))
        self._over = True
        self._let_go()
        self._producer = self._request = None
        self._channel.unregisterProducer()
        self._channel.transport.abortConnection()
        self._channel.relayDone(self, True, recorded=False)

    def _let_go(self) -> None:
        """
        Stop taking the request body: the client is read again.
        """
        body = self.body
        if body is not None:
            body.detach()
            body.unregisterProducer()

    def _end(self, close: bool) -> None:
        self._over = True
        if self.body is not None:
            self._let_go()
        # The exchange with the origin refers back to this relay: let go of
        # it, so that nothing waits for the cycle collector.
        self._producer = self._request = None
        self._channel.unregisterProducer()
        self._channel.relayDone(self, close)

    @property
    def status(self) -> CacheStatus:
        """
        The C{Cache-Status} the answer carried.
        """
        return self._status


def _body_error(failure: Failure) -> UpstreamError:
    """
    @return: the L{UpstreamError} of a body that broke off.
    """
    if failure.check(UpstreamError):
        return failure.value
    if failure.check(StalledBody):
        return UpstreamTimeout("origin stalled while sending the body")
    return BrokenBody(f"body cut short: {failure.getErrorMessage() or failure.type.__name__}")
