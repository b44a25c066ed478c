"""
Tests for L{phantom_frame.proxy.health}: the checks on a task clock, the
health state machine, and a proxy in front of real origins that go down and
come back.
"""

from __future__ import annotations

from typing import Any, List

import treq
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.embed import default_agent
from phantom_frame.proxy.health import HealthCheck, HealthChecks, health_checks
from phantom_frame.proxy.upstreams import UpstreamSet
from tests.proxy.test_upstreams import hosts, make_set


class _Logged:
    """
    Collects the log events of L{phantom_frame.proxy.health} for a test.
    """

    def __init__(self, testcase: Any) -> None:
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        if event.get("log_namespace") == "phantom_frame.proxy.health":
            self.events.append(event)

    def levels(self) -> List[LogLevel]:
        """
        @return: the level of each event, in order.
        """
        return [e["log_level"] for e in self.events]


class HealthCheckTests(SynchronousTestCase):
    """
    L{HealthChecks} on a task clock.
    """

    def setUp(self) -> None:
        self.upstreams, self.clock, self.scripted = make_set([None, None])
        self.check = HealthCheck("/healthz", interval=10.0, timeout=2.0, unhealthy_after=2, healthy_after=3)
        self.checks = HealthChecks("api", self.upstreams, self.check, self.clock)
        self.logged = _Logged(self)
        self.addCleanup(self.checks.stopService)

    def answer(self, index: int, code: int) -> None:
        """
        Answer the last check of upstream C{index} with C{code}.
        """
        self.scripted[index].finish(code)

    def test_service(self) -> None:
        """
        It is an L{IService}: starting it checks every upstream at once,
        with C{GET path} after the base path, then every interval.
        """
        self.assertTrue(IService.providedBy(self.checks))
        self.checks.startService()
        self.assertEqual(hosts(self.scripted), [1, 1])
        method, uri, headers, _ = self.scripted[0].requests[0]
        self.assertEqual((method, uri), (b"GET", b"/base/healthz"))
        self.assertEqual(headers.getRawHeaders(b"host"), [b"u0:8080"])
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [b"phantom-frame health check"])
        self.answer(0, 200)
        self.answer(1, 200)
        self.clock.advance(9.9)
        self.assertEqual(hosts(self.scripted), [1, 1])
        self.clock.advance(0.1)
        self.assertEqual(hosts(self.scripted), [2, 2])

    def test_down_and_up(self) -> None:
        """
        An upstream is unhealthy after C{unhealthy_after} failures in a row
        (a status >= 500, a connection error, a timeout), gets no requests,
        and is healthy again after C{healthy_after} successes in a row; each
        change is logged once, a warning down and information up.
        """
        self.scripted[1].answer = 200
        self.checks.startService()
        upstream = self.upstreams.upstreams[0]
        self.answer(0, 503)
        self.assertTrue(upstream.healthy)
        self.clock.advance(10)
        self.clock.advance(2)  # the second check times out
        self.assertFalse(upstream.healthy)
        self.assertEqual(self.logged.levels(), [LogLevel.warn])
        self.assertIn("no answer within 2s", self.logged.events[0]["reason"])
        before = len(self.scripted[0].requests)
        for _ in range(3):
            self.successResultOf(self.upstreams.request(b"GET", b"/", []))
        self.assertEqual(len(self.scripted[0].requests), before)
        self.scripted[0].memory.down = True
        self.clock.advance(8)  # the third check is refused
        self.assertEqual(len(self.scripted[0].requests), before)
        self.scripted[0].memory.down = False
        self.clock.advance(10)
        self.answer(0, 200)
        self.clock.advance(10)
        self.answer(0, 204)
        self.assertFalse(upstream.healthy)
        self.clock.advance(10)
        self.answer(0, 404)
        self.assertTrue(upstream.healthy)
        self.assertEqual(self.logged.levels(), [LogLevel.warn, LogLevel.info])
        self.clock.advance(10)
        self.answer(0, 200)
        self.assertEqual(len(self.logged.events), 2)

    def test_failures_reset(self) -> None:
        """
        A success between failures starts the count again.
        """
        self.checks.startService()
        upstream = self.upstreams.upstreams[0]
        for code in (500, 200, 500, 200, 500):
            self.answer(0, code)
            self.assertTrue(upstream.healthy)
            self.clock.advance(10)

    def test_in_flight_not_doubled(self) -> None:
        """
        A check still in flight when the next is due is not sent again.
        """
        slow = HealthChecks("api", self.upstreams, HealthCheck(interval=1.0, timeout=5.0), self.clock)
        slow.startService()
        self.addCleanup(slow.stopService)
        self.clock.advance(1)
        self.assertEqual(hosts(self.scripted), [1, 1])

    def test_stop(self) -> None:
        """
        Stopping cancels the timers and the checks in flight, which are
        not counted as failures; stopping again does nothing.
        """
        self.checks.startService()
        finished = self.scripted[0].pending[0].notifyFinish()
        self.checks.stopService()
        self.scripted[0].memory.flush()
        self.failureResultOf(finished)
        self.assertEqual(self.checks.states["http://u0:8080/base"].failures, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.checks.stopService()
        self.assertFalse(self.checks.running)

    def test_check_all(self) -> None:
        """
        L{HealthChecks.check_all} checks every upstream now and fires once
        every check is over.
        """
        d = self.checks.check_all()
        self.assertNoResult(d)
        self.answer(0, 200)
        self.assertNoResult(d)
        self.answer(1, 500)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.checks.states["http://u1:8080/base"].failures, 1)

    def test_health_checks(self) -> None:
        """
        L{health_checks} makes checks for an upstream set with a
        C{health_check}, and none otherwise.
        """
        self.assertIsInstance(health_checks("api", self.upstreams, self.check, self.clock), HealthChecks)
        self.assertIsNone(health_checks("api", self.upstreams, None, self.clock))
        self.assertIsNone(health_checks("api", self.upstreams.upstreams[0].origin, self.check, self.clock))


class _Backend(Resource):
    """
    An origin whose C{/healthz} answers C{health}, and every other path its
    name.
    """

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name
        self.health = 200
        self.pages = 0

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/healthz":
            request.setResponseCode(self.health)
            return b"ok"
        self.pages += 1
        return self.name


class EndToEndTests(TestCase):
    """
    A proxy with health checks in front of real origins on loopback; the
    checks run on a task clock, the requests on the reactor.
    """

    def listen(self, factory: Any) -> str:
        """
        @return: the URL of C{factory} listening on a loopback port.
        """
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return "http://127.0.0.1:%d" % (port.getHost().port,)

    async def test_unhealthy_gets_nothing(self) -> None:
        """
        An upstream that fails its checks gets no requests; with none
        healthy the proxy answers 502 at once; a recovered upstream gets
        requests again.
        """
        backends = [_Backend(b"a"), _Backend(b"b")]
        urls = [self.listen(Site(b)) for b in backends]
        agent, pool = default_agent(reactor)
        self.addCleanup(pool.closeCachedConnections)
        check = HealthCheck("/healthz", interval=5, timeout=5, unhealthy_after=1, healthy_after=1)
        config = CreateProxyConfig(upstreams=urls, cache_strategy="none", health_check=check)
        resource, handle = create_proxy(config, reactor, agent=agent)
        self.addCleanup(handle.close)
        server = next(handle.servers())
        self.assertIsInstance(server.origin, UpstreamSet)
        checks = HealthChecks("default", server.origin, check, Clock())
        site = Site(resource)
        site.noisy = False
        base = self.listen(site)
        client_pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(client_pool.closeCachedConnections)
        client = Agent(reactor, pool=client_pool)

        async def get(path: str) -> Any:
            response = await client.request(b"GET", (base + path).encode())
            return response.code, await treq.content(response)

        backends[0].health = 500
        await checks.check_all()
        self.assertEqual([await get(f"/{n}") for n in range(3)], [(200, b"b")] * 3)
        self.assertEqual([b.pages for b in backends], [0, 3])
        backends[1].health = 503
        await checks.check_all()
        self.assertEqual((await get("/x"))[0], 502)
        self.assertEqual([b.pages for b in backends], [0, 3])
        backends[0].health = 200
        await checks.check_all()
        self.assertEqual(await get("/y"), (200, b"a"))
        checks.stopService()
        closed: Deferred = pool.closeCachedConnections()
        await closed


class _Server:
    """
    What L{HealthService} reads of a server: its C{health}.
    """

    def __init__(self, health: Any) -> None:
        self.health = health


class HealthServiceTests(SynchronousTestCase):
    """
    L{phantom_frame.service.HealthService} runs the checks of the servers
    built for the proxy.
    """

    def test_lifecycle(self) -> None:
        """
        Checks added before the start run from the start, checks added
        while it runs (a reload) at once; all stop with it; servers
        without checks are ignored.
        """
        from phantom_frame.service import HealthService

        upstreams, clock, scripted = make_set([200])
        first = HealthChecks("a", upstreams, HealthCheck(), clock)
        second = HealthChecks("b", upstreams, HealthCheck(), clock)
        service = HealthService()
        service.add(_Server(first))
        service.add(_Server(None))
        self.assertFalse(first.running)
        service.startService()
        self.assertTrue(first.running)
        service.add(_Server(second))
        self.assertTrue(second.running)
        self.assertEqual(len(scripted[0].requests), 2)
        service.stopService()
        self.assertFalse(first.running or second.running)
        scripted[0].memory.pool.close()  # its idle connections' timer
        self.assertEqual(clock.getDelayedCalls(), [])
