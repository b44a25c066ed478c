"""
The values L{phantom_frame.proxy.decision.Decider} decides: L{Hit},
L{PartHit}, L{Stale}, L{Fill}, L{Await}, L{Bypass}, L{Reject}, L{Tunnel}
and L{Purge}, and the refusals that are always the same.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import attr

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.freshness import RequestDirectives
from phantom_frame.cache.partial import PartialEntry
from phantom_frame.proxy import status as statuses
from phantom_frame.proxy.negotiation import EntryAnswer
from phantom_frame.proxy.status import CacheStatus


#: Sent with a 405.
ALLOW_GET_HEAD = ((b"allow", b"GET, HEAD"),)


# Decisions. They are values, never changed once made; they are not frozen
# attrs classes only because one is made per request, and a frozen one costs
# four times as much to make.


@attr.s(slots=True, auto_attribs=True)
class Hit:
    """
    Answer from a fresh stored entry.
    """

    key: str
    entry: CacheEntry
    answer: EntryAnswer
    status: CacheStatus


@attr.s(slots=True, auto_attribs=True)
class PartHit:
    """
    Answer a range from the stored parts of C{key} (RFC 9111 §3.3): 206,
    bytes C{first} to C{last} (inclusive) of C{partial}'s representation.
    """

    key: str
    partial: PartialEntry
    first: int
    last: int
    status: CacheStatus


@attr.s(slots=True, auto_attribs=True)
class Stale:
    """
    Answer from a stale entry that may be served (C{max-stale}, or
    C{stale-while-revalidate} with C{refresh}: one background refresh).
    """

    key: str
    entry: CacheEntry
    answer: EntryAnswer
    refresh: bool
    status: CacheStatus = statuses.STALE


@attr.s(slots=True, auto_attribs=True)
class Fill:
    """
    Fetch from the origin through the single-flight fill of C{key}: a
    revalidation of C{stale} when given. The response of a C{private}
    request (its cookies may change it) is stored only when the origin
    marked it shareable. A C{ranged} fill forwards the request's C{Range}
    (and C{If-Range}): a 206 it brings may be stored as a part of C{key}'s
    partial entry (http policy only).
    """

    key: str
    stale: Optional[CacheEntry]
    directives: RequestDirectives
    private: bool = False
    ranged: bool = False


@attr.s(slots=True, auto_attribs=True)
class Await:
    """
    A pure pre-generated server: wait for the snapshot of C{key} being
    fetched (there is one: anything else is a L{Reject}).
    """

    key: str


@attr.s(slots=True, auto_attribs=True)
class Bypass:
    """
    Pass the request through to the origin, uncached.
    """

    status: CacheStatus

    @property
    def reason(self) -> str:
        """
        @return: why the cache was not consulted.
        """
        return self.status.header.rsplit(b"detail=", 1)[-1].decode("ascii")


@attr.s(slots=True, auto_attribs=True)
class Reject:
    """
    Answer at once with a short error.
    """

    code: int
    text: str
    status: CacheStatus = statuses.NONE
    headers: Tuple[Tuple[bytes, bytes], ...] = ()


@attr.s(slots=True, auto_attribs=True)
class Tunnel:
    """
    Tunnel the protocol upgrade to the origin.
    """


@attr.s(slots=True, auto_attribs=True)
class Purge:
    """
    An authorised C{PURGE}: invalidate C{pattern} (the stripped path, with
    its query when it has one) as the control site's C{/invalidate} does,
    and answer with the count.
    """

    pattern: str


Decision = Union[Hit, PartHit, Stale, Fill, Await, Bypass, Reject, Tunnel, Purge]

MALFORMED = Reject(400, "Bad Request: malformed request target")
BAD_HOST = Reject(400, "Bad Request: malformed Host header")
NOT_FOUND = Reject(404, "Not Found")
METHOD_NOT_ALLOWED = Reject(405, "Method Not Allowed", headers=ALLOW_GET_HEAD)
NO_UPGRADES = Reject(501, "Not Implemented: protocol upgrades are not tunnelled")
ONLY_IF_CACHED = Reject(
    504,
    "Gateway Timeout: not cached (only-if-cached)",
    statuses.forwarded("uri-miss", "only-if-cached"),
)
NOT_PRE_GENERATED = Reject(404, "Not Found", statuses.forwarded("uri-miss", "not-pre-generated"))
TUNNEL = Tunnel()
#: The text of a 429.
TOO_MANY_REQUESTS = "Too Many Requests: rate limit exceeded"
PURGE_UNAUTHORISED = Reject(
    401, "Unauthorized: PURGE needs a bearer token", headers=((b"www-authenticate", b"Bearer"),)
)
PURGE_FORBIDDEN = Reject(403, "Forbidden: PURGE refused")
