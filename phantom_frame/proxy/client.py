"""
A lean HTTP/1.1 client for the proxying path: the request head is built as
bytes and the answer parsed as bytes (no twisted.web C{Headers}, C{Request}
or C{Response}); bodies stream both ways with back-pressure.

L{IOriginClient} is the face, L{IResponseReceiver} what it delivers to and
L{RequestBody} a body streamed to it;
L{phantom_frame.proxy.connection} holds the wire (heads out and in, one
connection's parser) and L{phantom_frame.proxy.pool.OriginPool} is the
pooling client.
"""

from __future__ import annotations

import enum
from typing import Any, FrozenSet, List, Optional, Tuple

import attr
from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import Attribute, Interface, implementer

from phantom_frame.proxy.transfer import HOP_BY_HOP, HOP_BY_HOP_AND_LENGTH

Header = Tuple[bytes, bytes]


class OriginError(Exception):
    """
    An exchange with an origin failed.
    """


class OriginUnreachable(OriginError):
    """
    No connection: refused, unresolvable, unreachable, or the TLS handshake
    failed. A gateway answers 502.
    """


class OriginTimeout(OriginError):
    """
    The origin did not connect and send a final head within the timeout. A
    gateway answers 504.
    """


class BadAnswer(OriginError):
    """
    What came back before a final head was no HTTP/1.x answer. A gateway
    answers 502.
    """


class NoAnswer(BadAnswer):
    """
    The connection closed before a complete final head.
    """


class MalformedHead(BadAnswer):
    """
    The head is not HTTP/1.x: status line, field syntax, framing,
    C{Content-Length}, or over
    L{phantom_frame.proxy.connection.HEAD_LIMIT}.
    """


class BrokenAnswer(OriginError):
    """
    The answer broke after its final head was delivered: a gateway that sent
    the status on can only cut its own answer short.
    """


class TruncatedBody(BrokenAnswer):
    """
    The connection closed inside a chunked body, or was reset inside a
    close-delimited one.
    """


class LengthMismatch(BrokenAnswer):
    """
    The connection closed before C{Content-Length} bytes of body came.

    @ivar expected: the announced length.
    @ivar received: the bytes that came.
    """

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"closed after {received} of {expected} body bytes")
        self.expected = expected
        self.received = received


class MalformedBody(BrokenAnswer):
    """
    The chunked framing of the body is wrong (size line, chunk end, trailer).
    """


class StalledBody(BrokenAnswer):
    """
    No body bytes came for the timeout while the consumer was not pausing.
    """


class Framing(enum.Enum):
    """
    How a response body is delimited (RFC 9112 §6.3).
    """

    #: No body: 1xx, 204, 304, or an answer to C{HEAD}.
    EMPTY = "empty"
    #: C{Content-Length} bytes.
    LENGTH = "length"
    #: C{Transfer-Encoding: chunked}.
    CHUNKED = "chunked"
    #: Everything until the origin closes the connection.
    CLOSE = "close"


@attr.s(auto_attribs=True, frozen=True, slots=True)
class ResponseHead:
    """
    A response head as the origin sent it.

    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar status: the status code.
    @ivar phrase: the reason phrase (possibly empty).
    @ivar headers: C{(name, value)} pairs in order, names as sent, values
        without surrounding whitespace, repeated fields kept; hop-by-hop ones
        included (see L{end_to_end}).
    @ivar framing: how the body is delimited.
    @ivar length: the C{Content-Length}, also when no body follows (an answer
        to C{HEAD}, a 304); C{None} when absent or overridden by
        C{Transfer-Encoding}.
    @ivar connection: the lower-cased tokens of C{Connection}: fields named
        there are hop-by-hop.
    @ivar keep_alive: whether the origin lets the connection carry another
        request after this answer.
    @ivar codings: the transfer codings other than C{chunked} applied to the
        body, in order (see L{phantom_frame.proxy.transfer.Inflater}): the
        body is delivered as it came, still so coded.
    """

    version: bytes
    status: int
    phrase: bytes
    headers: List[Header]
    framing: Framing
    length: Optional[int]
    connection: FrozenSet[bytes]
    keep_alive: bool
    codings: Tuple[str, ...] = ()

    def values(self, name: bytes) -> List[bytes]:
        """
        @param name: a lower-case field name.
        @return: the values of every field so named, in order.
        """
        return [v for n, v in self.headers if n.lower() == name]

    def end_to_end(self, length: bool = True) -> List[Header]:
        """
        @return: the fields a proxy passes on: without hop-by-hop fields and
            those named in C{Connection} (nor C{Content-Length}, unless C{length}).
        """
        drop = HOP_BY_HOP if length else HOP_BY_HOP_AND_LENGTH
        drop = drop | self.connection if self.connection else drop
        return [(n, v) for n, v in self.headers if n.lower() not in drop]


class IResponseReceiver(Interface):
    """
    Where an L{IOriginClient} delivers an answer, in order: interim heads,
    the final head, then body chunks. The end (clean or not) is the request's
    L{Deferred}.
    """

    def interimReceived(head: ResponseHead) -> None:
        """
        An interim answer (1xx other than 101: C{100 Continue},
        C{103 Early Hints}), before the final head.
        """

    def headReceived(head: ResponseHead, producer: Any) -> None:
        """
        The final head.

        @param producer: an L{IPushProducer} for the body: pausing it stops
            reading the origin connection (the body timeout does not run
            meanwhile); stopping it abandons the answer (the connection is
            closed, the request's L{Deferred} fails with C{CancelledError}).
        """

    def bodyReceived(data: bytes) -> None:
        """
        The next bytes of the body (de-chunked), never empty.
        """


class IOriginClient(Interface):
    """
    Sends requests to one origin, over kept-alive connections.
    """

    def request(
        method: bytes,
        target: bytes,
        headers: List[Header],
        receiver: IResponseReceiver,
        body: Any = None,
    ) -> Any:
        """
        Send a request and deliver its answer to C{receiver}.

        @param method: the method, e.g. C{b"GET"}.
        @param target: the request target: path and query.
        @param headers: the fields to send, in order; C{Host} is added (the
            origin's authority) unless named. C{Content-Length} and
            C{Transfer-Encoding} may not be: the client frames the body.
        @param body: C{None} for no body, C{bytes} for a body known in full
            (sent with C{Content-Length}; C{b""} sends C{Content-Length: 0}),
            or a L{RequestBody} streamed as its bytes arrive.
        @return: a L{Deferred} firing with the final L{ResponseHead} once the
            whole answer was delivered, or failing with an L{OriginError}
            (L{OriginUnreachable}, L{OriginTimeout}, L{BadAnswer} before the
            final head, L{BrokenAnswer} after it), or with what the receiver
            raised. Cancelling it closes the connection.
        @raise ValueError: for a field with CR or LF, or a framing field.
        """


class IRelayReceiver(IResponseReceiver):
    """
    An L{IResponseReceiver} told of the end of the answer itself (see
    L{IRelayingClient.relay}): no L{Deferred} per request.
    """

    timing = Attribute(
        """C{None}, or what a timing client set before the request went out:
        the receiver calls its C{timed(seconds, failed)} once, with the seconds
        since the request was made, when the final head came (C{failed}
        false) or the request failed or was abandoned before it."""
    )

    def responseDone(head: ResponseHead) -> None:
        """
        The whole answer was delivered; C{head} is its final head.
        """

    def responseFailed(failure: Any) -> None:
        """
        The request failed: a L{Failure} of an L{OriginError} (as
        L{IOriginClient.request}'s L{Deferred} would fail), of what the
        receiver raised, or of C{CancelledError} once the request was
        cancelled or its body producer stopped.
        """


class IRelayingClient(IOriginClient):
    """
    An L{IOriginClient} that can also tell the end of an answer to its
    receiver, for callers that pass answers through at a high rate.
    """

    def relay(
        method: bytes,
        target: bytes,
        headers: List[Header],
        receiver: IRelayReceiver,
        body: Any = None,
    ) -> Any:
        """
        As L{IOriginClient.request}, but the end is told to C{receiver}:
        exactly one of C{responseDone} and C{responseFailed} is called
        (possibly before this returns).

        @return: an object whose C{cancel()} abandons the request (closing
            its connection); the receiver is then told C{responseFailed}.
        @raise ValueError: as L{IOriginClient.request}.
        """


@implementer(IConsumer, IPushProducer)
class RequestBody:
    """
    A request body sent as it arrives. The caller writes into it and
    finishes it (it is an L{IConsumer}: the push producer the caller
    registers, e.g. its client connection, is paused while the origin
    connection takes no more, or while C{limit} bytes wait for a
    connection); the client frames it with C{Content-Length} when C{length}
    is known, chunked otherwise. One body serves one request.

    @ivar sent: bytes handed to an origin connection so far.
    """

    def __init__(self, length: Optional[int] = None, limit: int = 65536) -> None:
        """
        @param length: the body's length, or C{None} when unknown.
        @param limit: bytes held before a connection is there, past which
            the caller's producer is paused.
        """
        if length is not None and length < 0:
            raise ValueError(f"a negative body length: {length}")
        self.length = length
        self.sent = 0
        self.finished = False
        self._limit = limit
        self._pending: List[bytes] = []
        self._size = 0
        self._written = 0
        self._producer: Any = None
        self._full = False
        self._held = False
        self._transport: Any = None
        self._exchange: Any = None
        self._claimed = False
        self._over = False

    def framing(self) -> bytes:
        """
        Claim the body for one request.

        @return: its framing field line.
        @raise ValueError: when a request already has it.
        """
        if self._claimed:
            raise ValueError("a request body serves one request")
        self._claimed = True
        if self.length is None:
            return b"Transfer-Encoding: chunked\r\n"
        return b"Content-Length: %d\r\n" % (self.length,)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Have C{producer} (an L{IPushProducer}) paused while the origin takes
        no more.
        """
        if not streaming:
            raise TypeError("a request body takes a push producer")
        self._producer = producer
        self._hold()

    def unregisterProducer(self) -> None:
        """
        Forget the producer.
        """
        self._producer = None
        self._held = False

    def write(self, data: bytes) -> None:
        """
        Send the next bytes of the body (dropped once the exchange is over).

        @raise ValueError: after L{finish}, or past C{length}.
        """
        if self.finished:
            raise ValueError("write after finish")
        self._written += len(data)
        if self.length is not None and self._written > self.length:
            raise ValueError(f"{self._written} bytes written for a body of {self.length}")
        if self._over or not data:
            return
        if self._transport is None:
            self._pending.append(data)
            self._size += len(data)
            if self._size > self._limit:
                self._full = True
                self._hold()
        else:
            self._send(data)

    def finish(self) -> None:
        """
        The body is complete.

        @raise ValueError: when fewer than C{length} bytes were written.
        """
        if self.length is not None and self._written != self.length:
            raise ValueError(f"{self._written} bytes written for a body of {self.length}")
        self.finished = True
        if self._transport is not None and not self._over:
            self._end()

    def pauseProducing(self) -> None:
        """
        The origin connection takes no more for now.
        """
        self._full = True
        self._hold()

    def resumeProducing(self) -> None:
        """
        The origin connection takes more.
        """
        self._full = False
        self._release()

    def stopProducing(self) -> None:
        """
        The origin connection is gone (the exchange decides what follows).
        """
        self._transport = None

    def attach(self, exchange: Any, transport: Any) -> None:
        """
        Send the body on C{transport} for C{exchange} (which has C{sent} and
        C{progress()}): what waits at once, the rest as it comes.
        """
        self._exchange = exchange
        self._transport = transport
        self._full = False
        transport.registerProducer(self, True)
        pending, self._pending, self._size = self._pending, [], 0
        for data in pending:
            self._send(data)
        if self.finished:
            self._end()
        else:
            self._release()

    def _send(self, data: bytes) -> None:
        self.sent += len(data)
        if self.length is None:
            self._transport.writeSequence([b"%x\r\n" % (len(data),), data, b"\r\n"])
        else:
            self._transport.write(data)
        self._exchange.progress()

    def _end(self) -> None:
        if self.length is None:
            self._transport.write(b"0\r\n\r\n")
        self._exchange.sent = True
        self.detach(over=False)

    def detach(self, over: bool = True) -> None:
        """
        Stop sending: the body is sent, or (C{over}) the exchange is over and
        later writes are dropped.
        """
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.unregisterProducer()
        self._exchange = None
        if over:
            self._over = True
            self._pending, self._size, self._full = [], 0, False
        self._release()

    def _hold(self) -> None:
        if self._full and not self._held and self._producer is not None and not self._over:
            self._held = True
            self._producer.pauseProducing()

    def _release(self) -> None:
        if self._held and not self._full and self._producer is not None:
            self._held = False
            self._producer.resumeProducing()


@implementer(IResponseReceiver)
class Collector:
    """
    Keeps an answer in memory: for low-rate callers, tests and benchmarks.

    @ivar interims: the interim heads, in order.
    @ivar head: the final head, once it came.
    @ivar chunks: the body as it came.
    """

    def __init__(self) -> None:
        self.interims: List[ResponseHead] = []
        self.head: Optional[ResponseHead] = None
        self.chunks: List[bytes] = []

    def interimReceived(self, head: ResponseHead) -> None:
        """
        Keep an interim head.
        """
        self.interims.append(head)

    def headReceived(self, head: ResponseHead, producer: Any) -> None:
        """
        Keep the final head.
        """
        self.head = head

    def bodyReceived(self, data: bytes) -> None:
        """
        Keep body bytes.
        """
        self.chunks.append(data)

    def body(self) -> bytes:
        """
        @return: the body received so far.
        """
        return b"".join(self.chunks)
