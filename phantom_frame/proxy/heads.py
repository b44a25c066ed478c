"""
Heads on the wire to an origin: L{request_head} (a request head as bytes,
from pairs or from L{Fields} serialised once), L{parse_head} (a response
head from bytes) and L{read_head}, which remembers the heads it parsed.
"""

from __future__ import annotations

import re
from typing import Dict, FrozenSet, List, Tuple, Union

import attr

from phantom_frame.proxy.client import Framing, Header, MalformedHead, ResponseHead
from phantom_frame.proxy.transfer import applied_codings

_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([1-9][0-9][0-9])(?: ([^\r\n\0]*))?(?=\r\n)")
#: A field line, from the CRLF before it: it cannot match inside a line.
_FIELD = re.compile(rb"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\0]*)(?=\r\n)")
_FOLD = re.compile(rb"\r\n[ \t]+")
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})

#: Response heads remembered, parsed (an origin sends the same heads again
#: and again, within the second of their C{Date}), and the longest
#: remembered. A L{ResponseHead} is shared by every answer that had its
#: bytes: its C{headers} are read, never changed.
PARSED_HEADS_KEPT = 512
PARSED_HEAD_BYTES = 4096
_parsed: Dict[bytes, ResponseHead] = {}


def _scan(headers: List[Header]) -> Tuple[bool, bool]:
    """
    @return: whether C{headers} name C{Host}, and whether they let the
        connection persist.
    @raise ValueError: for a framing field.
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
    return named_host, persistent


@attr.s(auto_attribs=True, frozen=True, slots=True)
class Fields:
    """
    Request header fields serialised and checked once, for the requests
    that send the same ones (see L{request_head}).

    @ivar data: the field lines, each with its CRLF.
    @ivar host: whether they name C{Host}.
    @ivar persistent: whether they let the connection persist (no
        C{Connection: close}).
    """

    data: bytes
    host: bool
    persistent: bool

    @classmethod
    def of(cls, headers: List[Header]) -> Fields:
        """
        @param headers: C{(name, value)} pairs, in order.
        @raise ValueError: see
            L{phantom_frame.proxy.client.IOriginClient.request}.
        """
        named, persistent = _scan(headers)
        data = b"\r\n".join(map(b": ".join, headers)) + b"\r\n" if headers else b""
        if data.count(b"\n") != len(headers) or data.count(b"\r") != len(headers):
            raise ValueError("CR, LF or a space where none may be: request line or field")
        return cls(data, named, persistent)

    def plus(self, name: bytes, value: bytes) -> Fields:
        """
        @return: these fields and one more, after them.
        @raise ValueError: see
            L{phantom_frame.proxy.client.IOriginClient.request}.
        """
        n = len(name)
        line = b"".join((name, b": ", value, b"\r\n"))
        if n == 4 or n == 10 or n == 14 or n == 17 or line.count(b"\r") != 1 or line.count(b"\n") != 1:
            more = Fields.of([(name, value)])
            return Fields(self.data + more.data, self.host or more.host, self.persistent and more.persistent)
        return Fields(self.data + line, self.host, self.persistent)


def request_head(
    method: bytes, target: bytes, host: bytes, headers: Union[List[Header], Fields], framing: bytes = b""
) -> Tuple[bytes, bool]:
    """
    @param host: the C{Host} to send unless C{headers} has one.
    @param headers: the fields, as pairs or L{Fields}.
    @param framing: the body's framing field line(s), with CRLF.
    @return: the request head, and whether it lets the connection persist
        (no C{Connection: close}).
    @raise ValueError: see
        L{phantom_frame.proxy.client.IOriginClient.request}.
    """
    if headers.__class__ is Fields:
        line = b"".join((method, b" ", target, b" HTTP/1.1\r\n"))
        if line.count(b" ") != 2 or line.count(b"\r") != 1 or line.count(b"\n") != 1:
            raise ValueError("CR, LF or a space where none may be: request line")
        if headers.host:
            return b"".join((line, headers.data, framing, b"\r\n")), headers.persistent
        if b"\r" in host or b"\n" in host:
            raise ValueError("CR or LF where none may be: Host")
        return b"".join((line, b"Host: ", host, b"\r\n", headers.data, framing, b"\r\n")), headers.persistent
    named_host, persistent = _scan(headers)
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


def read_head(data: bytes, method: bytes) -> ResponseHead:
    """
    L{parse_head}, remembering the heads parsed: an origin sends the same
    heads again and again (within the second of their C{Date}).

    The L{ResponseHead} given is shared by every answer whose head had the
    same bytes: its C{headers} are read, never changed.

    @raise MalformedHead: as L{parse_head}.
    """
    if method == b"HEAD":
        return parse_head(data, method)
    head = _parsed.get(data)
    if head is None:
        head = parse_head(data, method)
        if len(data) <= PARSED_HEAD_BYTES:
            if len(_parsed) >= PARSED_HEADS_KEPT:
                _parsed.clear()
            _parsed[data] = head
    return head
