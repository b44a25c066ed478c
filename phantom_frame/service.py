"""
Building the running proxy from a validated L{Config}: a L{MultiService}
holding the caches, the supervised origins, the listeners and the control
site.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, List, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger

from phantom_frame.cache.threads import ThreadRunner
from phantom_frame.config import Config, ServerConfig
from phantom_frame.embed import CacheHandle, create_proxy, default_agent
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.http.tls import ReloadableContext, tls_factory
from phantom_frame.ops.control import ControlResource
from phantom_frame.ops.control_site import ControlSite
from phantom_frame.ops.metrics import Metrics
from phantom_frame.ops.reload import HangupReloader, Reloader
from phantom_frame.proxy.pool import OriginPool, endpoint_factory
from phantom_frame.startup import listener

log = Logger()


#: The signals a stop with status 0 answers: twistd would re-raise them
#: after a clean stop, and the process would die of them.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(Service):
    """
    Drains the proxy sites when the proxy stops, after the listeners have
    stopped accepting (see L{InOrder}): idle connections close at once;
    requests in flight are answered, their last byte handed to the kernel,
    then their connections close (answers written meanwhile say
    C{Connection: close}); after C{grace} seconds whatever is still open is
    aborted. A stop asked for by C{SIGTERM} or C{SIGINT} (Ctrl-C) then ends
    the process with status 0.

    @ivar grace: the C{shutdown_grace}, in seconds (a reload may change it).
    """

    def __init__(self, sites: List[ProxySite], grace: float, reactor) -> None:
        """
        @param sites: the proxy listeners' sites.
        @param grace: see L{grace}.
        @param reactor: times the grace period; its exit signal is cleared.
        """
        self._sites = sites
        self.grace = grace
        self._reactor = reactor

    def stopService(self) -> Deferred[None]:
        """
        Drain every site.

        @return: a L{Deferred} firing once every connection is closed and no
            request is in flight, or once C{grace} seconds have passed.
        """
        super().stopService()
        sites = self._sites
        waiting = [site.drain.start() for site in sites] + [site.whenIdle() for site in sites]
        connections = sum(site.drain.open for site in sites)
        requests = sum(site.active for site in sites)
        if connections or requests:
            log.info(
                "stopping: {requests} request(s) in flight, {connections} connection(s) open;"
                " waiting at most {grace} s",
                requests=requests,
                connections=connections,
                grace=self.grace,
            )
        done: Deferred[None] = Deferred()

        def finish(_: Any = None) -> None:
            if timer.active():
                timer.cancel()
            if done.called:
                return
            if getattr(self._reactor, "_exitSignal", None) in _STOP_SIGNALS:
                self._reactor._exitSignal = None
            done.callback(None)

        def expired() -> None:
            aborted = sum(site.drain.abort() for site in sites)
            log.warn(
                "stopping: shutdown_grace ({grace} s) is over; {count} connection(s) aborted,"
                " {requests} request(s) unanswered",
                grace=self.grace,
                count=aborted,
                requests=sum(site.active for site in sites),
            )
            finish()

        timer = self._reactor.callLater(self.grace, expired)
        gatherResults(waiting).addBoth(finish)
        return done


class InOrder(MultiService):
    """
    A L{MultiService} whose children stop one at a time, last first, each
    once the one after it has stopped: the listeners stop accepting before
    L{GracefulStop} drains, and the origin commands and the caches go only
    once every request is answered.
    """

    def stopService(self) -> Deferred[None]:
        """
        Stop the children, last first, one after the other; a child that
        fails to stop is logged and the others still stop.

        @return: a L{Deferred} firing once every child has stopped.
        """
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop(list(self)[::-1]))

    async def _stop(self, children: List[Service]) -> None:
        for child in children:
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service!r} failed", service=child)


class CacheService(Service):
    """
    Owns the caches and the connection pools (the origins' and the
    webhooks'): closes them last.
    """

    def __init__(
        self, handle: CacheHandle, pool: Any, runner: ThreadRunner, redis: Any = None, origins: Any = None
    ) -> None:
        self.handle = handle
        self._pool = pool
        self._runner = runner
        self._redis = redis
        self._origins = origins

    def startService(self) -> None:
        """
        Connect to Redis, when the C{redis} servers use it.
        """
        super().startService()
        if self._redis is not None:
            self._redis.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.handle.close()
        self._runner.stop()
        closing = []
        if self._pool is not None:
            closing.append(self._pool.closeCachedConnections())
        if self._origins is not None:
            closing.append(self._origins.close())
        if self._redis is not None:
            closing.append(self._redis.stop())
        return gatherResults(closing).addCallback(lambda _: None)


class HealthService(Service):
    """
    Runs the health checks of the servers that have them (see
    L{phantom_frame.proxy.health}): from the start of the proxy, or at once
    for a server built while it runs (a reload), until the proxy stops or
    the server is closed.
    """

    def __init__(self) -> None:
        self._checks: List[Service] = []

    def add(self, server: Any) -> None:
        """
        Run the health checks of C{server}, if it has any.
        """
        checks = server.health
        if checks is None:
            return
        if self.running:
            self._checks = [c for c in self._checks if c.running]
            checks.startService()
        self._checks.append(checks)

    def startService(self) -> None:
        """
        Start the checks added so far.
        """
        super().startService()
        for checks in self._checks:
            checks.startService()

    def stopService(self) -> None:
        """
        Stop every check: timers and checks in flight are cancelled.
        """
        super().stopService()
        checks, self._checks = self._checks, []
        for each in checks:
            each.stopService()


class ServerBuilder:
    """
    Makes the L{phantom_frame.proxy.server.ProxyServer} of a C{[server.NAME]}
    block, at start and on reload: all share one origin connection pool and
    one thread pool; each reaches its origin through its own
    L{phantom_frame.ops.timing.TimingClient} per upstream URL.
    """

    def __init__(
        self,
        reactor: Any,
        agent: Any,
        runner: Any,
        metrics: Optional[Metrics],
        redis: Any = None,
        health: Optional[HealthService] = None,
        control_auth: Callable[[], Optional[str]] = lambda: None,
        origins: Any = None,
        buckets: Any = None,
    ) -> None:
        """
        @param reactor: the reactor everything runs on.
        @param agent: makes the webhook calls.
        @param runner: runs compression and file I/O.
        @param metrics: times origin requests, or L{None}.
        @param redis: the L{phantom_frame.cache.bus.RedisNode} of the
            C{redis} servers, or L{None}.
        @param health: runs the health checks of the servers built.
        @param control_auth: see L{control_auth}.
        @param origins: reaches every origin: an
            L{phantom_frame.proxy.pool.OriginPool} (one over the reactor
            when omitted).
        @param buckets: makes the rate limits' bucket stores (a
            L{phantom_frame.cache.redisbuckets.RedisBuckets} to share them
            through Redis), or L{None} for each process's own.
        """
        self._health = health
        self._buckets = buckets
        if origins is None:
            origins = OriginPool(reactor, endpoint_factory(reactor))
        self.origins = origins
        self._reactor = reactor
        self._agent = agent
        self._runner = runner
        self._metrics = metrics
        self._redis = redis
        #: Returns the control site's token, which a C{PURGE} may carry; read
        #: at each C{PURGE}, by every server this builder made.
        self.control_auth = control_auth

    def _purge_token(self) -> Optional[str]:
        return self.control_auth()

    def __call__(self, block: ServerConfig, handle: CacheHandle) -> Any:
        """
        @param block: the server's configuration.
        @param handle: gets the server.
        @return: the server, opened; its snapshot warm-up is not started.
        """
        proxy = block.proxy
        origins, metrics = self.origins, self._metrics

        def client_for(url: str) -> Any:
            client = origins.client(url, proxy.upstream_timeout, proxy.upstream_keepalive_timeout)
            return client if metrics is None else metrics.timing_client(client, block.name)

        create_proxy(
            proxy,
            self._reactor,
            agent=self._agent,
            client_for=client_for,
            name=block.name,
            handle=handle,
            runner=self._runner,
            warm_up=False,
            redis=self._redis,
        )
        built = handle.server(block.name)
        built.decider.purge_token = self._purge_token
        limiter = built.decider.limiter
        if limiter is not None and self._buckets is not None:
            built.decider.limiter = limiter.with_stores(self._buckets)
        if self._health is not None:
            self._health.add(built)
        return built


def build_service(
    config: Config,
    reactor,
    tls: Optional[ReloadableContext] = None,
    install_signals: bool = False,
    origin_timeout: float = 60.0,
    worker: bool = False,
    listen: Callable[[str, str, Any, Any], Service] = listener,
) -> MultiService:
    """
    @param config: a validated configuration.
    @param reactor: the reactor everything runs on.
    @param tls: the HTTPS certificate, already loaded (loaded here when
        omitted and an HTTPS listener is configured).
    @param install_signals: on C{SIGHUP}, reload the configuration file and
        the certificate (only for the process's real reactor).
    @param origin_timeout: seconds a supervised origin has to accept
        connections before the snapshots of its server are fetched anyway.
    @param worker: whether this is a worker process (see
        L{phantom_frame.ops.workers}): its supervisor runs the origin
        commands.
    @param listen: makes each listening service, as
        L{phantom_frame.startup.listener} (a worker's listens on the
        sockets it inherited).
    @return: the whole proxy (an L{InOrder}), ready for
        C{setServiceParent}. Its children start in this order (and stop in
        reverse, one after the other): caches, origin commands,
        snapshot warm-ups, health checks, graceful stop, proxy listeners,
        the ACME service (with C{[acme]}), C{SIGHUP} handler, control site. It has
        C{handle}, C{site}, C{metrics}, C{reloader}, C{supervisor} and
        C{control} (the control resource) attributes, and C{acme} (the
        L{phantom_frame.ops.acme.AcmeService}, or L{None}).
    @raise TLSConfigError: when the certificate or key cannot be used.
    @raise phantom_frame.startup.StartupError: when a listener's endpoint
        description cannot be used; a listener that cannot listen raises it
        when the service starts.
    """
    from phantom_frame.ops.supervise import OriginSupervisor, WarmUps

    top = InOrder()
    agent, pool = default_agent(reactor)
    runner = ThreadRunner(reactor)
    handle = CacheHandle()
    metrics = Metrics(handle, reactor)
    redis = None
    if config.redis_url is not None:
        from phantom_frame.cache.bus import RedisNode

        redis = RedisNode(config.redis_url, reactor, config.redis_prefix, config.redis_l1_bytes)
    buckets = None
    if redis is not None and config.rate_limit_storage == "redis":
        from phantom_frame.cache.redisbuckets import RedisBuckets

        buckets = RedisBuckets(redis, reactor)
    health = HealthService()
    build = ServerBuilder(
        reactor, agent, runner, metrics, redis, health, control_auth=lambda: config.control_auth,
        buckets=buckets,
    )
    supervisor = OriginSupervisor(reactor, metrics, dotenv=config.dotenv)
    warmups = WarmUps(reactor, timeout=origin_timeout)
    for block in config.servers:
        built = build(block, handle)
        if block.proxy.execute and not worker:
            supervisor.supervise(block.name, block.proxy.execute, block.proxy.execute_dir)
        warmups.add(built)
    acme = None
    if config.acme is not None:
        from phantom_frame.ops.acme import AcmeService

        acme = AcmeService(config.acme, reactor)
    extra_routes = () if acme is None else acme.routes
    router = Router(
        config.routes({b.name: handle.server(b.name).resource for b in config.servers})
        + list(extra_routes)
    )
    site = ProxySite(
        router,
        reactor=reactor,
        access_log=config.access_log,
        log_format=config.log_format,
        metrics=metrics,
        limits=config.client_limits(),
    )
    metrics.site = site
    CacheService(handle, pool, runner, redis, build.origins).setServiceParent(top)
    supervisor.setServiceParent(top)
    warmups.setServiceParent(top)
    health.setServiceParent(top)
    graceful = GracefulStop([site], config.shutdown_grace, reactor)
    graceful.setServiceParent(top)
    listen(config.listener_key("http"), config.http_endpoint(), site, reactor).setServiceParent(top)
    https = config.https_port_endpoint()
    if https is not None:
        if acme is not None:
            tls = acme.context
        elif tls is None:
            tls = ReloadableContext(config.cert_path, config.key_path)
        listen(config.listener_key("https"), https, tls_factory(tls, site), reactor).setServiceParent(top)
    if acme is not None:
        # After the listeners: HTTP-01 validation reaches the HTTP one. The
        # certificate is the ACME service's, not reloaded on SIGHUP.
        acme.setServiceParent(top)
        tls = None
    elif https is None:
        tls = None
    control_resource = ControlResource(handle, config.control_auth, metrics=metrics, clock=reactor)
    path = None if config.source is None else os.path.abspath(config.source)
    reloader = Reloader(
        path,
        config,
        handle,
        site,
        build,
        tls=tls,
        control=control_resource,
        graceful=graceful,
        supervisor=supervisor,
        warmups=warmups,
        metrics=metrics,
        routes=extra_routes,
    )
    control_resource.reloader = reloader
    build.control_auth = lambda: reloader.config.control_auth
    HangupReloader(reloader.reload, reactor, install_signals).setServiceParent(top)
    control = ControlSite(control_resource, reactor=reactor)
    control.noisy = False
    listen(config.listener_key("control"), config.control_endpoint(), control, reactor).setServiceParent(top)
    top.handle = handle  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    top.reloader = reloader  # type: ignore[attr-defined]
    top.supervisor = supervisor  # type: ignore[attr-defined]
    top.control = control_resource  # type: ignore[attr-defined]
    top.acme = acme  # type: ignore[attr-defined]
    return top
