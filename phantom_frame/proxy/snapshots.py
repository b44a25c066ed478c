"""
Pre-generated pages (snapshots): the tracked paths of a C{pre_generate}
server, fetched at start with bounded concurrency and kept until removed.
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

    @ivar tracked: the tracked paths, in the order they were added.
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

    def fetch(self, path: str) -> Deferred[None]:
        """
        Fetch C{path} and store it as a snapshot.

        @return: a L{Deferred} firing when it is stored, failing with
            L{SnapshotError} (or the origin's error) otherwise.
        """
        target = path.encode("utf-8")
        return self._filler.fetch_snapshot(self._key_of(target), target, self._semaphore)

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
            elif path not in self.tracked and path not in self._adding:
                # Removed while it was being fetched.
                self._cache.drop(self._key_of(path.encode("utf-8")))
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
        return tracked

    def has(self, path: str) -> bool:
        """
        @return: whether a page is stored for C{path}.
        """
        return self._cache.has(self._key_of(path.encode("utf-8")))

    def fetch_all(self, paths: Optional[List[str]] = None, what: str = "pre-generated") -> Deferred[Dict[str, Optional[str]]]:
        """
        Fetch every tracked path (or C{paths}), logging each failure, and
        the progress (done/total, failures, rate) at most once a second and
        at the end; L{progress} follows the run.

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
            d = self.fetch(path)
            d.addBoth(done, path)
            ds.append(d)
        return DeferredList(ds).addCallback(lambda _: results)

    def warm_up(self) -> Deferred[Dict[str, Optional[str]]]:
        """
        Fetch every tracked path at start; L{warmed} fires with the results
        (C{{path: None or the failure's reason}}).
        """
        d = self.fetch_all()
        d.addCallback(self._warmed)
        return d

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
