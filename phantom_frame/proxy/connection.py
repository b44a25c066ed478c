"""
The wire to an origin: L{OriginConnection}, one connection parsing its
answers and delivering them to the exchange in flight, with back-pressure.
The heads themselves are L{phantom_frame.proxy.heads}' (L{request_head} and
L{parse_head} are named here too).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from phantom_frame.proxy.optimistic import ENABLED, send_now
from phantom_frame.proxy.client import (
    Framing,
    LengthMismatch,
    MalformedBody,
    MalformedHead,
    NoAnswer,
    OriginError,
    OriginUnreachable,
    ResponseHead,
    TruncatedBody,
)
from phantom_frame.proxy.heads import parse_head, read_head, request_head

__all__ = ["CHUNK_LINE_LIMIT", "HEAD_LIMIT", "OriginConnection", "parse_head", "request_head"]

#: The largest response head (status line and fields) accepted, in bytes;
#: trailers of a chunked body share the bound.
HEAD_LIMIT = 65536

#: The longest chunk-size line (size and extensions) accepted, in bytes.
CHUNK_LINE_LIMIT = 4096

_HEXDIG = b"0123456789abcdefABCDEF"


# Connection states.
_IDLE, _HEAD, _LENGTH, _CLOSE, _SIZE, _DATA, _DATA_END, _TRAILER = range(8)


class OriginConnection(Protocol):
    """
    One connection to an origin: sends a request head, parses the answer
    and delivers it to the current exchange, one exchange at a time.

    The exchange (L{phantom_frame.proxy.pool}) provides C{method},
    C{receiver}, C{answered(head, waits)} (C{waits}: whether more of the
    answer is to come), C{progress()}, C{completed(connection, reusable)}
    and C{lost(connection, error, untouched)}.

    @ivar served: answers completed on this connection.
    @ivar route: set by the pool: where the connection goes back to.
    """

    route: Any = None

    def __init__(self, forget: Callable[[OriginConnection], None]) -> None:
        """
        @param forget: called when the connection is lost or turns unusable
            while no exchange uses it (it may be idle in a pool).
        """
        self._forget = forget
        self.exchange: Any = None
        self.served = 0
        self._state = _IDLE
        self._buffer = b""
        self._scanned = 0
        self._head: Optional[ResponseHead] = None
        self._remaining = 0
        self._trailer = 0
        self._started = False
        self._paused = False
        self._parsing = False
        self._lost: Optional[Failure] = None
        self._waiters: Optional[list] = None

    def send(self, exchange: Any, data: bytes) -> None:
        """
        Start C{exchange}: write its request head (and a body sent whole).
        """
        self.exchange = exchange
        self._state = _HEAD
        self._started = False
        transport = self.transport
        if ENABLED and type(transport) is tcp.Client and not transport.TLS:
            # Sent at once rather than on the reactor's next pass.
            send_now(transport, data)
        else:
            transport.write(data)

    def close(self) -> None:
        """
        Close the connection cleanly (nothing is in flight on it).
        """
        self.exchange = None
        if self.connected:
            self.transport.loseConnection()

    def abort(self) -> None:
        """
        Drop the connection at once, whatever is in flight.
        """
        self.exchange = None
        self._buffer = b""
        if self.connected:
            self.transport.abortConnection()

    def pause(self) -> None:
        """
        Stop reading the origin (the consumer of the body is full).
        """
        if not self._paused:
            self._paused = True
            if self.connected:
                self.transport.pauseProducing()

    def resume(self) -> None:
        """
        Read again, first delivering what came in while paused.
        """
        if not self._paused:
            return
        self._paused = False
        if self.connected:
            self.transport.resumeProducing()
        if self._parsing:
            return
        data, self._buffer = self._buffer, b""
        if data:
            self._parse(data)
        if self._lost is not None and self.exchange is not None and not self._paused:
            self._end(self._lost)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data} for the exchange in flight (held while paused).
        """
        if self.exchange is None:
            # Bytes nobody asked for: the connection is out of step.
            self._forget(self)
            self.transport.loseConnection()
            return
        self._started = True
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if self._paused or self._parsing:
            self._buffer = data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        ex = self.exchange
        self._parsing = True
        try:
            while data and self.exchange is ex and not self._paused:
                state = self._state
                if state == _LENGTH:
                    data = self._length(data)
                elif state == _HEAD:
                    data = self._head_data(data)
                elif state == _CLOSE:
                    ex.progress()
                    ex.receiver.bodyReceived(data)
                    data = b""
                else:
                    data = self._chunked(data)
        except Exception:
            self._fail(Failure())
            return
        finally:
            self._parsing = False
        if data and self.exchange is ex:
            # Paused with bytes left (ahead of any that came meanwhile).
            self._buffer = data + self._buffer
        elif self._buffer and self.exchange is not None and self.exchange is not ex and not self._paused:
            # The answer of a request sent while this one completed.
            pending, self._buffer = self._buffer, b""
            self._parse(pending)

    def _head_data(self, data: bytes) -> bytes:
        end = data.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0 or end > HEAD_LIMIT:
            if len(data) > HEAD_LIMIT:
                self._fail(MalformedHead(f"response head over {HEAD_LIMIT} bytes"))
            else:
                self._scanned = len(data)
                self._buffer = data
            return b""
        self._scanned = 0
        ex = self.exchange
        try:
            head = read_head(data[:end + 2], ex.method)
        except MalformedHead as e:
            self._fail(e)
            return b""
        rest = data[end + 4:]
        if head.status < 200:
            ex.receiver.interimReceived(head)
            return rest
        self._head = head
        framing = head.framing
        if framing is Framing.LENGTH:
            length = self._remaining = head.length
            self._state = _LENGTH
            # The whole body came with the head: nothing to wait for.
            ex.answered(head, len(rest) < length)
            if not length and self.exchange is ex:
                self._complete(rest)
                return b""
            return rest
        if framing is Framing.CHUNKED:
            self._state = _SIZE
        elif framing is Framing.CLOSE:
            self._state = _CLOSE
        ex.answered(head, framing is not Framing.EMPTY)
        if framing is Framing.EMPTY and self.exchange is ex:
            self._complete(rest)
            return b""
        return rest

    def _length(self, data: bytes) -> bytes:
        ex = self.exchange
        n = len(data)
        remaining = self._remaining
        if n < remaining:
            self._remaining = remaining - n
            ex.progress()
            ex.receiver.bodyReceived(data)
            return b""
        self._remaining = 0
        ex.receiver.bodyReceived(data if n == remaining else data[:remaining])
        if self.exchange is ex:
            self._complete(data[remaining:])
        return b""

    def _chunked(self, data: bytes) -> bytes:
        ex = self.exchange
        state = self._state
        pos = 0
        n = len(data)
        while pos < n:
            if state == _DATA:
                end = pos + self._remaining
                ex.progress()
                if end > n:
                    self._remaining = end - n
                    ex.receiver.bodyReceived(data[pos:] if pos else data)
                    return b""
                state = self._state = _DATA_END
                ex.receiver.bodyReceived(data[pos:end])
                pos = end
                if self.exchange is not ex or self._paused:
                    return data[pos:]
            elif state == _DATA_END:
                if n - pos < 2:
                    self._buffer = data[pos:]
                    return b""
                if data[pos:pos + 2] != b"\r\n":
                    self._fail(MalformedBody("a chunk does not end with CRLF"))
                    return b""
                pos += 2
                state = self._state = _SIZE
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0 or eol - pos > CHUNK_LINE_LIMIT:
                    if n - pos > CHUNK_LINE_LIMIT:
                        self._fail(MalformedBody("a chunk-size or trailer line too long"))
                    else:
                        self._buffer = data[pos:]
                    return b""
                line = data[pos:eol]
                pos = eol + 2
                if state == _TRAILER:
                    if not line:
                        self._complete(data[pos:])
                        return b""
                    self._trailer += len(line) + 2
                    if self._trailer > HEAD_LIMIT:
                        self._fail(MalformedBody(f"trailers over {HEAD_LIMIT} bytes"))
                        return b""
                    continue
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 15 or size.translate(None, _HEXDIG):
                    self._fail(MalformedBody(f"not a chunk size: {line[:40]!r}"))
                    return b""
                self._remaining = int(size, 16)
                state = self._state = _DATA if self._remaining else _TRAILER
        return b""

    def _complete(self, rest: bytes) -> None:
        ex = self.exchange
        head = self._head
        self.exchange = None
        self._head = None
        self._state = _IDLE
        self._buffer = b""
        self._trailer = 0
        self._lost = None
        if self._paused:
            self._paused = False
            if self.connected:
                self.transport.resumeProducing()
        self.served += 1
        ex.completed(self, head.keep_alive and not rest and self.connected)

    def _fail(self, error: Any) -> None:
        ex = self.exchange
        self.abort()
        if ex is not None:
            ex.lost(self, error, False)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Leave the pool if idle; else end the exchange: a close-delimited
        body completes on a clean close, anything else broke.
        """
        self.connected = 0
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.callback(None)
        if self.exchange is None:
            self._forget(self)
        elif self._buffer and self._paused:
            # The rest is here: deliver it when the consumer resumes.
            self._lost = reason
        else:
            self._end(reason)

    def _end(self, reason: Failure) -> None:
        state = self._state
        if state == _CLOSE and reason.check(ConnectionDone):
            self._complete(b"")
            return
        ex = self.exchange
        self.exchange = None
        self._buffer = b""
        untouched = False
        if state == _HEAD:
            untouched = not self._started
            if untouched and type(reason.value).__module__.startswith("OpenSSL"):
                error: OriginError = OriginUnreachable(f"TLS: {reason.getErrorMessage()}")
            else:
                error = NoAnswer(
                    "closed before answering" if untouched else "closed inside the head"
                )
        elif state == _LENGTH:
            length = self._head.length
            error = LengthMismatch(length, length - self._remaining)
        else:
            error = TruncatedBody(f"closed inside the body: {reason.getErrorMessage()}")
        ex.lost(self, error, untouched)

    def whenLost(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing once the connection is lost.
        """
        if not self.connected:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        return d
