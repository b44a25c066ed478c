"""
Building the running proxy from a validated L{Config}: a L{MultiService}
holding the caches, the supervised origins, the listeners and the control
site; and L{ProxySite}, the proxy listeners' site, with its access log and
request metrics.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, List, Optional

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import combinedLogFormatter, datetimeToLogString

from phantom_frame.cache.threads import ThreadRunner
from phantom_frame.config.loader import Config, ServerConfig
from phantom_frame.ops.control import ControlResource
from phantom_frame.embed import CacheHandle, create_proxy, default_agent
from phantom_frame.ops.metrics import Metrics, cache_result
from phantom_frame.proxy.answers import is_upgrade
from phantom_frame.ops.reload import HangupReloader, Reloader
from phantom_frame.http.channel import FastHitRecord, FastHits, fast_channel_factory
from phantom_frame.http.routing import Router
from phantom_frame.http.tls import ReloadableContext, tls_factory

log = Logger()

#: The access log's logger: one event per answered request.
access = Logger(namespace="phantom_frame.access")


class ProxyRequest(server.Request):
    """
    A request that counts itself in its site's in-flight total (and, for an
    upgrade, in its open tunnels), notes when it arrived, and adds no
    default C{Content-Type} of its own.

    @ivar phantomServer: the name of the server that took it, set by
        L{phantom_frame.http.routing.Router}.
    @ivar phantomUpstream: seconds spent waiting for origin response heads
        on its behalf, set by L{phantom_frame.ops.metrics.TimingAgent}; L{None}
        when the origin was not asked.
    @ivar phantomStarted: when it arrived, on the site's clock.
    """

    defaultContentType = None
    phantomServer: Optional[str] = None
    phantomUpstream: Optional[float] = None
    phantomStarted: Optional[float] = None

    def process(self) -> None:
        """
        Count the request, then process it as usual.
        """
        site = self.channel.site
        site.active += 1
        self.phantomStarted = site.clock.seconds()
        self.notifyFinish().addBoth(site._requestDone)
        if is_upgrade(self):
            site.tunnels += 1
            self.notifyFinish().addBoth(site._tunnelDone)
        super().process()


class ProxySite(server.Site):
    """
    The proxy's HTTP site: no tracebacks, an access log through
    L{twisted.logger} (combined format plus the cache result, or JSON),
    request metrics, and a count of requests in flight for graceful stops.

    @ivar access_log: whether each answered request is logged.
    @ivar log_format: C{"text"} or C{"json"}.
    @ivar metrics: counts every answered request, whether or not it is
        logged (a L{phantom_frame.ops.metrics.Metrics}), or L{None}.
    @ivar active: requests in flight.
    @ivar tunnels: upgrade requests in flight: tunnels connecting or open.
    @ivar clock: times requests.
    """

    requestFactory = ProxyRequest
    protocol = fast_channel_factory
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource,
        reactor=None,
        access_log: bool = True,
        log_format: str = "text",
        metrics: Optional[Metrics] = None,
        fast_path: bool = True,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor
        self.clock = reactor
        #: Answers plain hits in the channel (see L{phantom_frame.http.channel}).
        self.fastHit = FastHits(self, reactor) if fast_path else None
        self.active = 0
        self.tunnels = 0
        self._idle: List[Deferred] = []
        self.access_log = access_log
        self.log_format = log_format
        self.metrics = metrics

    def _requestDone(self, result: Any) -> None:
        self.active -= 1
        if not self.active:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def _tunnelDone(self, result: Any) -> None:
        self.tunnels -= 1

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing when no request is in flight.
        """
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def recordFastHit(
        self, channel: Any, server: Any, method: bytes, uri: bytes, headers: Any,
        code: int, length: int, status: bytes,
    ) -> None:
        """
        Count (and log) a hit the fast path answered, as L{log} does for
        the others.
        """
        if self.metrics is not None:
            self.metrics.observe(server.name, method, code, "hit", 0.0)
        if not self.access_log:
            return
        record = FastHitRecord(channel, method, uri, headers, code, 0 if method == b"HEAD" else length)
        self._write(record, status, "hit", server.name, None, 0.0)

    def log(self, request) -> None:
        """
        Count an answered request in the metrics and, unless the access log
        is off, log it: in C{text} format, the combined log format followed
        by C{cache=RESULT server=NAME upstream_ms=MS duration_ms=MS} (C{-}
        for no server or no origin request); in C{json} format, a JSON
        object, whose fields are also the event's.
        """
        metrics = self.metrics
        if metrics is None and not self.access_log:
            return
        status = request.responseHeaders.getRawHeaders(b"cache-status")
        result = cache_result(status[0] if status else None)
        name = getattr(request, "phantomServer", None)
        started = getattr(request, "phantomStarted", None)
        duration = 0.0 if started is None else max(0.0, self.clock.seconds() - started)
        if metrics is not None:
            metrics.observe(name, request.method, request.code, result, duration)
        if not self.access_log:
            return
        self._write(
            request,
            status[0] if status else None,
            result,
            name,
            getattr(request, "phantomUpstream", None),
            duration,
        )

    def _write(
        self,
        request,
        status: Optional[bytes],
        result: str,
        name: Optional[str],
        upstream: Optional[float],
        duration: float,
    ) -> None:
        """
        Write one access-log line (text or JSON) for C{request}.

        @param status: its C{Cache-Status}; C{result} is what it means.
        @param upstream: seconds spent waiting for the origin, if asked.
        """
        upstream_ms = None if upstream is None else round(upstream * 1000, 1)
        duration_ms = round(duration * 1000, 1)
        if self.log_format == "json":
            fields = {
                "method": request.method.decode("latin-1"),
                "uri": request.uri.decode("latin-1"),
                "protocol": request.clientproto.decode("latin-1"),
                "status": request.code,
                "bytes": request.sentLength,
                "client": getattr(request.getClientAddress(), "host", None),
                "user_agent": _header(request, b"user-agent"),
                "referer": _header(request, b"referer"),
                "cache": result,
                "cache_status": status.decode("latin-1") if status else None,
                "server": name,
                "upstream_ms": upstream_ms,
                "duration_ms": duration_ms,
            }
            access.info("{access_json}", access_json=json.dumps(fields, separators=(",", ":")), **fields)
            return
        timestamp = self._logDateTime or datetimeToLogString(self.clock.seconds())
        line = combinedLogFormatter(timestamp, request)
        access.info(
            "{line} cache={cache} server={server} upstream_ms={upstream_ms} duration_ms={duration_ms}",
            line=line,
            cache=result,
            server=name or "-",
            upstream_ms="-" if upstream_ms is None else upstream_ms,
            duration_ms=duration_ms,
        )


def _header(request, name: bytes) -> Optional[str]:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


class GracefulStop(Service):
    """
    On stop, waits (at most C{grace} seconds) for requests in flight, and
    makes a SIGTERM stop exit with status 0.

    @ivar grace: the C{shutdown_grace}, in seconds (a reload may change it).
    """

    def __init__(self, sites: List[ProxySite], grace: float, reactor) -> None:
        self._sites = sites
        self.grace = grace
        self._reactor = reactor

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if getattr(self._reactor, "_exitSignal", None) == signal.SIGTERM:
            self._reactor._exitSignal = None
        from twisted.internet.defer import DeferredList

        waiting = DeferredList([s.whenIdle() for s in self._sites])
        done: Deferred[None] = Deferred()
        timer = self._reactor.callLater(self.grace, lambda: done.called or done.callback(None))

        def finished(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        waiting.addBoth(finished)
        return done


class CacheService(Service):
    """
    Owns the caches and the origin connection pool: closes them last.
    """

    def __init__(self, handle: CacheHandle, pool: Any, runner: ThreadRunner) -> None:
        self.handle = handle
        self._pool = pool
        self._runner = runner

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.handle.close()
        self._runner.stop()
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()


class ServerBuilder:
    """
    Makes the L{phantom_frame.proxy.server.ProxyServer} of a C{[server.NAME]}
    block, at start and on reload: all share one origin connection pool and
    one thread pool; each reaches its origin through its own
    L{phantom_frame.ops.metrics.TimingAgent}.
    """

    def __init__(self, reactor: Any, agent: Any, runner: Any, metrics: Optional[Metrics]) -> None:
        """
        @param reactor: the reactor everything runs on.
        @param agent: reaches every origin.
        @param runner: runs compression and file I/O.
        @param metrics: times origin requests, or L{None}.
        """
        self._reactor = reactor
        self._agent = agent
        self._runner = runner
        self._metrics = metrics

    def __call__(self, block: ServerConfig, handle: CacheHandle) -> Any:
        """
        @param block: the server's configuration.
        @param handle: gets the server.
        @return: the server, opened; its snapshot warm-up is not started.
        """
        agent = self._agent
        timing = None
        if self._metrics is not None:
            agent = timing = self._metrics.timing_agent(agent, block.name)
        create_proxy(
            block.proxy,
            self._reactor,
            agent=agent,
            name=block.name,
            handle=handle,
            runner=self._runner,
            warm_up=False,
        )
        built = handle.server(block.name)
        if timing is not None:
            # Webhooks share the agent: time only the origin's URLs.
            timing.prefix = built.origin.url_for(b"")
        return built


def build_service(
    config: Config,
    reactor,
    tls: Optional[ReloadableContext] = None,
    install_signals: bool = False,
    origin_timeout: float = 60.0,
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
    @return: the whole proxy, ready for C{setServiceParent}. Its children
        start in this order (and stop in reverse): caches, origin commands,
        snapshot warm-ups, graceful stop, proxy listeners, C{SIGHUP}
        handler, control site. It has C{handle}, C{site}, C{metrics},
        C{reloader}, C{supervisor} and C{control} (the control resource)
        attributes.
    @raise TLSConfigError: when the certificate or key cannot be used.
    """
    from phantom_frame.ops.supervise import OriginSupervisor, WarmUps

    top = MultiService()
    agent, pool = default_agent(reactor)
    runner = ThreadRunner(reactor)
    handle = CacheHandle()
    metrics = Metrics(handle, reactor)
    build = ServerBuilder(reactor, agent, runner, metrics)
    supervisor = OriginSupervisor(reactor, metrics)
    warmups = WarmUps(reactor, timeout=origin_timeout)
    for block in config.servers:
        built = build(block, handle)
        if block.proxy.execute:
            supervisor.supervise(block.name, block.proxy.execute, block.proxy.execute_dir)
        warmups.add(built)
    router = Router([(b.bind_to, handle.server(b.name).resource, b.name) for b in config.servers])
    site = ProxySite(
        router,
        reactor=reactor,
        access_log=config.access_log,
        log_format=config.log_format,
        metrics=metrics,
    )
    metrics.site = site
    CacheService(handle, pool, runner).setServiceParent(top)
    supervisor.setServiceParent(top)
    warmups.setServiceParent(top)
    graceful = GracefulStop([site], config.shutdown_grace, reactor)
    graceful.setServiceParent(top)
    strports.service(config.http_endpoint(), site, reactor=reactor).setServiceParent(top)
    https = config.https_port_endpoint()
    if https is not None:
        if tls is None:
            tls = ReloadableContext(config.cert_path, config.key_path)
        strports.service(https, tls_factory(tls, site), reactor=reactor).setServiceParent(top)
    else:
        tls = None
    control_resource = ControlResource(handle, config.control_auth, metrics=metrics)
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
    )
    control_resource.reloader = reloader
    HangupReloader(reloader.reload, reactor, install_signals).setServiceParent(top)
    control = server.Site(control_resource, reactor=reactor)
    control.displayTracebacks = False
    control.noisy = False
    strports.service(config.control_endpoint(), control, reactor=reactor).setServiceParent(top)
    top.handle = handle  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    top.reloader = reloader  # type: ignore[attr-defined]
    top.supervisor = supervisor  # type: ignore[attr-defined]
    top.control = control_resource  # type: ignore[attr-defined]
    return top
