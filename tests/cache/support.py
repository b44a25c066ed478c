"""
Fakes and builders shared by the tests of L{phantom_frame.cache}'s entries,
LRUs, variants, fills and L{ResponseCache}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from phantom_frame.cache.entry import ENTRY_OVERHEAD, CacheEntry
from phantom_frame.cache.lock import Exclusive, FillResult, IFillReceiver, NotShared, Shared
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore, StoredBody

Lookup = Callable[[str], Optional[str]]


class RecordingStore(MemoryStore):
    """
    A L{MemoryStore} that records what it is asked to delete and whether it
    was closed.

    @ivar deleted: the L{StoredBody} values passed to L{delete}, in order.
    @ivar events: a shared log; C{delete} appends C{("delete", body)}.
    @ivar closed: whether L{close} was called.
    """

    def __init__(self, events: Optional[List[Any]] = None) -> None:
        """
        @param events: a list to log deletions to, shared with the test.
        """
        self.deleted: List[StoredBody] = []
        self.events: List[Any] = events if events is not None else []
        self.closed = False

    def delete(self, stored: StoredBody) -> None:
        """
        Record the deletion.

        @param stored: what was deleted.
        """
        self.deleted.append(stored)
        self.events.append(("delete", stored))

    def close(self) -> None:
        """
        Record the close.
        """
        self.closed = True


class FakeFetch:
    """
    A fill's fetch: each call returns a new unfired L{Deferred} whose
    canceller is recorded.

    @ivar calls: the Deferreds returned, one per call.
    @ivar cancelled: the Deferreds whose canceller ran.
    """

    def __init__(self) -> None:
        """
        Start with no calls.
        """
        self.calls: List[Deferred[Any]] = []
        self.cancelled: List[Deferred[Any]] = []

    def __call__(self) -> Deferred[Any]:
        """
        @return: a new unfired Deferred.
        """
        d: Deferred[Any] = Deferred(self.cancelled.append)
        self.calls.append(d)
        return d


def headers(**values: str) -> Lookup:
    """
    @param values: request header values by lower-cased name, with C{_} for
        C{-}.
    @return: a header look-up function as L{ResponseCache.lookup} takes.
    """
    table = {name.replace("_", "-"): value for name, value in values.items()}
    return table.get


NO_HEADERS: Lookup = headers()


def ids(bodies: List[StoredBody]) -> List[int]:
    """
    @return: the identities of C{bodies}, to compare them as objects.
    """
    return [id(b) for b in bodies]


class CacheTestMixin:
    """
    Makes caches and entries for the tests.
    """

    clock: Clock
    store: RecordingStore

    def makeCache(
        self, max_bytes: int = 1 << 20, max_404_entries: int = 100, max_variants: int = 16
    ) -> ResponseCache:
        """
        @return: a L{ResponseCache} on a L{RecordingStore} and a L{Clock},
            both kept as C{self.store} and C{self.clock}.
        """
        self.clock = Clock()
        self.store = RecordingStore()
        return ResponseCache(
            "site", self.store, self.clock, max_bytes, max_404_entries, max_variants
        )

    def makeEntry(
        self,
        key: str,
        body: bytes = b"x" * 100,
        headers: Tuple[Tuple[bytes, bytes], ...] = (),
        vary: Tuple[str, ...] = (),
        variant: Tuple[Optional[str], ...] = (),
        not_found: bool = False,
    ) -> CacheEntry:
        """
        @return: an entry for C{key} holding C{body} in memory, stored now.
        """
        return CacheEntry(
            key=key,
            status=404 if not_found else 200,
            phrase=b"Not Found" if not_found else b"OK",
            headers=headers,
            coding="identity",
            body=StoredBody(len(body), body, None),
            identity_length=len(body),
            stored_at=self.clock.seconds() if hasattr(self, "clock") else 0.0,
            vary=vary,
            variant=variant,
            not_found=not_found,
        )

    def put(self, cache: ResponseCache, entry: CacheEntry) -> None:
        """
        Store C{entry} the way the proxy does: through a fill whose fetch
        succeeds at once with L{Shared}.
        """
        d, collapsed = cache.fill(entry.key, lambda: succeed(Shared(entry)))
        assert not collapsed
        assert d.called


def entrySize(key: str, body: int, headerBytes: int = 0) -> int:
    """
    @return: the accounted size of an entry.
    """
    return body + headerBytes + len(key) + ENTRY_OVERHEAD


@implementer(IFillReceiver)
class Receiver:
    """
    An L{IFillReceiver} that answers with the name of the method called and
    the result it was given.
    """

    def shared(self, result: Shared) -> Tuple[str, Shared]:
        """
        @return: C{("shared", result)}.
        """
        return ("shared", result)

    def exclusive(self, result: Exclusive) -> Tuple[str, Exclusive]:
        """
        @return: C{("exclusive", result)}.
        """
        return ("exclusive", result)

    def not_shared(self, result: NotShared) -> Tuple[str, NotShared]:
        """
        @return: C{("not_shared", result)}.
        """
        return ("not_shared", result)


class Private(FillResult):
    """
    A result of a kind the lock does not know, exclusive like L{Exclusive}.
    """

    exclusive = True

    def deliver(self, receiver: Any) -> Any:
        """
        @return: C{receiver.exclusive(self)}.
        """
        return receiver.exclusive(self)
