"""
The pre-serialised answers of stored entries that the channel's fast path
writes (see L{phantom_frame.http.channel}): a L{Wire} per entry and coding,
for 200, 304 and 206 answers.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from phantom_frame.cache.codec import decode_content
from phantom_frame.proxy.answers import http_date
from phantom_frame.proxy.negotiation import Full, NotModified, Partial
from phantom_frame.proxy.serve import dated_entry_headers, entry_headers, needs_date, not_modified_headers


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
    parts = [status]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)


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
    headers, dated = dated_entry_headers(entry, coding, None)
    headers.append((b"Content-Length", b"%d" % len(data)))
    head = _serialise(b" %d %s\r\n" % (entry.status, entry.phrase), headers)
    return Wire(head, data, not dated)


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


def wire_answer(entry: Any, answer: Any, keep: bool = True):
    """
    The pre-serialised parts of an answer from C{entry} (made once, and
    kept in C{entry.wire} by coding and kind).

    @param answer: the L{phantom_frame.proxy.negotiation.EntryAnswer}.
    @param keep: whether an entry that keeps no pre-serialised head yet
        keeps what is made, for the answers that follow (not for a fill's
        own answer: an entry never asked for again holds none, which its
        size does not count); one that keeps some keeps this one too.
    @return: C{(status code, wire, per-request headers, body)}, or C{None}
        when it cannot be given so (its body is not in memory, or it is not
        a 200, 206 or 304 from a stored body): the stock path gives it.
    """
    wires = entry.wire
    if wires is None:
        wires = {}
        if keep:
            entry.wire = wires
    kind = type(answer)
    if kind is Full:
        coding = answer.coding
        wire = wires.get(coding)
        if wire is None:
            wire = build_wire(entry, coding)
            if wire is None:
                return None
            wires[coding] = wire
        return entry.status, wire, b"", wire.body
    if kind is NotModified:
        slot = ("304", answer.coding)
        wire = wires.get(slot)
        if wire is None:
            if entry.body.data is None:
                return None
            wire = wires[slot] = build_not_modified(entry, answer.coding)
        return 304, wire, b"", b""
    if kind is Partial:
        wire = wires.get("206")
        if wire is None:
            whole = wires.get("identity") or build_wire(entry, "identity")
            if whole is None:
                return None
            wires["identity"] = whole
            wire = wires["206"] = build_partial(entry, whole)
        first, last = answer.first, answer.last
        body = wire.body
        extra = b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (
            first, last, len(body), last - first + 1)
        return 206, wire, extra, body[first : last + 1]
    return None


def answer_parts(
    chunks: Tuple[int, Wire, bytes, bytes], age: int, status: bytes, rid: str, now: float, close: bool,
    bodied: bool,
) -> List[bytes]:
    """
    @param chunks: what L{wire_answer} gave.
    @param age: the answer's C{Age}.
    @param status: its C{Cache-Status} value (empty: none).
    @param rid: its C{X-Request-Id}.
    @param now: the time, for a C{Date} when the origin sent none.
    @param close: whether it says C{Connection: close}.
    @param bodied: whether the body is sent (not for a HEAD).
    @return: the bytes of the whole answer, to send in one go.
    """
    wire = chunks[1]
    if status:
        tail = b"Age: %d\r\nCache-Status: %s\r\nX-Request-Id: %s\r\n" % (age, status, rid.encode("latin-1"))
    else:
        tail = b"Age: %d\r\nX-Request-Id: %s\r\n" % (age, rid.encode("latin-1"))
    if wire.needs_date:
        tail += b"Date: " + http_date(now) + b"\r\n"
    if close:
        tail += b"Connection: close\r\n"
    out = [b"HTTP/1.1", wire.head, chunks[2], tail, b"\r\n"]
    body = chunks[3]
    if bodied and body:
        out.append(body)
    return out
