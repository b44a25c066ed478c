"""
The Redis tier: L{TieredCache}, a L{ResponseCache} whose entries also live
in Redis, shared by every process pointed at it, with this process's
memory as a bounded L1 in front.

Layout, under the server's namespace C{PREFIX:SERVER:} (see
L{phantom_frame.cache.bus.RedisNode.namespace}):

  - C{e:KEY\\x1fVARIANT}: one entry (L{encode_entry}), with the TTL of its
    useful life (none for an entry fresh until invalidated);
  - C{v:KEY}: the C{Vary} names of KEY's entries (a JSON list);
  - C{lock:KEY}: the node filling KEY (C{SET NX PX}).

Reads go to L1 first; an L1 miss reads Redis before deciding
(L{TieredCache.prefetch}). Stores write through. Fills of one key are
single-flight across nodes: the node that takes the lock fetches, writes and
announces; the others wait for the announcement (at most the lock's life:
a holder that died lets a waiter take over) and read the entry. Redis
failing never fails a request: L1 and the origin answer meanwhile.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, Optional, Set, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from phantom_frame.cache.bus import RedisNode, RedisUnavailable
from phantom_frame.cache.entry import CacheEntry, Variant
from phantom_frame.cache.lock import FillResult, Shared
from phantom_frame.cache.patterns import InvalidationPattern
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore, StoredBody
from phantom_frame.cache.variance import variant_of

log = Logger()

#: How long past its stale windows an entry with validators stays in Redis
#: (so that it can be revalidated rather than fetched again), at least.
REVALIDATION_GRACE = 60.0


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("latin-1")


def _bytes(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else value.encode("latin-1")


def encode_variant(variant: Variant) -> bytes:
    """
    @return: C{variant} as the JSON line that names its Redis key.
    """
    return json.dumps(list(variant), separators=(",", ":")).encode("utf-8", "surrogatepass")


def encode_entry(entry: CacheEntry, body: bytes) -> bytes:
    """
    @param body: the entry's stored (coded) body.
    @return: the entry as stored in Redis: a JSON head line, then the body.
    """
    head = {
        "key": entry.key,
        "status": entry.status,
        "phrase": _text(entry.phrase),
        "headers": [[_text(n), _text(v)] for n, v in entry.headers],
        "coding": entry.coding,
        "length": entry.identity_length,
        "stored_at": entry.stored_at,
        "vary": list(entry.vary),
        "vary_header": _text(entry.vary_header),
        "variant": list(entry.variant),
        "not_found": entry.not_found,
        "lifetime": None if math.isinf(entry.lifetime) else entry.lifetime,
        "initial_age": entry.initial_age,
        "swr": entry.stale_while_revalidate,
        "sie": entry.stale_if_error,
        "must_revalidate": entry.must_revalidate,
        "etag": _text(entry.etag),
        "last_modified": _text(entry.last_modified),
    }
    return json.dumps(head, separators=(",", ":")).encode("utf-8", "surrogatepass") + b"\n" + body


def decode_entry(data: bytes) -> CacheEntry:
    """
    @return: the entry L{encode_entry} made C{data} of (its body in memory).
    @raise ValueError: when C{data} is not such an entry.
    """
    line, newline, body = data.partition(b"\n")
    if not newline:
        raise ValueError("not a stored entry")
    h = json.loads(line.decode("utf-8", "surrogatepass"))
    return CacheEntry(
        key=h["key"],
        status=h["status"],
        phrase=_bytes(h["phrase"]),
        headers=tuple((_bytes(n), _bytes(v)) for n, v in h["headers"]),
        coding=h["coding"],
        body=StoredBody(len(body), body, None),
        identity_length=h["length"],
        stored_at=h["stored_at"],
        vary=tuple(h["vary"]),
        vary_header=_bytes(h["vary_header"]),
        variant=tuple(h["variant"]),
        not_found=h["not_found"],
        lifetime=math.inf if h["lifetime"] is None else h["lifetime"],
        initial_age=h["initial_age"],
        stale_while_revalidate=h["swr"],
        stale_if_error=h["sie"],
        must_revalidate=h["must_revalidate"],
        etag=_bytes(h["etag"]),
        last_modified=_bytes(h["last_modified"]),
    )


def time_to_live(entry: CacheEntry, now: float) -> Optional[float]:
    """
    @return: the seconds C{entry} is of use in Redis from C{now}: its
        freshness and stale windows (plus a revalidation grace when it has
        validators); L{None} for an entry fresh until invalidated.
    """
    if math.isinf(entry.lifetime):
        return None
    useful = entry.lifetime + max(entry.stale_while_revalidate, entry.stale_if_error)
    if entry.etag is not None or entry.last_modified is not None:
        useful += max(entry.lifetime, REVALIDATION_GRACE)
    return useful - entry.age(now)


def _forget(waiting: Deferred[Any]) -> None:
    """
    Stop waiting for C{waiting} (nobody awaits it).
    """
    waiting.addErrback(lambda _: None)
    waiting.cancel()


class TieredCache(ResponseCache):
    """
    A server's cache in Redis, with a bounded memory L1 in front (this
    process's L{ResponseCache}, bounded by the node's C{l1_bytes}).

    @ivar node: the link to Redis.
    @ivar purges: the cross-node invalidations under way (L{Deferred}s with
        the number of nodes that confirmed, or L{None}).
    """

    def __init__(
        self,
        name: str,
        node: RedisNode,
        clock: Any,
        max_404_entries: int,
        fill_timeout: float,
        max_variants: int = 16,
    ) -> None:
        """
        @param name: the server's name: its namespace in Redis.
        @param node: the link to Redis.
        @param clock: gives entries their storage time and judges TTLs.
        @param max_404_entries: entries of the 404 cache in L1.
        @param fill_timeout: how long a node waits for another node's fill
            (the lock lives a little longer).
        """
        super().__init__(name, MemoryStore(), clock, node.l1_bytes, max_404_entries, max_variants)
        self.node = node
        self._ns = node.namespace(name)
        self._fillTimeout = fill_timeout
        # Entries already in Redis (read from it, or written by a fill), by
        # id, until L1 stores them: they are not written again.
        self._fromRedis: Dict[int, CacheEntry] = {}
        self._generation = 0
        self.purges: Set[Deferred[Optional[int]]] = set()
        node.register(name, self)

    def _entry_key(self, key: str, variant: Variant) -> str:
        return f"{self._ns}e:{key}\x1f" + encode_variant(variant).decode("utf-8", "surrogatepass")

    # Reading

    def prefetch(self, key: str, header: Callable[[str], Optional[str]]) -> Deferred[None]:
        """
        Make sure L1 holds what Redis holds for this request: on an L1
        miss, read the entry from Redis into L1. Never fails (Redis failing
        is an L1 miss).

        @param header: looks a request header up by lower-cased name.
        """
        if self.lookup(key, header) is not None:
            return succeed(None)
        return Deferred.fromCoroutine(self._prefetch(key, header))

    async def _prefetch(self, key: str, header: Callable[[str], Optional[str]]) -> None:
        generation = self._generation
        try:
            names, plain = await self.node.call("mget", [f"{self._ns}v:{key}", self._entry_key(key, ())])
            if names:
                vary = tuple(json.loads(names))
                plain = await self.node.call("get", self._entry_key(key, variant_of(vary, header)))
        except RedisUnavailable:
            return
        if plain and generation == self._generation:
            self._adopt(plain)

    def _adopt(self, data: bytes) -> Optional[CacheEntry]:
        """
        Hold in L1 an entry read from Redis (without writing it back).

        @return: the entry, or L{None} when it cannot be read.
        """
        try:
            entry = decode_entry(data)
        except (ValueError, KeyError, TypeError):
            log.warn("server {server}: unreadable entry in Redis", server=self.name)
            return None
        self._fromRedis[id(entry)] = entry
        self._store(entry)
        return entry

    # Writing

    def _store(self, entry: CacheEntry) -> bool:
        """
        Hold C{entry} in L1 and write it to Redis (unless it came from
        there).
        """
        held = super()._store(entry)
        if self._fromRedis.pop(id(entry), None) is None:
            self._write(entry).addErrback(lambda _: None)
        return held

    def update(self, entry: CacheEntry, headers: Tuple[Any, ...]) -> None:
        """
        Replace an entry's headers (a revalidation) in L1 and in Redis.
        """
        super().update(entry, headers)
        self._write(entry).addErrback(lambda _: None)

    def _write(self, entry: CacheEntry) -> Deferred[Any]:
        """
        Write C{entry} (and its key's C{Vary} names) with its TTL.
        """
        ttl = time_to_live(entry, self._clock.seconds())
        body = entry.body.data
        if body is None or (ttl is not None and ttl <= 0):
            return succeed(None)
        px = None if ttl is None else max(1, int(ttl * 1000))
        node = self.node
        data = encode_entry(entry, body)
        writing = node.call("set", self._entry_key(entry.key, entry.variant), data, None, px)
        names = f"{self._ns}v:{entry.key}"
        if entry.vary:
            vary = json.dumps(list(entry.vary))
            writing.addCallback(lambda _: node.call("set", names, vary, None, px))
        else:
            writing.addCallback(lambda _: node.call("delete", [names]))
        return writing

    # Filling across nodes

    def fill(self, key: str, fetch: Callable[[], Deferred[FillResult]]) -> Tuple[Deferred[FillResult], bool]:
        """
        As L{ResponseCache.fill}, single-flight across every node on the
        same Redis as well.
        """
        return super().fill(key, lambda: Deferred.fromCoroutine(self._fill_across(key, fetch)))

    async def _fill_across(self, key: str, fetch: Callable[[], Deferred[FillResult]]) -> FillResult:
        node = self.node
        lock = f"{self._ns}lock:{key}"
        lifetime = self._fillTimeout + 1
        for _ in range(3):
            announced = node.expect_filled(self.name, key)
            try:
                token = await node.acquire(lock, lifetime)
            except RedisUnavailable:
                _forget(announced)
                return await fetch()
            if token is not None:
                _forget(announced)
                return await self._fill_holding(key, fetch, lock, token)
            timer = self._clock.callLater(lifetime, announced.cancel)
            try:
                variant = await announced
            except CancelledError:
                if timer.active():
                    timer.cancel()
                    raise
                continue
            timer.cancel()
            if variant is not None:
                entry = await self._read(key, variant)
                if entry is not None:
                    self._fromRedis[id(entry)] = entry
                    return Shared(entry)
            break
        return await fetch()

    async def _read(self, key: str, variant: bytes) -> Optional[CacheEntry]:
        """
        Read the entry another node just stored.
        """
        name = f"{self._ns}e:{key}\x1f" + variant.decode("utf-8", "surrogatepass")
        try:
            data = await self.node.call("get", name)
        except RedisUnavailable:
            return None
        if not data:
            return None
        try:
            return decode_entry(data)
        except (ValueError, KeyError, TypeError):
            return None

    async def _fill_holding(
        self, key: str, fetch: Callable[[], Deferred[FillResult]], lock: str, token: str
    ) -> FillResult:
        """
        Fetch while holding the lock; write what is stored, then announce.
        """
        node = self.node
        generation = self._generation
        try:
            result = await fetch()
        except BaseException:
            node.release(lock, token)
            node.announce(self.name, key, None)
            raise
        entry = result.to_store
        variant = None
        if entry is not None and generation == self._generation:
            try:
                await self._write(entry)
                variant = encode_variant(entry.variant)
                self._fromRedis[id(entry)] = entry
            except RedisUnavailable:
                pass
        node.release(lock, token)
        node.announce(self.name, key, variant)
        return result

    # Invalidation

    def _purge(self, pattern: Optional[str], matches: Callable[[str], bool]) -> None:
        self._generation += 1
        # Fills the invalidation doomed are never stored.
        self._fromRedis.clear()
        purge = self.node.purge(self.name, pattern, matches)
        self.purges.add(purge)

        def done(result: Any) -> Any:
            self.purges.discard(purge)
            return result

        purge.addBoth(done)

    def invalidate_all(self) -> int:
        """
        Forget every entry here, in Redis and on every node.
        """
        count = super().invalidate_all()
        self._purge(None, lambda key: True)
        return count

    def invalidate(self, pattern: str, keep_pinned: Optional[Callable[[str], bool]] = None) -> int:
        """
        Forget the entries matching C{pattern} here, in Redis and on every
        node (see L{ResponseCache.invalidate}).
        """
        count = super().invalidate(pattern, keep_pinned)
        self._purge(pattern, InvalidationPattern(pattern).matches)
        return count

    def drop_local(self, pattern: Optional[str]) -> None:
        """
        Another node invalidated C{pattern} (L{None}: everything): forget
        the matching L1 copies.
        """
        self._generation += 1
        self._fromRedis.clear()
        if pattern is None:
            super().invalidate_all()
        else:
            super().invalidate(pattern)

    def close(self) -> None:
        """
        Drop L1 (Redis keeps the entries) and stop taking bus messages.
        """
        self.node.unregister(self.name, self)
        ResponseCache.invalidate_all(self)
        self.store.close()
