"""
L{CacheHandle}: control over the caches of every server built from one
config, and L{UnknownServer}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred

from phantom_frame.proxy.server import ProxyServer
from phantom_frame.proxy.snapshots import NotPreGenerated


class UnknownServer(KeyError):
    """
    No server of that name was built from this config.
    """


class CacheHandle:
    """
    Control over the caches of every server built from one config:
    invalidation (and statistics) across all of them or one by name.
    """

    def __init__(self) -> None:
        self._servers: Dict[str, ProxyServer] = {}

    def _add(self, server: ProxyServer) -> None:
        if server.name in self._servers:
            raise ValueError(f"a server named {server.name!r} is already registered")
        self._servers[server.name] = server

    def _replace(self, server: ProxyServer) -> ProxyServer:
        """
        Put C{server} in the place of the server of the same name; from now
        on every operation reaches the new one. The old one is not closed:
        that is the caller's business, once nothing routes to it any more.

        @return: the server it replaces.
        @raise UnknownServer: when no server has that name.
        """
        old = self.server(server.name)
        self._servers[server.name] = server
        return old

    def _remove(self, name: str) -> ProxyServer:
        """
        Forget the server called C{name}; it is not closed (see
        L{_replace}).

        @return: the removed server.
        @raise UnknownServer: when there is no such server.
        """
        server = self.server(name)
        del self._servers[name]
        return server

    def servers(self) -> Iterator[ProxyServer]:
        """
        @return: the servers, in the order they were built.
        """
        return iter(self._servers.values())

    def server(self, name: str) -> ProxyServer:
        """
        @raise UnknownServer: when there is no such server.
        """
        try:
            return self._servers[name]
        except KeyError:
            raise UnknownServer(name) from None

    def _select(self, server: Optional[str]):
        if server is None:
            return list(self._servers.values())
        return [self.server(server)]

    def _snapshot_servers(self, server: Optional[str]):
        """
        @raise NotPreGenerated: when the named server (or, with none named,
            every server) is not in pre_generate mode.
        """
        if server is not None:
            chosen = self.server(server)
            if chosen.snapshots is None:
                raise NotPreGenerated(f"server {chosen.name!r} is not in pre_generate mode")
            return [chosen]
        chosen = [s for s in self._servers.values() if s.snapshots is not None]
        if not chosen:
            raise NotPreGenerated("no server is in pre_generate mode")
        return chosen

    def _each(self, server: Optional[str], op) -> Deferred[Dict[str, Any]]:
        """
        Run C{op} on the chosen pre_generate servers at once.

        @return: a L{Deferred} firing with C{{server name: op's result}},
            or failing with the first failure.
        """
        try:
            servers = self._snapshot_servers(server)
        except (NotPreGenerated, UnknownServer):
            return fail()
        ds = [maybeDeferred(op, s) for s in servers]
        return gatherResults(ds, consumeErrors=True).addCallbacks(
            lambda results: {s.name: r for s, r in zip(servers, results)},
            lambda f: f.value.subFailure,
        )

    def add_snapshot(self, path: str, server: Optional[str] = None) -> Deferred[None]:
        """
        Fetch C{path} now, and track it as a snapshot (once) when its page
        is stored: a path whose first fetch fails is not tracked. A path
        already tracked is refreshed (see L{refresh_snapshot}).

        @return: a L{Deferred} firing when it is stored, failing with the
            reason when the origin fails or the page cannot be stored.
        """
        return self._each(server, lambda s: s.snapshots.add(path)).addCallback(lambda _: None)

    def refresh_snapshot(self, path: str, server: Optional[str] = None) -> Deferred[None]:
        """
        Fetch C{path} again; readers see the old page until the new one is
        stored, and keep it when the fetch fails.
        """
        return self._each(server, lambda s: s.snapshots.fetch(path)).addCallback(lambda _: None)

    def remove_snapshot(self, path: str, server: Optional[str] = None) -> Deferred[None]:
        """
        Stop tracking C{path} and drop its page.
        """
        return self._each(server, lambda s: s.snapshots.remove(path) and None).addCallback(lambda _: None)

    def refresh_all_snapshots(self, server: Optional[str] = None) -> Deferred[Dict[str, Dict[str, Optional[str]]]]:
        """
        Fetch every tracked snapshot again.

        @return: a L{Deferred} firing with C{{server: {path: None or the
            failure's reason}}}.
        """
        return self._each(server, lambda s: s.snapshots.fetch_all(what="refreshed"))

    def snapshots(self, server: Optional[str] = None) -> Dict[str, list]:
        """
        @return: the tracked snapshot paths of each pre_generate server.
        """
        return {s.name: list(s.snapshots.tracked) for s in self._snapshot_servers(server)}

    def invalidate_all(self, server: Optional[str] = None) -> int:
        """
        Forget every stored response (of one server, or all). When this
        returns, no request sees an old entry and fills already in flight
        will not be stored; but the tracked snapshots of a pre_generate
        server are fetched again, each page served until its new one is
        stored (and kept when that fetch fails).

        @return: how many entries were dropped or are being replaced.
        """
        return sum(s.invalidate_all(keep_snapshots=True) for s in self._select(server))

    def invalidate(self, pattern: str, server: Optional[str] = None) -> int:
        """
        Forget the stored responses whose key matches C{pattern}:
        C{"/api/*"} (the path, any method), C{"GET:/api/*"} (whole key),
        C{"*/users/*"}, C{"*"}. Matching snapshots of a pre_generate server
        are fetched again, as for L{invalidate_all}.

        @return: how many entries were dropped or are being replaced.
        @raise ValueError: on an empty pattern.
        """
        return sum(s.invalidate(pattern, keep_snapshots=True) for s in self._select(server))

    def confirmations(self) -> Optional[Deferred[Optional[int]]]:
        """
        Wait for the invalidations under way on the shared Redis tier to
        reach every node (at most about a second).

        @return: L{None} when no server shares a Redis tier or none is
            under way; else a L{Deferred} with how many nodes confirmed
            every one of them (this one included), or L{None} when Redis
            could not be reached.
        """
        pending = [d for s in self._servers.values() for d in list(getattr(s.cache, "purges", ()))]
        if not pending:
            return None
        waiting = [Deferred() for _ in pending]
        for source, copy in zip(pending, waiting):
            source.addBoth(lambda result, copy=copy: copy.callback(result) or result)

        def least(counts: list) -> Optional[int]:
            known = [c for c in counts if isinstance(c, int)]
            return min(known) if len(known) == len(counts) else None

        return gatherResults(waiting).addCallback(least)

    def stats(self) -> Dict[str, Dict[str, int]]:
        """
        @return: per-server counters (entries, bytes, hits, misses, stale,
            coalesced, evictions).
        """
        return {name: s.cache.stats() for name, s in self._servers.items()}

    def open(self) -> None:
        """
        Prepare every server's store.
        """
        for s in self._servers.values():
            s.open()

    def close(self) -> None:
        """
        Drop every cache and close the stores.
        """
        for s in self._servers.values():
            s.close()
