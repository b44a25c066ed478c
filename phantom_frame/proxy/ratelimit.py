"""
Rate limits: a token bucket per key, on the injected clock.

A L{RateLimit} is one C{[[server.NAME.rate_limits]]} entry: C{rate} tokens a
second flow into each bucket, which holds at most C{burst}; a request takes
one token from the bucket of its key (its client address, one of its
headers, or the one bucket of the route) and is refused when there is
none, with the seconds until there will be one. Refused requests take
nothing.

Buckets live in an L{IBucketStore}, one per limit, made by a
L{BucketStoreFactory}: L{MemoryBucketStore} (this process only, at most
L{MAX_KEYS} keys, least recently used forgotten first) by default; a store
shared between processes and hosts (Redis) provides the same two methods.

L{RateLimiter} applies the limits of one server; the decision
(L{phantom_frame.proxy.decision.Decider.admit}) consults it before anything
else, for every request: cache hits (including those the HTTP/1.1 channel
answers itself) count as much as misses.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

import attr
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from phantom_frame.cache.globs import MAX_PATTERN, GlobSet, compile_glob

__all__ = [
    "MAX_KEYS",
    "BucketStoreFactory",
    "IBucketStore",
    "MemoryBucketStore",
    "RateLimit",
    "RateLimiter",
    "check_by",
    "is_path_glob",
    "parse_rate",
]

#: The most keys a L{MemoryBucketStore} holds by default.
MAX_KEYS = 100_000

#: Keys longer than this (a long header value) are kept as their digest.
_LONGEST_KEY = 128

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*\Z")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: What L{parse_rate} accepts, for error messages.
RATE_FORM = 'a rate such as "100/s", "600/m" or "3600/h" (a number > 0 of requests per second, minute or hour)'
#: What L{check_by} accepts, for error messages.
BY_FORM = '"ip", "route" or "header:NAME" (NAME a header name)'


def parse_rate(value: Union[str, float, int]) -> float:
    """
    @param value: C{"N/s"}, C{"N/m"} or C{"N/h"}, or a number of requests
        a second.
    @return: the rate, in requests a second.
    @raise ValueError: when C{value} is not a rate above zero.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {RATE_FORM}, got {value!r}")
    if isinstance(value, (int, float)):
        rate = float(value)
    else:
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected {RATE_FORM}, got {value!r}")
        rate = float(match.group(1)) / _PER[match.group(2)]
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"expected {RATE_FORM}, got {value!r}")
    return rate


def check_by(value: str) -> str:
    """
    @param value: what a limit's buckets are keyed by.
    @return: it, with a header's name lower-cased.
    @raise ValueError: when it is none of L{BY_FORM}.
    """
    if value in ("ip", "route"):
        return value
    if isinstance(value, str) and value.startswith("header:"):
        name = value[len("header:") :]
        if _TOKEN.match(name):
            return "header:" + name.lower()
    raise ValueError(f"expected {BY_FORM}, got {value!r}")


def is_path_glob(text: str) -> bool:
    """
    @return: whether C{text} is a path glob a limit accepts (starting with
        C{/} or C{*}, no white space, not longer than the glob matcher
        takes).
    """
    return (
        text[:1] in ("/", "*")
        and not any(c.isspace() or ord(c) < 32 for c in text)
        and len(text.encode("utf-8", "surrogatepass")) <= MAX_PATTERN
    )


def _default_burst(limit: RateLimit) -> int:
    return max(1, int(limit.rate))


def _paths(value: Sequence[str]) -> Tuple[str, ...]:
    paths = tuple(value)
    for path in paths:
        if not isinstance(path, str) or not is_path_glob(path):
            raise ValueError(f"expected a path glob starting with / or *, got {path!r}")
    return paths


def _burst(instance: object, attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"burst: expected an integer > 0, got {value!r}")


@attr.s(auto_attribs=True, frozen=True)
class RateLimit:
    """
    One C{[[server.NAME.rate_limits]]} entry.

    @ivar rate: requests a second (given as C{"100/s"}, C{"600/m"},
        C{"3600/h"} or a number).
    @ivar by: C{"ip"} (a bucket per client address), C{"header:NAME"} (a
        bucket per value of that header; requests without it share one) or
        C{"route"} (one bucket for every request the limit applies to).
    @ivar burst: the most tokens a bucket holds (by default the rate a
        second, at least 1).
    @ivar paths: globs of the (prefix-stripped) paths the limit applies
        to; none: every path.
    """

    rate: float = attr.ib(converter=parse_rate)
    by: str = attr.ib(default="ip", converter=check_by)
    burst: int = attr.ib(
        default=attr.Factory(_default_burst, takes_self=True), validator=_burst
    )
    paths: Tuple[str, ...] = attr.ib(default=(), converter=_paths)


class IBucketStore(Interface):
    """
    The token buckets of one limit, by key; every bucket fills at the
    limit's rate up to its burst, and starts full.
    """

    def take(key: str, now: float) -> float:
        """
        Take a token from the bucket of C{key} if there is one.

        @param now: the time, in seconds (the injected clock's).
        @return: C{0.0} when a token was taken; otherwise (nothing taken)
            the seconds until one will be there.
        """

    def refund(key: str, now: float) -> None:
        """
        Give back a token taken from the bucket of C{key} (a later limit
        refused the request).
        """


#: Makes the store of one limit: called with the limit's name
#: (C{"SERVER.rate_limits[INDEX]"}, for a shared store's key space), its
#: rate a second and its burst.
BucketStoreFactory = Callable[[str, float, int], IBucketStore]


@implementer(IBucketStore)
class MemoryBucketStore:
    """
    Token buckets in this process's memory: at most C{capacity} keys, the
    least recently used forgotten first (a forgotten key starts full again,
    which is where it would most likely be anyway).

    @ivar buckets: C{key: [tokens, when they were counted]}, least recently
        used first.
    """

    def __init__(self, name: str, rate: float, burst: int, capacity: int = MAX_KEYS) -> None:
        """
        @param name: the limit's name.
        @param rate: tokens added a second.
        @param burst: the most tokens a bucket holds.
        @param capacity: the most keys held.
        @raise ValueError: on a rate, burst or capacity that is not above 0.
        """
        if not rate > 0 or burst < 1 or capacity < 1:
            raise ValueError("rate, burst and capacity must be above 0")
        self.name = name
        self._rate = rate
        self._burst = float(burst)
        self._capacity = capacity
        self.buckets: "OrderedDict[str, List[float]]" = OrderedDict()

    def __len__(self) -> int:
        """
        @return: how many keys are held.
        """
        return len(self.buckets)

    def take(self, key: str, now: float) -> float:
        """
        See L{IBucketStore.take}.
        """
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._capacity:
                buckets.popitem(last=False)
            buckets[key] = [self._burst - 1.0, now]
            return 0.0
        buckets.move_to_end(key)
        tokens, then = bucket
        if now > then:
            tokens = min(self._burst, tokens + (now - then) * self._rate)
            bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self._rate

    def refund(self, key: str, now: float) -> None:
        """
        See L{IBucketStore.refund}.
        """
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self._burst, bucket[0] + 1.0)


def _short(key: str) -> str:
    """
    @return: C{key}, or its digest when it is long (memory stays bounded
        whatever clients send).
    """
    if len(key) <= _LONGEST_KEY:
        return key
    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class _Applied:
    """
    One limit of a server, ready to apply.
    """

    __slots__ = ("limit", "store", "paths", "header", "by_ip")

    def __init__(self, limit: RateLimit, store: IBucketStore) -> None:
        self.limit = limit
        self.store = store
        self.paths = GlobSet(compile_glob(p) for p in limit.paths) if limit.paths else None
        self.by_ip = limit.by == "ip"
        self.header = limit.by[len("header:") :] if limit.by.startswith("header:") else None

    def key(self, view) -> Optional[str]:
        """
        @return: the key of C{view}'s bucket, or C{None} when the limit
            does not apply to its path.
        """
        if self.paths is not None and not self.paths.matches(view.path.decode("latin-1")):
            return None
        if self.by_ip:
            return view.client or ""
        if self.header is not None:
            return _short(view.headers.get(self.header, ""))
        return ""


class RateLimiter:
    """
    The rate limits of one server.

    @ivar needs_client: whether a limit is keyed by the client's address.
    """

    def __init__(
        self,
        name: str,
        limits: Sequence[RateLimit],
        clock: IReactorTime,
        stores: BucketStoreFactory = MemoryBucketStore,
    ) -> None:
        """
        @param name: the server's name.
        @param limits: its limits, each applied in turn.
        @param clock: tells the time buckets fill by.
        @param stores: makes each limit's bucket store.
        """
        self._clock = clock
        self._limits = tuple(
            _Applied(limit, stores(f"{name}.rate_limits[{index}]", limit.rate, limit.burst))
            for index, limit in enumerate(limits)
        )
        self.needs_client = any(applied.by_ip for applied in self._limits)

    def check(self, view) -> Optional[int]:
        """
        Count C{view} against every limit that applies to it.

        @param view: a L{phantom_frame.proxy.view.RequestView}.
        @return: C{None} when every limit admits it (a token was taken from
            each), or the whole seconds until it would be admitted (the
            C{Retry-After} of a 429; nothing was taken).
        """
        now = self._clock.seconds()
        taken: List[Tuple[IBucketStore, str]] = []
        for applied in self._limits:
            key = applied.key(view)
            if key is None:
                continue
            wait = applied.store.take(key, now)
            if wait:
                for store, earlier in taken:
                    store.refund(earlier, now)
                return max(1, math.ceil(wait - 1e-9))
            taken.append((applied.store, key))
        return None
