"""
What a client may send on the HTTP/1.1 listeners, and what it gets past
that.

L{ClientLimits} holds the root keys C{max_request_body},
C{max_header_bytes}, C{client_header_timeout} and C{allowed_hosts};
L{parse_host} reads a C{Host} value (RFC 3986 C{host [":" port]});
L{content_length} reads a C{Content-Length}; L{BoundedChunkedDecoder}
decodes a chunked request body no bigger than a limit; L{error_answer} is
the short answer that precedes closing a connection on bad input.
L{phantom_frame.http.channel.FastHTTPChannel} applies them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, List, Optional, Pattern, Tuple

import attr
from twisted.web.http import _ChunkedTransferDecoder, _MalformedChunkedDataError

from phantom_frame.cache.globs import compile_glob

__all__ = [
    "BodyTooLarge",
    "BoundedChunkedDecoder",
    "ClientLimits",
    "DEFAULT_LIMITS",
    "REASONS",
    "content_length",
    "error_answer",
    "host_problem",
    "is_host_glob",
    "parse_host",
]

#: The biggest body length (declared, or of one chunk) that is read at all:
#: anything longer "does not fit" and is refused as malformed.
MAX_LENGTH_VALUE = 2**63 - 1

#: The reason phrase of each status this module's answers use.
REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    421: b"Misdirected Request",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
}

_REG_NAME = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
_PORT = re.compile(rb"[0-9]{1,5}")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")
_GLOB = re.compile(r"(?:[a-z0-9\-._~!$&'()+,;=*]|%[0-9a-f]{2})+|\[[0-9a-f:.*]+\]")


def parse_host(value: bytes) -> Optional[str]:
    """
    Read a C{Host} field value (or the authority of an absolute-form
    request target).

    @param value: C{host [":" port]}, C{host} being an RFC 3986 reg-name
        (IPv4 addresses included), or an IPv6 address in brackets; C{port} is
        1 to 5 decimal digits, at most 65535.
    @return: the host, lower-cased, without its port; L{None} when C{value}
        is not of that form (empty, spaces, C{/}, C{@}, a bad port...).
    """
    if value.startswith(b"["):
        end = value.find(b"]")
        if end < 0:
            return None
        literal, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return None
        if b"%" in literal:
            return None
        host = b"[" + literal + b"]"
    else:
        colon = value.find(b":")
        host, rest = (value, b"") if colon < 0 else (value[:colon], value[colon:])
        if not _REG_NAME.fullmatch(host):
            return None
    if rest:
        port = rest[1:]
        if rest[:1] != b":" or not _PORT.fullmatch(port) or int(port) > 65535:
            return None
    return host.decode("ascii").lower()


def is_host_glob(text: str) -> bool:
    """
    @param text: an C{allowed_hosts} item.
    @return: whether it is a host glob: a host name (or an IPv6 address in
        brackets) without a port, where C{*} matches any run of characters;
        in any case.
    """
    return _GLOB.fullmatch(text.lower()) is not None


def content_length(value: bytes) -> Optional[int]:
    """
    @param value: a C{Content-Length} field value, spaces around it
        already stripped.
    @return: the length it declares; L{None} when it is not plain decimal
        digits (no sign, no spaces, no list) or is over L{MAX_LENGTH_VALUE}.
    """
    if not value.isdigit():
        return None
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > 19:
        return None
    length = int(digits)
    return length if length <= MAX_LENGTH_VALUE else None


@attr.s(auto_attribs=True, frozen=True)
class ClientLimits:
    """
    The limits every HTTP/1.1 connection of a proxy listener is held to.

    @ivar max_request_body: the biggest request body, in bytes: a longer
        declared C{Content-Length} gets 413 before a byte of it is read, and
        a chunked body is cut (413) when it would grow past it.
    @ivar max_header_bytes: the biggest request head (request line and
        header lines, line ends not counted): past it 431, or 414 when the
        request line alone is longer.
    @ivar client_header_timeout: seconds a request head has to arrive whole,
        from the connection (for its first request) or the head's first byte
        (for the next ones); then 408 and the connection is closed.
    @ivar allowed_hosts: globs (C{"*.example.com"}, C{"example.com"}); when
        any are given, a request for another host (compared lower-cased,
        without its port) gets 421.
    """

    max_request_body: int = 64_000_000
    max_header_bytes: int = 16_000
    client_header_timeout: float = 30.0
    allowed_hosts: Tuple[str, ...] = attr.ib(default=(), converter=tuple)
    _allowed: List[Pattern[str]] = attr.ib(init=False, eq=False, repr=False, factory=list)

    def __attrs_post_init__(self) -> None:
        if self.max_request_body < 0:
            raise ValueError(f"max_request_body must be >= 0, not {self.max_request_body!r}")
        if self.max_header_bytes < 1:
            raise ValueError(f"max_header_bytes must be >= 1, not {self.max_header_bytes!r}")
        if not self.client_header_timeout > 0:
            raise ValueError(
                f"client_header_timeout must be > 0, not {self.client_header_timeout!r}"
            )
        bad = [glob for glob in self.allowed_hosts if not is_host_glob(glob)]
        if bad:
            raise ValueError(f"not host globs: {bad!r}")
        self._allowed.extend(compile_glob(glob.lower()) for glob in self.allowed_hosts)

    def host_allowed(self, host: Optional[str]) -> bool:
        """
        @param host: a host as L{parse_host} returns it, or L{None} for a
            request without one.
        @return: whether a request for C{host} may be answered: always when
            no C{allowed_hosts} are given, else when one of them matches.
        """
        if not self._allowed:
            return True
        return host is not None and any(glob.matches(host) for glob in self._allowed)


#: The limits of a site that gives none.
DEFAULT_LIMITS = ClientLimits()


def host_problem(
    values: List[bytes], version: bytes, target: bytes, limits: ClientLimits
) -> Optional[Tuple[int, str]]:
    """
    Check the host a request is for (RFC 9112 §3.2).

    @param values: its C{Host} field values.
    @param version: its HTTP version (C{Host} is required from HTTP/1.1).
    @param target: its request target; an absolute-form target's authority
        is the host it is for.
    @param limits: the C{allowed_hosts} to hold it to.
    @return: the status and detail of the refusal it deserves: 400 for no
        C{Host} (in HTTP/1.1), several, or an invalid one (or an invalid
        target authority); 421 for a host C{limits} do not allow. L{None}
        when it may go on.
    """
    if len(values) > 1:
        return 400, "more than one Host header"
    host = None
    if values:
        host = parse_host(values[0])
        if host is None:
            return 400, "the Host header is not a valid host[:port]"
    elif version == b"HTTP/1.1":
        return 400, "an HTTP/1.1 request needs a Host header"
    absolute = _ABSOLUTE.match(target)
    if absolute is not None:
        host = parse_host(absolute.group(1))
        if host is None:
            return 400, "the request target's host is not a valid host[:port]"
    if not limits.host_allowed(host):
        return 421, "this server does not answer for that host"
    return None


def error_answer(code: int, detail: str, date: Optional[bytes] = None) -> bytes:
    """
    @param code: a status in L{REASONS}.
    @param detail: what was wrong, for the body (ASCII).
    @param date: the C{Date} header value, if any.
    @return: a whole HTTP/1.1 answer: C{code}, a short C{text/plain} body
        naming the status and C{detail}, and C{Connection: close}.
    """
    reason = REASONS[code]
    body = reason + b": " + detail.encode("ascii", "replace") + b"\n"
    head = [
        b"HTTP/1.1 %d %s" % (code, reason),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    if date is not None:
        head.append(b"Date: " + date)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class BodyTooLarge(Exception):
    """
    A chunked request body would grow past its limit.
    """


class BoundedChunkedDecoder(_ChunkedTransferDecoder):
    """
    twisted.web's chunked decoder, stricter: a chunk size that does not fit
    in 63 bits, or a bare LF in the chunk framing, is malformed (rather than
    waited on), and a chunk whose size would take the body past C{limit}
    raises L{BodyTooLarge} before any byte of it is read.

    It overrides the decoder's per-state methods and reads its C{_buffer},
    C{_start} and C{length}, pinned by C{tests/http/test_limits.py}.
    """

    def __init__(
        self,
        limit: int,
        dataCallback: Callable[[bytes], None],
        finishCallback: Callable[[bytes], None],
    ) -> None:
        """
        @param limit: the most body bytes accepted.
        @param dataCallback: gets the body, piece by piece.
        @param finishCallback: gets what follows the body.
        """
        super().__init__(dataCallback, finishCallback)
        self.limit = limit
        self.declared = 0

    def _refuseBareLF(self) -> None:
        """
        @raise _MalformedChunkedDataError: when the line being read ends in
            a LF without a CR before it.
        """
        buffer = self._buffer
        at = buffer.find(b"\n", max(self._start, 0))
        if at == 0 or (at > 0 and buffer[at - 1] != 0x0D):
            raise _MalformedChunkedDataError("bare LF in chunked framing")

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        self._refuseBareLF()
        if not super()._dataReceived_CHUNK_LENGTH():
            return False
        if self.length > MAX_LENGTH_VALUE:
            raise _MalformedChunkedDataError("chunk size does not fit")
        self.declared += self.length
        if self.declared > self.limit:
            raise BodyTooLarge()
        return True

    def _dataReceived_CRLF(self) -> bool:
        if self._buffer[:1] not in (b"", b"\r"):
            raise _MalformedChunkedDataError("chunk did not end with CRLF")
        return super()._dataReceived_CRLF()

    def _dataReceived_TRAILER(self) -> bool:
        self._refuseBareLF()
        return super()._dataReceived_TRAILER()
