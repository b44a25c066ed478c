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
shared between processes and hosts (L{ISharedBucketStore}: Redis, see
L{phantom_frame.cache.redisbuckets}) may need a round trip before it can
answer, so L{RateLimiter.ready} asks it first and the request waits, off
the reactor's back, with L{admit_when_ready}.

L{RateLimiter} applies the limits of one server; the decision
(L{phantom_frame.proxy.decision.Decider.admit}) consults it before anything
else, for every request: cache hits (including those the HTTP/1.1 channel
answers itself, once the shared buckets are ready) count as much as
misses.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import attr
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from phantom_frame.cache.buckets import (
    MAX_KEYS,
    BucketStoreFactory,
    IBucketStore,
    ISharedBucketStore,
    MemoryBucketStore,
)
from phantom_frame.cache.globs import MAX_PATTERN, GlobSet, compile_glob

log = Logger()

__all__ = [
    "MAX_KEYS",
    "BucketStoreFactory",
    "IBucketStore",
    "ISharedBucketStore",
    "MemoryBucketStore",
    "RateLimit",
    "RateLimiter",
    "admit_when_ready",
    "check_by",
    "is_path_glob",
    "parse_rate",
]

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
    @ivar node: the L{phantom_frame.cache.bus.RedisNode} its shared stores
        use (for the Redis error count), or L{None}.
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
        self._name = name
        self._clock = clock
        self.limits = tuple(limits)
        self._limits = tuple(
            _Applied(limit, stores(f"{name}.rate_limits[{index}]", limit.rate, limit.burst))
            for index, limit in enumerate(limits)
        )
        self._shared = tuple(a for a in self._limits if ISharedBucketStore.providedBy(a.store))
        self.node: Any = getattr(stores, "node", None)
        self.needs_client = any(applied.by_ip for applied in self._limits)

    def with_stores(self, stores: BucketStoreFactory) -> RateLimiter:
        """
        @return: a limiter of the same limits whose buckets come from
            C{stores}.
        """
        return RateLimiter(self._name, self.limits, self._clock, stores)

    def answers_now(self, view) -> bool:
        """
        @param view: a L{phantom_frame.proxy.view.RequestView}.
        @return: whether L{check} can answer C{view} now, without waiting
            for a shared store (nothing is asked or taken).
        """
        if not self._shared:
            return True
        now = self._clock.seconds()
        for applied in self._shared:
            key = applied.key(view)
            if key is not None and not applied.store.answers(key, now):  # type: ignore[attr-defined]
                return False
        return True

    def ready(self, view) -> Optional[Deferred[None]]:
        """
        Make sure that L{check} can answer C{view} at once: the shared
        stores of the limits that apply to it may need a round trip first.

        @param view: a L{phantom_frame.proxy.view.RequestView}.
        @return: L{None} when L{check} can answer now; otherwise a
            L{Deferred} that fires with L{None} (never failing) when it
            can. Nothing is taken.
        """
        if not self._shared:
            return None
        now = self._clock.seconds()
        waits: List[Deferred[None]] = []
        for applied in self._shared:
            key = applied.key(view)
            if key is not None:
                waiting = applied.store.ready(key, now)  # type: ignore[attr-defined]
                if waiting is not None:
                    waits.append(waiting)
        if not waits:
            return None
        if len(waits) == 1:
            return waits[0]
        return gatherResults(waits).addCallback(lambda _: None)

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


def admit_when_ready(request: Any, waiting: Deferred[None], admit: Callable[[], Any]) -> Any:
    """
    Answer a twisted.web C{request} once the shared buckets it is counted
    against are ready (L{RateLimiter.ready}): then C{admit()} renders it as
    C{render} would have, and a body it returns is written. A client that
    left meanwhile is not rendered (and takes no token).

    @param waiting: what L{RateLimiter.ready} returned.
    @param admit: renders the request: returns C{NOT_DONE_YET} or a body.
    @return: C{NOT_DONE_YET}, for C{render}.
    """
    gone: List[bool] = []
    request.notifyFinish().addBoth(lambda _: gone.append(True))

    def go(_: None) -> None:
        if gone:
            return
        body = admit()
        if body is NOT_DONE_YET or gone:
            return
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def failed(failure: Failure) -> None:
        log.failure("cannot answer {uri} after the rate limits' round trip", failure, uri=request.uri)
        if not gone:
            request.setResponseCode(500)
            request.finish()

    waiting.addCallback(go).addErrback(failed)
    return NOT_DONE_YET
