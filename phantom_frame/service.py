"""
Building the running proxy from a validated L{Config}: a L{MultiService}
holding the caches, the listeners and the control site.
"""

from __future__ import annotations

import signal
from typing import Any, List, Optional

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import combinedLogFormatter

from .cache.workers import ThreadRunner
from .config import Config
from .control import ControlResource
from .library import CacheHandle, create_proxy, default_agent
from .routing import Router
from .tls import CertificateReloader, ReloadableContext, tls_factory

log = Logger()


class ProxyRequest(server.Request):
    """
    A request that counts itself in its site's in-flight total, and that
    adds no default C{Content-Type} of its own.
    """

    defaultContentType = None

    def process(self) -> None:
        site = self.channel.site
        site.active += 1
        self.notifyFinish().addBoth(site._requestDone)
        super().process()


class ProxySite(server.Site):
    """
    The proxy's HTTP site: no tracebacks, an access log through
    L{twisted.logger} (combined format plus the cache result, or JSON), and
    a count of requests in flight for graceful stops.
    """

    requestFactory = ProxyRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource, reactor=None, access_log: bool = True, log_format: str = "text") -> None:
        super().__init__(resource, reactor=reactor)
        self.active = 0
        self._idle: List[Deferred] = []
        self._accessLog = access_log
        self._json = log_format == "json"

    def _requestDone(self, result: Any) -> None:
        self.active -= 1
        if not self.active:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing when no request is in flight.
        """
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def log(self, request) -> None:
        """
        One access-log line per request, unless turned off.
        """
        if not self._accessLog:
            return
        status = request.responseHeaders.getRawHeaders(b"cache-status", [b"-"])[0]
        if self._json:
            log.info(
                "{method} {uri} {code} {length}",
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                code=request.code,
                length=request.sentLength,
                client=getattr(request.getClientAddress(), "host", None),
                user_agent=(request.getHeader(b"user-agent") or b"").decode("latin-1"),
                referer=(request.getHeader(b"referer") or b"").decode("latin-1"),
                cache=status.decode("latin-1"),
                log_format="json",
            )
            return
        line = combinedLogFormatter(self._logDateTime, request)
        log.info("{line} {cache}", line=line, cache=status.decode("latin-1"))


class GracefulStop(Service):
    """
    On stop, waits (at most C{grace} seconds) for requests in flight, and
    makes a SIGTERM stop exit with status 0.
    """

    def __init__(self, sites: List[ProxySite], grace: float, reactor) -> None:
        self._sites = sites
        self._grace = grace
        self._reactor = reactor

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if getattr(self._reactor, "_exitSignal", None) == signal.SIGTERM:
            self._reactor._exitSignal = None
        from twisted.internet.defer import DeferredList

        waiting = DeferredList([s.whenIdle() for s in self._sites])
        done: Deferred[None] = Deferred()
        timer = self._reactor.callLater(self._grace, lambda: done.called or done.callback(None))

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


def build_service(
    config: Config,
    reactor,
    tls: Optional[ReloadableContext] = None,
    install_signals: bool = False,
) -> MultiService:
    """
    @param config: a validated configuration.
    @param reactor: the reactor everything runs on.
    @param tls: the HTTPS certificate, already loaded (loaded here when
        omitted and an HTTPS listener is configured).
    @param install_signals: reload the certificate on C{SIGHUP} (only for
        the process's real reactor).
    @return: the whole proxy, ready for C{setServiceParent}.
    @raise TLSConfigError: when the certificate or key cannot be used.
    """
    top = MultiService()
    agent, pool = default_agent(reactor)
    runner = ThreadRunner(reactor)
    handle = CacheHandle()
    routes = []
    for block in config.servers:
        resource, _ = create_proxy(
            block.proxy, reactor, agent=agent, name=block.name, handle=handle, runner=runner
        )
        routes.append((block.bind_to, resource))
    site = ProxySite(
        Router(routes), reactor=reactor, access_log=config.access_log, log_format=config.log_format
    )
    CacheService(handle, pool, runner).setServiceParent(top)
    GracefulStop([site], config.shutdown_grace, reactor).setServiceParent(top)
    strports.service(config.http_endpoint(), site, reactor=reactor).setServiceParent(top)
    https = config.https_port_endpoint()
    if https is not None:
        if tls is None:
            tls = ReloadableContext(config.cert_path, config.key_path)
        strports.service(https, tls_factory(tls, site), reactor=reactor).setServiceParent(top)
        CertificateReloader(tls, reactor, install_signals).setServiceParent(top)
    control = server.Site(ControlResource(handle, config.control_auth), reactor=reactor)
    control.displayTracebacks = False
    control.noisy = False
    strports.service(config.control_endpoint(), control, reactor=reactor).setServiceParent(top)
    top.handle = handle  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    return top
