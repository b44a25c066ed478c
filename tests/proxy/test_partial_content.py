"""
206 Partial Content stored and combined (RFC 9111 §3.3-3.4) under the http
policy, end to end in memory: ranged fills, hits from stored parts, parts
combined into a complete entry, replaced parts and invalidation.
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from phantom_frame.cache.freshness import parse_range
from tests.http.test_fastpath import Rig, parse
from tests.http.test_fastpath import request as fast_request
from tests.proxy.test_compression import Client
from tests.proxy.test_http_semantics import HTTP, PRERENDER, Answer, Harness, header

BODY = bytes(range(256)) * 40


class RangeOrigin:
    """
    An origin that answers a single C{Range} with a 206 of C{body} and
    anything else with the whole C{body}.

    @ivar etag: the representation's entity-tag.
    @ivar extra: more response headers.
    """

    def __init__(self, harness: Harness, body: bytes = BODY, etag: Optional[str] = '"v1"', **extra: str) -> None:
        self.harness = harness
        self.body = body
        self.etag = etag
        self.extra = {k.replace("_", "-"): v for k, v in extra.items()}

    def __call__(self, headers: Dict[str, str]) -> Answer:
        h = {
            "date": datetimeToString(self.harness.clock.seconds()).decode(),
            "content-type": "video/mp4",
            "cache-control": "max-age=600",
        }
        if self.etag is not None:
            h["etag"] = self.etag
        h.update(self.extra)
        wanted = headers.get("range")
        if_range = headers.get("if-range")
        if wanted is not None and (if_range is None or if_range == self.etag):
            found = parse_range(wanted.encode(), len(self.body))
            if isinstance(found, tuple):
                first, last = found
                h["content-range"] = "bytes %d-%d/%d" % (first, last, len(self.body))
                return 206, h, self.body[first : last + 1]
        return 200, h, self.body


def server(h: Harness):
    """
    @return: the one L{phantom_frame.proxy.server.ProxyServer} of C{h}.
    """
    return next(h.handle.servers())


def harness(config=HTTP, **origin: str) -> Harness:
    """
    @return: a L{Harness} whose origin serves C{/v} as a L{RangeOrigin}.
    """
    h = Harness(config)
    h.origin.answers["/v"] = RangeOrigin(h, **origin)
    return h


class RangedFillTests(SynchronousTestCase):
    """
    A Range request without a complete entry is forwarded with its Range
    and its 206 stored as a part.
    """

    def test_forwarded_and_stored(self) -> None:
        """
        The fill forwards Range and If-Range; the 206 reaches the client
        whole, marked stored, and a covered range is then a hit from the
        parts: 206, the stored headers, Content-Range, Age and a hit.
        """
        h = harness()
        response, body, status = h.get("/v", range="bytes=100-1099", if_range='"v1"')
        self.assertEqual((response.code, body), (206, BODY[100:1100]))
        self.assertEqual(header(response, "content-range"), "bytes 100-1099/%d" % len(BODY))
        self.assertIn("stored", status)
        sent = h.origin.requests[0][2]
        self.assertEqual((sent["range"], sent["if-range"]), ("bytes=100-1099", '"v1"'))
        h.clock.advance(7)
        response, body, status = h.get("/v", range="bytes=200-299")
        self.assertEqual((response.code, body), (206, BODY[200:300]))
        self.assertEqual(header(response, "content-range"), "bytes 200-299/%d" % len(BODY))
        self.assertEqual(response.length, 100)
        self.assertEqual(header(response, "etag"), '"v1"')
        self.assertEqual(header(response, "content-type"), "video/mp4")
        self.assertEqual(header(response, "age"), "7")
        self.assertTrue(status.startswith("phantom-frame; hit"), status)
        self.assertEqual(h.origin.hits("/v"), 1)

    def test_if_range(self) -> None:
        """
        A covered range with an If-Range that matches strongly is a hit; a
        weak or other validator sends the request on with its If-Range.
        """
        h = harness()
        h.get("/v", range="bytes=0-999")
        self.assertEqual(h.get("/v", range="bytes=0-9", if_range='"v1"')[1], BODY[:10])
        self.assertEqual(h.origin.hits("/v"), 1)
        response, body, _ = h.get("/v", range="bytes=0-9", if_range='W/"v1"')
        self.assertEqual((response.code, body), (200, BODY))
        self.assertEqual(h.origin.requests[-1][2]["if-range"], 'W/"v1"')
        self.assertEqual(h.origin.hits("/v"), 2)

    def test_uncovered_added(self) -> None:
        """
        A range the parts do not cover is forwarded and its 206 added to
        the parts: a range across both is then a hit.
        """
        h = harness()
        h.get("/v", range="bytes=0-99")
        h.get("/v", range="bytes=100-199")
        self.assertEqual(h.origin.hits("/v"), 2)
        response, body, status = h.get("/v", range="bytes=50-149")
        self.assertEqual((response.code, body), (206, BODY[50:150]))
        self.assertEqual(h.origin.hits("/v"), 2)

    def test_suffix_range(self) -> None:
        """
        A suffix range is forwarded, stored, and answered from the parts.
        """
        h = harness()
        h.get("/v", range="bytes=-100")
        response, body, _ = h.get("/v", range="bytes=%d-" % (len(BODY) - 50))
        self.assertEqual((response.code, body), (206, BODY[-50:]))
        self.assertEqual(h.origin.hits("/v"), 1)

    def test_plain_get_misses(self) -> None:
        """
        A request without Range is a miss that fills a complete entry, which
        replaces the parts and then answers ranges itself.
        """
        h = harness()
        h.get("/v", range="bytes=0-99")
        self.assertEqual(server(h).cache.partial_count, 1)
        response, body, _ = h.get("/v")
        self.assertEqual((response.code, body), (200, BODY))
        self.assertNotIn("range", h.origin.requests[-1][2])
        self.assertEqual(server(h).cache.partial_count, 0)
        self.assertEqual(h.get("/v", range="bytes=5000-5009")[1], BODY[5000:5010])
        self.assertEqual(h.origin.hits("/v"), 2)

    def test_prerender_policy(self) -> None:
        """
        The prerender policy never forwards Range nor stores a 206.
        """
        h = harness(PRERENDER)
        response, body, _ = h.get("/v", range="bytes=0-99")
        self.assertEqual((response.code, body), (206, BODY[:100]))
        self.assertNotIn("range", h.origin.requests[0][2])
        self.assertEqual(server(h).cache.partial_count, 0)


class NotStoredTests(SynchronousTestCase):
    """
    206 answers that are relayed, not stored.
    """

    def assertNotStored(self, h: Harness, detail: str) -> None:
        """
        Assert that a ranged request is answered by the origin's 206 with
        C{detail} in its Cache-Status, and nothing is stored.
        """
        response, body, status = h.get("/v", range="bytes=0-99")
        self.assertEqual((response.code, body), (206, BODY[:100]))
        self.assertIn("detail=" + detail, status)
        self.assertEqual(server(h).cache.partial_count, 0)
        h.get("/v", range="bytes=0-99")
        self.assertEqual(h.origin.hits("/v"), 2)

    def test_weak_etag(self) -> None:
        """
        A part without a strong validator is not stored.
        """
        self.assertNotStored(harness(etag='W/"v1"'), "validator")

    def test_no_freshness(self) -> None:
        """
        A part that may not be stored as a 200 is not stored.
        """
        self.assertNotStored(harness(cache_control="no-store"), "no-store")

    def test_too_large(self) -> None:
        """
        A part larger than the bound of a partial entry is relayed whole.
        """
        h = harness()
        server(h).filler.parts.bound = 50
        self.assertNotStored(h, "size")

    def test_unknown_length(self) -> None:
        """
        A Content-Range without a complete length is not stored.
        """
        h = harness()
        origin = h.origin.answers["/v"]

        def answer(headers: Dict[str, str]) -> Answer:
            code, response_headers, body = origin(headers)
            response_headers["content-range"] = response_headers["content-range"].rsplit("/", 1)[0] + "/*"
            return code, response_headers, body

        h.origin.answers["/v"] = answer
        self.assertNotStored(h, "content-range")


class CombineTests(SynchronousTestCase):
    """
    Parts that cover the representation combine into a complete entry.
    """

    def test_combined(self) -> None:
        """
        Two parts covering 0..N-1 become a complete 200 entry, stored in
        identity and compressed per the strategy once served again, that
        answers a plain GET from the cache; the partial entry is dropped.
        """
        h = Harness(HTTP, compress="gzip")
        body = b"<p>some text</p>" * 1000
        h.origin.answers["/v"] = RangeOrigin(h, body=body, content_type="text/html")
        h.get("/v", range="bytes=0-9999")
        response, got, status = h.get("/v", range="bytes=10000-")
        self.assertEqual((response.code, got), (206, body[10000:]))
        self.assertIn("stored", status)
        cache = server(h).cache
        self.assertEqual(cache.partial_count, 0)
        self.assertEqual(cache.entry_count, 1)
        entry = next(iter(cache.entries()))
        self.assertEqual((entry.status, entry.coding, entry.identity_length), (200, "identity", len(body)))
        self.assertTrue(entry.compress_pending)
        self.assertNotIn(b"content-range", [n.lower() for n, _ in entry.headers])
        response, got, status = Client(h).get("/v")
        self.assertEqual((response.code, got), (200, body))
        self.assertEqual(response.length, len(body))
        self.assertIsNone(header(response, "content-range"))
        self.assertTrue(status.startswith("phantom-frame; hit"), status)
        self.assertEqual(h.origin.hits("/v"), 2)
        self.assertEqual((entry.coding, entry.compress_pending), ("gzip", False))
        self.assertEqual(Client(h).get("/v")[1], body)


class ReplaceTests(SynchronousTestCase):
    """
    Only parts of the same representation combine; invalidation drops parts.
    """

    def test_changed_etag(self) -> None:
        """
        A part with another ETag replaces the stored parts: a range only the
        old parts covered is a miss again.
        """
        h = harness()
        h.get("/v", range="bytes=0-99")
        h.origin.answers["/v"].etag = '"v2"'
        h.origin.answers["/v"].body = BODY[::-1]
        h.get("/v", range="bytes=200-299")
        partial = server(h).cache.partial(server(h).decider.key(b"GET", b"/v", b"", {}, "proxy.test"))
        self.assertEqual(partial.etag, b'"v2"')
        self.assertEqual(partial.parts, [(200, BODY[::-1][200:300])])
        response, body, _ = h.get("/v", range="bytes=0-99")
        self.assertEqual(body, BODY[::-1][:100])
        self.assertEqual(h.origin.hits("/v"), 3)

    def test_invalidation(self) -> None:
        """
        Invalidating a pattern that matches the key drops its parts.
        """
        h = harness()
        h.get("/v", range="bytes=0-99")
        self.assertEqual(server(h).cache.partial_count, 1)
        self.assertEqual(server(h).invalidate("*/v"), 1)
        self.assertEqual(server(h).cache.partial_count, 0)
        h.get("/v", range="bytes=0-99")
        self.assertEqual(h.origin.hits("/v"), 2)

    def test_invalidation_overtakes_fill(self) -> None:
        """
        A part whose fill an invalidation overtook is relayed, not stored.
        """
        h = harness()
        origin = h.origin.answers["/v"]
        h.origin.answers["/v"] = lambda headers: None
        d = h.client.request("GET", "http://proxy.test/v", headers={"range": "bytes=0-99"})
        h.client.flush()
        self.assertEqual(len(h.origin.held), 1)
        server(h).invalidate("*")
        request = h.origin.held.pop()
        code, headers, body = origin({"range": "bytes=0-99"})
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        request.write(body)
        request.finish()
        h.agent.flush()
        h.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 206)
        self.assertEqual(self.successResultOf(h.client.content(response)), BODY[:100])
        self.assertIn("detail=invalidated", header(response, "cache-status"))
        self.assertEqual(server(h).cache.partial_count, 0)


def _ranged_get(request) -> bytes:
    """
    Answer a GET of the fast-path rig's origin as a L{RangeOrigin} would,
    with a fixed C{Date}.
    """
    wanted = request.getHeader(b"range")
    request.setHeader(b"content-type", b"video/mp4")
    request.setHeader(b"etag", b'"v1"')
    request.setHeader(b"cache-control", b"max-age=600")
    found = parse_range(wanted, len(BODY)) if wanted else None
    if not isinstance(found, tuple):
        return BODY
    request.setResponseCode(206)
    request.setHeader(b"content-range", b"bytes %d-%d/%d" % (found[0], found[1], len(BODY)))
    return BODY[found[0] : found[1] + 1]


class FastPathTests(SynchronousTestCase):
    """
    A hit from stored parts on the HTTP/1.1 channel's fast path.
    """

    def test_fast_part_hit(self) -> None:
        """
        The fast path answers a range the parts cover, with the answer the
        stock path gives.
        """
        answers = []
        for fast in (False, True):
            rig = Rig(fast, HTTP)
            rig.origin.render_GET = _ranged_get
            rig.exchange(fast_request("/v", range="bytes=100-999"))
            before = rig.answered()
            output = rig.exchange(fast_request("/v", range="bytes=200-209"))
            answers.append((parse(output, [False]), rig.answered() - before))
        (stock, stock_fast), (quick, answered) = answers
        self.assertEqual((stock_fast, answered), (0, 1))
        (c1, h1, b1), (c2, h2, b2) = stock[0], quick[0]
        self.assertEqual((c1, b1), (206, BODY[200:210]))
        self.assertEqual((c2, b2), (c1, b1))
        self.assertEqual(h2[b"content-range"], [b"bytes 200-209/%d" % len(BODY)])
        self.assertTrue(h2[b"cache-status"][0].startswith(b"phantom-frame; hit"))
        # The origin dates its answers by the real clock; a plain Site
        # (the stock rig) gives no request id.
        ignored = (b"server", b"date", b"x-request-id")
        h1 = {k: v for k, v in h1.items() if k not in ignored}
        h2 = {k: v for k, v in h2.items() if k not in ignored}
        self.assertEqual(h1, h2)
