"""
Where token buckets live: L{IBucketStore} (the buckets of one rate limit,
by key), L{ISharedBucketStore} (a store shared between processes, which
may need a round trip before it can answer), and L{MemoryBucketStore}
(this process only).

The rate limits themselves (L{phantom_frame.proxy.ratelimit}) take their
stores from a L{BucketStoreFactory}; the stores are here, below the proxy,
so that a store kept in the shared cache tier
(L{phantom_frame.cache.redisbuckets}) can provide them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Optional

from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

__all__ = ["MAX_KEYS", "BucketStoreFactory", "IBucketStore", "ISharedBucketStore", "MemoryBucketStore"]

#: The most keys a L{MemoryBucketStore} holds by default.
MAX_KEYS = 100_000


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


class ISharedBucketStore(IBucketStore):
    """
    A store whose buckets live elsewhere (another process's memory, Redis):
    L{IBucketStore.take} answers at once only for keys that L{ready} made
    ready.
    """

    def answers(key: str, now: float) -> bool:
        """
        @return: whether L{IBucketStore.take} of C{key} can answer now
            (nothing is asked or taken).
        """

    def ready(key: str, now: float) -> Optional[Deferred[None]]:
        """
        Make sure that the next L{IBucketStore.take} of C{key} can answer
        at once.

        @return: L{None} when it can now; otherwise a L{Deferred} that fires
            (with L{None}, never failing) when it can.
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
