"""
L{ResponseCache}: the stored responses of one origin.

It knows nothing of HTTP servers: it holds L{CacheEntry} values under string
keys (with C{Vary} variants, see L{Variance}), bounds them by bytes (main
L{LRU}) and by count (404 L{LRU}), keeps pinned snapshots outside both, runs
one fill per key at a time with any number of waiters (L{FillLock}), and
forgets entries synchronously on invalidation.

Beside the entries, a small area holds the L{PartialEntry} of each key that
206 answers gave parts of (RFC 9111 §3.3): its parts count against the same
byte bound, and when room is needed the least recently used partial
entries go first, then the least recently used entries.
"""

from __future__ import annotations

import builtins
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from phantom_frame.cache.entry import CacheEntry, Variant
from phantom_frame.cache.inplace import InPlace
from phantom_frame.cache.lock import FillLock, Waiter
from phantom_frame.cache.lru import LRU, Slot
from phantom_frame.cache.partial import PartialEntry, merge
from phantom_frame.cache.patterns import InvalidationPattern
from phantom_frame.cache.store import StoredBody
from phantom_frame.cache.variance import Variance


class ResponseCache(InPlace):
    """
    The stored responses of one origin.

    @ivar name: the server's name, for logs and stats.
    @ivar store: where bodies live.
    @ivar hits: answers served from the cache (counted by the proxy).
    @ivar misses: fills started.
    @ivar stale: stale answers served (counted by the proxy).
    @ivar coalesced: requests that waited for a fill another one started.
    @ivar evictions: entries the bounds pushed out.
    @ivar invalidations: invalidations run.
    @ivar compressions: stored bodies compressed after their fill.
    """

    def __init__(
        self,
        name: str,
        store: Any,
        clock: IReactorTime,
        max_bytes: int,
        max_404_entries: int,
        max_variants: int = 16,
    ) -> None:
        """
        @param name: the server's name, for logs and stats.
        @param store: where bodies live (L{MemoryStore}/L{FilesystemStore}).
        @param clock: gives entries their storage time.
        @param max_bytes: bound on the bytes of stored entries, both caches
            together; the 404 cache may take at most a quarter of it.
        @param max_404_entries: entries of the 404 cache; 0 disables it.
        @param max_variants: how many C{Vary} variants one key may have.
        """
        self.name = name
        self.store = store
        self._clock = clock
        self._maxBytes = max_bytes
        self._main = LRU(max_bytes)
        self._notFound = LRU(max_bytes // 4, max_404_entries)
        self._max404 = max_404_entries
        self._pinned: Dict[Slot, CacheEntry] = {}
        self._pinnedBytes = 0
        self._partials: "OrderedDict[str, PartialEntry]" = OrderedDict()
        self._partialBytes = 0
        self._variance = Variance(max_variants)
        self._lock = FillLock(name, self._store, self._forget)
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.coalesced = 0
        self.evictions = 0
        self.invalidations = 0
        #: Stored bodies compressed after their fill (L{recode}).
        self.compressions = 0
        #: Counts the changes of stored entries in place (their headers,
        #: their codings): what was derived from an entry holds while this
        #: is the same.
        self.changes = 0

    # Reading

    def lookup(
        self, key: str, header: Callable[[str], Optional[str]]
    ) -> Optional[CacheEntry]:
        """
        Find the entry for C{key} that matches the request's variant.

        @param header: looks a request header up by lower-cased name.
        @return: the entry, or C{None}.
        """
        slot = self._variance.slot(key, header)
        if self._pinned:
            entry = self._pinned.get(slot)
            if entry is not None:
                return entry
        entry = self._main.get(slot)
        if entry is None and self._max404:
            entry = self._notFound.get(slot)
        return entry

    def entries(self) -> Iterator[CacheEntry]:
        """
        @return: every stored entry (pinned, main and 404), oldest use first.
        """
        yield from self._pinned.values()
        yield from self._main.entries.values()
        yield from self._notFound.entries.values()

    @property
    def entry_count(self) -> int:
        """
        How many entries are stored (pinned, main and 404).
        """
        return len(self._pinned) + len(self._main.entries) + len(self._notFound.entries)

    @property
    def bytes(self) -> int:
        """
        The accounted size of every stored entry (pinned, main and 404)
        and partial entry.
        """
        return self._pinnedBytes + self._main.bytes + self._notFound.bytes + self._partialBytes

    def has(self, key: str) -> bool:
        """
        @return: whether any entry (any variant) is stored under C{key}.
        """
        for variant in self._variance.variants(key):
            slot = (key, variant)
            if slot in self._pinned or slot in self._main.entries or slot in self._notFound.entries:
                return True
        return False

    def stats(self) -> Dict[str, int]:
        """
        @return: counters and sizes, as C{GET /stats} shows them.
        """
        return {
            "entries": self.entry_count,
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "coalesced": self.coalesced,
            "evictions": self.evictions,
        }

    # Filling

    def fill(
        self, key: str, fetch: Callable[[], Any], waiter: Optional[Waiter] = None
    ) -> Tuple[Any, bool]:
        """
        Fetch C{key} once however many ask at the same time.

        The first caller starts C{fetch()}; later callers wait for it. The
        fetch fires with L{Shared} (stored unless an invalidation overtook
        it, and given to every waiter), L{Exclusive} (given to the first
        waiter still waiting, L{NOT_SHARED} to the others) or a failure
        (given to every waiter). Cancelling a waiter detaches that waiter
        only; the fetch is cancelled when no waiter is left. See
        L{FillLock}.

        @param waiter: this caller's L{Waiter}, told by a plain call;
            without it, this caller waits through a L{Deferred}.
        @return: this caller's waiter (C{waiter}, or else a L{Deferred}),
            and whether it joined a fill another request started.
        """
        joined = self.join(key, waiter)
        if joined is not None:
            return joined, True
        self.misses += 1
        return self._lock.start(key, fetch, waiter), False

    def in_flight(self, key: str) -> bool:
        """
        @return: whether a fill of C{key} is in flight.
        """
        return key in self._lock

    def join(self, key: str, waiter: Optional[Waiter] = None) -> Any:
        """
        Wait for the fill of C{key} in flight, if there is one, without
        starting one.

        @param waiter: the waiter, told by a plain call (see
            L{FillLock.start}); without it, the waiter is a L{Deferred}.
        @return: the waiter (as L{fill}'s), or C{None}.
        """
        waiter = self._lock.join(key, waiter)
        if waiter is not None:
            self.coalesced += 1
        return waiter

    def put_body(self, key: str, body: builtins.bytes) -> Deferred[StoredBody]:
        """
        Hand a body to the store (a file in filesystem mode).

        @param body: the body's bytes (C{builtins.bytes}: in this class
            C{bytes} is the L{bytes} property).
        """
        return self.store.put(key, body)

    def put_body_now(self, key: str, body: builtins.bytes) -> Optional[StoredBody]:
        """
        L{put_body}, when the store holds the body at once (in memory).

        @return: the L{StoredBody}, or L{None}: the store writes it
            (L{put_body} does).
        """
        put_now = getattr(self.store, "put_now", None)
        return None if put_now is None else put_now(key, body)

    def _store(self, entry: CacheEntry) -> bool:
        """
        Hold C{entry}, dropping what it replaces and what it evicts.

        @return: whether C{entry} is held (it is not when larger than its
            LRU's bound); when it is not, its body is the caller's to delete.
        """
        key = entry.key
        if self._partials:
            # A response of the key is stored: its parts are of the past.
            self._drop_partial(key)
        tracked = self._variance.track(key, entry.vary, entry.variant)
        if tracked.superseded:
            self._dropSlots(key, tracked.superseded)
        for oldest in tracked.overflow:
            self._forget(self._main.pop((key, oldest)))
            self._forget(self._notFound.pop((key, oldest)))
        slot = (key, entry.variant)
        old = self._pinned.pop(slot, None)
        if old is not None:
            self._pinnedBytes -= old.size
            if old is not entry:
                self._forget(old)
        if entry.pinned:
            self._forget(self._main.pop(slot))
            self._forget(self._notFound.pop(slot))
            self._pinned[slot] = entry
            self._pinnedBytes += entry.size
            return True
        lru = self._notFound if entry.not_found else self._main
        other = self._main if entry.not_found else self._notFound
        self._forget(other.pop(slot))
        dropped = lru.put(entry)
        # Both LRUs together stay within max_bytes: the 404 cache's own
        # bound is a quarter of it, and the main cache yields the rest;
        # partial entries make room first.
        if self._partials:
            self._trim_partials(self._maxBytes - self._main.bytes - self._notFound.bytes)
        dropped += self._main.trim(self._maxBytes - self._notFound.bytes - self._partialBytes)
        for victim in dropped:
            if victim is entry:
                self._variance.untrack(key, entry.variant)
                continue
            if (victim.key, victim.variant) != slot:
                self.evictions += 1
                self._variance.untrack(victim.key, victim.variant)
            self._forget(victim)
        return entry not in dropped

    def _forget(self, entry: Optional[CacheEntry]) -> None:
        """
        Delete the body of C{entry}, if there is one, and its alternates.
        """
        if entry is not None:
            self.store.delete(entry.body)
            if entry.alternates:
                for stored in entry.alternates.values():
                    self.store.delete(stored)

    def _dropSlots(self, key: str, variants: Tuple[Variant, ...]) -> None:
        """
        Forget the entries of C{key} in C{variants}, pinned or not.
        """
        for variant in variants:
            slot = (key, variant)
            self._forget(self._main.pop(slot))
            self._forget(self._notFound.pop(slot))
            pinned = self._pinned.pop(slot, None)
            if pinned is not None:
                self._pinnedBytes -= pinned.size
                self._forget(pinned)

    # Invalidation

    def invalidate_all(self) -> int:
        """
        Forget every entry and keep in-flight fills from storing.

        @return: how many entries were dropped.
        """
        dropped = self._main.clear() + self._notFound.clear() + list(self._pinned.values())
        self._pinned.clear()
        self._pinnedBytes = 0
        partials = len(self._partials)
        self._partials.clear()
        self._partialBytes = 0
        self._variance.clear()
        self._lock.doom_all()
        for entry in dropped:
            self._forget(entry)
        self.invalidations += 1
        return len(dropped) + partials

    def invalidate(self, pattern: str, keep_pinned: Optional[Callable[[str], bool]] = None) -> int:
        """
        Forget the entries whose key matches C{pattern} (see
        L{InvalidationPattern}); in-flight fills of matching keys are not
        stored.

        @param keep_pinned: the matching keys whose pinned entries
            (snapshots) stay until a fill replaces them; their other entries
            go.
        @return: how many entries were dropped.
        """
        matcher = InvalidationPattern(pattern)
        kept = set()
        count = 0
        for lru in (self._main, self._notFound):
            for slot in [s for s in lru.entries if matcher.matches(s[0])]:
                self._forget(lru.pop(slot))
                if keep_pinned is not None and keep_pinned(slot[0]):
                    self._variance.untrack(*slot)
                count += 1
        for slot in [s for s in self._pinned if matcher.matches(s[0])]:
            if keep_pinned is not None and keep_pinned(slot[0]):
                kept.add(slot[0])
                continue
            entry = self._pinned.pop(slot)
            self._pinnedBytes -= entry.size
            self._forget(entry)
            count += 1
        for key in [k for k in self._partials if matcher.matches(k)]:
            self._drop_partial(key)
            count += 1
        self._variance.forget_matching(lambda key: key not in kept and matcher.matches(key))
        self._lock.doom_matching(matcher.matches)
        self.invalidations += 1
        return count

    def drop(self, key: str) -> None:
        """
        Forget every entry of C{key} (pinned or not) and its parts.
        """
        self._drop_partial(key)
        self._dropSlots(key, self._variance.forget(key))

    # Partial entries

    def partial(self, key: str) -> Optional[PartialEntry]:
        """
        Find the partial entry of C{key}, making it the most recently used.

        @return: it, or L{None}.
        """
        partial = self._partials.get(key)
        if partial is not None:
            self._partials.move_to_end(key)
        return partial

    @property
    def partial_count(self) -> int:
        """
        How many partial entries are stored.
        """
        return len(self._partials)

    def add_part(
        self, candidate: PartialEntry, first: int, data: builtins.bytes, bound: int
    ) -> Optional[PartialEntry]:
        """
        Store C{data}, the bytes of a representation from offset C{first},
        as a part of the partial entry of C{candidate.key}.

        When the stored partial entry is of the same representation (see
        L{PartialEntry.same_representation}), the part is merged into it and
        it takes C{candidate}'s headers and freshness (those of the latest
        part); otherwise C{candidate}, with this part alone, replaces it
        (RFC 9111 §3.4).

        @param candidate: a partial entry without parts, made of the 206
            that brought C{data}.
        @param bound: the most bytes the parts of one entry may hold.
        @return: the partial entry holding the part, or L{None} when it is
            not stored (the parts would exceed C{bound}, or the cache's
            byte bound; what was stored stays).
        """
        key = candidate.key
        stored = self._partials.get(key)
        if stored is None or not stored.same_representation(candidate):
            stored = None
            parts = merge([], first, data)
        else:
            parts = merge(stored.parts, first, data)
        if sum(len(chunk) for _, chunk in parts) > bound:
            return None
        candidate.parts = parts
        candidate.resize()
        if candidate.size > self._maxBytes - self._notFound.bytes:
            return None
        self._drop_partial(key)
        self._partials[key] = candidate
        self._partialBytes += candidate.size
        self._trim_partials(self._maxBytes - self._notFound.bytes - self._main.bytes, key)
        for victim in self._main.trim(self._maxBytes - self._notFound.bytes - self._partialBytes):
            self.evictions += 1
            self._variance.untrack(victim.key, victim.variant)
            self._forget(victim)
        return candidate

    def _drop_partial(self, key: str) -> None:
        partial = self._partials.pop(key, None)
        if partial is not None:
            self._partialBytes -= partial.size

    def _trim_partials(self, budget: int, keep: Optional[str] = None) -> None:
        """
        Drop the least recently used partial entries (but that of C{keep})
        until the rest take at most C{budget} bytes.
        """
        while self._partials and self._partialBytes > budget and next(iter(self._partials)) != keep:
            self._drop_partial(next(iter(self._partials)))
            self.evictions += 1

    def close(self) -> None:
        """
        Drop everything and close the store.
        """
        self.invalidate_all()
        self.store.close()
