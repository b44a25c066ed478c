"""
The wire to an origin: L{request_head} (a request head as bytes),
L{parse_head} (a response head from bytes) and L{OriginConnection}, one
connection parsing its answers and delivering them to the exchange in
flight, with back-pressure.
"""

from __future__ import annotations

import re
from typing import Any, Callable, FrozenSet, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from phantom_frame.proxy.optimistic import ENABLED, send_now
from phantom_frame.proxy.client import (
    Framing,
    Header,
    LengthMismatch,
    MalformedBody,
    MalformedHead,
    NoAnswer,
    OriginError,
    OriginUnreachable,
    ResponseHead,
    TruncatedBody,
)
from phantom_frame.proxy.transfer import applied_codings

#: The largest response head (status line and fields) accepted, in bytes;
#: trailers of a chunked body share the bound.
HEAD_LIMIT = 65536

#: The longest chunk-size line (size and extensions) accepted, in bytes.
CHUNK_LINE_LIMIT = 4096

_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([1-9][0-9][0-9])(?: ([^\r\n\0]*))?(?=\r\n)")
#: A field line, from the CRLF before it: it cannot match inside a line.
_FIELD = re.compile(rb"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\0]*)(?=\r\n)")
_FOLD = re.compile(rb"\r\n[ \t]+")
_HEXDIG = b"0123456789abcdefABCDEF"
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def request_head(
    method: bytes, target: bytes, host: bytes, headers: List[Header], framing: bytes = b""
) -> Tuple[bytes, bool]:
    """
    @param host: the C{Host} to send unless C{headers} has one.
    @param framing: the body's framing field line(s), with CRLF.
    @return: the request head, and whether it lets the connection persist
        (no C{Connection: close}).
    @raise ValueError: see
        L{phantom_frame.proxy.client.IOriginClient.request}.
    """
    named_host = False
    persistent = True
    for name, value in headers:
        n = len(name)
        if n == 4 or n == 10 or n == 14 or n == 17:
            lower = name.lower()
            if lower == b"host":
                named_host = True
            elif lower == b"connection":
                if b"close" in value.lower():
                    persistent = False
            elif lower in _FRAMING_NAMES:
                raise ValueError(f"the client frames the body itself: {name!r}")
    lines = len(headers) + 2 + framing.count(b"\n")
    fields = b"\r\n".join(map(b": ".join, headers)) + b"\r\n" if headers else b""
    if named_host:
        data = b"".join((method, b" ", target, b" HTTP/1.1\r\n", fields, framing, b"\r\n"))
    else:
        lines += 1
        data = b"".join(
            (method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n", fields, framing, b"\r\n")
        )
    if data.count(b"\n") != lines or data.count(b"\r") != lines or b" " in target:
        raise ValueError("CR, LF or a space where none may be: request line or field")
    return data, persistent


def parse_head(data: bytes, method: bytes) -> ResponseHead:
    """
    Parse a response head.

    @param data: the head up to the empty line that ends it (its last line's
        CRLF included).
    @param method: the request's method (an answer to C{HEAD} has no body).
    @raise MalformedHead: when C{data} is not an HTTP/1.x response head.
    """
    status_line = _STATUS.match(data)
    if status_line is None or not data.endswith(b"\r\n"):
        raise MalformedHead(f"not an HTTP/1.x status line: {data[:80]!r}")
    start = status_line.end()
    pairs = _FIELD.findall(data, start)
    if len(pairs) + 1 != data.count(b"\n"):
        if (b"\r\n " in data or b"\r\n\t" in data) and data[start + 2:start + 3] not in (b" ", b"\t"):
            # obs-fold: RFC 9112 §5.2 has a user agent read it as a space.
            return parse_head(_FOLD.sub(b" ", data), method)
        raise MalformedHead("a line that is no field, or a bare CR, LF or NUL")
    if b" \r\n" in data or b"\t\r\n" in data:
        pairs = [(name, value.rstrip(b" \t")) for name, value in pairs]
    length = None
    coding = None
    codings: Tuple[str, ...] = ()
    tokens: FrozenSet[bytes] = frozenset()
    for name, value in pairs:
        n = len(name)
        if n != 10 and n != 14 and n != 17:
            continue
        lower = name.lower()
        if lower == b"content-length":
            for item in value.split(b","):
                item = item.strip(b" \t")
                if not item.isdigit() or len(item) > 18:
                    raise MalformedHead(f"Content-Length not a decimal length: {value[:40]!r}")
                if length is not None and int(item) != length:
                    raise MalformedHead("conflicting Content-Length values")
                length = int(item)
        elif lower == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
        elif lower == b"connection":
            tokens = tokens | {t.strip(b" \t").lower() for t in value.split(b",")} - {b""}
    status = int(status_line.group(2))
    length_sent = False
    if status < 200 or status == 204 or status == 304 or method == b"HEAD":
        if status == 101:
            raise MalformedHead("101 Switching Protocols to a request that did not ask")
        framing = Framing.EMPTY
    elif coding is not None:
        if coding.strip(b" \t").lower() != b"chunked":
            try:
                chunked, codings = applied_codings(coding)
            except ValueError as e:
                raise MalformedHead(str(e))
        else:
            chunked, codings = True, ()
        framing = Framing.CHUNKED if chunked else Framing.CLOSE
        length_sent = length is not None
        length = None
    elif length is not None:
        framing = Framing.LENGTH
    else:
        framing = Framing.CLOSE
    if framing is Framing.CLOSE or length_sent:
        # Both framings at once smell of smuggling (RFC 9112 §6.3): this
        # answer is read as chunked, and the connection not trusted again.
        keep_alive = False
    elif status_line.group(1) == b"0":
        keep_alive = b"keep-alive" in tokens
    else:
        keep_alive = b"close" not in tokens
    return ResponseHead(
        data[:8], status, status_line.group(3) or b"", pairs, framing, length, tokens, keep_alive, codings
    )


# Connection states.
_IDLE, _HEAD, _LENGTH, _CLOSE, _SIZE, _DATA, _DATA_END, _TRAILER = range(8)


class OriginConnection(Protocol):
    """
    One connection to an origin: sends a request head, parses the answer
    and delivers it to the current exchange, one exchange at a time.

    The exchange (L{phantom_frame.proxy.pool}) provides C{method},
    C{receiver}, C{answered(head)}, C{progress()}, C{completed(connection,
    reusable)} and C{lost(connection, error, untouched)}.

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
            head = parse_head(data[:end + 2], ex.method)
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
            self._remaining = head.length
            self._state = _LENGTH
        elif framing is Framing.CHUNKED:
            self._state = _SIZE
        elif framing is Framing.CLOSE:
            self._state = _CLOSE
        ex.answered(head)
        if self.exchange is ex and (
            framing is Framing.EMPTY or (framing is Framing.LENGTH and self._remaining == 0)
        ):
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
