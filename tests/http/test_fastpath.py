"""
Tests for L{phantom_frame.http.channel}: hits answered in the channel must be
the answers the stock path gives, in order, and everything unusual must
fall through to the stock path.
"""

from __future__ import annotations

import gzip
from typing import Dict, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.channel import FastHits, FastHTTPChannel, fast_channel_factory
from phantom_frame.http.routing import Router
from tests.memory import MemoryOrigin

PAGE = b"<html>" + b"fast path " * 300 + b"</html>"


class Origin(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: Dict[str, int] = {}

    def render_GET(self, request) -> bytes:
        path = request.path.decode()
        self.hits[path] = self.hits.get(path, 0) + 1
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"etag", b'"e1"')
        if path.startswith("/vary"):
            request.setHeader(b"vary", b"Accept-Language")
        if path.startswith("/ttl"):
            request.setHeader(b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")
        return PAGE + path.encode()


Response = Tuple[int, Dict[bytes, List[bytes]], bytes]


def parse(stream: bytes, heads: List[bool]) -> List[Response]:
    """
    Split C{stream} into responses (C{heads}: which answer a HEAD).
    """
    responses = []
    for head in heads:
        end = stream.index(b"\r\n\r\n")
        lines = stream[:end].split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        length = 0 if head or code == 304 else int(headers[b"content-length"][0])
        responses.append((code, headers, stream[end + 4 : end + 4 + length]))
        stream = stream[end + 4 + length :]
    assert stream == b"", stream[:200]
    return responses


class Rig:
    """
    A proxy site over an in-memory origin; C{fast} chooses the channel.
    """

    def __init__(self, fast: bool, config: CreateProxyConfig = CreateProxyConfig("http://origin.test")) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.origin = Origin()
        self.agent = MemoryOrigin(self.origin, self.clock)
        resource, self.handle = create_proxy(
            config, self.clock, agent=object(), client=self.agent.client_for(config), runner=runInline
        )
        self.site = Site(Router([("*", resource)]), reactor=self.clock)
        self.site.displayTracebacks = False
        if fast:
            self.site.protocol = fast_channel_factory
            self.site.fastHit = FastHits(self.site, self.clock)
            self.site.recordFastHit = None
        self.server = next(self.handle.servers())

    def answered(self) -> int:
        """
        @return: how many requests the fast path answered so far (0 for a
            stock rig).
        """
        fast = getattr(self.site, "fastHit", None)
        return 0 if fast is None else fast.answered

    def exchange(self, data: bytes, chunks: int = 1) -> bytes:
        """
        Feed C{data} to a new connection (in C{chunks} pieces) and return
        everything written back.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        step = max(1, len(data) // chunks)
        for i in range(0, len(data), step):
            protocol.dataReceived(data[i : i + step])
            self.agent.flush()
        self.agent.flush()
        protocol.connectionLost(None)
        return transport.value()


def request(path: str, method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FastPathTests(SynchronousTestCase):
    """
    Fast and stock channels give the same answers, and the fast one answers
    what it is meant to answer.
    """

    def compare(self, warm: bytes, probe: bytes, heads: List[bool], fast: int, config=None):
        """
        Warm both rigs with C{warm}, then send C{probe} and compare.

        @param fast: how many of the probe's answers the fast path must give
            (the stock rig gives none); neither rig may reach the origin for
            an answer either rig's fast path gave.
        @return: the fast rig's answers and the rig.
        """
        config = config or CreateProxyConfig("http://origin.test")
        answers = []
        for fast_rig in (False, True):
            rig = Rig(fast_rig, config)
            rig.exchange(warm)
            before = rig.answered()
            output = rig.exchange(probe)
            answers.append((parse(output, heads), rig, rig.answered() - before))
        (stock, stock_rig, stock_fast), (fast_answers, rig, answered) = answers
        self.assertEqual(stock_fast, 0)
        self.assertEqual(answered, fast, "answers given by the fast path")
        self.assertEqual(len(stock), len(fast_answers))
        for (c1, h1, b1), (c2, h2, b2) in zip(stock, fast_answers):
            self.assertEqual((c1, b1), (c2, b2))
            # Request ids differ per answer (tests/http/test_request_id.py).
            h1 = {k: v for k, v in h1.items() if k not in (b"date", b"server", b"x-request-id")}
            h2 = {k: v for k, v in h2.items() if k not in (b"date", b"server", b"x-request-id")}
            self.assertEqual(h1, h2)
        self.assertEqual(stock_rig.origin.hits, rig.origin.hits)
        return fast_answers, rig

    def test_identity_and_brotli_hits(self) -> None:
        """
        Hits in the stored coding and in identity are identical on both
        paths, and the fast one answers them.
        """
        for headers in ({}, {"accept_encoding": "br"}, {"accept_encoding": "gzip;q=0, br"}):
            answers, rig = self.compare(request("/a"), request("/a", **headers), [False], fast=1)
            self.assertEqual(answers[0][1][b"cache-status"], [b"phantom-frame; hit"])
            self.assertEqual(rig.origin.hits, {"/a": 1})

    def test_compressed_once_served_again(self) -> None:
        """
        A stored body waits in identity until it is served again: both
        paths answer that hit in identity, with C{Vary: Accept-Encoding},
        and the hits after it in Brotli, the fast path from a L{Wire} of
        the recoded entry.
        """
        br = request("/c", accept_encoding="br")
        answers, _ = self.compare(br, br, [False], fast=1)
        self.assertNotIn(b"content-encoding", answers[0][1])
        self.assertEqual(answers[0][1][b"vary"], [b"Accept-Encoding"])
        answers, rig = self.compare(br + br, br + request("/c"), [False, False], fast=2)
        self.assertEqual(answers[0][1][b"content-encoding"], [b"br"])
        self.assertEqual(answers[0][1][b"etag"], [b'W/"e1"'])
        self.assertEqual(answers[1][2], PAGE + b"/c")
        self.assertEqual(rig.server.cache.compressions, 1)

    def test_other_coding(self) -> None:
        """
        A gzip-only client in front of brotli storage: its first request
        takes the stock path while gzip is made, later ones the fast path
        from a L{Wire} in gzip, with the same answer as the stock path's.
        """
        gzip_only = request("/g", accept_encoding="gzip, deflate")
        rig = Rig(True)
        # The fill, then the hit that has the body compressed in Brotli.
        rig.exchange(request("/g") + request("/g"))
        before = rig.answered()
        first = parse(rig.exchange(gzip_only), [False])[0]
        self.assertEqual(rig.answered() - before, 0)
        second = parse(rig.exchange(gzip_only), [False])[0]
        self.assertEqual(rig.answered() - before, 1)
        self.assertEqual(second[1][b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(second[2]), PAGE + b"/g")
        self.assertEqual(first[2], second[2])
        self.assertEqual(second[1][b"cache-status"], [b"phantom-frame; hit"])
        self.compare(request("/g") + request("/g") + gzip_only, gzip_only, [False], fast=1)
        self.assertEqual(rig.origin.hits, {"/g": 1})

    def test_head(self) -> None:
        """
        HEAD hits carry the GET's headers and no body, from the fast path.
        """
        self.compare(request("/h"), request("/h", "HEAD"), [True], fast=1)

    def test_vary(self) -> None:
        """
        An entry with C{Vary} is answered by the fast path for the variant
        it holds (values matched once normalised); another variant is a
        miss on both paths.
        """
        warm = request("/vary", accept_language="fr,  en")
        self.compare(warm, request("/vary", accept_language="fr, en"), [False], fast=1)
        answers, rig = self.compare(warm, request("/vary", accept_language="de"), [False], fast=0)
        self.assertEqual(answers[0][1][b"cache-status"], [b"phantom-frame; fwd=uri-miss; stored"])

    def test_pipelined_with_miss_between(self) -> None:
        """
        Several requests in one chunk are answered in order, a miss
        between hits included; the hits before and after the miss take the
        fast path, the miss is filled on the channel too.
        """
        probe = request("/p") + request("/other") + request("/p", "HEAD") + request("/p")
        answers, rig = self.compare(request("/p"), probe, [False, False, True, False], fast=3)
        self.assertEqual(rig.site.fastHit.filled, 2)
        self.assertEqual(
            [a[1][b"cache-status"][0] for a in answers],
            [b"phantom-frame; hit", b"phantom-frame; fwd=uri-miss; stored", b"phantom-frame; hit",
             b"phantom-frame; hit"],
        )

    def test_split_and_partial(self) -> None:
        """
        Requests split across packets still get the same answers; a head
        that arrives whole when the channel is idle takes the fast path.
        """
        rig = Rig(True)
        rig.exchange(request("/s"))
        output = rig.exchange(request("/s") + request("/s"), chunks=7)
        self.assertEqual([r[0] for r in parse(output, [False, False])], [200, 200])
        before = rig.answered()
        rig.exchange(request("/s"))
        self.assertEqual(rig.answered() - before, 1)

    def test_every_hit_kind(self) -> None:
        """
        Validators (304) and ranges (206; 416 is left to the stock path)
        are answered by the fast path, with the answers the stock path
        gives; a request that cookies make private meets an entry the origin
        did not mark shareable, and both paths pass it through.
        """
        for probe, heads, fast in (
            (request("/f", if_none_match='"e1"'), [True], 1),
            (request("/f", if_none_match='W/"e1"', accept_encoding="br"), [True], 1),
            (request("/f", range="bytes=0-9"), [False], 1),
            (request("/f", range="bytes=5-", if_range='"e1"'), [False], 1),
            (request("/f", range="bytes=99999-"), [False], 0),
            (request("/f", cookie="a=1"), [False], 0),
            (request("/f", range="bytes=0-9") + request("/f", if_none_match='"e1"'), [False, True], 2),
        ):
            self.compare(request("/f"), probe, heads, fast=fast)

    def test_fallbacks(self) -> None:
        """
        Credentials, caching directives that ask for revalidation and
        HTTP/1.0 take the stock path, with the same answers.
        """
        for probe, heads in (
            (request("/f", authorization="Bearer x"), [False]),
            (request("/f", if_match='"e1"'), [False]),
        ):
            self.compare(request("/f"), probe, heads, fast=0)
        rig = Rig(True)
        rig.exchange(request("/f"))
        before = rig.answered()
        output = rig.exchange(b"GET /f HTTP/1.0\r\nHost: x\r\n\r\n")
        self.assertTrue(output.startswith(b"HTTP/1.0 200"), output[:30])
        self.assertEqual(rig.answered(), before)

    def test_stale_while_revalidate(self) -> None:
        """
        A stale entry within C{stale_while_revalidate} is served by the fast
        path while one background refresh runs; the next request after it
        gets the refreshed entry (this origin answers at once, so the
        refresh has landed by then).
        """
        config = CreateProxyConfig("http://origin.test")._with(cache_ttl=10, stale_while_revalidate=60)
        rig = Rig(True, config)
        rig.exchange(request("/swr"))
        rig.clock.advance(20)
        before = rig.answered()
        output = rig.exchange(request("/swr") + request("/swr"))
        answers = parse(output, [False, False])
        self.assertEqual(rig.answered() - before, 2)
        self.assertEqual([a[1][b"cache-status"] for a in answers],
                         [[b"phantom-frame; hit; detail=stale"], [b"phantom-frame; hit; ttl=10"]])
        self.assertEqual(rig.origin.hits, {"/swr": 2})

    def test_stale_falls_through(self) -> None:
        """
        A fresh entry with a TTL is answered by the fast path with its
        age; past its TTL it is not.
        """
        config = CreateProxyConfig("http://origin.test")._with(cache_ttl=10)
        rig = Rig(True, config)
        rig.exchange(request("/ttl"))
        rig.clock.advance(5)
        before = rig.answered()
        first = parse(rig.exchange(request("/ttl")), [False])[0]
        self.assertEqual(rig.answered() - before, 1)
        self.assertEqual(first[1][b"cache-status"], [b"phantom-frame; hit; ttl=5"])
        self.assertEqual(first[1][b"age"], [b"5"])
        rig.clock.advance(10)
        second = parse(rig.exchange(request("/ttl")), [False])[0]
        self.assertEqual(rig.answered() - before, 1)
        self.assertIn(b"fwd=stale", second[1][b"cache-status"][0])

    def test_connection_close(self) -> None:
        """
        C{Connection: close} is honoured on the fast path: the answer says
        so and the connection is closed after it; what follows is not
        answered.
        """
        rig = Rig(True)
        rig.exchange(request("/c"))
        before = rig.answered()
        output = rig.exchange(request("/c", connection="close") + request("/c"))
        answers = parse(output, [False])
        self.assertEqual(answers[0][1][b"connection"], [b"close"])
        self.assertEqual(rig.answered() - before, 1)

    def test_channel_internals(self) -> None:
        """
        The parser state the fast path reads exists on twisted.web's
        channel with the values it expects when idle.
        """
        channel = HTTPChannel()
        channel.makeConnection(StringTransport())
        self.assertEqual(channel.requests, [])
        self.assertFalse(channel._handlingRequest)
        self.assertEqual(channel.line_mode, 1)
        self.assertFalse(channel._busyReceiving)
        self.assertEqual(channel._buffer, b"")
        self.assertEqual(channel._HTTPChannel__first_line, 1)
        self.assertEqual(channel._HTTPChannel__header, b"")
        self.assertTrue(issubclass(FastHTTPChannel, HTTPChannel))
        channel.connectionLost(None)


class ProxySiteTests(SynchronousTestCase):
    """
    L{phantom_frame.http.site.ProxySite} uses the fast path, and its hits are
    logged like any other.
    """

    def test_logged_without_request(self) -> None:
        """
        A plain hit on a L{ProxySite} builds no L{Request} and still gets
        its access-log line with the client, request line and cache result.
        """
        from twisted.logger import formatEvent, globalLogPublisher

        from phantom_frame.http.site import ProxyRequest, ProxySite

        made = []

        class Counting(ProxyRequest):
            def __init__(self, *a, **kw):
                made.append(1)
                super().__init__(*a, **kw)

        rig = Rig(False)
        site = ProxySite(Router([("*", rig.server.resource)]), reactor=rig.clock, access_log=True)
        site.requestFactory = Counting
        rig.site = site
        rig.exchange(request("/l"))
        self.assertEqual(len(made), 0, "the fill built a Request")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        answer = parse(rig.exchange(request("/l", user_agent="fast/1")), [False])[0]
        self.assertEqual(answer[1][b"cache-status"], [b"phantom-frame; hit"])
        self.assertEqual(len(made), 0, "the hit built a Request")
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "phantom_frame.access"]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /l HTTP/1.1" 200 ', lines[0])
        self.assertIn('"fast/1"', lines[0])
        self.assertIn("cache=hit server=default", lines[0])


class StrictParserTests(SynchronousTestCase):
    """
    The fast path takes no head that the guarded stock path would read
    otherwise: such heads get the stock path's answer.
    """

    def test_malformed_hits(self) -> None:
        """
        Heads for a cached entry that are malformed (control characters,
        names that are not tokens, spaces, bare CRs, bad targets, bad
        hosts) are not answered by the fast path, and get the same refusal
        from a site with the fast path as from one without.
        """
        from tests.http.rig import Rig as ProxyRig, answers

        probes = [
            b"GET /m HTTP/1.1\r\nHost: proxy.test\r\nX-A: b\x00c\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: proxy.test\r\nX\x01A: b\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: proxy.test\r\nX A: b\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: proxy.test\r\nX-A : b\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: proxy.test\rX-A: b\r\n\r\n",
            b"GET /m\x7f HTTP/1.1\r\nHost: proxy.test\r\n\r\n",
            b"GET /m\x0bx HTTP/1.1\r\nHost: proxy.test\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: proxy.test\x0b\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost: pro xy.test\r\n\r\n",
            b"GET /m HTTP/1.1\r\nHost:\r\n\r\n",
        ]
        for probe in probes:
            found = []
            for fast in (True, False):
                rig = ProxyRig(self, fast=fast)
                rig.exchange(b"GET /m HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
                written, closing = rig.exchange(probe)
                self.assertEqual(rig.answered(), 0, probe)
                ((code, headers, body),) = answers(written)
                found.append((code, body, closing))
            self.assertEqual(found[0], found[1], probe)
            self.assertEqual(found[0][0], 400, probe)


class HeadMemoryTests(SynchronousTestCase):
    """
    The fast path parses and routes a request head once, and remembers the
    outcome for the site's resource and limits in force.
    """

    def test_remembered(self) -> None:
        """
        A head seen again is not parsed again (the warm-up's miss parsed
        C{/m} already); a head the fast path cannot answer is parsed once
        and stays unanswered by it.
        """
        rig = Rig(True)
        rig.exchange(request("/m"))
        parses = []
        fast = rig.site.fastHit
        original = fast._parse
        self.patch(fast, "_parse", lambda *a: parses.append(1) or original(*a))
        before = rig.answered()
        rig.exchange(request("/m") + request("/m") + request("/m", authorization="Bearer x") * 2)
        self.assertEqual(rig.answered() - before, 2)
        self.assertEqual(len(parses), 1)

    def test_header_lines_shared(self) -> None:
        """
        Heads of new paths with the same header lines share their parsed
        fields (never changed: a request that adds its id gets a copy), and
        each is still answered as its own path; header lines the fast path
        cannot answer (a repeated field) stay unanswered by it for every
        path.
        """
        rig = Rig(True)
        fast = rig.site.fastHit
        views = []
        original = fast._parse

        def parse_head(*args):
            parsed = original(*args)
            views.append(parsed[1])
            return parsed

        self.patch(fast, "_parse", parse_head)
        answers = parse(rig.exchange(request("/s1", accept="*/*") + request("/s2", accept="*/*")), [False, False])
        self.assertEqual([body for _, _, body in answers], [PAGE + b"/s1", PAGE + b"/s2"])
        self.assertIs(views[0].headers, views[1].headers)
        self.assertEqual(views[0].headers, {"host": "proxy.test", "accept": "*/*"})
        self.patch(fast, "_parse", original)
        repeated = b"GET /d%d HTTP/1.1\r\nHost: proxy.test\r\nAccept: a\r\nAccept: b\r\n\r\n"
        before = rig.answered()
        for n in (0, 0, 1, 1):
            self.assertEqual(parse(rig.exchange(repeated % n), [False])[0][0], 200)
        self.assertEqual(rig.answered(), before)

    def test_forgotten_on_reload(self) -> None:
        """
        Replacing the site's resource (a reload) forgets every head: the
        new routes answer.
        """
        rig = Rig(True)
        rig.exchange(request("/r"))
        before = rig.answered()
        rig.exchange(request("/r"))
        self.assertEqual(rig.answered() - before, 1)
        rig.site.resource = Router([])
        output = rig.exchange(request("/r"))
        self.assertEqual(parse(output, [False])[0][0], 404)
        self.assertEqual(rig.answered() - before, 1)
