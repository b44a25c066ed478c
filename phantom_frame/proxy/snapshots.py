"""
Pre-generated pages (snapshots): the tracked paths of a C{pre_generate}
server, fetched at start with bounded concurrency and kept until removed.

On a cache shared by several nodes (C{cache_storage_mode = "redis"}: a
L{phantom_frame.cache.redis.TieredCache}), the snapshots are those of every
node: a node reads from Redis the snapshots another one stored instead of
fetching them, one node fetches each snapshot while the others wait for it
(the fill lock), and the tracked paths follow the additions and removals
made on any node.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredSemaphore, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.proxy.progress import Progress

log = Logger()


class SnapshotError(Exception):
    """
    A snapshot could not be fetched or stored; the message says why.
    """


class NotPreGenerated(ValueError):
    """
    Snapshot operations need a server in C{pre_generate} mode.
    """


class Snapshots:
    """
    The tracked snapshot paths of one server and the operations on them.

    Fetches go through the server's single-flight fills, so a request for a
    path whose snapshot is being fetched waits for it; a refresh replaces
    the stored page only once the new one is stored.

    On a shared cache, it follows the other nodes' changes (the cache calls
    L{followed_add}, L{followed_remove} and L{followed_purge}) and tells them
    its own.

    @ivar tracked: the tracked paths, in the order they were added.
    @ivar shared: whether the cache is shared by several nodes.
    """

    def __init__(
        self,
        name: str,
        paths,
        concurrency: int,
        filler: Any,
        cache: Any,
        key_of: Callable[[bytes], str],
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param name: the server's name, for logs.
        @param paths: the initial C{pre_generate_paths}.
        @param concurrency: how many fetches run at once.
        @param filler: fetches snapshots
            (L{phantom_frame.proxy.fill.Filler}).
        @param cache: where they are stored.
        @param key_of: the cache key of a path (and query).
        @param clock: times the progress of L{fetch_all}; without it only
            its last line is logged.
        """
        self.name = name
        self._filler = filler
        self._cache = cache
        self._key_of = key_of
        self.tracked: "OrderedDict[str, None]" = OrderedDict((p, None) for p in paths)
        #: The paths being added (not tracked yet), each with its own token.
        self._adding: Dict[str, object] = {}
        self._semaphore = DeferredSemaphore(concurrency)
        self.warmed: Deferred[Dict[str, Optional[str]]] = Deferred()
        self._clock = clock
        #: The last run of L{fetch_all}, or L{None} before the first.
        self.progress: Optional[Progress] = None
        self.shared = getattr(cache, "share_snapshots_change", None) is not None
        if self.shared:
            cache.snapshot_listener = self

    def _now(self) -> Optional[float]:
        """
        @return: the time from which a shared snapshot is new (L{None}:
            any stored one will do, without a clock).
        """
        return None if self._clock is None else self._clock.seconds()

    def _share(self, op: str, path: str) -> None:
        """
        Tell the other nodes sharing the cache that C{path} was added or
        removed (C{op}); the control call waits for their confirmations.
        """
        if self.shared:
            self._cache.share_snapshots_change(op, path, self._key_of(path.encode("utf-8")))

    def fetch(self, path: str, reuse: bool = False) -> Deferred[None]:
        """
        Fetch C{path} and store it as a snapshot.

        @param reuse: on a shared cache, read the snapshot another node
            stored, if there is one, rather than fetch it (else only one
            stored after this call began will do).
        @return: a L{Deferred} firing when it is stored, failing with
            L{SnapshotError} (or the origin's error) otherwise.
        """
        target = path.encode("utf-8")
        key = self._key_of(target)
        if not self.shared:
            return self._filler.fetch_snapshot(key, target, self._semaphore)
        return self._filler.fetch_snapshot(key, target, self._semaphore, None if reuse else self._now())

    def add(self, path: str) -> Deferred[None]:
        """
        Fetch C{path} now, and track it (once) when its page is stored: a
        path whose first fetch fails is not tracked. A tracked path is
        fetched again; it stays tracked, and keeps its page, when that
        fetch fails.

        @return: L{fetch}'s L{Deferred}.
        """
        if path in self.tracked:
            return self.fetch(path)
        token = self._adding[path] = object()

        def stored(result: None) -> None:
            if self._adding.get(path) is token:
                del self._adding[path]
                self.tracked[path] = None
                self._share("add", path)
            elif path not in self.tracked and path not in self._adding:
                # Removed while it was being fetched.
                self._cache.drop(self._key_of(path.encode("utf-8")))
                self._share("remove", path)
            return result

        def failed(failure: Failure) -> Failure:
            if self._adding.get(path) is token:
                del self._adding[path]
            return failure

        return self.fetch(path).addCallbacks(stored, failed)

    def remove(self, path: str) -> bool:
        """
        Stop tracking C{path} (or adding it) and drop its stored page.

        @return: whether it was tracked.
        """
        tracked = path in self.tracked
        self.tracked.pop(path, None)
        self._adding.pop(path, None)
        self._cache.drop(self._key_of(path.encode("utf-8")))
        self._share("remove", path)
        return tracked

    def has(self, path: str) -> bool:
        """
        @return: whether a page is stored for C{path}.
        """
        return self._cache.has(self._key_of(path.encode("utf-8")))

    def fetch_all(
        self, paths: Optional[List[str]] = None, what: str = "pre-generated", reuse: bool = False
    ) -> Deferred[Dict[str, Optional[str]]]:
        """
        Fetch every tracked path (or C{paths}), logging each failure, and
        the progress (done/total, failures, rate) at most once a second and
        at the end; L{progress} follows the run.

        @param reuse: see L{fetch}.

        @return: a L{Deferred} firing with C{{path: None or the failure's
            reason}}; it never fails.
        """
        paths = list(self.tracked) if paths is None else paths
        results: Dict[str, Optional[str]] = {}
        progress = self.progress = Progress(self.name, what, len(paths), self._clock, log)

        def done(result: Any, path: str) -> None:
            if result is None:
                results[path] = None
            else:
                results[path] = result.getErrorMessage()
                log.warn(
                    "server {server}: snapshot {path} failed: {reason}",
                    server=self.name,
                    path=path,
                    reason=results[path],
                )
            progress.step(result is None)

        ds = []
        for path in paths:
            d = self.fetch(path, reuse)
            d.addBoth(done, path)
            ds.append(d)
        return DeferredList(ds).addCallback(lambda _: results)

    def warm_up(self) -> Deferred[Dict[str, Optional[str]]]:
        """
        Fetch every tracked path at start; L{warmed} fires with the results
        (C{{path: None or the failure's reason}}). On a shared cache, the
        snapshots already in Redis are read rather than fetched, and the
        additions and removals other nodes made before this one started are
        followed (L{follow_recorded}).
        """
        d = self.fetch_all(reuse=True)
        d.addCallback(self._warmed)
        if self.shared:
            self._cache.recorded_snapshots().addCallback(self.follow_recorded)
        return d

    def follow_recorded(self, recorded: Dict[str, bool]) -> None:
        """
        Follow the snapshot changes made on any node (C{{path: added, else
        removed}}): track and read the added paths; drop the removed ones,
        once the warm-up that fetched them is over.
        """
        for path, added in recorded.items():
            if added:
                self.followed_add(path)
        removed = [path for path, added in recorded.items() if not added and path in self.tracked]

        def drop(results: Any) -> Any:
            for path in removed:
                self.remove(path)
            return results

        if removed:
            self.warmed.addCallback(drop)

    def _warmed(self, results: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
        if not self.warmed.called:
            self.warmed.callback(results)
        return results

    def matching(self, matches: Callable[[str], bool]) -> Dict[str, str]:
        """
        @param matches: says whether a cache key is concerned (an
            invalidation pattern's C{matches}).
        @return: C{{key: path}} for the tracked paths (and those being
            added) whose key C{matches} accepts.
        """
        found = {}
        for path in list(self.tracked) + list(self._adding):
            key = self._key_of(path.encode("utf-8"))
            if matches(key):
                found[key] = path
        return found

    def regenerate(self, paths: List[str]) -> Deferred[Dict[str, Optional[str]]]:
        """
        After an invalidation, fetch C{paths} again in the background: each
        page is replaced once its new one is stored, and kept (the failure
        logged) when its fetch fails. Requests for a path without a page
        wait for its fetch.

        @return: L{fetch_all}'s L{Deferred}.
        """
        return self.fetch_all(paths, "re-generated")

    # Following the other nodes (a shared cache)

    def followed_add(self, path: str) -> None:
        """
        Another node added C{path}: track it too, and read its page from
        the shared cache (fetching it only if it is not there).
        """
        if path in self.tracked:
            return
        self.tracked[path] = None
        self.fetch(path, reuse=True).addErrback(self._not_followed, path)

    def _not_followed(self, failure: Failure, path: str) -> None:
        log.warn(
            "server {server}: snapshot {path} added on another node failed here: {reason}",
            server=self.name,
            path=path,
            reason=failure.getErrorMessage(),
        )

    def followed_remove(self, path: str) -> None:
        """
        Another node removed C{path} (and the cache dropped its page): stop
        tracking it.
        """
        self.tracked.pop(path, None)
        self._adding.pop(path, None)

    def followed_purge(self, keys) -> Deferred[Dict[str, Optional[str]]]:
        """
        Another node invalidated the snapshots of C{keys} and keeps serving
        them until it stored their new versions: regenerate them here as
        well, in the background. The fill lock makes it one fetch for every
        node (each reads the version the lock holder stored); when the
        holder dies, a node waiting takes over.

        @return: L{regenerate}'s L{Deferred}.
        """
        wanted = set(keys)
        return self.regenerate(list(self.matching(wanted.__contains__).values()))
