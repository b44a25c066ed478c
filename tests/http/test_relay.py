"""
Tests for L{phantom_frame.http.relay}: requests the channel passes through
at the byte level get the answers the stock twisted.web path gives, and the
byte path is the one that answered.
"""

from __future__ import annotations

import gzip
from typing import Any, Dict, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame import CacheStrategy, CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.ops.metrics import Metrics
from tests.memory import MemoryOrigin, samples, value
from tests.proxy.origins import MemoryEndpoint

PAGE = b"<html>" + b"relayed " * 400 + b"</html>"
PASSTHROUGH = CreateProxyConfig("http://origin.test").with_cache_strategy(CacheStrategy.NONE)


class Scripted(Resource):
    """
    An origin with a page per behaviour.

    @ivar seen: the request headers it received, per path.
    @ivar waiting: requests it has not answered.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: Dict[str, Any] = {}
        self.waiting: List[Any] = []

    def render_GET(self, request: Any) -> Any:
        """
        The page of the path's behaviour.
        """
        path = request.path.decode()
        self.seen[path] = request.requestHeaders
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"x-origin", b"1")
        if path == "/chunked":
            request.write(b"first part, ")
            request.write(b"second part")
            request.finish()
            return NOT_DONE_YET
        if path == "/etag":
            request.setHeader(b"etag", b'"v1"')
            if request.getHeader(b"if-none-match") == b'"v1"':
                request.setResponseCode(304)
                return b""
        if path == "/cookie":
            request.setHeader(b"set-cookie", b"session=1")
        if path == "/empty":
            request.setResponseCode(204)
            return b""
        if path == "/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        return PAGE + path.encode()

    def render_POST(self, request: Any) -> bytes:
        """
        The body's length and its first bytes.
        """
        body = request.content.read()
        self.seen[request.path.decode()] = request.requestHeaders
        request.setHeader(b"content-type", b"text/plain")
        return b"%d:%s" % (len(body), body[:20])

    render_PUT = render_POST


class RelayRig:
    """
    A proxy site over a L{Scripted} origin in memory; C{fast} chooses
    whether the channel may pass requests through at the byte level.
    """

    def __init__(self, fast: bool, config: CreateProxyConfig = PASSTHROUGH) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.scripted = Scripted()
        self.origin = MemoryOrigin(self.scripted, self.clock)
        resource, self.handle = create_proxy(
            config, self.clock, agent=object(), client=self.origin.client_for(config), runner=runInline
        )
        self.metrics = Metrics(self.handle, self.clock)
        self.site = ProxySite(
            Router([("*", resource)]), reactor=self.clock, access_log=False, fast_path=fast, metrics=self.metrics
        )

    def filled(self) -> int:
        """
        @return: how many fills the channel answered itself.
        """
        fast = self.site.fastHit
        return 0 if fast is None else fast.filled

    def relayed(self) -> int:
        """
        @return: how many requests the byte path passed through.
        """
        fast = self.site.fastHit
        return 0 if fast is None else fast.relayed

    def connect(self) -> Tuple[Any, StringTransport]:
        """
        @return: a new client connection and its transport.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4321))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4321))
        protocol.makeConnection(transport)
        return protocol, transport

    def settle(self) -> None:
        """
        Move every byte to and from the origin.
        """
        for _ in range(5):
            self.origin.flush()
            self.clock.advance(0)

    def leave_waiting(self, test: Any) -> StringTransport:
        """
        A client asks for C{/slow} and goes away before the answer: check
        that the origin request was cancelled (its connection closed).

        @param test: the test case that checks.
        @return: the client's transport.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(request("/slow"))
        self.settle()
        [slow] = self.scripted.waiting
        lost = slow.notifyFinish()
        protocol.connectionLost(None)
        self.settle()
        test.failureResultOf(lost)
        test.assertEqual(self.origin.pool.idle, 0)
        return transport

    def exchange(self, data: bytes) -> bytes:
        """
        Send C{data} on a new connection; return what came back.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.settle()
        protocol.connectionLost(None)
        return transport.value()


def parse(stream: bytes, heads: List[bool]) -> List[Tuple[int, Dict[bytes, List[bytes]], bytes]]:
    """
    Split C{stream} into answers (C{heads}: which answer a HEAD), chunked
    bodies de-chunked.
    """
    answers = []
    for head in heads:
        end = stream.index(b"\r\n\r\n")
        lines = stream[:end].split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        stream = stream[end + 4:]
        if head or code in (204, 304):
            body = b""
        elif headers.get(b"transfer-encoding") == [b"chunked"]:
            body, stream = _dechunk(stream)
        else:
            length = int(headers[b"content-length"][0])
            body, stream = stream[:length], stream[length:]
        answers.append((code, headers, body))
    assert stream == b"", stream[:200]
    return answers


def request(path: str, method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RelayTests(SynchronousTestCase):
    """
    The byte path and the stock path give the same answers.
    """

    def compare(self, data: bytes, heads: List[bool], relayed: int, config: CreateProxyConfig = PASSTHROUGH,
                before: Any = None) -> Tuple[List[Any], RelayRig]:
        """
        Send C{data} to a stock rig and to a byte-path rig, and compare.

        @param relayed: how many answers the byte path must give.
        @param before: called with each rig first.
        @return: the byte path's answers, and its rig.
        """
        answers = []
        for fast in (False, True):
            rig = RelayRig(fast, config)
            self.addCleanup(rig.handle.close)
            if before is not None:
                before(rig)
            answers.append((parse(rig.exchange(data), heads), rig))
        (stock, stock_rig), (byte, rig) = answers
        self.assertEqual((stock_rig.relayed(), rig.relayed()), (0, relayed))
        for (c1, h1, b1), (c2, h2, b2) in zip(stock, byte):
            self.assertEqual((c1, b1), (c2, b2))
            for h in (h1, h2):
                h.pop(b"server", None)
            # Each answer has its own request id; the origin dates its
            # answers by the real clock.
            for name in (b"x-request-id", b"date"):
                self.assertEqual(len(h1.pop(name, [])), len(h2.pop(name, [])))
            self.assertEqual(h1, h2)
        self.assertEqual(len(stock), len(byte))
        return byte, rig

    def test_pass_through(self) -> None:
        """
        A GET passed through: same status, headers and body, the length
        kept, and the request forwarded with the proxy's headers.
        """
        [(code, headers, body)], rig = self.compare(request("/a", accept="text/html"), [False], 1)
        self.assertEqual((code, body), (200, PAGE + b"/a"))
        self.assertEqual(headers[b"content-length"], [b"%d" % len(body)])
        self.assertEqual(headers[b"x-origin"], [b"1"])
        self.assertEqual(headers[b"cache-status"], [b"phantom-frame; fwd=bypass; detail=strategy"])
        seen = rig.scripted.seen["/a"]
        self.assertEqual(seen.getRawHeaders(b"host"), [b"origin.test"])
        self.assertEqual(seen.getRawHeaders(b"x-forwarded-for"), [b"192.0.2.7"])
        self.assertEqual(seen.getRawHeaders(b"x-forwarded-host"), [b"proxy.test"])
        self.assertEqual(seen.getRawHeaders(b"accept"), [b"text/html"])

    def test_head_chunked_empty_and_304(self) -> None:
        """
        HEAD, a chunked answer (re-chunked), a 204 and a 304 relayed from
        the origin are the stock path's answers; pipelined, they come back
        in order on one connection.
        """
        data = (
            request("/h", "HEAD")
            + request("/chunked")
            + request("/empty")
            + request("/etag", if_none_match='"v1"')
        )
        answers, _ = self.compare(data, [True, False, True, True], 4)
        self.assertEqual([a[0] for a in answers], [200, 200, 204, 304])
        self.assertEqual(answers[1][2], b"first part, second part")

    def test_origin_down(self) -> None:
        """
        An origin that refuses connections: 502, as the stock path says it.
        """
        def down(rig: RelayRig) -> None:
            rig.origin.down = True

        [(code, headers, body)], _ = self.compare(request("/a"), [False], 1, before=down)
        self.assertEqual((code, body), (502, b"Bad Gateway\n"))
        self.assertEqual(headers[b"cache-status"], [b"phantom-frame; fwd=bypass; detail=origin-error"])
        self.flushLoggedErrors()

    def test_timeout(self) -> None:
        """
        An origin that does not answer within C{upstream_timeout}: 504 on
        both paths.
        """
        outputs = []
        for fast in (False, True):
            rig = RelayRig(fast, PASSTHROUGH.with_upstream_timeout(5))
            self.addCleanup(rig.handle.close)
            protocol, transport = rig.connect()
            protocol.dataReceived(request("/slow"))
            rig.settle()
            self.assertEqual(transport.value(), b"")
            rig.clock.advance(5)
            rig.settle()
            outputs.append(parse(transport.value(), [False]))
            self.assertEqual(rig.relayed(), int(fast))
        self.assertEqual(outputs[0][0][0], 504)
        self.assertEqual([(c, b) for c, _, b in outputs[0]], [(c, b) for c, _, b in outputs[1]])

    def test_caching_server(self) -> None:
        """
        On a caching server, a request the cache must not answer (with
        credentials) is passed through at the byte level, the cache's hits
        still answered from the cache.
        """
        config = CreateProxyConfig("http://origin.test")
        answers, rig = self.compare(
            request("/p", authorization="Basic eA==") + request("/p"), [False, False], 1, config
        )
        self.assertEqual([a[0] for a in answers], [200, 200])

    def test_bodies(self) -> None:
        """
        Requests with a C{Content-Length} body (and an empty one) are passed
        through at the byte level with their bodies, in order with what
        follows them.
        """
        post = b"POST /p HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 11\r\n\r\nhello world"
        put = b"PUT /q HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 0\r\n\r\n"
        answers, rig = self.compare(post + put + request("/a"), [False, False, False], 3)
        self.assertEqual([a[2] for a in answers[:2]], [b"11:hello world", b"0:"])
        self.assertEqual(rig.scripted.seen["/p"].getRawHeaders(b"content-length"), [b"11"])

    def test_body_after_failure(self) -> None:
        """
        The body of a request whose origin failed before it was sent is
        read and dropped: the request after it is answered.
        """
        def down(rig: RelayRig) -> None:
            rig.origin.down = True

        post = b"POST /p HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\n\r\nhello"
        answers, _ = self.compare(post + request("/a"), [False, False], 2, before=down)
        self.assertEqual([a[0] for a in answers], [502, 502])
        self.flushLoggedErrors()

    def test_metrics(self) -> None:
        """
        A relayed request is counted as the stock path counts it.
        """
        counts = []
        for fast in (False, True):
            rig = RelayRig(fast)
            self.addCleanup(rig.handle.close)
            rig.exchange(request("/a"))
            parsed = samples(rig.metrics.registry and _scrape(rig.metrics))
            counts.append(
                value(parsed, "phantom_frame_requests_total", server="default", method="get_head",
                      status="2xx", cache="bypass")
            )
        self.assertEqual(counts, [1, 1])


def _scrape(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode("utf-8")


class FlowTests(SynchronousTestCase):
    """
    The byte path's flow: back-pressure, order, disconnection, interim
    answers, transfer codings.
    """

    def test_pipelined_wait(self) -> None:
        """
        A request pipelined behind one being relayed waits until that answer
        is complete, then is answered in order.
        """
        rig = RelayRig(True)
        self.addCleanup(rig.handle.close)
        protocol, transport = rig.connect()
        protocol.dataReceived(request("/slow") + request("/b"))
        rig.settle()
        self.assertEqual(transport.value(), b"")
        self.assertNotIn("/b", rig.scripted.seen)
        [slow] = rig.scripted.waiting
        slow.write(b"late")
        slow.finish()
        rig.settle()
        answers = parse(transport.value(), [False, False])
        self.assertEqual([a[2] for a in answers], [b"late", PAGE + b"/b"])
        self.assertEqual(rig.relayed(), 2)

    def test_client_gone(self) -> None:
        """
        A client that disconnects while its answer is awaited cancels the
        origin request: the origin connection is closed.
        """
        rig = RelayRig(True)
        self.addCleanup(rig.handle.close)
        rig.leave_waiting(self)
        self.assertEqual(rig.relayed(), 1)

    def test_slow_client(self) -> None:
        """
        While the client's transport is full, the origin connection is not
        read; it is read again once the client takes more.
        """
        clock, endpoint, origin = _raw(self)
        protocol, transport = origin.connect()
        protocol.dataReceived(request("/big"))
        [wire] = endpoint.wires
        wire.sent()
        wire.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        self.assertTrue(transport.value().endswith(b"\r\n\r\nhello"))
        transport.producer.pauseProducing()
        self.assertEqual(wire.transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(wire.transport.producerState, "producing")
        wire.answer(b"world")
        self.assertTrue(transport.value().endswith(b"helloworld"))

    def test_early_hints_and_codings(self) -> None:
        """
        A C{103 Early Hints} is relayed before the answer; a body in a
        transfer coding other than chunked arrives decoded, re-chunked.
        """
        clock, endpoint, origin = _raw(self)
        protocol, transport = origin.connect()
        protocol.dataReceived(request("/g"))
        [wire] = endpoint.wires
        wire.answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + gzip.compress(PAGE)
        )
        wire.lose()
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"))
        head, _, body = out.partition(b"\r\n\r\n")[2].partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(_dechunk(body), (PAGE, b""))


class _RawRig(RelayRig):
    """
    A byte-path rig whose origin is a L{MemoryEndpoint}: its answers are
    written by hand.
    """

    def __init__(self, endpoint: MemoryEndpoint) -> None:
        from phantom_frame.proxy.pool import OriginPool

        self.clock = Clock()
        pool = OriginPool(self.clock, lambda address: endpoint)
        resource, self.handle = create_proxy(
            PASSTHROUGH, self.clock, agent=object(), client=pool.client("http://origin.test"), runner=runInline
        )
        self.site = ProxySite(Router([("*", resource)]), reactor=self.clock, access_log=False)


def _raw(testcase: SynchronousTestCase) -> Tuple[Clock, MemoryEndpoint, _RawRig]:
    endpoint = MemoryEndpoint()
    rig = _RawRig(endpoint)
    testcase.addCleanup(rig.handle.close)
    return rig.clock, endpoint, rig


def _dechunk(data: bytes) -> Tuple[bytes, bytes]:
    """
    @return: the body of the chunked C{data}, and what follows it.
    """
    out = b""
    while True:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out, rest[2:]
        out += rest[:n]
        data = rest[n + 2:]


def _with_url(config: CreateProxyConfig, url: str) -> CreateProxyConfig:
    import attr

    return attr.evolve(config, proxy_url=url)
