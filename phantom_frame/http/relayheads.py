"""
The heads of requests passed through at the byte level (see
L{phantom_frame.http.relay}): the fields forwarded to the origin, the start
of the client's answer made from the origin's head (both remembered for the
heads that come again), and the short error answers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from phantom_frame.proxy.client import Framing, ResponseHead
from phantom_frame.proxy.forwarded import forwarded_fields
from phantom_frame.proxy.status import CacheStatus

__all__ = ["error_head", "forwarded_fields", "relay_head", "relay_start"]


def error_head(code: int, text: str, status: CacheStatus, close: bool, request_id: str = "") -> List[bytes]:
    """
    @return: the short plain-text error answer the stock path writes (see
        L{phantom_frame.proxy.answers.send_error}), as bytes to send.
    """
    body = (text + "\n").encode("utf-8")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % (
        code, text.encode("ascii"), len(body))
    if status.header:
        head += b"Cache-Status: " + status.header + b"\r\n"
    if request_id:
        head += b"X-Request-Id: " + request_id.encode("latin-1") + b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    return [head, b"\r\n", body]


#: The client heads made of origin heads (see L{_relay_head}), by the
#: origin head's id, and how many are kept.
_relayed: Dict[int, Tuple[ResponseHead, Any, bytes, bool, bool, Dict[bytes, bytes]]] = {}
RELAYED_HEADS_KEPT = 512

#: How many C{Cache-Status} values a remembered head keeps its start with.
_STARTS_KEPT = 16


def _build_relay_head(head: ResponseHead, rules: Any) -> Tuple[ResponseHead, Any, bytes, bool, bool, Dict[bytes, bytes]]:
    """
    The part of a relayed answer's head that depends on the origin's head
    and the server's header C{rules} alone (remembered: the origin's heads
    are shared, see L{phantom_frame.proxy.heads.read_head}).

    @return: C{(head, rules, the status line and fields, whether they
        have a C{Date}, whether the body is re-chunked, the heads' starts
        with their C{Cache-Status} by its value)}: the starts are kept by
        L{ByteRelay.headReceived} when nothing comes between the fields
        and C{Cache-Status}.
    """
    framing = head.framing
    lines = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.phrase)]
    dated = False
    body = framing is not Framing.EMPTY
    dropped = rules.response_dropped if rules else ()
    for name, value in head.end_to_end():
        n = len(name)
        if n == 4 and name.lower() == b"date":
            dated = True
        elif n == 14 and body and name.lower() == b"content-length":
            continue
        if dropped and name.lower() in dropped:
            continue
        lines.append(name + b": " + value + b"\r\n")
    chunked = False
    if framing is Framing.LENGTH and not head.codings:
        lines.append(b"Content-Length: %d\r\n" % (head.length,))
    elif body:
        chunked = True
        lines.append(b"Transfer-Encoding: chunked\r\n")
    known = (head, rules, b"".join(lines), dated, chunked, {})
    if len(_relayed) >= RELAYED_HEADS_KEPT:
        _relayed.clear()
    _relayed[id(head)] = known
    return known


def relay_head(head: ResponseHead, rules: Any) -> Tuple[ResponseHead, Any, bytes, bool, bool, Dict[bytes, bytes]]:
    """
    @return: what L{_build_relay_head} makes of C{head} under C{rules},
        remembered for the heads that come again.
    """
    known = _relayed.get(id(head))
    if known is None or known[0] is not head or known[1] is not rules:
        known = _build_relay_head(head, rules)
    return known


def relay_start(known: Tuple[ResponseHead, Any, bytes, bool, bool, Dict[bytes, bytes]], header: bytes) -> bytes:
    """
    @param known: a L{relay_head}.
    @param header: the answer's C{Cache-Status} value (C{b""}: none).
    @return: the start of the answer's head, up to its C{Cache-Status}
        line, remembered per value.
    """
    starts = known[5]
    start = starts.get(header)
    if start is None:
        start = known[2] + b"Cache-Status: " + header + b"\r\n" if header else known[2]
        if len(starts) >= _STARTS_KEPT:
            starts.clear()
        starts[header] = start
    return start

