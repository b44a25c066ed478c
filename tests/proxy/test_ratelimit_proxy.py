"""
Tests for rate limits end to end: a rate-limited server behind a whole
proxy site, in memory (the channel's fast path and the stock path) and on
loopback in front of a real origin.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.proxy.decision import TOO_MANY_REQUESTS
from phantom_frame.proxy.ratelimit import RateLimit
from phantom_frame.proxy.settings import CreateProxyConfig
from tests.http.rig import Rig, answers, request
from tests.origin import Running


class _Peer(StringTransport):
    """
    A client transport from a given address that counts the calls to
    C{getPeer}.
    """

    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.peers = 0

    def getPeer(self) -> Any:
        self.peers += 1
        return super().getPeer()


def limited(*limits: RateLimit) -> CreateProxyConfig:
    """
    @return: the settings of a server in front of C{origin.test} with
        C{limits}.
    """
    return CreateProxyConfig("http://origin.test").with_rate_limits(limits)


class ProxyTests(SynchronousTestCase):
    """
    A rate-limited server, through a whole proxy site in memory: misses,
    hits of the stock path and hits the channel answers itself all count.
    """

    def send(self, rig: Rig, data: bytes, host: str = "192.0.2.1") -> Tuple[List[Any], _Peer]:
        """
        Send C{data} on a new connection from C{host}.

        @return: the answers and the transport.
        """
        protocol = rig.site.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = _Peer(host)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        protocol.dataReceived(data)
        rig.agent.flush()
        return answers(transport.value()), transport

    def assertTooMany(self, answer: Any, retry: bytes) -> None:
        """
        Assert that C{answer} is a 429 with C{Retry-After: retry} and a
        short text body.
        """
        code, headers, body = answer
        self.assertEqual(code, 429)
        self.assertEqual(headers[b"retry-after"], [retry])
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
        self.assertEqual(body, TOO_MANY_REQUESTS.encode() + b"\n")
        self.assertNotIn(b"cache-status", headers)

    def test_fastHitsCount(self) -> None:
        """
        Hits the channel answers take tokens from the client's bucket as
        the stock path's answers do; over the burst the stock path answers
        429, and the client comes back when a token does.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", burst=3)))
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual(rig.answered(), 2)
        [refused], _ = self.send(rig, request())
        self.assertTooMany(refused, b"60")
        self.assertEqual(rig.answered(), 2)
        self.assertEqual(len(rig.origin.received), 1)
        rig.clock.advance(60)
        self.assertEqual([a[0] for a in self.send(rig, request())[0]], [200])
        self.assertEqual(rig.answered(), 3)

    def test_pipelined(self) -> None:
        """
        Pipelined hits are answered in order: the channel's up to the limit,
        then the stock path's 429s.
        """
        rig = Rig(self, config=limited(RateLimit("1/s", burst=3)))
        self.send(rig, request())
        got, _ = self.send(rig, request() * 4)
        self.assertEqual([a[0] for a in got], [200, 200, 429, 429])
        self.assertTooMany(got[2], b"1")
        self.assertEqual(rig.answered(), 2)

    def test_clientsApart(self) -> None:
        """
        By address, each client of the channel's hits has its bucket.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", burst=1)))
        self.send(rig, request(), "192.0.2.1")
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.1")[0]], [429])
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.2")[0]], [200])
        self.assertEqual(rig.answered(), 1)
        self.assertEqual([a[0] for a in self.send(rig, request(), "192.0.2.2")[0]], [429])

    def test_byHeader(self) -> None:
        """
        By header, each value has its bucket, and the channel reads no
        client address.
        """
        rig = Rig(self, config=limited(RateLimit("1/m", by="header:X-Key", burst=1)))
        self.send(rig, request())
        got, transport = self.send(rig, request(x_key="a"))
        self.assertEqual([a[0] for a in got], [200])
        self.assertEqual(transport.peers, 0)
        self.assertEqual([a[0] for a in self.send(rig, request(x_key="a"))[0]], [429])
        self.assertEqual([a[0] for a in self.send(rig, request(x_key="b"))[0]], [200])
        self.assertEqual(rig.answered(), 2)

    def test_unlimitedFree(self) -> None:
        """
        Without limits the channel's hits consult no limiter and read no
        client address.
        """
        rig = Rig(self)
        self.send(rig, request())
        got, transport = self.send(rig, request() * 50)
        self.assertEqual({a[0] for a in got}, {200})
        self.assertEqual(rig.answered(), 50)
        self.assertEqual(transport.peers, 0)
        self.assertIsNone(next(rig.handle.servers()).decider.limiter)

    def test_stockPath(self) -> None:
        """
        Without the channel's fast path, misses and hits count the same.
        """
        rig = Rig(self, fast=False, config=limited(RateLimit("2/s", by="route", paths=["/page*"])))
        got, _ = self.send(rig, request() + request("/page2") + request())
        self.assertEqual([a[0] for a in got], [200, 200, 429])
        self.assertTooMany(got[2], b"1")
        self.assertEqual([a[0] for a in self.send(rig, request("/other") * 3)[0]], [200] * 3)
        rig.clock.advance(0.5)
        self.assertEqual([a[0] for a in self.send(rig, request() * 2)[0]], [200, 429])


class LoopbackTests(TestCase):
    """
    A rate-limited proxy on loopback in front of a real origin.
    """

    async def test_realSockets(self) -> None:
        """
        Over real connections, a miss and a hit the channel answers take
        the client's tokens; the next request gets 429 with C{Retry-After}
        and the origin is asked once.
        """
        run = Running(self, limited(RateLimit("1/h", burst=2)))
        site = ProxySite(Router([("*", run.resource)]), reactor=reactor, access_log=False)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        run.base = "http://127.0.0.1:%d" % (port.getHost().port,)
        codes = []
        for _ in range(3):
            response, body = await run.fetch("GET", "/page", headers={"host": "proxy.test"})
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 429])
        self.assertEqual(site.fastHit.answered, 1)
        self.assertEqual(run.origin.hits["/page"], 1)
        retry = int(response.headers.getRawHeaders(b"retry-after")[0])
        self.assertTrue(3500 < retry <= 3600, retry)
        self.assertEqual(body, TOO_MANY_REQUESTS.encode() + b"\n")
