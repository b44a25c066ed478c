"""
The Redis tier: L{TieredCache}, a L{ResponseCache} whose entries also live
in Redis, shared by every process pointed at it, with this process's
memory as a bounded L1 in front.

Layout, under the server's namespace C{PREFIX:SERVER:} (see
L{phantom_frame.cache.bus.RedisNode.namespace}):

  - C{e:KEY\\x1fVARIANT}: one entry (L{encode_entry}: a snapshot says it is
    one), with the TTL of its useful life (none for an entry fresh until
    invalidated);
  - C{v:KEY}: the C{Vary} names of KEY's entries (a JSON list);
  - C{lock:KEY}: the node filling KEY (C{SET NX PX});
  - C{tracked}: the snapshot paths added (C{1}) or removed (C{0}) on any
    node, for the nodes that start later.

Reads go to L1 first; an L1 miss reads Redis before deciding
(L{TieredCache.prefetch}). Stores write through. Fills of one key are
single-flight across nodes: the node that takes the lock fetches, writes and
announces; the others wait for the announcement (at most the lock's life:
a holder that died lets a waiter take over) and read the entry. Redis
failing never fails a request: L1 and the origin answer meanwhile.

Snapshots are shared (L{TieredCache.fill_snapshot}): read from Redis rather
than fetched, kept in Redis and on every node through an invalidation, and
replaced when the new version is announced (L{TieredCache.filled_elsewhere}).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional, Set, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from phantom_frame.cache.bus import RedisNode, RedisUnavailable
from phantom_frame.cache.entry import CacheEntry, Variant
from phantom_frame.cache.lock import FillResult, Shared, Waiter
from phantom_frame.cache.patterns import InvalidationPattern
from phantom_frame.cache.redisentry import (
    REVALIDATION_GRACE,
    decode_entry,
    encode_entry,
    encode_variant,
    time_to_live,
)
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore
from phantom_frame.cache.variance import no_header, variant_of

log = Logger()

#: How long the first snapshot fills of a node wait for Redis to be reached.
READY_WITHIN = 5.0


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
    @ivar purges: the cross-node invalidations and snapshot changes under
        way (L{Deferred}s with the number of nodes that confirmed, or
        L{None}).
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
        #: Follows the snapshot changes other nodes make (set by the
        #: server's snapshots): C{followed_add(path)},
        #: C{followed_remove(path)}, C{followed_purge(keys)}.
        self.snapshot_listener: Any = None
        self._waiting: Optional[Deferred[Any]] = None
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
        plain = await self._current(key, header)
        if plain and generation == self._generation:
            self._adopt(plain)

    async def _current(self, key: str, header: Callable[[str], Optional[str]]) -> Optional[bytes]:
        """
        @return: what Redis holds for C{key} in the variant C{header}
            selects (as L{encode_entry} made it), or L{None} (nothing, or
            Redis failing).
        """
        try:
            names, plain = await self.node.call("mget", [f"{self._ns}v:{key}", self._entry_key(key, ())])
            if names:
                vary = tuple(json.loads(names))
                plain = await self.node.call("get", self._entry_key(key, variant_of(vary, header)))
        except RedisUnavailable:
            return None
        return plain or None

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

    def fill(
        self, key: str, fetch: Callable[[], Any], waiter: Optional[Waiter] = None,
        usable: Optional[Callable[[CacheEntry], bool]] = None,
    ) -> Tuple[Any, bool]:
        """
        As L{ResponseCache.fill}, single-flight across every node on the
        same Redis as well.

        @param usable: says whether an entry of C{key} already in Redis
            answers this fill (then nothing is fetched); without it, the
            fill fetches unless another node's fill of C{key} is under way.
        """
        return super().fill(key, lambda: Deferred.fromCoroutine(self._fill_across(key, fetch, usable)), waiter)

    def fill_snapshot(
        self, key: str, fetch: Callable[[], Deferred[FillResult]], since: Optional[float] = None
    ) -> Tuple[Deferred[FillResult], bool]:
        """
        Fill the snapshot of C{key} once for every node: a snapshot already
        in Redis, stored at C{since} or later (any, when L{None}), is read
        instead of fetched; otherwise the node holding the fill lock fetches
        and the others read what it stored. The first snapshot fills wait
        (a few seconds at most) for Redis to be reached, so that the nodes
        starting together share their warm-up.
        """
        return self.fill(key, fetch, None, lambda entry: entry.pinned and (since is None or entry.stored_at >= since))

    async def _fill_across(
        self, key: str, fetch: Callable[[], Deferred[FillResult]], usable: Optional[Callable[[CacheEntry], bool]] = None
    ) -> FillResult:
        node = self.node
        lock = f"{self._ns}lock:{key}"
        lifetime = self._fillTimeout + 1
        if usable is not None:
            await self._reached()
        for _ in range(3):
            found = None if usable is None else await self._usable(key, usable)
            if found is not None:
                return found
            announced = node.expect_filled(self.name, key)
            try:
                token = await node.acquire(lock, lifetime)
            except RedisUnavailable:
                _forget(announced)
                return await fetch()
            if token is not None:
                _forget(announced)
                # Another node may have stored it between the look above
                # and the lock: read, not fetch, then.
                found = None if usable is None else await self._usable(key, usable)
                if found is not None:
                    node.release(lock, token)
                    node.announce(self.name, key, encode_variant(found.entry.variant))
                    return found
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

    async def _reached(self) -> None:
        """
        Wait, once, for Redis to be reached (at most L{READY_WITHIN}
        seconds): the first snapshot fills of a starting node.
        """
        if self._waiting is None:
            self._waiting = self.node.ready(READY_WITHIN)
            self._waiting.addErrback(lambda _: False)
        if not self._waiting.called:
            waiting: Deferred[Any] = Deferred()
            self._waiting.addBoth(lambda result: waiting.callback(None) or result)
            await waiting

    async def _usable(self, key: str, usable: Callable[[CacheEntry], bool]) -> Optional[Shared]:
        """
        @return: the entry of C{key} Redis holds for a request without
            headers, when C{usable} accepts it, as a fill's result; else
            L{None}.
        """
        data = await self._current(key, no_header)
        if data is None:
            return None
        try:
            entry = decode_entry(data)
        except (ValueError, KeyError, TypeError):
            return None
        if not usable(entry):
            return None
        self._fromRedis[id(entry)] = entry
        return Shared(entry)

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

    def _purge(self, pattern: Optional[str], matches: Callable[[str], bool], keep: Tuple[str, ...] = ()) -> None:
        self._generation += 1
        # Fills the invalidation doomed are never stored.
        self._fromRedis.clear()
        self._under_way(self.node.purge(self.name, pattern, matches, keep))

    def _under_way(self, broadcast: Deferred[Optional[int]]) -> Deferred[Optional[int]]:
        """
        Count C{broadcast} among L{purges} until the nodes confirmed it.
        """
        self.purges.add(broadcast)

        def done(result: Any) -> Any:
            self.purges.discard(broadcast)
            return result

        return broadcast.addBoth(done)

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
        matches = InvalidationPattern(pattern).matches
        kept: Tuple[str, ...] = ()
        if keep_pinned is not None:
            # The snapshots that stay until their new versions replace them:
            # here and on every node those held here; in Redis, every one.
            slots = [slot for slot in self._pinned if matches(slot[0]) and keep_pinned(slot[0])]
            kept = tuple(self._entry_key(*slot) for slot in slots)
            kept += tuple(sorted({f"{self._ns}v:{key}" for key, _ in slots}))
        count = super().invalidate(pattern, keep_pinned)
        self._purge(pattern, matches if keep_pinned is None else (lambda k: matches(k) and not keep_pinned(k)), kept)
        return count

    def drop_local(self, pattern: Optional[str], keep: Tuple[str, ...] = ()) -> None:
        """
        Another node invalidated C{pattern} (L{None}: everything): forget
        the matching L1 copies, but for the snapshots of the keys in
        C{keep}, served until their new versions replace them (and fetched
        again, once for every node, by the snapshots listening).
        """
        self._generation += 1
        self._fromRedis.clear()
        if pattern is None:
            super().invalidate_all()
        else:
            super().invalidate(pattern, set(keep).__contains__ if keep else None)
        if keep and self.snapshot_listener is not None:
            self.snapshot_listener.followed_purge(keep)

    # Snapshots shared by every node

    def filled_elsewhere(self, key: str, variant: bytes) -> None:
        """
        Another node stored a fill of C{key} as C{variant} (a JSON line):
        a snapshot of it held here is replaced by that version once it is
        read from Redis (until then, and if that fails, the held one is
        served).
        """
        slot = (key, tuple(json.loads(variant)))
        held = self._pinned.get(slot)
        if held is None:
            return
        generation = self._generation

        def read(entry: Optional[CacheEntry]) -> None:
            if entry is None or not entry.pinned or generation != self._generation:
                return
            if self._pinned.get(slot) is held:
                self._fromRedis[id(entry)] = entry
                self._store(entry)

        Deferred.fromCoroutine(self._read(key, variant)).addCallback(read)

    def snapshots_changed(self, op: str, path: str, key: str) -> None:
        """
        Another node added or removed (C{op}: C{"add"}, C{"remove"}) the
        snapshot of C{path} (cached as C{key}): follow it.
        """
        if op == "remove":
            self.drop(key)
        listener = self.snapshot_listener
        if listener is not None:
            (listener.followed_add if op == "add" else listener.followed_remove)(path)

    def share_snapshots_change(self, op: str, path: str, key: str) -> Deferred[Optional[int]]:
        """
        Tell every node that this one added or removed (C{op}: C{"add"},
        C{"remove"}) the snapshot of C{path}; a removed one is deleted
        from Redis as well.

        @return: a L{Deferred} (also in L{purges}) with how many nodes
            confirmed, or L{None} when Redis could not be reached.
        """
        node = self.node

        async def record() -> None:
            await node.call("hset", f"{self._ns}tracked", path, "1" if op == "add" else "0")
            if op == "remove":
                await node.delete_entries(self.name, key)

        body = {"op": op, "path": path, "key": key}
        return self._under_way(node.broadcast(self.name, "snapshots", body, record))

    def recorded_snapshots(self) -> Deferred[Dict[str, bool]]:
        """
        The snapshot changes made on any node (recorded in Redis), for a
        node that starts after them (once Redis is reached, or given up).

        @return: a L{Deferred} with C{{path: whether it was added (else
            removed) last}}; empty when Redis cannot be reached.
        """

        async def read() -> Dict[str, bool]:
            await self._reached()
            return await self.node.recorded_snapshots(self.name)

        return Deferred.fromCoroutine(read())

    def close(self) -> None:
        """
        Drop L1 (Redis keeps the entries) and stop taking bus messages.
        """
        self.node.unregister(self.name, self)
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        ResponseCache.invalidate_all(self)
        self.store.close()


__all__ = [
    "READY_WITHIN", "REVALIDATION_GRACE", "TieredCache", "decode_entry", "encode_entry", "encode_variant",
    "time_to_live",
]
