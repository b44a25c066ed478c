"""
L{LRU}: entries by slot, least recently used first, bounded by bytes and
optionally by count.

L{phantom_frame.cache.responses.ResponseCache} holds two: the main cache,
bounded by bytes, and the 404 cache, bounded by count and by a quarter of
the bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Tuple

from phantom_frame.cache.entry import CacheEntry, Variant

#: Where an entry is held: its key and its variant.
Slot = Tuple[str, Variant]


class LRU:
    """
    Entries by C{(key, variant)}, least recently used first, bounded by bytes
    and optionally by count.

    It only holds entries: what it returns as replaced or evicted is the
    caller's to delete.

    @ivar max_bytes: the bound on the sizes of the entries held.
    @ivar max_entries: the bound on their number (L{None}: none).
    @ivar entries: the entries held, by slot, least recently used first.
    @ivar bytes: the sum of their sizes.
    """

    def __init__(self, max_bytes: int, max_entries: Optional[int] = None) -> None:
        """
        @param max_bytes: see L{max_bytes}.
        @param max_entries: see L{max_entries}.
        """
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: "OrderedDict[Slot, CacheEntry]" = OrderedDict()
        self.bytes = 0

    def get(self, slot: Slot) -> Optional[CacheEntry]:
        """
        Find the entry in C{slot}, making it the most recently used.

        @return: the entry, or L{None}.
        """
        entry = self.entries.get(slot)
        if entry is not None:
            self.entries.move_to_end(slot)
        return entry

    def holds(self, entry: CacheEntry) -> bool:
        """
        @return: whether C{entry} itself (not another of its slot) is held.
        """
        return self.entries.get((entry.key, entry.variant)) is entry

    def put(self, entry: CacheEntry) -> List[CacheEntry]:
        """
        Store C{entry}, replacing the one in its slot. An entry larger than
        C{max_bytes} is not stored (it would evict everything else first).

        @return: the replaced entry (if any) followed by what was evicted,
            C{entry} itself among them when it was not stored.
        """
        slot = (entry.key, entry.variant)
        dropped = []
        old = self.entries.pop(slot, None)
        if old is not None:
            self.bytes -= old.size
            if old is not entry:
                dropped.append(old)
        if entry.size > self.max_bytes:
            dropped.append(entry)
            return dropped
        self.entries[slot] = entry
        self.bytes += entry.size
        while self.entries and (
            self.bytes > self.max_bytes
            or (self.max_entries is not None and len(self.entries) > self.max_entries)
        ):
            _, victim = self.entries.popitem(last=False)
            self.bytes -= victim.size
            dropped.append(victim)
        return dropped

    def trim(self, budget: int) -> List[CacheEntry]:
        """
        Evict the least recently used entries until the rest take at most
        C{budget} bytes (or none is left).

        @return: the evicted entries, least recently used first.
        """
        dropped = []
        while self.entries and self.bytes > budget:
            _, victim = self.entries.popitem(last=False)
            self.bytes -= victim.size
            dropped.append(victim)
        return dropped

    def resized(self, entry: CacheEntry, delta: int) -> None:
        """
        Account a change of C{delta} bytes in the size of C{entry} if it is
        held (nothing is evicted for it).
        """
        if self.holds(entry):
            self.bytes += delta

    def pop(self, slot: Slot) -> Optional[CacheEntry]:
        """
        Remove the entry in C{slot}.

        @return: the entry, or L{None} when the slot was empty.
        """
        entry = self.entries.pop(slot, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def clear(self) -> List[CacheEntry]:
        """
        Remove every entry.

        @return: the entries removed, least recently used first.
        """
        dropped = list(self.entries.values())
        self.entries.clear()
        self.bytes = 0
        return dropped
