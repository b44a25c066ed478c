"""
Tests for L{phantom_frame.proxy.pool}: timeouts, keeping connections
alive, bounds, idle timeouts and retries in memory; reuse, TLS and
streaming against a real twisted.web site on loopback.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.http.tls import ReloadableContext, tls_factory
from phantom_frame.proxy.client import BrokenAnswer, Collector, NoAnswer, OriginTimeout, RequestBody, StalledBody
from phantom_frame.proxy.pool import OriginAddress, OriginPool, endpoint_factory

from tests.http.test_tls import make_pair
from tests.proxy.origins import (
    OK,
    TIMEOUT,
    CountingSite,
    MemoryEndpoint,
    Next,
    Page,
    Recorder,
    answered,
    make,
)


class TimeoutTests(SynchronousTestCase):
    """
    Timeouts run on the injected clock.
    """

    def test_connect(self) -> None:
        """
        A connection not made within the timeout fails the request with
        L{OriginTimeout} (a gateway's 504) and cancels the attempt.
        """
        clock, endpoint, pool, client = make(self)
        endpoint.hold = True
        d = client.request(b"GET", b"/", [], Recorder())
        clock.advance(TIMEOUT - 0.01)
        self.assertNoResult(d)
        clock.advance(0.01)
        self.failureResultOf(d, OriginTimeout)
        self.assertEqual(endpoint.cancelled, 1)

    def test_head(self) -> None:
        """
        The timeout covers connecting and the final head together; interim
        answers do not extend it; the connection is then closed.
        """
        clock, endpoint, pool, client = make(self)
        endpoint.hold = True
        d = client.request(b"GET", b"/", [], Recorder())
        clock.advance(TIMEOUT / 2)
        wire = endpoint.complete()
        wire.answer(b"HTTP/1.1 103 Early Hints\r\n\r\n")
        clock.advance(TIMEOUT / 2)
        self.failureResultOf(d, OriginTimeout)
        self.assertTrue(wire.transport.disconnected)
        self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))

    def test_between_chunks(self) -> None:
        """
        Once the head came, the origin may pause up to the timeout between
        two body chunks; longer fails with L{StalledBody}, a
        L{BrokenAnswer}.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Recorder())
        wire = endpoint.wires[0]
        clock.advance(TIMEOUT - 1)
        wire.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(3):
            clock.advance(TIMEOUT - 1)
            wire.answer(b"ab")
        self.assertNoResult(d)
        clock.advance(TIMEOUT)
        self.assertIsInstance(self.failureResultOf(d, StalledBody).value, BrokenAnswer)
        self.assertTrue(wire.transport.disconnected)

    def test_paused(self) -> None:
        """
        While the receiver holds the body back, the origin's silence is not
        a stall; after it resumes, the timeout runs again.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder(pause_after=1)
        d = client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        clock.advance(TIMEOUT * 5)
        self.assertNoResult(d)
        receiver.producer.resumeProducing()
        clock.advance(TIMEOUT)
        self.failureResultOf(d, StalledBody)


class ReuseTests(SynchronousTestCase):
    """
    Connections are kept after a clean exchange and reused last-in
    first-out.
    """

    def test_reuse(self) -> None:
        """
        Sequential requests go over one connection: one connection made,
        then reused (the counters say so).
        """
        clock, endpoint, pool, client = make(self)
        for _ in range(3):
            answered(self, client, endpoint.wires[0] if endpoint.wires else Next(endpoint))
        self.assertEqual((len(endpoint.wires), pool.connections, pool.reused, pool.idle), (1, 1, 2, 1))

    def test_lifo(self) -> None:
        """
        The connection released last is taken first.
        """
        clock, endpoint, pool, client = make(self)
        ds = [client.request(b"GET", b"/", [], Recorder()) for _ in range(3)]
        for wire in endpoint.wires:
            wire.sent()
            wire.answer(OK)
        gatherResults(ds)
        self.assertEqual(pool.idle, 3)
        answered(self, client, endpoint.wires[2])
        self.assertEqual(len(endpoint.wires), 3)

    def test_per_origin_bound(self) -> None:
        """
        Beyond C{max_idle_per_origin} idle connections, the oldest is
        closed.
        """
        clock, endpoint, pool, client = make(self, max_idle_per_origin=2)
        ds = [client.request(b"GET", b"/", [], Recorder()) for _ in range(3)]
        for wire in endpoint.wires:
            wire.answer(OK)
        gatherResults(ds)
        self.assertEqual(pool.idle, 2)
        self.assertEqual([w.transport.disconnecting for w in endpoint.wires], [True, False, False])

    def test_overall_bound(self) -> None:
        """
        Beyond C{max_idle} idle connections over all origins, the oldest is
        closed.
        """
        clock, endpoint, pool, client = make(self, max_idle=2)
        other = pool.client("http://other.example")
        ds = [c.request(b"GET", b"/", [], Recorder()) for c in (client, other, client)]
        for wire in endpoint.wires:
            wire.answer(OK)
        gatherResults(ds)
        self.assertEqual(pool.idle, 2)
        self.assertEqual([w.transport.disconnecting for w in endpoint.wires], [True, False, False])

    def test_none_kept(self) -> None:
        """
        With C{max_idle_per_origin=0} no connection is kept.
        """
        clock, endpoint, pool, client = make(self, max_idle_per_origin=0)
        answered(self, client, Next(endpoint))
        self.assertEqual(pool.idle, 0)
        self.assertTrue(endpoint.wires[0].transport.disconnecting)
        self.assertRaises(ValueError, OriginPool, clock, lambda a: endpoint, keepalive_timeout=-1)

    def test_not_kept_after_failure(self) -> None:
        """
        A connection whose exchange failed or was cancelled is not kept.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[0].answer(OK[:-1])
        d.cancel()
        self.failureResultOf(d)
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[1].answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
        self.failureResultOf(d)
        self.assertEqual((pool.idle, pool.reused), (0, 0))

    def test_request_connection_close(self) -> None:
        """
        A request that says C{Connection: close} does not leave its
        connection in the pool.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [(b"Connection", b"close")], Recorder())
        endpoint.wires[0].answer(OK)
        self.successResultOf(d)
        self.assertEqual(pool.idle, 0)

    def test_http10(self) -> None:
        """
        An HTTP/1.0 answer leaves the connection kept only with
        C{Connection: keep-alive}.
        """
        for extra, idle in [(b"", 0), (b"Connection: keep-alive\r\n", 1)]:
            clock, endpoint, pool, client = make(self)
            d = client.request(b"GET", b"/", [], Recorder())
            endpoint.wires[0].answer(b"HTTP/1.0 200 OK\r\n" + extra + b"Content-Length: 0\r\n\r\n")
            self.successResultOf(d)
            self.assertEqual(pool.idle, idle)


class IdleTests(SynchronousTestCase):
    """
    Idle connections are closed after C{keepalive_timeout}, or forgotten
    when the origin closes them.
    """

    def test_keepalive_timeout(self) -> None:
        """
        An idle connection is closed once idle for C{keepalive_timeout}
        (4 s by default); going back to the pool restarts its time.
        """
        clock, endpoint, pool, client = make(self)
        answered(self, client, Next(endpoint))
        wire = endpoint.wires[0]
        clock.advance(3)
        answered(self, client, wire)
        clock.advance(3.99)
        self.assertFalse(wire.transport.disconnecting)
        clock.advance(0.01)
        self.assertTrue(wire.transport.disconnecting)
        self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))
        wire.lose()
        answered(self, client, Next(endpoint))
        clock.advance(4)
        self.assertTrue(endpoint.wires[1].transport.disconnecting)

    def test_client_keepalive_timeout(self) -> None:
        """
        A client's own C{keepalive_timeout} bounds how long the connections
        it used stay idle, beside another client's on the same pool: each
        connection is closed on its own time.
        """
        clock, endpoint, pool, client = make(self)
        short = pool.client("http://other.example:8080/", timeout=10, keepalive_timeout=1)
        self.assertEqual((client.keepalive, short.keepalive), (4.0, 1))
        answered(self, client, Next(endpoint))
        answered(self, short, Next(endpoint))
        long_wire, short_wire = endpoint.wires
        clock.advance(0.99)
        self.assertFalse(short_wire.transport.disconnecting)
        clock.advance(0.01)
        self.assertTrue(short_wire.transport.disconnecting)
        self.assertFalse(long_wire.transport.disconnecting)
        clock.advance(3)
        self.assertTrue(long_wire.transport.disconnecting)
        self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))

    def test_staggered(self) -> None:
        """
        Connections idle since different times are each closed on time.
        """
        clock, endpoint, pool, client = make(self)
        ds = [client.request(b"GET", b"/", [], Recorder()) for _ in range(2)]
        endpoint.wires[0].answer(OK)
        clock.advance(1)
        endpoint.wires[1].answer(OK)
        gatherResults(ds)
        clock.advance(3)
        self.assertEqual([w.transport.disconnecting for w in endpoint.wires], [True, False])
        clock.advance(1)
        self.assertEqual([w.transport.disconnecting for w in endpoint.wires], [True, True])

    def test_origin_closed(self) -> None:
        """
        An idle connection the origin closes leaves the pool; the next
        request makes a new one.
        """
        clock, endpoint, pool, client = make(self)
        answered(self, client, Next(endpoint))
        endpoint.wires[0].lose()
        self.assertEqual(pool.idle, 0)
        answered(self, client, Next(endpoint))
        self.assertEqual((pool.connections, pool.reused), (2, 0))

    def test_unsolicited(self) -> None:
        """
        Bytes from the origin on an idle connection put it out of step: it
        is closed and leaves the pool.
        """
        clock, endpoint, pool, client = make(self)
        answered(self, client, Next(endpoint))
        endpoint.wires[0].answer(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(endpoint.wires[0].transport.disconnecting)
        self.assertEqual(pool.idle, 0)

    def test_close(self) -> None:
        """
        L{OriginPool.close} closes the idle connections and fires once they
        are closed.
        """
        clock, endpoint, pool, client = make(self)
        answered(self, client, Next(endpoint))
        d = pool.close()
        self.assertTrue(endpoint.wires[0].transport.disconnecting)
        self.assertNoResult(d)
        endpoint.wires[0].lose()
        self.successResultOf(d)
        self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))


class RetryTests(SynchronousTestCase):
    """
    A request that a reused connection lost before any answer is sent once
    more on a new connection, when that is safe.
    """

    def lost_on_reuse(self, method: bytes, body: Any = None) -> Any:
        """
        Send a request on a kept-alive connection that the origin closes
        at once.

        @return: the clock, endpoint, pool and the request's L{Deferred}.
        """
        clock, endpoint, pool, client = make(self)
        answered(self, client, Next(endpoint))
        d = client.request(method, b"/", [], Recorder(), body)
        self.first = endpoint.wires[0].sent()
        endpoint.wires[0].lose()
        return clock, endpoint, pool, d

    def test_retried(self) -> None:
        """
        Idempotent requests (with a body sent whole) are sent again on a new
        connection, once.
        """
        for method, body in [(b"GET", None), (b"HEAD", None), (b"PUT", b"data"), (b"DELETE", None)]:
            clock, endpoint, pool, d = self.lost_on_reuse(method, body)
            self.assertEqual((len(endpoint.wires), pool.retries), (2, 1))
            self.assertEqual(endpoint.wires[1].sent(), self.first)
            endpoint.wires[1].answer(OK if method != b"HEAD" else b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            self.successResultOf(d)

    def test_once(self) -> None:
        """
        The new connection lost too fails the request with L{NoAnswer}.
        """
        clock, endpoint, pool, d = self.lost_on_reuse(b"GET")
        endpoint.wires[1].lose()
        self.failureResultOf(d, NoAnswer)
        self.assertEqual(len(endpoint.wires), 2)

    def test_not_retried(self) -> None:
        """
        A non-idempotent request, or one whose streamed body already went
        out, fails with L{NoAnswer}.
        """
        streamed = RequestBody()
        streamed.write(b"x")
        for method, body in [(b"POST", None), (b"PATCH", b"x"), (b"PUT", streamed)]:
            clock, endpoint, pool, d = self.lost_on_reuse(method, body)
            self.failureResultOf(d, NoAnswer)
            self.assertEqual((len(endpoint.wires), pool.retries), (1, 0))

    def test_unsent_body(self) -> None:
        """
        A streamed body none of which went out yet goes on the new
        connection.
        """
        body = RequestBody(3)
        clock, endpoint, pool, d = self.lost_on_reuse(b"PUT", body)
        body.write(b"abc")
        body.finish()
        self.assertTrue(endpoint.wires[1].sent().endswith(b"Content-Length: 3\r\n\r\nabc"))
        endpoint.wires[1].answer(OK)
        self.successResultOf(d)

    def test_fresh_or_answered(self) -> None:
        """
        A new connection lost, or a reused one lost after some of the
        answer, is not retried.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[0].lose()
        self.failureResultOf(d, NoAnswer)
        answered(self, client, Next(endpoint))
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[1].answer(b"HTTP/1.1 200")
        endpoint.wires[1].lose()
        self.failureResultOf(d, NoAnswer)
        self.assertEqual((len(endpoint.wires), pool.retries), (2, 0))


class AddressTests(SynchronousTestCase):
    """
    L{OriginAddress} and L{endpoint_factory}.
    """

    def test_from_url(self) -> None:
        """
        An http(s) URL gives scheme, host and port (the scheme's by
        default); its authority omits a default port and brackets IPv6.
        """
        self.assertEqual(OriginAddress.from_url("http://a.example/x"), OriginAddress("http", "a.example", 80))
        self.assertEqual(OriginAddress.from_url("https://a.example:8443").port, 8443)
        self.assertEqual(OriginAddress("https", "a.example", 443).authority, b"a.example")
        self.assertEqual(OriginAddress("http", "::1", 3000).authority, b"[::1]:3000")
        self.assertEqual(OriginAddress.from_url("http://[::1]:3000").host, "::1")
        for url in ["ftp://a.example", "http://", "a.example"]:
            self.assertRaises(ValueError, OriginAddress.from_url, url)

    def test_endpoints(self) -> None:
        """
        IP addresses get TCP endpoints, names a L{HostnameEndpoint};
        C{https} wraps them in TLS.
        """
        endpoint_for = endpoint_factory(MemoryReactorClock())
        self.assertIsInstance(endpoint_for(OriginAddress("http", "127.0.0.1", 80)), TCP4ClientEndpoint)
        self.assertIsInstance(endpoint_for(OriginAddress("http", "::1", 80)), TCP6ClientEndpoint)
        self.assertIsInstance(endpoint_for(OriginAddress("http", "a.example", 80)), HostnameEndpoint)
        wrapped = endpoint_for(OriginAddress("https", "a.example", 443))
        self.assertIsInstance(wrapped._wrappedEndpoint, HostnameEndpoint)

    def test_one_route(self) -> None:
        """
        Clients of the same origin share its connections, and its endpoint
        is asked for once.
        """
        asked: List[OriginAddress] = []
        endpoint = MemoryEndpoint()
        pool = OriginPool(Clock(), lambda a: asked.append(a) or endpoint)
        first, second = pool.client("http://a.example"), pool.client(OriginAddress("http", "a.example", 80))
        answered(self, first, Next(endpoint))
        answered(self, second, endpoint.wires[0])
        self.assertEqual((asked, pool.reused), ([OriginAddress("http", "a.example", 80)], 1))


class LoopbackTests(TestCase):
    """
    The client against a real twisted.web site on loopback.
    """

    def serve(self, port: Any, site: CountingSite, pool: OriginPool) -> None:
        """
        Clean up a listening C{port}, the C{pool} and the site's
        connections.
        """

        async def cleanup() -> None:
            await pool.close()
            await site.all_closed()

        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))

    async def test_reuse(self) -> None:
        """
        Sequential requests share one connection, counted on the server;
        concurrent ones open one each, kept for what follows.
        """
        site = CountingSite(Page())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        pool = OriginPool(reactor, endpoint_factory(reactor))
        self.serve(port, site, pool)
        client = pool.client(f"http://127.0.0.1:{port.getHost().port}")
        for _ in range(5):
            collector = Collector()
            head = await client.request(b"GET", b"/page", [], collector)
            self.assertEqual((head.status, collector.body()), (200, Page.page))
        self.assertEqual((site.opened, pool.connections, pool.reused), (1, 1, 4))
        for _ in range(2):
            await gatherResults([client.request(b"GET", b"/page", [], Collector()) for _ in range(3)])
        self.assertEqual((site.opened, pool.idle), (3, 3))

    async def test_stream_and_body(self) -> None:
        """
        A chunked 1 MB answer arrives whole; a streamed request body
        arrives whole; the connection serves both.
        """
        site = CountingSite(Page())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        pool = OriginPool(reactor, endpoint_factory(reactor))
        self.serve(port, site, pool)
        client = pool.client(f"http://127.0.0.1:{port.getHost().port}")
        collector = Collector()
        head = await client.request(b"GET", b"/stream", [], collector)
        self.assertEqual((head.framing.value, len(collector.body())), ("chunked", 1 << 20))
        body = RequestBody()
        collector = Collector()
        d = client.request(b"POST", b"/echo", [], collector, body)
        for _ in range(10):
            body.write(b"b" * 10000)
        body.finish()
        await d
        self.assertEqual((collector.body(), site.opened), (b"100000", 1))

    async def test_tls(self) -> None:
        """
        An https origin is reached over TLS, its name verified against the
        trusted certificate, and the connection is reused.
        """
        cert_path, key_path, _ = make_pair(self, "localhost")
        with open(cert_path, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        site = CountingSite(Page())
        factory = tls_factory(ReloadableContext(cert_path, key_path), site)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        pool = OriginPool(reactor, endpoint_factory(reactor, trustRoot=trust))
        self.serve(port, site, pool)
        client = pool.client(f"https://localhost:{port.getHost().port}")
        for _ in range(2):
            collector = Collector()
            head = await client.request(b"GET", b"/page", [], collector)
            self.assertEqual((head.status, collector.body()), (200, Page.page))
        self.assertEqual((site.opened, pool.reused), (1, 1))
