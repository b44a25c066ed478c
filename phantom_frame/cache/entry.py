"""
L{CacheEntry}: one stored response, its metadata and its size.

The entry knows its own age (RFC 9111 §4.2.3) and what it costs to hold;
where it is held (an L{phantom_frame.cache.lru.LRU}, the pinned snapshots)
is L{phantom_frame.cache.responses.ResponseCache}'s business.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

import attr

from phantom_frame.cache.store import StoredBody

#: One response header: its name and its value.
Header = Tuple[bytes, bytes]

#: The normalised values of the request headers an entry varies on, in the
#: order of its C{vary} names (L{None} for a header the request lacked).
Variant = Tuple[Optional[str], ...]

#: Bookkeeping bytes charged to every entry on top of its body and headers,
#: so that many tiny entries still count against C{cache_max_bytes}.
ENTRY_OVERHEAD = 512

#: The C{alternates} of an entry stored in identity while its server
#: stores compressed bodies: its body is compressed once it is served again
#: (L{phantom_frame.cache.recoding.Recoder}), so a page asked for once never
#: costs a compression. Empty, like an entry's alternates before any is
#: made, and shared by every such entry, so it costs no memory.
NOT_YET_COMPRESSED: Mapping[str, StoredBody] = MappingProxyType({})


@attr.s(slots=True, eq=False, auto_attribs=True)
class CacheEntry:
    """
    One stored response.

    @ivar headers: end-to-end response headers without C{Content-Length},
        C{Content-Encoding}, C{Vary} and C{Set-Cookie}.
    @ivar coding: the content coding of the stored body (C{"br"}, C{"gzip"},
        C{"deflate"} or C{"identity"}).
    @ivar identity_length: the decoded body's length.
    @ivar vary: lower-cased request header names the origin varies on,
        besides C{Accept-Encoding}.
    @ivar vary_header: the origin's C{Vary} as it sent it (names and case;
        repeated headers joined with commas), or L{None} when it sent none.
    @ivar variant: the normalised values of those headers for this entry.
    @ivar not_found: whether this entry lives in the 404 cache.
    @ivar pinned: a snapshot: kept until removed or invalidated, never
        evicted, outside the C{max_bytes} bound.
    @ivar lifetime: seconds of freshness from its age 0 (infinite: until
        invalidated).
    @ivar initial_age: its age when stored (RFC 9111 §4.2.3).
    @ivar stale_while_revalidate: seconds past its lifetime during which it
        may be served while one refresh runs.
    @ivar stale_if_error: seconds past its lifetime during which it may be
        served when the origin fails.
    @ivar must_revalidate: never served stale.
    @ivar etag: the origin's (or a generated) entity-tag.
    @ivar last_modified: the origin's C{Last-Modified}.
    @ivar alternates: the body in other codings, made from the stored one
        for clients that do not accept C{coding}, by coding (see
        L{phantom_frame.cache.responses.ResponseCache.add_coding}); L{None}
        when none was made; L{NOT_YET_COMPRESSED} for an identity body
        that is to be compressed (see L{compress_pending}).
    @ivar shareable: whether the origin marked it as one for everybody
        (C{public}, C{s-maxage}, a C{CDN-Cache-Control} or
        C{Surrogate-Control} lifetime; snapshots, fetched without any
        client's cookies, are too): only then is it served to a request
        that cookies make private.
    @ivar wire: answers serialised by the fast path, by coding (dropped
        whenever the headers change).
    @ivar size: the bytes it is accounted for: body, alternates, headers,
        key and L{ENTRY_OVERHEAD} (see L{resize}).
    """

    key: str
    status: int
    phrase: bytes
    headers: Tuple[Header, ...]
    coding: str
    body: StoredBody
    identity_length: int
    stored_at: float
    vary: Tuple[str, ...] = ()
    vary_header: Optional[bytes] = None
    variant: Variant = ()
    not_found: bool = False
    pinned: bool = False
    lifetime: float = math.inf
    initial_age: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    etag: Optional[bytes] = None
    last_modified: Optional[bytes] = None
    alternates: Optional[Mapping[str, StoredBody]] = None
    shareable: bool = False
    wire: Optional[Dict[str, Any]] = None
    size: int = 0

    def age(self, now: float) -> float:
        """
        @param now: the current time, in the clock's seconds.
        @return: the entry's current age (RFC 9111 §4.2.3) at C{now}: its
            initial age plus the time it has been held (never negative).
        """
        resident = now - self.stored_at
        return self.initial_age + (resident if resident > 0 else 0.0)

    @property
    def compress_pending(self) -> bool:
        """
        Whether the body, stored in identity, is to be compressed in its
        server's coding when it is served again (L{NOT_YET_COMPRESSED}).
        Until then it is sent as it is, but with C{Accept-Encoding} in its
        C{Vary}: later answers may be compressed.
        """
        return self.alternates is NOT_YET_COMPRESSED

    def __attrs_post_init__(self) -> None:
        """
        Account the new entry's size.
        """
        self.resize()

    def resize(self) -> None:
        """
        Account the entry's size again (after its headers or alternates
        changed).
        """
        alternates = self.alternates
        size = self.body.size + len(self.key) + ENTRY_OVERHEAD
        for name, value in self.headers:
            size += len(name) + len(value)
        if alternates:
            for stored in alternates.values():
                size += stored.size
        self.size = size
