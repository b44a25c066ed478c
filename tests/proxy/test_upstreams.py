"""
Tests for L{phantom_frame.proxy.upstreams}: choosing an upstream per
request, failing over, and the per-upstream counts.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from io import BytesIO

import treq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent
from twisted.web.server import Site
from zope.interface import implementer

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.embed import default_agent
from phantom_frame.proxy.origin import Origin, UpstreamError, UpstreamTimeout, body_producer
from phantom_frame.proxy.upstreams import LATENCY_BUCKETS, Balancing, UpstreamSet
from tests.origin import Origin as TestOrigin


class _Answer:
    """
    What a test origin answers: just a status code.
    """

    def __init__(self, code: int) -> None:
        self.code = code


@implementer(IAgent)
class ScriptedAgent:
    """
    An L{IAgent} for one origin that records its requests and answers each
    with a L{Deferred} the test fires (or at once, with C{answer}).

    @ivar requests: C{(method, uri, headers, body)} of every request.
    @ivar pending: the L{Deferred} of each request, in order.
    """

    def __init__(self, answer: Optional[int] = None, refuse: bool = False) -> None:
        self.answer = answer
        self.refuse = refuse
        self.requests: List[Tuple[bytes, bytes, Any, Any]] = []
        self.pending: List[Deferred] = []

    def request(self, method, uri, headers=None, bodyProducer=None) -> Deferred:
        self.requests.append((method, uri, headers, bodyProducer))
        if self.refuse:
            d: Deferred = Deferred()
            d.errback(ConnectionRefusedError("refused"))
            return d
        if self.answer is not None:
            return succeed(_Answer(self.answer))
        d = Deferred()
        self.pending.append(d)
        return d


class _Sink:
    """
    A consumer that keeps what a body producer writes.
    """

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@implementer(IAgent)
class ReadingAgent(ScriptedAgent):
    """
    A L{ScriptedAgent} that starts sending the request body before it
    fails: a connection reset mid-request.
    """

    def request(self, method, uri, headers=None, bodyProducer=None) -> Deferred:
        self.requests.append((method, uri, headers, bodyProducer))
        if bodyProducer is not None:
            bodyProducer.startProducing(_Sink())
        d: Deferred = Deferred()
        d.errback(ConnectionRefusedError("reset"))
        return d


def make_set(
    agents: List[ScriptedAgent],
    balancing: Balancing = Balancing.ROUND_ROBIN,
    clock: Optional[Clock] = None,
    random: Any = None,
) -> Tuple[UpstreamSet, Clock]:
    """
    @return: an upstream set of real L{Origin}s over C{agents}, at
        C{http://uN:8080} for N from 0, and its clock.
    """
    clock = clock or Clock()
    origins = [Origin(f"http://u{i}:8080/base", a, clock, 30.0) for i, a in enumerate(agents)]
    kwargs = {} if random is None else {"random": random}
    return UpstreamSet(origins, clock, balancing, **kwargs), clock


def hosts(agents: List[ScriptedAgent]) -> List[int]:
    """
    @return: how many requests each agent got.
    """
    return [len(a.requests) for a in agents]


class BalancingTests(SynchronousTestCase):
    """
    Each policy spreads requests over the healthy upstreams.
    """

    def test_round_robin(self) -> None:
        """
        C{round_robin} sends requests to each upstream in turn, skipping an
        unhealthy one.
        """
        agents = [ScriptedAgent(200) for _ in range(3)]
        upstreams, _ = make_set(agents)
        for _ in range(6):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(agents), [2, 2, 2])
        upstreams.upstreams[1].healthy = False
        for _ in range(4):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(agents), [4, 2, 4])

    def test_random(self) -> None:
        """
        C{random} picks among the healthy upstreams with the random source.
        """
        agents = [ScriptedAgent(200) for _ in range(3)]
        draws = iter([0.0, 0.99, 0.5, 0.99])
        upstreams, _ = make_set(agents, Balancing.RANDOM, random=lambda: next(draws))
        for _ in range(3):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(agents), [1, 1, 1])
        upstreams.upstreams[2].healthy = False
        self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(agents), [1, 2, 1])

    def test_least_conn(self) -> None:
        """
        C{least_conn} sends a request to the upstream with the fewest
        requests waiting for their answer.
        """
        agents = [ScriptedAgent() for _ in range(2)]
        upstreams, _ = make_set(agents, Balancing.LEAST_CONN)
        first = upstreams.request(b"GET", b"/a", [])
        second = upstreams.request(b"GET", b"/b", [])
        self.assertEqual(hosts(agents), [1, 1])
        agents[0].pending[0].callback(_Answer(200))
        self.successResultOf(first)
        upstreams.request(b"GET", b"/c", [])
        upstreams.request(b"GET", b"/d", [])
        # /c to u0 (none waiting there, one at u1); /d: a tie, broken in
        # turn (u1); /e to u0 (one waiting there, two at u1).
        self.assertEqual(hosts(agents), [2, 2])
        upstreams.request(b"GET", b"/e", [])
        self.assertEqual([a.requests[-1][1] for a in agents], [b"http://u0:8080/base/e", b"http://u1:8080/base/d"])
        self.assertEqual([u.active for u in upstreams.upstreams], [2, 2])
        self.assertNoResult(second)

    def test_ip_hash(self) -> None:
        """
        C{ip_hash} sends one client's requests to one upstream, found from
        the last C{X-Forwarded-For} address; when it is unhealthy, to
        another one, and back once it is healthy again.
        """
        agents = [ScriptedAgent(200) for _ in range(4)]
        upstreams, _ = make_set(agents, Balancing.IP_HASH)

        def target(client: str) -> int:
            before = hosts(agents)
            headers = [(b"X-Forwarded-For", b"203.0.113.9, " + client.encode())]
            self.successResultOf(upstreams.request(b"GET", b"/", headers))
            return [a - b for a, b in zip(hosts(agents), before)].index(1)

        seen = {c: target(c) for c in (f"10.0.0.{n}" for n in range(20))}
        self.assertGreater(len(set(seen.values())), 1)
        for client, index in seen.items():
            self.assertEqual(target(client), index)
        client, index = next(iter(seen.items()))
        upstreams.upstreams[index].healthy = False
        moved = target(client)
        self.assertNotEqual(moved, index)
        self.assertEqual(target(client), moved)
        upstreams.upstreams[index].healthy = True
        self.assertEqual(target(client), index)

    def test_choose(self) -> None:
        """
        L{UpstreamSet.choose} returns the next upstream's L{Origin}, and the
        set's C{url}, C{netloc}, C{base_path} and C{url_for} then are
        those of the upstream chosen last.
        """
        agents = [ScriptedAgent(200) for _ in range(2)]
        upstreams, _ = make_set(agents)
        self.assertEqual(upstreams.url, "http://u0:8080/base")
        self.assertIs(upstreams.choose(), upstreams.upstreams[0].origin)
        chosen = upstreams.choose("10.0.0.1")
        self.assertIs(chosen, upstreams.upstreams[1].origin)
        self.assertEqual(
            (upstreams.url, upstreams.netloc, upstreams.base_path, upstreams.scheme),
            ("http://u1:8080/base", b"u1:8080", b"/base", b"http"),
        )
        self.assertEqual(upstreams.url_for(b"/x?y"), b"http://u1:8080/base/x?y")
        self.assertEqual(upstreams.timeout, 30.0)

    def test_all_unhealthy(self) -> None:
        """
        With no healthy upstream, a request fails at once with an
        L{UpstreamError} and none is sent; L{UpstreamSet.choose} raises it.
        """
        agents = [ScriptedAgent(200) for _ in range(2)]
        upstreams, _ = make_set(agents)
        for upstream in upstreams.upstreams:
            upstream.healthy = False
        failure = self.failureResultOf(upstreams.request(b"GET", b"/", []), UpstreamError)
        self.assertIn("no healthy upstream", str(failure.value))
        self.assertEqual(hosts(agents), [0, 0])
        self.assertRaises(UpstreamError, upstreams.choose)

    def test_needs_origins(self) -> None:
        """
        An empty set is refused.
        """
        self.assertRaises(ValueError, UpstreamSet, [], Clock())


class FailoverTests(SynchronousTestCase):
    """
    A refused or reset request moves to the next healthy upstream when
    that is safe.
    """

    def test_refused_moves_on(self) -> None:
        """
        A GET the first upstream refuses goes to the next one, which
        answers.
        """
        agents = [ScriptedAgent(refuse=True), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        self.assertEqual(self.successResultOf(upstreams.request(b"GET", b"/p", [])).code, 200)
        self.assertEqual(hosts(agents), [1, 1])
        self.assertEqual([u.stats.errors for u in upstreams.upstreams], [1, 0])
        self.assertEqual([u.stats.requests for u in upstreams.upstreams], [1, 1])

    def test_once_per_upstream(self) -> None:
        """
        Each upstream is tried at most once; when all refuse, the last
        error is the request's.
        """
        agents = [ScriptedAgent(refuse=True) for _ in range(3)]
        upstreams, _ = make_set(agents)
        self.failureResultOf(upstreams.request(b"PUT", b"/p", []), UpstreamError)
        self.assertEqual(hosts(agents), [1, 1, 1])

    def test_unhealthy_skipped(self) -> None:
        """
        Failover skips unhealthy upstreams.
        """
        agents = [ScriptedAgent(refuse=True), ScriptedAgent(200), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        upstreams.upstreams[1].healthy = False
        self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(agents), [1, 0, 1])

    def test_post_not_retried(self) -> None:
        """
        A POST (not idempotent) is not sent again.
        """
        agents = [ScriptedAgent(refuse=True), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        self.failureResultOf(upstreams.request(b"POST", b"/", []), UpstreamError)
        self.assertEqual(hosts(agents), [1, 0])

    def test_timeout_not_retried(self) -> None:
        """
        A request that timed out is not sent again: the upstream may be
        working on it.
        """
        agents = [ScriptedAgent(), ScriptedAgent(200)]
        upstreams, clock = make_set(agents)
        d = upstreams.request(b"GET", b"/", [])
        clock.advance(30)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertEqual(hosts(agents), [1, 0])
        self.assertEqual(upstreams.upstreams[0].stats.errors, 1)

    def test_body_not_sent_retried(self) -> None:
        """
        A PUT whose body was never sent (refused) goes to the next upstream
        with its body.
        """
        agents = [ScriptedAgent(refuse=True), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        body = body_producer(BytesIO(b"data"), 4)
        self.successResultOf(upstreams.request(b"PUT", b"/", [], body))
        sent = agents[1].requests[0][3]
        sink = _Sink()
        sent.startProducing(sink)
        self.assertEqual((sent.length, sink.data), (4, b"data"))

    def test_body_sent_not_retried(self) -> None:
        """
        A PUT whose body had begun to go out when the connection broke is
        not sent again.
        """
        agents = [ReadingAgent(), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        body = body_producer(BytesIO(b"data"), 4)
        self.failureResultOf(upstreams.request(b"PUT", b"/", [], body), UpstreamError)
        self.assertEqual(hosts(agents), [1, 0])

    def test_cancel(self) -> None:
        """
        Cancelling a request cancels it at its upstream, which is no more
        counted as busy; it is not failed over.
        """
        agents = [ScriptedAgent(), ScriptedAgent(200)]
        upstreams, _ = make_set(agents)
        d = upstreams.request(b"GET", b"/", [])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(hosts(agents), [1, 0])
        self.assertEqual(upstreams.upstreams[0].active, 0)


class StatsTests(SynchronousTestCase):
    """
    Each upstream counts its requests, errors and latencies.
    """

    def test_latency(self) -> None:
        """
        The time to the response head goes into the upstream's histogram.
        """
        agents = [ScriptedAgent()]
        upstreams, clock = make_set(agents)
        d = upstreams.request(b"GET", b"/", [])
        clock.advance(0.3)
        agents[0].pending[0].callback(_Answer(200))
        self.successResultOf(d)
        stats = upstreams.upstreams[0].stats
        self.assertEqual((stats.requests, stats.errors), (1, 0))
        self.assertAlmostEqual(stats.total, 0.3)
        cumulative = dict(stats.cumulative())
        self.assertEqual(cumulative["0.25"], 0)
        self.assertEqual(cumulative["0.5"], 1)
        self.assertEqual(cumulative["+Inf"], 1)
        self.assertEqual(len(cumulative), len(LATENCY_BUCKETS) + 1)


class _Resets(Protocol):
    """
    Resets every connection as soon as it is accepted: an upstream that
    refuses before answering anything.
    """

    def connectionMade(self) -> None:
        self.factory.resets += 1
        self.transport.abortConnection()


class EndToEndTests(TestCase):
    """
    A proxy in front of several real origins on loopback.
    """

    def listen(self, factory: Any) -> str:
        """
        @return: the URL of C{factory} listening on a loopback port.
        """
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return "http://127.0.0.1:%d" % (port.getHost().port,)

    async def test_failover(self) -> None:
        """
        GETs that an upstream resets go to the next one and are answered;
        a POST it resets is answered 502.
        """
        resetting = Factory.forProtocol(_Resets)
        resetting.resets = 0
        origins = [TestOrigin(), TestOrigin()]
        urls = [self.listen(resetting)] + [self.listen(Site(o)) for o in origins]
        agent, pool = default_agent(reactor)
        self.addCleanup(pool.closeCachedConnections)
        config = CreateProxyConfig(upstreams=urls, cache_strategy="none")
        resource, handle = create_proxy(config, reactor, agent=agent)
        self.addCleanup(handle.close)
        site = Site(resource)
        site.noisy = False
        base = self.listen(site)
        client_pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(client_pool.closeCachedConnections)
        client = Agent(reactor, pool=client_pool)

        async def send(method: bytes, path: str) -> int:
            response = await client.request(method, (base + path).encode())
            await treq.content(response)
            return response.code

        codes = [await send(b"GET", f"/page{n}") for n in range(4)]
        self.assertEqual(codes, [200] * 4)
        self.assertEqual(resetting.resets, 2)
        self.assertEqual([sum(o.hits.values()) for o in origins], [2, 2])
        self.assertEqual(await send(b"POST", "/form"), 502)
        self.assertEqual(resetting.resets, 3)
        self.assertEqual([sum(o.hits.values()) for o in origins], [2, 2])
