"""
L{CacheStatus}: how the cache took part in one answer, as one value.

The C{Cache-Status} header (RFC 9211), the metrics label and the access-log
field all come from the same L{CacheStatus}; nothing parses the header back.
"""

from __future__ import annotations

import math
from typing import Any

import attr

#: The labels a status can have, as metrics and the access log show them:
#: C{hit} (answered from a fresh entry), C{stale} (served stale, or
#: revalidated with the origin), C{miss} (fetched from the origin, stored or
#: not), C{coalesced} (answered by another request's fill), C{bypass} (the
#: cache was not consulted) and C{none} (not a proxied answer).
RESULTS = ("hit", "stale", "miss", "coalesced", "bypass", "none")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CacheStatus:
    """
    The cache's part in one answer.

    @ivar result: one of L{RESULTS}.
    @ivar header: the C{Cache-Status} field value.
    """

    result: str
    header: bytes

    def with_params(self, *params: str) -> CacheStatus:
        """
        @return: the same status with more C{Cache-Status} parameters.
        """
        return CacheStatus(self.result, b"; ".join([self.header] + [p.encode("ascii") for p in params]))


def cache_status(result: str, *params: str) -> CacheStatus:
    """
    @param result: one of L{RESULTS}.
    @param params: the C{Cache-Status} parameters after the cache's name.
    @return: the status.
    """
    if result not in RESULTS:
        raise ValueError(f"unknown cache result {result!r}")
    return CacheStatus(result, "; ".join(("phantom-frame",) + params).encode("ascii"))


#: Not a proxied answer (no C{Cache-Status} at all).
NONE = CacheStatus("none", b"")
#: A fresh hit on an entry without an end of freshness.
HIT = cache_status("hit", "hit")
#: Served stale (C{stale-while-revalidate}, C{max-stale}, C{stale-if-error}).
STALE = cache_status("stale", "hit", "detail=stale")
#: Fetched from the origin and stored.
STORED = cache_status("miss", "fwd=uri-miss", "stored")
#: Answered by a fill another request started.
COLLAPSED = cache_status("coalesced", "fwd=uri-miss", "collapsed")


def hit(entry: Any, age: float) -> CacheStatus:
    """
    @param entry: the L{phantom_frame.cache.entry.CacheEntry} answering.
    @param age: its age now.
    @return: the status of a fresh hit, with the seconds of freshness left
        (C{ttl}) when they are finite.
    """
    if entry.lifetime == math.inf:
        return HIT
    return cache_status("hit", "hit", "ttl=%d" % int(entry.lifetime - age))


def bypass(reason: str) -> CacheStatus:
    """
    @return: the status of a request the cache did not consult, and why
        (C{method}, C{authorization}, C{excluded}, C{strategy}...).
    """
    return forwarded("bypass", reason)


#: The result of each kind of forwarding (RFC 9211 C{fwd} values).
_FORWARDED = {"uri-miss": "miss", "stale": "stale", "bypass": "bypass"}


def forwarded(fwd: str, detail: str) -> CacheStatus:
    """
    @param fwd: C{"uri-miss"} (a fill), C{"stale"} (a revalidation) or
        C{"bypass"}.
    @param detail: why the answer was not stored, or what failed.
    @return: the status of an answer that went to (or was meant for) the
        origin and was not stored.
    """
    return cache_status(_FORWARDED[fwd], "fwd=" + fwd, "detail=" + detail)


def revalidated(origin_status: int) -> CacheStatus:
    """
    @return: the status of a stale entry revalidated with the origin: kept
        (the origin answered 304) or replaced by what it sent (stored).
    """
    status = cache_status("stale", "fwd=stale", "fwd-status=%d" % origin_status)
    return status if origin_status == 304 else status.with_params("stored")
