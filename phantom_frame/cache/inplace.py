"""
L{InPlace}: the changes a L{phantom_frame.cache.responses.ResponseCache}
makes to entries it holds, in place -- new headers from a revalidation,
another coding kept beside the body, an identity body replaced by its
compressed form, a stored page made a snapshot -- keeping its byte
accounting right and counting each change, so that what was derived from
an entry (its pre-serialised answers, the answers remembered for request
heads) is made again.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Tuple

from twisted.internet.defer import Deferred

from phantom_frame.cache.entry import CacheEntry, Header
from phantom_frame.cache.lru import LRU, Slot
from phantom_frame.cache.store import StoredBody
from phantom_frame.cache.variance import Variance


class InPlace:
    """
    The in-place changes of L{phantom_frame.cache.responses.ResponseCache}
    (a base class of it: it uses the cache's LRUs, snapshots and store).
    """

    _main: LRU
    _notFound: LRU
    _pinned: Dict[Slot, CacheEntry]
    _pinnedBytes: int
    _partialBytes: int
    _maxBytes: int
    _variance: Variance
    store: Any
    changes: int
    compressions: int
    evictions: int

    def update(self, entry: CacheEntry, headers: Tuple[Header, ...]) -> None:
        """
        Replace a stored entry's headers in place, keeping the size
        accounting right (the entry may or may not still be held).
        """
        before = entry.size
        entry.headers = headers
        self._changed(entry, before)

    def _changed(self, entry: CacheEntry, before: int) -> bool:
        """
        Account C{entry}, changed in place, at its new size (it was
        C{before}) where it is held, and drop what was derived from it.

        @return: whether it is a held snapshot.
        """
        entry.wire = None
        entry.resize()
        self.changes += 1
        delta = entry.size - before
        if self._pinned.get((entry.key, entry.variant)) is entry:
            self._pinnedBytes += delta
            return True
        self._main.resized(entry, delta)
        self._notFound.resized(entry, delta)
        return False

    def recode(self, entry: CacheEntry, coding: str, stored: Optional[StoredBody]) -> bool:
        """
        Replace the identity body of C{entry}, which waits to be compressed
        (L{CacheEntry.compress_pending}), by C{stored}, the same body in
        C{coding}; with C{stored} L{None} (it does not shrink), the entry
        only stops waiting, and stays in identity.

        @return: whether C{entry} changed: not when it is no longer held or
            no longer waits (then C{stored} is deleted at once).
        """
        lru = self._notFound if entry.not_found else self._main
        held = lru.holds(entry) or self._pinned.get((entry.key, entry.variant)) is entry
        if not (held and entry.compress_pending):
            if stored is not None:
                self.store.delete(stored)
            return False
        before, old = entry.size, entry.body
        entry.alternates = None
        if stored is not None:
            entry.body, entry.coding = stored, coding
            self.compressions += 1
        self._changed(entry, before)
        if stored is not None:
            self.store.delete(old)
        return True

    def add_coding(self, entry: CacheEntry, coding: str, body: builtins.bytes) -> Deferred[bool]:
        """
        Keep C{body}, the body of C{entry} made in C{coding}, beside it. It
        is counted in the entry's size, so within C{max_bytes}: the least
        recently used entries make room. It is kept only while C{entry}
        itself is held, without a body in that coding yet, and when the
        grown entry still fits its bound.

        @return: a L{Deferred} firing with whether it is kept (when it is
            not, its stored body is deleted at once).
        """
        return self.put_body(entry.key, body).addCallback(self._keep_coding, entry, coding)

    def _keep_coding(self, stored: StoredBody, entry: CacheEntry, coding: str) -> bool:
        """
        Attach C{stored} to C{entry} in C{coding} if L{add_coding} allows.
        """
        pinned = self._pinned.get((entry.key, entry.variant)) is entry
        lru = self._notFound if entry.not_found else self._main
        kept = entry.alternates or {}
        if (
            not (pinned or lru.holds(entry))
            or coding in kept
            or (not pinned and entry.size + stored.size > lru.max_bytes)
        ):
            self.store.delete(stored)
            return False
        before = entry.size
        entry.alternates = {**kept, coding: stored}
        if self._changed(entry, before):
            return True
        dropped = lru.trim(lru.max_bytes) if entry.not_found else []
        dropped += self._main.trim(self._maxBytes - self._notFound.bytes - self._partialBytes)
        for victim in dropped:
            self.evictions += 1
            self._variance.untrack(victim.key, victim.variant)
            self._forget(victim)
        return lru.holds(entry)

    def pin(self, entry: CacheEntry) -> None:
        """
        Make a stored entry a snapshot (kept until removed or invalidated);
        an entry no longer held is left alone.
        """
        for lru in (self._main, self._notFound):
            if lru.holds(entry):
                lru.pop((entry.key, entry.variant))
                entry.pinned = True
                self._pinned[(entry.key, entry.variant)] = entry
                self._pinnedBytes += entry.size
                return
