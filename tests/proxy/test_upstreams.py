"""
Tests for L{phantom_frame.proxy.upstreams}: choosing an upstream per
request, failing over, and the per-upstream counts.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

from io import BytesIO

import treq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.embed import default_agent
from phantom_frame.proxy.client import RequestBody
from phantom_frame.proxy.origin import Origin, UpstreamError, UpstreamTimeout, body_producer
from phantom_frame.cache.threads import runInline
from phantom_frame.proxy.server import ProxyServer
from phantom_frame.proxy.upstreams import LATENCY_BUCKETS, Balancing, UpstreamSet, origin_for
from tests.memory import MemoryOrigin
from tests.origin import Origin as TestOrigin

#: What L{make_set} takes for an upstream that refuses every connection.
REFUSE = "refuse"


class _Answers(Resource):
    """
    A test origin that records its requests and answers each with a fixed
    status, or holds it for the test to answer (C{answer} is C{None}).

    @ivar requests: C{(method, uri, headers, body)} of every request.
    @ivar pending: the held requests, in order.
    """

    isLeaf = True

    def __init__(self, answer: Optional[int]) -> None:
        super().__init__()
        self.answer = answer
        self.requests: List[Tuple[bytes, bytes, Any, bytes]] = []
        self.pending: List[Request] = []

    def render(self, request: Request) -> Any:
        """
        Record the request; answer it, or hold it.
        """
        self.requests.append((request.method, request.uri, request.requestHeaders, request.content.read()))
        if self.answer is None:
            self.pending.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.answer)
        return b""


class Scripted:
    """
    One upstream of a test: an L{_Answers} site reached in memory through
    a real origin pool (L{MemoryOrigin}).

    @ivar memory: the in-memory origin.
    """

    def __init__(self, clock: Clock, answer: Union[None, int, str]) -> None:
        self._resource = _Answers(None if answer == REFUSE else answer)
        self.memory = MemoryOrigin(self._resource, clock)
        self.memory.down = answer == REFUSE

    @property
    def answer(self) -> Optional[int]:
        """
        The status every request gets, or C{None} to hold them.
        """
        return self._resource.answer

    @answer.setter
    def answer(self, code: Optional[int]) -> None:
        self._resource.answer = code

    @property
    def requests(self) -> List[Tuple[bytes, bytes, Any, bytes]]:
        """
        The requests that reached the upstream.
        """
        return self._resource.requests

    @property
    def pending(self) -> List[Request]:
        """
        The held requests.
        """
        return self._resource.pending

    def finish(self, code: int, index: int = -1) -> None:
        """
        Answer the held request C{index} with C{code}, and move the bytes.
        """
        request = self.pending[index]
        request.setResponseCode(code)
        request.finish()
        self.memory.flush()


def make_set(
    answers: List[Union[None, int, str]],
    balancing: Balancing = Balancing.ROUND_ROBIN,
    random: Any = None,
) -> Tuple[UpstreamSet, Clock, List[Scripted]]:
    """
    @param answers: for each upstream, the status it answers, C{None} to
        hold its requests, or L{REFUSE}.
    @return: an upstream set of real L{Origin}s at C{http://uN:8080/base}
        for N from 0, its clock, and its L{Scripted} upstreams.
    """
    clock = Clock()
    scripted = [Scripted(clock, answer) for answer in answers]
    origins = [
        Origin(f"http://u{i}:8080/base", s.memory.client(f"http://u{i}:8080/base"), clock, 30.0)
        for i, s in enumerate(scripted)
    ]
    kwargs = {} if random is None else {"random": random}
    return UpstreamSet(origins, clock, balancing, **kwargs), clock, scripted


def hosts(scripted: List[Scripted]) -> List[int]:
    """
    @return: how many requests reached each upstream.
    """
    return [len(s.requests) for s in scripted]


def tried(upstreams: UpstreamSet) -> List[int]:
    """
    @return: how many requests were sent to each upstream (refused ones
        included).
    """
    return [u.stats.requests for u in upstreams.upstreams]


class BalancingTests(SynchronousTestCase):
    """
    Each policy spreads requests over the healthy upstreams.
    """

    def test_round_robin(self) -> None:
        """
        C{round_robin} sends requests to each upstream in turn, skipping an
        unhealthy one.
        """
        upstreams, _, scripted = make_set([200, 200, 200])
        for _ in range(6):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(scripted), [2, 2, 2])
        upstreams.upstreams[1].healthy = False
        for _ in range(4):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(scripted), [4, 2, 4])

    def test_random(self) -> None:
        """
        C{random} picks among the healthy upstreams with the random source.
        """
        draws = iter([0.0, 0.99, 0.5, 0.99])
        upstreams, _, scripted = make_set([200, 200, 200], Balancing.RANDOM, random=lambda: next(draws))
        for _ in range(3):
            self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(scripted), [1, 1, 1])
        upstreams.upstreams[2].healthy = False
        self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(hosts(scripted), [1, 2, 1])

    def test_least_conn(self) -> None:
        """
        C{least_conn} sends a request to the upstream with the fewest
        requests waiting for their answer.
        """
        upstreams, _, scripted = make_set([None, None], Balancing.LEAST_CONN)
        first = upstreams.request(b"GET", b"/a", [])
        second = upstreams.request(b"GET", b"/b", [])
        self.assertEqual(hosts(scripted), [1, 1])
        scripted[0].finish(200, 0)
        self.successResultOf(first)
        upstreams.request(b"GET", b"/c", [])
        upstreams.request(b"GET", b"/d", [])
        # /c to u0 (none waiting there, one at u1); /d: a tie, broken in
        # turn (u1); /e to u0 (one waiting there, two at u1).
        self.assertEqual(hosts(scripted), [2, 2])
        upstreams.request(b"GET", b"/e", [])
        self.assertEqual([s.requests[-1][1] for s in scripted], [b"/base/e", b"/base/d"])
        self.assertEqual([u.active for u in upstreams.upstreams], [2, 2])
        self.assertNoResult(second)

    def test_ip_hash(self) -> None:
        """
        C{ip_hash} sends one client's requests to one upstream, found from
        the last C{X-Forwarded-For} address; when it is unhealthy, to
        another one, and back once it is healthy again.
        """
        upstreams, _, scripted = make_set([200] * 4, Balancing.IP_HASH)

        def target(client: str) -> int:
            before = hosts(scripted)
            headers = [(b"X-Forwarded-For", b"203.0.113.9, " + client.encode())]
            self.successResultOf(upstreams.request(b"GET", b"/", headers))
            return [a - b for a, b in zip(hosts(scripted), before)].index(1)

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
        upstreams, _, _ = make_set([200, 200])
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
        upstreams, _, scripted = make_set([200, 200])
        for upstream in upstreams.upstreams:
            upstream.healthy = False
        failure = self.failureResultOf(upstreams.request(b"GET", b"/", []), UpstreamError)
        self.assertIn("no healthy upstream", str(failure.value))
        self.assertEqual(hosts(scripted), [0, 0])
        self.assertEqual(tried(upstreams), [0, 0])
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
        upstreams, _, scripted = make_set([REFUSE, 200])
        self.assertEqual(self.successResultOf(upstreams.request(b"GET", b"/p", [])).code, 200)
        self.assertEqual(hosts(scripted), [0, 1])
        self.assertEqual([u.stats.errors for u in upstreams.upstreams], [1, 0])
        self.assertEqual(tried(upstreams), [1, 1])

    def test_once_per_upstream(self) -> None:
        """
        Each upstream is tried at most once; when all refuse, the last
        error is the request's.
        """
        upstreams, _, _ = make_set([REFUSE] * 3)
        self.failureResultOf(upstreams.request(b"PUT", b"/p", []), UpstreamError)
        self.assertEqual(tried(upstreams), [1, 1, 1])

    def test_unhealthy_skipped(self) -> None:
        """
        Failover skips unhealthy upstreams.
        """
        upstreams, _, scripted = make_set([REFUSE, 200, 200])
        upstreams.upstreams[1].healthy = False
        self.successResultOf(upstreams.request(b"GET", b"/", []))
        self.assertEqual(tried(upstreams), [1, 0, 1])
        self.assertEqual(hosts(scripted), [0, 0, 1])

    def test_post_not_retried(self) -> None:
        """
        A POST (not idempotent) is not sent again.
        """
        upstreams, _, scripted = make_set([REFUSE, 200])
        self.failureResultOf(upstreams.request(b"POST", b"/", []), UpstreamError)
        self.assertEqual(tried(upstreams), [1, 0])
        self.assertEqual(hosts(scripted), [0, 0])

    def test_timeout_not_retried(self) -> None:
        """
        A request that timed out is not sent again: the upstream may be
        working on it.
        """
        upstreams, clock, scripted = make_set([None, 200])
        d = upstreams.request(b"GET", b"/", [])
        clock.advance(30)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertEqual(hosts(scripted), [1, 0])
        self.assertEqual(upstreams.upstreams[0].stats.errors, 1)

    def test_body_retried(self) -> None:
        """
        A PUT with a body held in memory that the first upstream refused
        goes to the next upstream with its body.
        """
        upstreams, _, scripted = make_set([REFUSE, 200])
        body = body_producer(BytesIO(b"data"), 4)
        self.successResultOf(upstreams.request(b"PUT", b"/", [], body))
        self.assertEqual(tried(upstreams), [1, 1])
        method, _, headers, sent = scripted[1].requests[0]
        self.assertEqual((method, sent, headers.getRawHeaders(b"content-length")), (b"PUT", b"data", [b"4"]))

    def test_streamed_body_not_retried(self) -> None:
        """
        A PUT whose body is streamed (a L{RequestBody}, which serves one
        request) is not sent again.
        """
        upstreams, _, scripted = make_set([REFUSE, 200])
        body = RequestBody(4)
        body.write(b"data")
        body.finish()
        self.failureResultOf(upstreams.request(b"PUT", b"/", [], body), UpstreamError)
        self.assertEqual(tried(upstreams), [1, 0])
        self.assertEqual(hosts(scripted), [0, 0])

    def test_cancel(self) -> None:
        """
        Cancelling a request cancels it at its upstream, which is no more
        counted as busy; it is not failed over.
        """
        upstreams, _, scripted = make_set([None, 200])
        d = upstreams.request(b"GET", b"/", [])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(hosts(scripted), [1, 0])
        self.assertEqual(upstreams.upstreams[0].active, 0)


class StatsTests(SynchronousTestCase):
    """
    Each upstream counts its requests, errors and latencies.
    """

    def test_latency(self) -> None:
        """
        The time to the response head goes into the upstream's histogram.
        """
        upstreams, clock, scripted = make_set([None])
        d = upstreams.request(b"GET", b"/", [])
        clock.advance(0.3)
        scripted[0].finish(200)
        self.successResultOf(d)
        stats = upstreams.upstreams[0].stats
        self.assertEqual((stats.requests, stats.errors), (1, 0))
        self.assertAlmostEqual(stats.total, 0.3)
        cumulative = dict(stats.cumulative())
        self.assertEqual(cumulative["0.25"], 0)
        self.assertEqual(cumulative["0.5"], 1)
        self.assertEqual(cumulative["+Inf"], 1)
        self.assertEqual(len(cumulative), len(LATENCY_BUCKETS) + 1)


class WiringTests(SynchronousTestCase):
    """
    Each upstream of a server reaches its URL through a client of its own.
    """

    def test_origin_for(self) -> None:
        """
        L{origin_for} asks C{client_for} for the client of each upstream
        URL, and of the C{proxy_url} of a server with one origin.
        """
        asked: List[str] = []

        def client_for(url: str) -> Any:
            asked.append(url)
            return ("client", url)

        config = CreateProxyConfig(upstreams=["http://a.example", "http://b.example"])
        upstreams = origin_for(config, client_for, Clock())
        self.assertIsInstance(upstreams, UpstreamSet)
        self.assertEqual(asked, ["http://a.example", "http://b.example"])
        self.assertEqual([u.origin.client for u in upstreams.upstreams], [("client", url) for url in asked])
        one = origin_for(CreateProxyConfig(proxy_url="http://c.example"), client_for, Clock())
        self.assertEqual((type(one), one.client), (Origin, ("client", "http://c.example")))

    def test_server_clients(self) -> None:
        """
        A server given one client reaches every upstream with it; a server
        with several upstreams passes no request through the byte relay,
        one with a single origin may.
        """
        clock = Clock()
        client = MemoryOrigin(TestOrigin(), clock).client("http://a.example")
        config = CreateProxyConfig(upstreams=["http://a.example", "http://b.example"], cache_strategy="none")
        server = ProxyServer("s", config, object(), clock, runInline, client)
        self.addCleanup(server.close)
        self.assertEqual([u.origin.client for u in server.origin.upstreams], [client, client])
        self.assertFalse(server.byte_path_ok)
        single = ProxyServer("t", CreateProxyConfig(proxy_url="http://a.example"), object(), clock, runInline, client)
        self.addCleanup(single.close)
        self.assertIs(single.origin.client, client)
        self.assertTrue(single.byte_path_ok)


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
