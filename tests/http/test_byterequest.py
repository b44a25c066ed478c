"""
Tests for L{phantom_frame.http.byterequest} and the request bodies of the
byte path: fills answered on the channel are the stock path's answers, and a
request body reaches the origin as it arrives.
"""

from __future__ import annotations

import gzip
from typing import Any, List

import attr

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.byterequest import ByteFill, ByteRequest
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.proxy.rules import HeaderRules
from tests.http.test_relay import PAGE, PASSTHROUGH, RelayRig, _with_url, parse, request


class FillTests(SynchronousTestCase):
    """
    Fills answered on the channel (L{phantom_frame.http.byterequest}) are
    the stock path's answers.
    """

    CACHING = CreateProxyConfig("http://origin.test")

    def compare(self, data: bytes, heads: List[bool], filled: int, before: Any = None) -> List[Any]:
        """
        Send C{data} to a stock rig and to a byte-path rig, and compare.

        @param filled: how many fills the byte path must answer.
        @return: the byte path's answers.
        """
        answers = []
        rigs = []
        for fast in (False, True):
            rig = RelayRig(fast, self.CACHING)
            self.addCleanup(rig.handle.close)
            if before is not None:
                before(rig)
            answers.append(parse(rig.exchange(data), heads))
            rigs.append(rig)
        self.assertEqual([r.filled() for r in rigs], [0, filled])
        self.assertEqual(len(answers[0]), len(answers[1]))
        for (c1, h1, b1), (c2, h2, b2) in zip(*answers):
            self.assertEqual((c1, b1), (c2, b2))
            # Each answer has its own request id, and the origin's Date is
            # that of the second the rig's origin answered in.
            for name in (b"x-request-id", b"date"):
                self.assertEqual(len(h1.pop(name, [])), len(h2.pop(name, [])))
            self.assertEqual(h1, h2)
        self.assertEqual(rigs[0].scripted.seen.keys(), rigs[1].scripted.seen.keys())
        return answers[1]

    def test_stored_head_and_hit(self) -> None:
        """
        A miss stored, a HEAD miss, then a hit: identical answers, the
        misses filled on the channel.
        """
        answers = self.compare(request("/f") + request("/g", "HEAD") + request("/f"), [False, True, False], 2)
        self.assertEqual(
            [a[1][b"cache-status"][0] for a in answers],
            [b"phantom-frame; fwd=uri-miss; stored", b"phantom-frame; fwd=uri-miss; stored",
             b"phantom-frame; hit"],
        )

    def test_not_stored_compressed(self) -> None:
        """
        An answer that is not stored is relayed compressed on the fly for a
        client that accepts gzip, as the stock path does.
        """
        [(code, headers, body)] = self.compare(request("/cookie", accept_encoding="gzip"), [False], 1)
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(body), PAGE + b"/cookie")

    def test_origin_down(self) -> None:
        """
        A fill whose origin refuses connections: the stock path's 502.
        """
        def down(rig: RelayRig) -> None:
            rig.origin.down = True

        [(code, _, _)] = self.compare(request("/f"), [False], 1, before=down)
        self.assertEqual(code, 502)
        self.flushLoggedErrors()


class StreamedBodyTests(TestCase):
    """
    Over loopback: a request body reaches the origin as it arrives.
    """

    async def test_origin_sees_body_early(self) -> None:
        """
        The origin receives the first body bytes while the client has not
        sent the last; the answer comes once the body is complete.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Factory, Protocol

        got_first: Deferred = Deferred()
        answered: Deferred = Deferred()

        class RawOrigin(Protocol):
            received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data
                head, _, body = self.received.partition(b"\r\n\r\n")
                if body == b"hello" and not got_first.called:
                    got_first.callback(self.received)
                if body == b"helloworld":
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        class Client(Protocol):
            received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data
                if self.received.endswith(b"\r\n\r\nok") and not answered.called:
                    answered.callback(self.received)

        origin_port = reactor.listenTCP(0, Factory.forProtocol(RawOrigin), interface="127.0.0.1")
        self.addCleanup(origin_port.stopListening)
        url = "http://127.0.0.1:%d" % (origin_port.getHost().port,)
        resource, handle = create_proxy(_with_url(PASSTHROUGH, url), reactor, agent=object(), runner=runInline)
        server = next(handle.servers())
        site = ProxySite(Router([("*", resource)]), reactor=reactor, access_log=False)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Client())
        client.transport.write(
            b"POST /up HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 10\r\n\r\nhello"
        )
        seen = await got_first
        self.assertTrue(seen.startswith(b"POST /up HTTP/1.1\r\n"))
        self.assertIn(b"\r\nContent-Length: 10\r\n", seen)
        client.transport.write(b"world")
        answer = await answered
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(site.fastHit.relayed, 1)
        client.transport.loseConnection()
        handle.close()
        await server.origin_pool.close()


class NoCycleTests(SynchronousTestCase):
    """
    A fill answered on the channel leaves nothing for the cycle collector:
    its request, its answer from the origin and the relay of its body are
    freed as soon as it is done (a fill's body kept in a cycle doubled the
    memory of a busy proxy, and collecting them took a fifth of a fill's
    time); nor does a request passed through.
    """

    def garbage(self, config: Any, paths: List[str]) -> Any:
        """
        Ask for C{paths} on one kept-alive connection of a byte-path rig of
        C{config} (after a first request), and collect.

        @return: the rig, and the names of the types of what the
            collection found in cycles.
        """
        import gc

        rig = RelayRig(True, config)
        self.addCleanup(rig.handle.close)
        rig.exchange(request("/warm"))
        gc.collect()
        flags = gc.get_debug()
        self.addCleanup(gc.set_debug, flags)
        self.addCleanup(gc.garbage.clear)
        gc.set_debug(flags | gc.DEBUG_SAVEALL)
        answers = parse(rig.exchange(b"".join(request(p) for p in paths)), [False] * len(paths))
        self.assertEqual([code for code, _, _ in answers], [200] * len(paths))
        gc.collect()
        return rig, {type(o).__name__ for o in gc.garbage}

    def test_fill(self) -> None:
        """
        After fills, no object of theirs is garbage in a cycle.
        """
        rig, names = self.garbage(FillTests.CACHING, ["/a", "/b", "/c"])
        self.assertEqual(rig.filled(), 4)
        self.assertEqual(
            names & {"ByteFill", "ByteRequest", "OriginResponse", "BodyRelay", "Fill", "Fetch", "Waiter", "FillWaiting"},
            set(),
        )

    def test_pass_through(self) -> None:
        """
        Requests passed through leave no relay or origin exchange in a
        cycle either.
        """
        rig, names = self.garbage(PASSTHROUGH, ["/a", "/b"])
        self.assertEqual(rig.relayed(), 3)
        self.assertEqual(names & {"ByteRelay", "_Exchange", "RequestView"}, set())


class _Counting(StringTransport):
    """
    A transport that counts its writes.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def writeSequence(self, data: List[bytes]) -> None:
        self.writes += 1
        super().writeSequence(data)


class OneWriteTests(SynchronousTestCase):
    """
    A fill answered on the channel is written in one go.
    """

    def test_headAndBody(self) -> None:
        """
        The answer's head and body reach the client's transport in one
        write (one send, at once, on a plain TCP connection).
        """
        rig = RelayRig(True, FillTests.CACHING)
        self.addCleanup(rig.handle.close)
        address = IPv4Address("TCP", "192.0.2.7", 4321)
        protocol = rig.site.buildProtocol(address)
        transport = _Counting(peerAddress=address)
        protocol.makeConnection(transport)
        protocol.dataReceived(request("/f"))
        rig.settle()
        self.assertEqual(rig.filled(), 1)
        [(code, headers, body)] = parse(transport.value(), [False])
        self.assertEqual((code, headers[b"cache-status"]), (200, [b"phantom-frame; fwd=uri-miss; stored"]))
        self.assertEqual(headers[b"content-length"], [b"%d" % len(body)])
        self.assertEqual(transport.writes, 1)


class WireAnswerTests(SynchronousTestCase):
    """
    A fill answered on the channel is written as a hit is, from the
    stored entry's pre-serialised head (L{phantom_frame.http.wires}); with
    header rules, through the renderer.
    """

    def fill(self, data: bytes, config: Any = FillTests.CACHING) -> Any:
        """
        Send C{data} (a request the channel fills) on a new connection.

        @return: the rig, its L{ByteFill} and the client's transport.
        """
        rig = RelayRig(True, config)
        self.addCleanup(rig.handle.close)
        fast = self.fast = rig.site.fastHit
        made: List[Any] = []

        def spy(*args: Any) -> Any:
            answer = fast(*args)
            made.append(answer)
            return answer

        rig.site.fastHit = spy
        protocol, transport = rig.connect()
        protocol.dataReceived(data)
        rig.settle()
        [fill] = made
        self.assertIs(fill.__class__, ByteFill)
        self.assertEqual(fast.filled, 1)
        return rig, fill, transport

    def entry(self, rig: RelayRig) -> Any:
        """
        @return: the one stored entry.
        """
        [entry] = list(next(rig.handle.servers()).cache.entries())
        return entry

    def test_asHits(self) -> None:
        """
        The fill's answer is written as a hit's, from the entry's identity
        wire, without a twisted.web header object on the way; the wire is
        not kept (an entry never asked for again holds none): the first hit
        makes and keeps it, and answers with the same head.
        """
        config = FillTests.CACHING.with_compress_strategy("none")
        rig, fill, transport = self.fill(request("/f"), config)
        self.assertNotIn("responseHeaders", vars(fill.request))
        entry = self.entry(rig)
        self.assertIsNone(entry.wire)
        [(code, headers, body)] = parse(transport.value(), [False])
        self.assertEqual((code, body), (200, PAGE + b"/f"))
        self.assertEqual(headers[b"cache-status"], [b"phantom-frame; fwd=uri-miss; stored"])
        self.assertEqual(headers[b"x-request-id"], [fill.request.requestId.encode()])
        rig.site.fastHit = self.fast
        hit = rig.exchange(request("/f"))
        self.assertEqual(parse(hit, [False])[0][1][b"cache-status"], [b"phantom-frame; hit"])
        wire = entry.wire["identity"]
        self.assertIs(wire.body, entry.body.data)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1" + wire.head), transport.value()[:200])
        self.assertTrue(hit.startswith(b"HTTP/1.1" + wire.head), hit[:200])

    def test_close(self) -> None:
        """
        A request that asks to close gets C{Connection: close} (as from the
        stock path), and the connection closes after the answer.
        """
        rig, fill, transport = self.fill(request("/f", connection="close"))
        [(code, headers, _)] = parse(transport.value(), [False])
        self.assertEqual((code, headers[b"connection"]), (200, [b"close"]))
        self.assertTrue(transport.disconnecting)

    def test_notModified(self) -> None:
        """
        A fill for a request whose validator the stored entry matches is
        answered with the entry's pre-serialised 304.
        """
        rig, fill, transport = self.fill(request("/etag", if_none_match='"v1"'))
        self.assertNotIn("responseHeaders", vars(fill.request))
        [(code, headers, body)] = parse(transport.value(), [False])
        self.assertEqual((code, body, headers[b"etag"]), (304, b"", [b'"v1"']))
        self.assertIsNone(self.entry(rig).wire)

    def test_headerRules(self) -> None:
        """
        With response header rules, the renderer writes the answer and
        applies them; no wire is made.
        """
        config = attr.evolve(FillTests.CACHING, headers=HeaderRules(response_set=((b"X-Set", "yes"),)))
        rig, fill, transport = self.fill(request("/f"), config)
        self.assertIn("responseHeaders", vars(fill.request))
        [(code, headers, _)] = parse(transport.value(), [False])
        self.assertEqual((code, headers[b"x-set"]), (200, [b"yes"]))
        self.assertIsNone(self.entry(rig).wire)


class ExchangeTests(SynchronousTestCase):
    """
    A fill answered on the channel reads whether its client is there off
    its L{ByteRequest}, which makes what it is seldom asked for when asked.
    """

    def test_noFinishDeferred(self) -> None:
        """
        The fill's exchange asks its request for no C{notifyFinish}
        L{Deferred}; it is alive until the client goes away.
        """
        rig = RelayRig(True, FillTests.CACHING)
        self.addCleanup(rig.handle.close)
        protocol, transport = rig.connect()
        protocol.dataReceived(request("/slow"))
        fill = protocol._channel._relay
        self.assertIs(fill.__class__, ByteFill)
        self.assertIsNone(fill.request._finishes)
        self.assertTrue(fill._exchange.alive)
        protocol.connectionLost(None)
        self.assertTrue(fill.request.gone)
        self.assertFalse(fill._exchange.alive)

    def test_madeWhenAsked(self) -> None:
        """
        A request's paths and headers are made when first asked for, and
        kept.
        """
        made = ByteRequest(None, b"GET", b"/a?b", lambda request: None)
        self.assertEqual(set(vars(made)) & {"prepath", "postpath", "requestHeaders", "responseHeaders"}, set())
        headers = made.requestHeaders
        self.assertEqual(list(headers.getAllRawHeaders()), [])
        self.assertIs(made.requestHeaders, headers)
        made.postpath.append(b"a")
        self.assertEqual((made.prepath, made.postpath), ([], [b"a"]))
        made.setHeader(b"x-a", b"1")
        self.assertEqual(made.responseHeaders.getRawHeaders(b"x-a"), [b"1"])
        self.assertRaises(AttributeError, getattr, made, "nothing")


class FillWaitingTests(SynchronousTestCase):
    """
    A fill answered on the channel waits for its result without a
    L{Deferred} (L{phantom_frame.proxy.receivers.FillWaiting}): a client
    that goes away gives it up, and what fails unexpectedly is answered
    with a 500.
    """

    def test_clientGone(self) -> None:
        """
        A client that disconnects while its fill is awaited cancels the
        origin request: the origin connection is closed, nothing is stored
        and the key is free for the next fill.
        """
        rig = RelayRig(True, FillTests.CACHING)
        self.addCleanup(rig.handle.close)
        transport = rig.leave_waiting(self)
        self.assertEqual(rig.filled(), 1)
        server = next(rig.handle.servers())
        self.assertEqual(list(server.cache.entries()), [])
        self.assertEqual(server.cache._lock._flights, {})
        self.assertEqual(transport.value(), b"")

    def test_collapsed(self) -> None:
        """
        Requests that join a fill in flight wait as the first does, and are
        answered from what it stored once it lands, as collapsed; the
        origin is asked once.
        """
        rig = RelayRig(True, FillTests.CACHING)
        self.addCleanup(rig.handle.close)
        clients = [rig.connect() for _ in range(3)]
        for protocol, _ in clients:
            protocol.dataReceived(request("/slow"))
        rig.settle()
        self.assertEqual(rig.filled(), 3)
        [slow] = rig.scripted.waiting
        slow.write(b"late")
        slow.finish()
        rig.settle()
        answers = [parse(transport.value(), [False])[0] for _, transport in clients]
        self.assertEqual([(code, body) for code, _, body in answers], [(200, b"late")] * 3)
        self.assertEqual(
            [headers[b"cache-status"] for _, headers, _ in answers],
            [[b"phantom-frame; fwd=uri-miss; stored"]] + [[b"phantom-frame; fwd=uri-miss; collapsed"]] * 2,
        )
        self.assertEqual(rig.scripted.waiting, [slow])

    def test_unexpected(self) -> None:
        """
        An answer that fails unexpectedly is logged and answered with a
        500; the connection goes on.
        """
        rig = RelayRig(True, FillTests.CACHING)
        self.addCleanup(rig.handle.close)
        server = next(rig.handle.servers())

        def broken(*args: Any) -> None:
            raise ZeroDivisionError()

        self.patch(server.entries, "answer", broken)
        answers = parse(rig.exchange(request("/a") + request("/b")), [False, False])
        self.assertEqual([code for code, _, _ in answers], [500, 500])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
