"""
The library face: L{create_proxy} and L{CacheHandle}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

from twisted.web.iweb import IAgent
from twisted.web.resource import IResource

from .cache.workers import ThreadRunner
from .proxy import ProxyServer
from .proxyconfig import CreateProxyConfig


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

    def invalidate_all(self, server: Optional[str] = None) -> int:
        """
        Forget every stored response (of one server, or all). When this
        returns, no request sees an old entry and fills already in flight
        will not be stored.

        @return: how many entries were dropped.
        """
        return sum(s.cache.invalidate_all() for s in self._select(server))

    def invalidate(self, pattern: str, server: Optional[str] = None) -> int:
        """
        Forget the stored responses whose key matches C{pattern}:
        C{"/api/*"} (the path, any method), C{"GET:/api/*"} (whole key),
        C{"*/users/*"}, C{"*"}.

        @return: how many entries were dropped.
        @raise ValueError: on an empty pattern.
        """
        return sum(s.cache.invalidate(pattern) for s in self._select(server))

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


def default_agent(reactor) -> Tuple[IAgent, Any]:
    """
    @return: a pooled L{Agent} for origins and its L{HTTPConnectionPool}.
    """
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64
    pool.cachedConnectionTimeout = 60
    pool.retryAutomatically = False
    return Agent(reactor, pool=pool), pool


def create_proxy(
    config: CreateProxyConfig,
    reactor: Any = None,
    *,
    agent: Optional[IAgent] = None,
    name: str = "default",
    handle: Optional[CacheHandle] = None,
    runner: Any = None,
) -> Tuple[IResource, CacheHandle]:
    """
    Build a caching reverse proxy for one origin.

    @param config: the origin and its cache settings.
    @param reactor: the reactor (the global one when omitted).
    @param agent: reaches the origin (a pooled L{Agent} when omitted).
    @param name: the server's name in stats, invalidation and the
        filesystem bucket.
    @param handle: an existing handle to add this server to, so that one
        handle reaches every server of a config.
    @param runner: runs compression and file I/O (a thread pool when
        omitted).
    @return: a twisted.web resource to mount in any L{Site}, and the handle.
    """
    if reactor is None:
        from twisted.internet import reactor
    if agent is None:
        agent, _ = default_agent(reactor)
    if runner is None:
        runner = ThreadRunner(reactor)
    if handle is None:
        handle = CacheHandle()
    server = ProxyServer(name, config, agent, reactor, runner)
    server.open()
    handle._add(server)
    return server.resource, handle
