"""
L{Recoder}: compressing stored bodies once they prove worth it.

A server that stores compressed bodies stores a fill's body as it came, in
identity, and marks the entry (L{phantom_frame.cache.entry.NOT_YET_COMPRESSED}):
a page asked for once -- a crawler's walk, a long tail of URLs, a key that
varies per visitor -- never costs a compression, and the miss is answered
without waiting for one. The first time such an entry is served again, its
body is compressed in the server's coding, off the reactor thread under
C{SCHED_IDLE} for a large body (on CPU time nothing else wants: it never
delays an answer), and the entry's identity body is replaced in place by the
compressed one (L{phantom_frame.cache.inplace.InPlace.recode}); it is served
in identity meanwhile.
"""

from __future__ import annotations

from typing import Any, Set

from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.codec import Codec
from phantom_frame.cache.entry import CacheEntry

log = Logger()

#: How many compressions may wait or run at once; an entry served while
#: that many are under way is compressed when it is served again.
MAX_RUNNING = 64


class Recoder:
    """
    Compresses the entries of one cache that wait to be compressed, once
    each, when they are served again.

    @ivar running: how many compressions are under way.
    """

    def __init__(self, cache: Any, codec: Codec, coding: str, limit: int = MAX_RUNNING) -> None:
        """
        @param cache: the L{phantom_frame.cache.responses.ResponseCache}
            holding the entries: it reads their bodies, stores the
            compressed ones and replaces them in place.
        @param codec: compresses (inline for a small body, else on its
            runner: give it a L{phantom_frame.cache.threads.ThreadRunner}'s
            C{background} runner).
        @param coding: the server's stored coding (C{"br"}, C{"gzip"} or
            C{"deflate"}).
        @param limit: how many compressions may be under way at once.
        """
        self._cache = cache
        self._codec = codec
        self._coding = coding
        self._limit = limit
        self._running: Set[CacheEntry] = set()

    @property
    def running(self) -> int:
        """
        How many compressions are under way.
        """
        return len(self._running)

    def served(self, entry: CacheEntry) -> None:
        """
        C{entry} is being served from the cache: compress its body if it
        waits to be (L{CacheEntry.compress_pending}) and no compression of
        it is under way.
        """
        if not entry.compress_pending or entry in self._running or len(self._running) >= self._limit:
            return
        self._running.add(entry)
        work = self._cache.store.read(entry.body)
        work.addCallback(self._codec.encode, self._coding)
        work.addCallback(self._keep, entry)
        work.addErrback(self._failed, entry)
        work.addBoth(self._over, entry)

    def _keep(self, encoded: bytes, entry: CacheEntry) -> Any:
        """
        Replace the body of C{entry} by C{encoded}, its compressed form; a
        body that does not shrink stays as it is, for good.
        """
        if len(encoded) >= entry.identity_length:
            return self._cache.recode(entry, "identity", None)
        return self._cache.put_body(entry.key, encoded).addCallback(
            lambda stored: self._cache.recode(entry, self._coding, stored)
        )

    def _failed(self, failure: Failure, entry: CacheEntry) -> None:
        """
        Log why C{entry} could not be compressed (unless it is gone from
        the cache meanwhile, its body with it); it stays in identity.
        """
        if self._cache.recode(entry, "identity", None):
            log.failure("cannot compress the stored body of {key!r}", failure, key=entry.key)

    def _over(self, result: Any, entry: CacheEntry) -> None:
        self._running.discard(entry)
