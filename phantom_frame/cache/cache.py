"""
L{ResponseCache}: the stored responses of one origin.

It knows nothing of HTTP servers: it holds L{CacheEntry} values under string
keys (with L{Vary} variants), bounds them by bytes (main LRU) and by count
(404 LRU), runs one fill per key at a time with any number of waiters, and
forgets entries synchronously on invalidation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.patterns import InvalidationPattern
from phantom_frame.cache.store import StoredBody

log = Logger()

Header = Tuple[bytes, bytes]
Variant = Tuple[Optional[str], ...]

#: Bookkeeping bytes charged to every entry on top of its body and headers,
#: so that many tiny entries still count against C{cache_max_bytes}.
ENTRY_OVERHEAD = 512


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
    @ivar wire: answers serialised by the fast path, by coding (dropped
        whenever the headers change).
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
    wire: Optional[Dict[str, Any]] = None
    size: int = 0

    def age(self, now: float) -> float:
        """
        @return: the entry's current age (RFC 9111 §4.2.3) at C{now}.
        """
        resident = now - self.stored_at
        return self.initial_age + (resident if resident > 0 else 0.0)

    def __attrs_post_init__(self) -> None:
        self.resize()

    def resize(self) -> None:
        """
        Account the entry's size again (after its headers changed).
        """
        self.size = (
            self.body.size
            + sum(len(n) + len(v) for n, v in self.headers)
            + len(self.key)
            + ENTRY_OVERHEAD
        )


def normalise(value: Optional[str]) -> Optional[str]:
    """
    Normalise a request header value for Vary matching: whitespace around
    list items and runs of spaces do not make a different variant.
    """
    if value is None:
        return None
    return ",".join(" ".join(item.split()) for item in value.split(","))


def variant_of(names: Tuple[str, ...], header: Callable[[str], Optional[str]]) -> Variant:
    """
    @param names: lower-cased header names.
    @param header: looks a request header up by lower-cased name.
    @return: the request's variant for those names.
    """
    return tuple(normalise(header(name)) for name in names)


class _LRU:
    """
    Entries by C{(key, variant)}, least recently used first, bounded by bytes
    and optionally by count.
    """

    def __init__(self, max_bytes: int, max_entries: Optional[int] = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: "OrderedDict[Tuple[str, Variant], CacheEntry]" = OrderedDict()
        self.bytes = 0

    def get(self, slot: Tuple[str, Variant]) -> Optional[CacheEntry]:
        entry = self.entries.get(slot)
        if entry is not None:
            self.entries.move_to_end(slot)
        return entry

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

    def pop(self, slot: Tuple[str, Variant]) -> Optional[CacheEntry]:
        entry = self.entries.pop(slot, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def clear(self) -> List[CacheEntry]:
        dropped = list(self.entries.values())
        self.entries.clear()
        self.bytes = 0
        return dropped


@attr.s(frozen=True, auto_attribs=True)
class Shared:
    """
    A fill's result every waiter may use: a storable response.

    @ivar entry: the response (stored unless an invalidation overtook it).
    @ivar origin_status: what the origin answered (304 when it revalidated
        a stored entry, which is then C{entry}, freshened in place).
    """

    entry: CacheEntry
    origin_status: int = 200

    def deliver(self, receiver: Any) -> Any:
        return receiver.shared(self)


@attr.s(frozen=True, auto_attribs=True)
class Exclusive:
    """
    A fill's result only one waiter may use (a private or oversized response
    streaming from the origin). The others get L{NOT_SHARED}.

    @ivar value: what the first waiter takes (to stream).
    @ivar reason: why it is not shared, for C{Cache-Status}.
    @ivar release: called when nobody takes the value.
    """

    value: Any
    reason: str
    release: Callable[[], None] = lambda: None

    def deliver(self, receiver: Any) -> Any:
        return receiver.exclusive(self)


#: What a waiter gets when a fill's result was not its to share: make your
#: own request.
class NotShared:
    def deliver(self, receiver: Any) -> Any:
        return receiver.not_shared(self)


NOT_SHARED = NotShared()


class _Flight:
    """
    One in-flight fill and the Deferreds of those waiting for it.
    """

    def __init__(self, cache: ResponseCache, key: str) -> None:
        self.cache = cache
        self.key = key
        self.doomed = False
        self.waiters: List[Deferred] = []
        self.fetching: Optional[Deferred] = None

    def join(self) -> Deferred:
        waiter: Deferred = Deferred(self._cancelWaiter)
        self.waiters.append(waiter)
        return waiter

    def _cancelWaiter(self, waiter: Deferred) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        waiter.errback(Failure(CancelledError()))
        if not self.waiters and self.fetching is not None:
            self.cache._land(self)
            self.fetching.cancel()

    def finish(self, result: Any) -> None:
        self.cache._land(self)
        waiters, self.waiters = self.waiters, []
        self.fetching = None
        if isinstance(result, Failure):
            if not waiters and not result.check(CancelledError):
                log.failure(
                    "fill of {key!r} on server {server} failed with nobody waiting",
                    result,
                    key=self.key,
                    server=self.cache.name,
                )
            for waiter in waiters:
                if not waiter.called:
                    waiter.errback(Failure(result.value, result.type, result.tb))
            return
        if isinstance(result, Exclusive):
            if not waiters:
                result.release()
                return
            first, rest = waiters[0], waiters[1:]
            first.callback(result)
            for waiter in rest:
                if not waiter.called:
                    waiter.callback(NOT_SHARED)
            return
        stored = False
        if isinstance(result, Shared) and not self.doomed:
            stored = self.cache._store(result.entry)
        for waiter in waiters:
            # A waiter's callback may have cancelled a later waiter.
            if not waiter.called:
                waiter.callback(result)
        if isinstance(result, Shared) and not stored:
            # Not held by the cache: its body goes once the waiters have
            # started reading it.
            self.cache._forget(result.entry)


class ResponseCache:
    """
    The stored responses of one origin.
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
        self._main = _LRU(max_bytes)
        self._notFound = _LRU(max_bytes // 4, max_404_entries)
        self._max404 = max_404_entries
        self._maxVariants = max_variants
        self._pinned: Dict[Tuple[str, Variant], CacheEntry] = {}
        self._pinnedBytes = 0
        self._vary: Dict[str, Tuple[str, ...]] = {}
        self._variants: Dict[str, "OrderedDict[Variant, None]"] = {}
        self._flights: Dict[str, _Flight] = {}
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.coalesced = 0
        self.evictions = 0
        self.invalidations = 0

    # Reading

    def lookup(
        self, key: str, header: Callable[[str], Optional[str]]
    ) -> Optional[CacheEntry]:
        """
        Find the entry for C{key} that matches the request's variant.

        @param header: looks a request header up by lower-cased name.
        @return: the entry, or C{None}.
        """
        names = self._vary.get(key, ())
        slot = (key, variant_of(names, header) if names else ())
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
        @return: every stored entry (main and 404), oldest use first.
        """
        yield from self._pinned.values()
        yield from self._main.entries.values()
        yield from self._notFound.entries.values()

    @property
    def entry_count(self) -> int:
        return len(self._pinned) + len(self._main.entries) + len(self._notFound.entries)

    @property
    def bytes(self) -> int:
        return self._pinnedBytes + self._main.bytes + self._notFound.bytes

    def has(self, key: str) -> bool:
        """
        @return: whether any entry (any variant) is stored under C{key}.
        """
        for variant in self._variants.get(key, {(): None}):
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

    def fill(self, key: str, fetch: Callable[[], Deferred]) -> Tuple[Deferred, bool]:
        """
        Fetch C{key} once however many ask at the same time.

        The first caller starts C{fetch()}; later callers wait for it. The
        fetch fires with L{Shared} (stored unless an invalidation overtook
        it, and given to every waiter), L{Exclusive} (given to the first
        waiter still waiting, L{NOT_SHARED} to the others) or a failure
        (given to every waiter). Cancelling a waiter's Deferred detaches
        that waiter only; the fetch is cancelled when no waiter is left.

        @return: this caller's L{Deferred}, and whether it joined a fill
            another request started.
        """
        flight = self._flights.get(key)
        if flight is not None:
            self.coalesced += 1
            return flight.join(), True
        self.misses += 1
        flight = _Flight(self, key)
        self._flights[key] = flight
        waiter = flight.join()
        try:
            fetching = fetch()
        except BaseException:
            fetching = Deferred()
            fetching.errback()
        flight.fetching = fetching
        fetching.addBoth(flight.finish)
        return waiter, False

    def in_flight(self, key: str) -> bool:
        """
        @return: whether a fill of C{key} is in flight.
        """
        return key in self._flights

    def join(self, key: str) -> Optional[Deferred]:
        """
        Wait for the fill of C{key} in flight, if there is one, without
        starting one.

        @return: a waiter's L{Deferred} (as L{fill}'s), or C{None}.
        """
        flight = self._flights.get(key)
        if flight is None:
            return None
        self.coalesced += 1
        return flight.join()

    def _land(self, flight: _Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def put_body(self, key: str, body: bytes) -> Deferred[StoredBody]:
        """
        Hand a body to the store (a file in filesystem mode).
        """
        return self.store.put(key, body)

    def _store(self, entry: CacheEntry) -> bool:
        """
        Hold C{entry}, dropping what it replaces and what it evicts.

        @return: whether C{entry} is held (it is not when larger than its
            LRU's bound); when it is not, its body is the caller's to delete.
        """
        key = entry.key
        if entry.vary:
            if self._vary.get(key) != entry.vary:
                self._dropKey(key)
                self._vary[key] = entry.vary
            variants = self._variants.setdefault(key, OrderedDict())
            variants[entry.variant] = None
            variants.move_to_end(entry.variant)
            while len(variants) > self._maxVariants:
                oldest, _ = variants.popitem(last=False)
                self._forget(self._main.pop((key, oldest)))
                self._forget(self._notFound.pop((key, oldest)))
        elif key in self._vary:
            self._dropKey(key)
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
        # bound is a quarter of it, and the main cache yields the rest.
        main = self._main
        while main.entries and main.bytes + self._notFound.bytes > self._maxBytes:
            dropped.append(main.entries.popitem(last=False)[1])
            main.bytes -= dropped[-1].size
        for victim in dropped:
            if victim is entry:
                self._untrackVariant(entry)
                continue
            if (victim.key, victim.variant) != (key, entry.variant):
                self.evictions += 1
                self._untrackVariant(victim)
            self._forget(victim)
        return entry not in dropped

    def _untrackVariant(self, entry: CacheEntry) -> None:
        variants = self._variants.get(entry.key)
        if variants is not None:
            variants.pop(entry.variant, None)
            if not variants:
                del self._variants[entry.key]
                self._vary.pop(entry.key, None)

    def _forget(self, entry: Optional[CacheEntry]) -> None:
        if entry is not None:
            self.store.delete(entry.body)

    def _dropKey(self, key: str) -> None:
        variants = self._variants.pop(key, None) or {(): None}
        self._vary.pop(key, None)
        for variant in list(variants) + [()]:
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
        self._vary.clear()
        self._variants.clear()
        for flight in self._flights.values():
            flight.doomed = True
        self._flights.clear()
        for entry in dropped:
            self._forget(entry)
        self.invalidations += 1
        return len(dropped)

    def invalidate(self, pattern: str) -> int:
        """
        Forget the entries whose key matches C{pattern} (see
        L{InvalidationPattern}); in-flight fills of matching keys are not
        stored.

        @return: how many entries were dropped.
        """
        matcher = InvalidationPattern(pattern)
        count = 0
        for lru in (self._main, self._notFound):
            for slot in [s for s in lru.entries if matcher.matches(s[0])]:
                self._forget(lru.pop(slot))
                count += 1
        for slot in [s for s in self._pinned if matcher.matches(s[0])]:
            entry = self._pinned.pop(slot)
            self._pinnedBytes -= entry.size
            self._forget(entry)
            count += 1
        for key in [k for k in self._vary if matcher.matches(k)]:
            self._vary.pop(key, None)
            self._variants.pop(key, None)
        for key in [k for k in self._flights if matcher.matches(k)]:
            self._flights.pop(key).doomed = True
        self.invalidations += 1
        return count

    def update(self, entry: CacheEntry, headers: Tuple[Header, ...]) -> None:
        """
        Replace a stored entry's headers in place, keeping the size
        accounting right (the entry may or may not still be held).
        """
        before = entry.size
        entry.headers = headers
        entry.wire = None
        entry.resize()
        delta = entry.size - before
        slot = (entry.key, entry.variant)
        if self._pinned.get(slot) is entry:
            self._pinnedBytes += delta
        for lru in (self._main, self._notFound):
            if lru.entries.get(slot) is entry:
                lru.bytes += delta

    def pin(self, entry: CacheEntry) -> None:
        """
        Make a stored entry a snapshot (kept until removed or invalidated);
        an entry no longer held is left alone.
        """
        slot = (entry.key, entry.variant)
        for lru in (self._main, self._notFound):
            if lru.entries.get(slot) is entry:
                lru.pop(slot)
                entry.pinned = True
                self._pinned[slot] = entry
                self._pinnedBytes += entry.size
                return

    def drop(self, key: str) -> None:
        """
        Forget every entry of C{key} (pinned or not).
        """
        self._dropKey(key)

    def close(self) -> None:
        """
        Drop everything and close the store.
        """
        self.invalidate_all()
        self.store.close()
