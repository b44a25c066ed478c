"""
Active health checks of a server's upstreams (C{[server.NAME.health_check]}).

Every C{interval} seconds, on the injected clock, each upstream of an
L{UpstreamSet} is sent C{GET path} through its own L{Origin} (so through the
same client as the requests it proxies). A check fails when it gets no
answer within C{timeout} seconds, a connection error, or a status of 500 or
more. An upstream becomes unhealthy after C{unhealthy_after} failures in a
row (it then gets no requests) and healthy again after C{healthy_after}
successes in a row; each change is logged once (a warning when it goes
down, information when it comes back). Upstreams start healthy.

L{HealthChecks} is a L{Service}: started with the proxy, stopped with it (or
with its server, on a reload), which cancels its timers and the checks in
flight.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.proxy.upstreams import Upstream, UpstreamSet

__all__ = ["HealthCheck", "HealthChecks", "UpstreamHealth", "health_checks"]

log = Logger()

#: The C{User-Agent} of a check.
USER_AGENT = b"phantom-frame health check"


@attr.s(auto_attribs=True, frozen=True)
class HealthCheck:
    """
    One C{[server.NAME.health_check]} table.

    @ivar path: the path (with an optional query) sent C{GET} to each
        upstream, after its base path.
    @ivar interval: seconds between two checks of an upstream.
    @ivar timeout: seconds a check may take.
    @ivar unhealthy_after: failures in a row that make an upstream
        unhealthy.
    @ivar healthy_after: successes in a row that make an unhealthy upstream
        healthy again.
    """

    path: str = "/"
    interval: float = 10.0
    timeout: float = 2.0
    unhealthy_after: int = 3
    healthy_after: int = 2


class UpstreamHealth:
    """
    The health state machine of one upstream: consecutive outcomes of its
    checks set its C{healthy} flag.

    @ivar failures: failed checks in a row.
    @ivar successes: successful checks in a row.
    """

    def __init__(self, server: str, upstream: Upstream, check: HealthCheck) -> None:
        """
        @param server: the server's name, for log lines.
        @param upstream: whose C{healthy} flag is set.
        @param check: the thresholds.
        """
        self._server = server
        self._upstream = upstream
        self._check = check
        self.failures = 0
        self.successes = 0

    def succeeded(self) -> None:
        """
        A check succeeded: after C{healthy_after} in a row, an unhealthy
        upstream is healthy again.
        """
        self.failures = 0
        self.successes += 1
        upstream = self._upstream
        if not upstream.healthy and self.successes >= self._check.healthy_after:
            upstream.healthy = True
            log.info(
                "server {server}: upstream {upstream} is up again after {count} good health checks",
                server=self._server,
                upstream=upstream.url,
                count=self.successes,
            )

    def failed(self, reason: str) -> None:
        """
        A check failed for C{reason}: after C{unhealthy_after} in a row, a
        healthy upstream is unhealthy.
        """
        self.successes = 0
        self.failures += 1
        upstream = self._upstream
        if upstream.healthy and self.failures >= self._check.unhealthy_after:
            upstream.healthy = False
            log.warn(
                "server {server}: upstream {upstream} is down after {count} failed health"
                " checks: {reason}",
                server=self._server,
                upstream=upstream.url,
                count=self.failures,
                reason=reason,
            )


class _Discard(Protocol):
    """
    Reads the body of a check's answer and throws it away, so that its
    connection is free again.
    """

    def __init__(self, bodies: Set[_Discard]) -> None:
        self._bodies = bodies
        bodies.add(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._bodies.discard(self)


class HealthChecks(Service):
    """
    Checks every upstream of one server (see the module docstring).

    @ivar states: the state machine of each upstream, by URL.
    """

    def __init__(self, server: str, upstreams: UpstreamSet, check: HealthCheck, clock: IReactorTime) -> None:
        """
        @param server: the server's name, for log lines.
        @param upstreams: whose upstreams are checked.
        @param check: what to send, how often, the thresholds.
        @param clock: schedules the checks and their timeouts.
        """
        self._server = server
        self._check = check
        self._clock = clock
        self._upstreams = upstreams.upstreams
        self.states: Dict[str, UpstreamHealth] = {
            u.url: UpstreamHealth(server, u, check) for u in self._upstreams
        }
        self._timers: Dict[int, IDelayedCall] = {}
        self._flying: Dict[int, Deferred] = {}
        self._bodies: Set[_Discard] = set()

    def startService(self) -> None:
        """
        Check every upstream now, then every C{interval} seconds.
        """
        super().startService()
        for index in range(len(self._upstreams)):
            self._scheduled(index)

    def stopService(self) -> None:
        """
        Cancel the timers, the checks in flight and the bodies being read.
        Stopping a stopped service does nothing.
        """
        if not self.running:
            return
        super().stopService()
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()
        flying, self._flying = self._flying, {}
        for d in flying.values():
            d.cancel()
        for body in list(self._bodies):
            if body.transport is not None:
                body.transport.stopProducing()
        self._bodies.clear()

    def check_all(self) -> Deferred[None]:
        """
        Check every upstream now (those whose check is in flight: wait for
        it).

        @return: a L{Deferred} firing once every check is over.
        """
        return gatherResults([self._probe(index) for index in range(len(self._upstreams))]).addCallback(
            lambda _: None
        )

    def _scheduled(self, index: int) -> None:
        self._timers[index] = self._clock.callLater(self._check.interval, self._scheduled, index)
        self._probe(index)

    def _probe(self, index: int) -> Deferred[None]:
        """
        Check upstream C{index}, unless its previous check is in flight.

        @return: a L{Deferred} firing once the check is over.
        """
        flying = self._flying.get(index)
        if flying is not None:
            waiter: Deferred[None] = Deferred()
            flying.addBoth(lambda result: (waiter.callback(None), result)[1])
            return waiter
        upstream = self._upstreams[index]
        state = self.states[upstream.url]
        path = self._check.path.encode("utf-8")
        d = upstream.origin.request(b"GET", path, [(b"User-Agent", USER_AGENT)], None)
        timedOut: List[bool] = []

        def onTimeout() -> None:
            timedOut.append(True)
            d.cancel()

        timer = self._clock.callLater(self._check.timeout, onTimeout)

        def answered(response: Any) -> None:
            code = getattr(response, "code", 0)
            deliver = getattr(response, "deliverBody", None)
            if deliver is not None:
                deliver(_Discard(self._bodies))
            if code >= 500:
                state.failed(f"status {code}")
            else:
                state.succeeded()

        def failed(failure: Failure) -> None:
            if timedOut:
                state.failed(f"no answer within {self._check.timeout:g}s")
            elif self.running:  # else stopped: not the upstream's fault
                state.failed(failure.getErrorMessage() or type(failure.value).__name__)

        def over(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if self._flying.get(index) is d:
                del self._flying[index]
            return result

        d.addBoth(over)
        d.addCallbacks(answered, failed)
        d.addErrback(lambda f: log.failure("health check of {url} failed", f, url=upstream.url))
        if not d.called:
            self._flying[index] = d
        return d


def health_checks(server: str, origin: Any, check: Optional[HealthCheck], clock: IReactorTime) -> Optional[HealthChecks]:
    """
    @param origin: a server's origin (an L{UpstreamSet}, or one L{Origin}).
    @param check: its C{health_check}, or L{None}.
    @return: the checks of its upstreams, or L{None} without C{check}.
    """
    if check is None or not isinstance(origin, UpstreamSet):
        return None
    return HealthChecks(server, origin, check, clock)
