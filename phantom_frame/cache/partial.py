"""
Partial entries (RFC 9111 §3.3-3.4): the byte ranges of one representation
that 206 answers brought, kept until they cover the whole of it.

A L{PartialEntry} holds its parts sorted and disjoint (parts that overlap or
touch are merged), the representation's complete length, its strong
validator, its headers and its freshness. Only parts of the same
representation (same validator, same length) combine. Everything here is
pure: no I/O, no twisted.web; where partial entries are held is
L{phantom_frame.cache.responses.ResponseCache}'s business.
"""

from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence, Tuple

import attr

from phantom_frame.cache.entry import ENTRY_OVERHEAD, Header
from phantom_frame.cache.freshness import etag_matches_strong, parse_http_date, parse_range

#: One stored part: the offset of its first byte and its bytes.
Part = Tuple[int, bytes]

#: A strong validator: C{("etag", tag)} or C{("last-modified", date)}.
Validator = Tuple[str, bytes]

#: The least a partial entry may hold, whatever C{max_cacheable_bytes} says.
MIN_PARTIAL_BOUND = 64 * 1024 * 1024

_CONTENT_RANGE = re.compile(rb"\s*bytes\s+(\d+)-(\d+)/(\d+)\s*", re.IGNORECASE)


def parse_content_range(value: Optional[bytes]) -> Optional[Tuple[int, int, int]]:
    """
    Parse the C{Content-Range} of a 206 (RFC 9110 §14.4).

    @return: C{(first, last, length)} (inclusive; C{length} the complete
        length), or L{None} when absent, malformed, of an unknown complete
        length (C{*}) or inconsistent (C{last} before C{first}, or not
        before C{length}).
    """
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        return None
    first, last, length = (int(group) for group in match.groups())
    if last < first or last >= length:
        return None
    return first, last, length


def single_range(value: Optional[bytes]) -> bool:
    """
    @return: whether C{value}, a C{Range} header, asks for one range of
        bytes (C{bytes=a-b}, C{bytes=a-} or C{bytes=-n}): the ranges a part
        can be fetched and stored for.
    """
    return parse_range(value, 1 << 62) is not None


def strong_validator(etag: Optional[bytes], last_modified: Optional[bytes]) -> Optional[Validator]:
    """
    @return: the validator parts are combined by (RFC 9111 §3.4): a strong
        entity-tag, else C{Last-Modified}; L{None} when there is neither.
    """
    if etag is not None and etag.strip().startswith(b'"'):
        return ("etag", etag.strip())
    if last_modified is not None:
        return ("last-modified", last_modified.strip())
    return None


def if_range_matches(value: bytes, etag: Optional[bytes], last_modified: Optional[bytes]) -> bool:
    """
    Evaluate C{If-Range} (RFC 9110 §13.1.5) against a stored
    representation: an entity-tag by strong comparison, a date by equality
    with C{Last-Modified}.

    @return: whether the range may be answered.
    """
    value = value.strip()
    if value.startswith((b'"', b"W/")):
        return etag_matches_strong(value, etag)
    date = parse_http_date(value)
    return date is not None and date == parse_http_date(last_modified)


def merge(parts: Sequence[Part], first: int, data: bytes) -> List[Part]:
    """
    Add C{data}, the bytes from offset C{first}, to C{parts}.

    @param parts: parts sorted by offset, disjoint and not touching.
    @return: the new parts, sorted, disjoint and not touching: the new one
        merged with every part it overlaps or touches (where they overlap,
        its bytes win: they are the newer).
    """
    if not data:
        return list(parts)
    start, end = first, first + len(data)
    merged: List[Part] = []
    pending = data
    for offset, chunk in parts:
        stop = offset + len(chunk)
        if stop < start or offset > end:
            merged.append((offset, chunk))
            continue
        # Overlapping or touching: keep what the old part has outside.
        head = chunk[: max(0, start - offset)]
        tail = chunk[max(0, end - offset):] if stop > end else b""
        pending = head + pending + tail
        start, end = min(start, offset), max(end, stop)
    merged.append((start, pending))
    merged.sort(key=lambda part: part[0])
    return merged


def covers(parts: Sequence[Part], first: int, last: int) -> bool:
    """
    @return: whether one of C{parts} holds every byte from C{first} to
        C{last} (inclusive); parts are merged, so one part must.
    """
    return any(offset <= first and last < offset + len(chunk) for offset, chunk in parts)


def slice_parts(parts: Sequence[Part], first: int, last: int) -> bytes:
    """
    @return: the bytes from C{first} to C{last} (inclusive).
    @raise ValueError: C{parts} do not cover them (see L{covers}).
    """
    for offset, chunk in parts:
        if offset <= first and last < offset + len(chunk):
            return chunk[first - offset : last - offset + 1]
    raise ValueError(f"bytes {first}-{last} are not stored")


def held(parts: Sequence[Part]) -> int:
    """
    @return: how many bytes C{parts} hold.
    """
    return sum(len(chunk) for _, chunk in parts)


@attr.s(slots=True, eq=False, auto_attribs=True)
class PartialEntry:
    """
    The stored parts of one representation, and what answers from them
    carry.

    It has the freshness attributes of a
    L{phantom_frame.cache.entry.CacheEntry} (C{status} is that of the
    complete representation, 200, whose freshness rules its parts follow),
    so that freshness is judged the same way for both.

    @ivar key: the cache key.
    @ivar length: the complete length of the representation.
    @ivar validator: its strong validator (L{strong_validator}).
    @ivar headers: end-to-end headers of the latest part, without
        C{Content-Range}, C{Content-Length}, C{Content-Encoding}, C{Vary},
        C{Age} and C{Set-Cookie}.
    @ivar etag: the origin's C{ETag}, or L{None}.
    @ivar last_modified: the origin's C{Last-Modified}, or L{None}.
    @ivar stored_at: when the latest part was received.
    @ivar parts: the parts, sorted, disjoint and not touching.
    @ivar size: the bytes it is accounted for: parts, headers, key and
        L{ENTRY_OVERHEAD}.
    """

    key: str
    length: int
    validator: Validator
    headers: Tuple[Header, ...]
    etag: Optional[bytes]
    last_modified: Optional[bytes]
    stored_at: float
    parts: List[Part] = attr.ib(factory=list)
    status: int = 200
    lifetime: float = math.inf
    initial_age: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    shareable: bool = False
    size: int = 0

    def __attrs_post_init__(self) -> None:
        """
        Account the new entry's size.
        """
        self.resize()

    def resize(self) -> None:
        """
        Account the entry's size again (after its parts or headers changed).
        """
        self.size = (
            held(self.parts)
            + sum(len(n) + len(v) for n, v in self.headers)
            + len(self.key)
            + ENTRY_OVERHEAD
        )

    def age(self, now: float) -> float:
        """
        @return: its current age (RFC 9111 §4.2.3): that of its latest part.
        """
        resident = now - self.stored_at
        return self.initial_age + (resident if resident > 0 else 0.0)

    def same_representation(self, other: PartialEntry) -> bool:
        """
        @return: whether C{other}'s parts are of the same representation as
            this one's (same strong validator, same complete length), so
            that they may be combined (RFC 9111 §3.4).
        """
        return self.validator == other.validator and self.length == other.length

    def covers(self, first: int, last: int) -> bool:
        """
        @return: whether the bytes C{first} to C{last} are stored.
        """
        return covers(self.parts, first, last)

    def slice(self, first: int, last: int) -> bytes:
        """
        @return: the stored bytes C{first} to C{last} (inclusive).
        @raise ValueError: they are not stored.
        """
        return slice_parts(self.parts, first, last)

    @property
    def held(self) -> int:
        """
        The bytes its parts hold.
        """
        return held(self.parts)

    @property
    def complete(self) -> bool:
        """
        Whether the parts cover the whole representation, C{0} to
        C{length - 1}.
        """
        parts = self.parts
        return len(parts) == 1 and parts[0][0] == 0 and len(parts[0][1]) == self.length

    def combined(self) -> bytes:
        """
        @return: the whole representation.
        @raise ValueError: the parts do not cover it (see L{complete}).
        """
        if not self.complete:
            raise ValueError(f"the parts of {self.key!r} do not cover {self.length} bytes")
        return self.parts[0][1]
