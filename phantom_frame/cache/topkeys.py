"""
L{TopKeys}: the most-hit cache keys of a server, in bounded memory.

It is the Space-Saving algorithm (Metwally, Agrawal and El Abbadi, 2005) on
a "stream summary": at most C{capacity} keys are counted; a key that is not
counted when the summary is full takes the place of a key with the lowest
count, and starts from that count plus one. Every key hit more than
C{hits / capacity} times is in the summary, and each count is at most its
L{error} above the true one. Counting a hit is O(1): a key moves from the
set of keys with count C{c} to the set with count C{c + 1}, and the lowest
count only ever grows by one at a time.
"""

from __future__ import annotations

import heapq
from typing import Dict, List, Set, Tuple

__all__ = ["TopKeys"]


class TopKeys:
    """
    The approximate hit counts of the busiest keys.

    @ivar capacity: how many keys are counted at most.
    @ivar total: every hit counted since the start (or the last L{clear}).
    """

    __slots__ = ("capacity", "total", "_counts", "_errors", "_buckets", "_min")

    def __init__(self, capacity: int = 1000) -> None:
        """
        @param capacity: how many keys are counted at most.
        @raise ValueError: when it is below 1.
        """
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        """
        Forget every count.
        """
        self.total = 0
        self._counts: Dict[str, int] = {}
        self._errors: Dict[str, int] = {}
        self._buckets: Dict[int, Set[str]] = {}
        self._min = 0

    def __len__(self) -> int:
        """
        @return: how many keys are counted.
        """
        return len(self._counts)

    def hit(self, key: str) -> None:
        """
        Count one hit of C{key}.
        """
        self.total += 1
        counts = self._counts
        buckets = self._buckets
        count = counts.get(key)
        if count is not None:
            # A counted key moves up one bucket; alone in its bucket, it
            # takes the bucket's set along when the next one is empty.
            up = count + 1
            counts[key] = up
            bucket = buckets[count]
            above = buckets.get(up)
            if len(bucket) == 1:
                del buckets[count]
                if above is None:
                    buckets[up] = bucket
                else:
                    above.add(key)
                if self._min == count:
                    self._min = up
            else:
                bucket.discard(key)
                if above is None:
                    buckets[up] = {key}
                else:
                    above.add(key)
            return
        if len(counts) < self.capacity:
            count = 0
            self._min = 1
        else:
            # Take the place of a key with the lowest count.
            count = self._min
            lowest = buckets[count]
            evicted = lowest.pop()
            del counts[evicted]
            del self._errors[evicted]
            if not lowest:
                del buckets[count]
                self._min = count + 1
        self._errors[key] = count
        count += 1
        counts[key] = count
        bucket = buckets.get(count)
        if bucket is None:
            buckets[count] = {key}
        else:
            bucket.add(key)

    def count(self, key: str) -> int:
        """
        @return: the hits counted for C{key} (0 when it is not counted); at
            most L{error} above the true count.
        """
        return self._counts.get(key, 0)

    def error(self, key: str) -> int:
        """
        @return: by how much L{count} may over-estimate C{key}'s hits: the
            count of the key whose place it took.
        """
        return self._errors.get(key, 0)

    def top(self, n: int = 10) -> List[Tuple[str, int, int]]:
        """
        @param n: how many keys to give.
        @return: up to C{n} keys with the highest counts, highest first
            (ties by key), each as C{(key, count, error)}.
        """
        best = heapq.nsmallest(max(0, n), self._counts.items(), key=lambda item: (-item[1], item[0]))
        return [(key, count, self._errors[key]) for key, count in best]
