"""
The pre-serialised answers of stored entries that the channel's fast path
writes (see L{phantom_frame.http.channel}): a L{Wire} per entry and coding,
for 200, 304 and 206 answers.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from phantom_frame.cache.codec import decode_content
from phantom_frame.proxy.serve import entry_headers, needs_date, not_modified_headers


class Wire:
    """
    The pre-serialised parts of a stored entry's answer for one coding:
    everything but the per-request C{Age}, C{Cache-Status} (and C{Date} when
    the origin sent none), plus the body to send.
    """

    __slots__ = ("head", "body", "needs_date")

    def __init__(self, head: bytes, body: bytes, needs_date: bool) -> None:
        self.head = head
        self.body = body
        self.needs_date = needs_date


def _serialise(status: bytes, headers: List[Tuple[bytes, bytes]]) -> bytes:
    lines = [status]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines)


def build_wire(entry: Any, coding: str) -> Optional[Wire]:
    """
    Serialise the answer from C{entry} in C{coding}, with the headers the
    stock path sends (L{entry_headers}).

    @return: the wire form, or C{None} when the body is not in memory, or
        when C{coding} is another coding not made yet (the stock path makes
        it).
    """
    data = entry.body.data
    if data is None:
        return None
    if coding == "identity" and entry.coding != "identity":
        data = decode_content(data, entry.coding.encode("ascii"))
    elif coding != entry.coding:
        kept = entry.alternates.get(coding) if entry.alternates else None
        data = None if kept is None else kept.data
        if data is None:
            return None
    headers = entry_headers(entry, coding, None)
    headers.append((b"Content-Length", b"%d" % len(data)))
    head = _serialise(b" %d %s\r\n" % (entry.status, entry.phrase), headers)
    return Wire(head, data, needs_date(entry))


def build_not_modified(entry: Any, coding: str) -> Wire:
    """
    Serialise the 304 that answers a matching validator for C{entry} (the
    headers L{not_modified_headers} keeps).
    """
    headers = not_modified_headers(entry_headers(entry, coding, None))
    return Wire(_serialise(b" 304 Not Modified\r\n", headers), b"", needs_date(entry))


def build_partial(entry: Any, identity: Wire) -> Wire:
    """
    Serialise the constant part of a 206 from C{entry}: its identity
    headers without C{Content-Length} (C{Content-Range} and the length are
    added per request); the body is the identity body.
    """
    headers = entry_headers(entry, "identity", None)
    return Wire(_serialise(b" 206 Partial Content\r\n", headers), identity.body, needs_date(entry))
