"""
L{Alternates}: a stored entry's body in the coding an answer needs -- the
stored bytes, the decoded body, or another coding made once from the stored
body and kept beside the entry (a gzip-only browser in front of brotli
storage).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.codec import Codec
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.store import StoredBody

log = Logger()


class Alternates:
    """
    Gives entries' bodies in any coding, making each other coding of an
    entry at most once however many clients ask for it at the same time.

    @ivar made: how many codings were made.
    """

    def __init__(self, cache: Any, codec: Codec) -> None:
        """
        @param cache: the L{phantom_frame.cache.responses.ResponseCache}
            holding the entries: it reads bodies from its store and keeps
            the codings made (L{ResponseCache.add_coding}).
        @param codec: decodes and encodes, off the reactor thread for large
            bodies.
        """
        self._cache = cache
        self._codec = codec
        self._making: Dict[Tuple[CacheEntry, str], List[Deferred[bytes]]] = {}
        self.made = 0

    def body(self, entry: CacheEntry, coding: str) -> Deferred[bytes]:
        """
        @param coding: C{entry.coding}, C{"identity"}, or a coding of
            L{phantom_frame.cache.codec.MADE_CODINGS}.
        @return: a L{Deferred} firing with the body of C{entry} in
            C{coding}: the stored bytes, the decoded ones (never kept: an
            identity body is cheap to make again and most clients accept a
            coding), or the coding kept beside the entry, made now from
            the stored body if need be. Cancelling it leaves the making to
            the other clients waiting for it.
        """
        if coding == entry.coding:
            return self._read(entry.body)
        if coding == "identity":
            return self._identity(entry)
        kept = entry.alternates.get(coding) if entry.alternates else None
        if kept is not None:
            return self._read(kept)
        return self._make(entry, coding)

    def _read(self, stored: StoredBody) -> Deferred[bytes]:
        """
        @return: the bytes of C{stored}, from memory or from the store.
        """
        return self._cache.store.read(stored)

    def _identity(self, entry: CacheEntry) -> Deferred[bytes]:
        """
        @return: the decoded body of C{entry}.
        """
        return self._read(entry.body).addCallback(
            self._codec.decode, entry.coding.encode("ascii")
        )

    def _make(self, entry: CacheEntry, coding: str) -> Deferred[bytes]:
        """
        Make C{entry}'s body in C{coding} (once for every caller until it is
        made) and keep it beside the entry.
        """
        slot = (entry, coding)
        mine: Deferred[bytes] = Deferred()
        waiting = self._making.get(slot)
        if waiting is not None:
            waiting.append(mine)
            return mine
        self._making[slot] = [mine]
        making = self._identity(entry)
        making.addCallback(self._codec.encode, coding)
        making.addCallback(self._keep, entry, coding)
        making.addBoth(self._made, slot)
        return mine

    def _keep(self, body: bytes, entry: CacheEntry, coding: str) -> Deferred[bytes]:
        """
        Keep C{body} beside C{entry} (the cache decides whether it fits).

        @return: a L{Deferred} firing with C{body} itself.
        """
        self.made += 1
        return self._cache.add_coding(entry, coding, body).addCallback(lambda _: body)

    def _made(self, result: Any, slot: Tuple[CacheEntry, str]) -> None:
        """
        Hand what making C{slot} gave to every client still waiting.
        """
        waiters = [w for w in self._making.pop(slot) if not w.called]
        if isinstance(result, Failure):
            if not waiters:
                log.failure(
                    "cannot make {key!r} in {coding}", result, key=slot[0].key, coding=slot[1]
                )
            for waiter in waiters:
                waiter.errback(result)
            return
        for waiter in waiters:
            waiter.callback(result)
