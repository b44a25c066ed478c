"""
The library face: L{create_proxy}, which builds one server and hands back
its resource and a L{CacheHandle}.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.web.iweb import IAgent
from twisted.web.resource import IResource

from phantom_frame.cache.threads import ThreadRunner
from phantom_frame.proxy.client import IOriginClient
from phantom_frame.proxy.handle import CacheHandle, UnknownServer
from phantom_frame.proxy.server import ProxyServer
from phantom_frame.proxy.settings import CreateProxyConfig

__all__ = ["CacheHandle", "UnknownServer", "create_proxy", "default_agent"]


def default_agent(reactor) -> Tuple[IAgent, Any]:
    """
    @return: a pooled L{Agent} for webhooks and other low-rate calls, and
        its L{HTTPConnectionPool}. Origins are reached through the byte-level
        client (L{phantom_frame.proxy.pool.OriginPool}).
    """
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    pool.cachedConnectionTimeout = 60
    pool.retryAutomatically = False
    return Agent(reactor, pool=pool), pool


def create_proxy(
    config: CreateProxyConfig,
    reactor: Any = None,
    *,
    agent: Optional[IAgent] = None,
    client: Optional[IOriginClient] = None,
    name: str = "default",
    handle: Optional[CacheHandle] = None,
    runner: Any = None,
    warm_up: bool = True,
    redis: Any = None,
    client_for: Any = None,
) -> Tuple[IResource, CacheHandle]:
    """
    Build a caching reverse proxy for one origin.

    @param config: the origin and its cache settings.
    @param reactor: the reactor (the global one when omitted).
    @param agent: makes the webhook calls (a pooled L{Agent} when omitted).
    @param client: reaches the origin (an L{IOriginClient}); when omitted,
        the server keeps its own L{phantom_frame.proxy.pool.OriginPool},
        closed with the server.
    @param name: the server's name in stats, invalidation and the
        filesystem bucket.
    @param handle: an existing handle to add this server to, so that one
        handle reaches every server of a config.
    @param runner: runs compression and file I/O (a thread pool when
        omitted).
    @param warm_up: for a C{pre_generate} server, fetch its snapshots on
        the first reactor turn; with C{False} the caller starts
        C{server.snapshots.warm_up()} itself (after its origin is up, say).
    @param redis: the started L{phantom_frame.cache.bus.RedisNode} a
        C{cache_storage_mode = "redis"} server keeps its entries in.
    @param client_for: returns the L{IOriginClient} of each upstream URL
        (instead of one C{client} for all).
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
    server = ProxyServer(name, config, agent, reactor, runner, client, redis=redis, client_for=client_for)
    server.open()
    handle._add(server)
    if warm_up and server.snapshots is not None:
        # On the first reactor turn: at once when it runs already, or as
        # soon as it starts.
        reactor.callLater(0, server.snapshots.warm_up)
    return server.resource, handle
