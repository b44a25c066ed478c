"""
HTTP caching semantics of the proxy, in memory and driven by a
L{task.Clock}: validators and 304, HEAD, ranges, Age, the prerender TTL with
stale-while-revalidate and stale-if-error, and the RFC 9111 C{http} policy.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from tests.memory import MemoryOrigin

Answer = Tuple[int, Dict[str, str], bytes]


class Scripted(Resource):
    """
    An origin whose answer per path is set by the test; it records every
    request's headers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: Dict[str, Callable[[Any], Any]] = {}
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        self.held: List[Any] = []

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == path)

    def render(self, request) -> Any:
        path = request.path.decode()
        headers = {k.decode().lower(): b", ".join(v).decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.method.decode(), path, headers))
        request.defaultContentType = None
        answer = self.answers[path](headers)
        if answer is None:
            self.held.append(request)
            return NOT_DONE_YET
        code, response_headers, body = answer
        request.setResponseCode(code)
        for name, value in response_headers.items():
            request.setHeader(name.encode(), value.encode())
        return body


class Harness:
    """
    The proxy over a L{Scripted} origin, all in memory, time on a L{Clock}.
    """

    def __init__(
        self, config: CreateProxyConfig, clock: Optional[Clock] = None, compress: str = "none",
        on_fill: bool = False, redis: Any = None,
    ) -> None:
        """
        @param compress: the C{compress_strategy}.
        @param on_fill: compress stored bodies at the fill
            (C{compress_on_fill}) rather than once served again.
        @param redis: the Redis node of a C{redis} server.
        """
        self.clock = clock or Clock()
        self.clock.advance(1_700_000_000)
        self.origin = Scripted()
        self.agent = MemoryOrigin(self.origin, self.clock)
        self.switch = self.agent
        self.resource, self.handle = create_proxy(
            config.with_compress_strategy(compress)._with(compress_on_fill=on_fill),
            self.clock,
            agent=object(),
            client=self.agent.client_for(config),
            runner=runInline,
            redis=redis,
        )
        self.client = StubTreq(self.resource)

    def serve(self, path: str, code: int = 200, body: bytes = b"body", **headers: str) -> None:
        """
        Make the origin answer C{path} with this, C{Date} being now.
        """
        def answer(_: Dict[str, str]) -> Answer:
            h = {"date": datetimeToString(self.clock.seconds()).decode(), "content-type": "text/html"}
            h.update({k.replace("_", "-"): v for k, v in headers.items()})
            return code, h, body

        self.origin.answers[path] = answer

    def get(self, path: str, method: str = "GET", **headers: str):
        """
        @return: the response, its body and its C{Cache-Status}.
        """
        h = {k.replace("_", "-"): v for k, v in headers.items()}
        d = self.client.request(method, "http://proxy.test" + path, headers=h)
        self.client.flush()
        response = d.result
        body = self.client.content(response)
        self.client.flush()
        status = response.headers.getRawHeaders(b"cache-status", [b""])[0].decode()
        return response, body.result, status


def header(response, name: str) -> Optional[str]:
    values = response.headers.getRawHeaders(name.encode())
    return values[0].decode() if values else None


PRERENDER = CreateProxyConfig("http://origin.test")
HTTP = PRERENDER._with(cache_policy="http")


class ValidatorTests(SynchronousTestCase):
    """
    Conditional requests answered from the cache, in both policies.
    """

    def test_if_none_match(self) -> None:
        """
        A matching If-None-Match (exact, weak, in a list, or C{*}) gets a
        304 with the ETag and no body, from the cache.
        """
        h = Harness(PRERENDER)
        h.serve("/a", etag='"v1"', cache_control="max-age=60")
        h.get("/a")
        for value in ('"v1"', 'W/"v1"', '"x", "v1"', "*"):
            response, body, status = h.get("/a", if_none_match=value)
            self.assertEqual((response.code, body), (304, b""), value)
            self.assertEqual(header(response, "etag"), '"v1"')
            self.assertEqual(header(response, "cache-control"), "max-age=60")
            self.assertIsNone(header(response, "content-type"))
        response, body, _ = h.get("/a", if_none_match='"v0"')
        self.assertEqual((response.code, body), (200, b"body"))
        self.assertEqual(h.origin.hits("/a"), 1)

    def test_if_modified_since(self) -> None:
        """
        If-Modified-Since at or after Last-Modified gets 304; earlier, 200;
        If-None-Match takes precedence.
        """
        h = Harness(PRERENDER)
        modified = datetimeToString(h.clock.seconds() - 100).decode()
        h.serve("/m", last_modified=modified, etag='"e"')
        h.get("/m")
        self.assertEqual(h.get("/m", if_modified_since=modified)[0].code, 304)
        earlier = datetimeToString(h.clock.seconds() - 200).decode()
        self.assertEqual(h.get("/m", if_modified_since=earlier)[0].code, 200)
        self.assertEqual(h.get("/m", if_modified_since="garbage")[0].code, 200)
        self.assertEqual(h.get("/m", if_modified_since=modified, if_none_match='"other"')[0].code, 200)

    def test_validators_not_forwarded(self) -> None:
        """
        A fill does not carry the client's validators or Range.
        """
        h = Harness(PRERENDER)
        h.serve("/v", etag='"v"')
        h.get("/v", if_none_match='"v"', if_modified_since="Sun, 06 Nov 1994 08:49:37 GMT", range="bytes=0-1")
        sent = h.origin.requests[0][2]
        for name in ("if-none-match", "if-modified-since", "range"):
            self.assertNotIn(name, sent)

    def test_generate_etag(self) -> None:
        """
        No ETag is invented unless C{generate_etag}; then a strong hash of
        the body, usable in If-None-Match.
        """
        h = Harness(PRERENDER)
        h.serve("/n")
        response, _, _ = h.get("/n")
        self.assertIsNone(header(response, "etag"))
        h = Harness(PRERENDER._with(generate_etag=True))
        h.serve("/n")
        h.get("/n")
        response, _, _ = h.get("/n")
        etag = header(response, "etag")
        self.assertTrue(etag.startswith('"pf-') and etag.endswith('"'), etag)
        self.assertEqual(h.get("/n", if_none_match=etag)[0].code, 304)

    def test_etag_weakened_when_compressed(self) -> None:
        """
        A body served in a coding phantom-frame applied carries a weakened
        ETag; If-None-Match still matches it.
        """
        h = Harness(PRERENDER, compress="deflate", on_fill=True)
        h.serve("/z", body=b"z" * 5000, etag='"z1"')
        h.get("/z")
        response, _, _ = h.get("/z", accept_encoding="deflate")
        self.assertEqual(header(response, "content-encoding"), "deflate")
        self.assertEqual(header(response, "etag"), 'W/"z1"')
        self.assertEqual(h.get("/z", accept_encoding="deflate", if_none_match='"z1"')[0].code, 304)
        response, _, _ = h.get("/z", accept_encoding="gzip;q=0")
        self.assertEqual(header(response, "etag"), '"z1"')


class HeadRangeAgeTests(SynchronousTestCase):
    """
    HEAD, byte ranges and Age.
    """

    def setUp(self) -> None:
        self.h = Harness(PRERENDER)
        self.modified = datetimeToString(self.h.clock.seconds() - 100).decode()
        self.h.serve("/r", body=b"0123456789abcdef", etag='"r1"', last_modified=self.modified)
        self.h.get("/r")

    def test_head(self) -> None:
        """
        HEAD is answered from the GET entry with its headers and no body.
        """
        response, body, status = self.h.get("/r", method="HEAD")
        self.assertEqual((response.code, body, status), (200, b"", "phantom-frame; hit"))
        self.assertEqual(header(response, "etag"), '"r1"')

    def test_ranges(self) -> None:
        """
        Single ranges give 206 with Content-Range; several give the whole
        200; an unsatisfiable one 416.
        """
        for value, body, content_range in (
            ("bytes=0-3", b"0123", "bytes 0-3/16"),
            ("bytes=10-", b"abcdef", "bytes 10-15/16"),
            ("bytes=-4", b"cdef", "bytes 12-15/16"),
        ):
            response, received, _ = self.h.get("/r", range=value)
            self.assertEqual((response.code, received), (206, body), value)
            self.assertEqual(header(response, "content-range"), content_range)
        response, received, _ = self.h.get("/r", range="bytes=0-1,4-5")
        self.assertEqual((response.code, received), (200, b"0123456789abcdef"))
        response, _, _ = self.h.get("/r", range="bytes=99-")
        self.assertEqual(response.code, 416)
        self.assertEqual(header(response, "content-range"), "bytes */16")
        self.assertEqual(self.h.origin.hits("/r"), 1)

    def test_if_range(self) -> None:
        """
        If-Range with the strong ETag or the exact Last-Modified allows the
        range; anything else gets the whole body.
        """
        self.assertEqual(self.h.get("/r", range="bytes=0-1", if_range='"r1"')[0].code, 206)
        self.assertEqual(self.h.get("/r", range="bytes=0-1", if_range=self.modified)[0].code, 206)
        self.assertEqual(self.h.get("/r", range="bytes=0-1", if_range='"old"')[0].code, 200)
        self.assertEqual(self.h.get("/r", range="bytes=0-1", if_range='W/"r1"')[0].code, 200)

    def test_age_and_date(self) -> None:
        """
        Hits carry Age; the origin's Date is kept.
        """
        date = header(self.h.get("/r")[0], "date")
        self.h.clock.advance(42)
        response, _, _ = self.h.get("/r")
        self.assertEqual(header(response, "age"), "42")
        self.assertEqual(header(response, "date"), date)


class PrerenderTTLTests(SynchronousTestCase):
    """
    C{cache_ttl}, C{stale_while_revalidate} and C{stale_if_error}.
    """

    def test_no_ttl_is_forever(self) -> None:
        """
        Without C{cache_ttl}, entries stay until invalidated.
        """
        h = Harness(PRERENDER)
        h.serve("/f")
        h.get("/f")
        h.clock.advance(10 ** 7)
        self.assertEqual(h.get("/f")[2], "phantom-frame; hit")

    def test_ttl(self) -> None:
        """
        Fresh for C{cache_ttl} seconds from storage (whatever the origin's
        own headers say), then fetched again.
        """
        h = Harness(PRERENDER._with(cache_ttl=60))
        h.serve("/t", cache_control="max-age=1", age="500")
        h.get("/t")
        h.clock.advance(59)
        self.assertEqual(h.get("/t")[2], "phantom-frame; hit; ttl=1")
        h.clock.advance(2)
        self.assertEqual(h.get("/t")[2], "phantom-frame; fwd=stale; fwd-status=200; stored")
        self.assertEqual(h.origin.hits("/t"), 2)

    def test_revalidation_304(self) -> None:
        """
        A stale entry with a validator is revalidated; a 304 makes it fresh
        again and updates its headers.
        """
        h = Harness(PRERENDER._with(cache_ttl=10))
        h.serve("/v", etag='"v1"', x_version="1")
        h.get("/v")
        h.clock.advance(11)
        h.origin.answers["/v"] = lambda headers: (304, {"etag": '"v1"', "x-version": "2"}, b"")
        response, body, status = h.get("/v")
        self.assertEqual((response.code, body, status), (200, b"body", "phantom-frame; fwd=stale; fwd-status=304"))
        self.assertEqual(h.origin.requests[-1][2]["if-none-match"], '"v1"')
        self.assertEqual(header(response, "x-version"), "2")
        self.assertEqual(h.get("/v")[2], "phantom-frame; hit; ttl=10")

    def test_stale_while_revalidate(self) -> None:
        """
        Within the window a stale entry is served at once and the origin
        sees one refresh however many clients ask; then the new one is used.
        """
        h = Harness(PRERENDER._with(cache_ttl=10, stale_while_revalidate=30))
        h.serve("/s", body=b"old")
        h.get("/s")
        h.clock.advance(15)
        h.origin.answers["/s"] = lambda headers: None  # hold the refresh
        for _ in range(20):
            response, body, status = h.get("/s")
            self.assertEqual((body, status), (b"old", "phantom-frame; hit; detail=stale"))
        self.assertEqual(h.origin.hits("/s"), 2)
        held = h.origin.held.pop()
        held.setHeader(b"content-type", b"text/html")
        held.write(b"new")
        held.finish()
        h.agent.flush()
        self.assertEqual(h.get("/s")[1], b"new")

    def test_failed_refresh_keeps_stale(self) -> None:
        """
        A background refresh that fails keeps the stale entry.
        """
        h = Harness(PRERENDER._with(cache_ttl=10, stale_while_revalidate=30))
        h.serve("/k", body=b"keep")
        h.get("/k")
        h.clock.advance(15)
        h.serve("/k", code=500, body=b"broken")
        self.assertEqual(h.get("/k")[1], b"keep")
        self.assertEqual(h.get("/k")[1], b"keep")
        self.flushLoggedErrors()

    def test_stale_if_error(self) -> None:
        """
        On a 5xx, a refused connection or a timeout, a stale entry within
        the window is served instead of the error; past it, the error.
        """
        h = Harness(PRERENDER._with(cache_ttl=10, stale_if_error=100))
        h.serve("/e", body=b"good")
        h.get("/e")
        h.clock.advance(20)
        h.serve("/e", code=503, body=b"down")
        self.assertEqual(h.get("/e")[1:], (b"good", "phantom-frame; hit; detail=stale"))
        h.switch.down = True
        self.assertEqual(h.get("/e")[1], b"good")
        h.switch.down = False
        h.origin.answers["/e"] = lambda headers: None
        d = h.client.get("http://proxy.test/e")
        h.client.flush()
        h.clock.advance(30)  # upstream_timeout
        h.client.flush()
        self.assertEqual(h.client.content(d.result).result, b"good")
        h.clock.advance(100)
        h.switch.down = True
        self.assertEqual(h.get("/e")[0].code, 502)
        self.flushLoggedErrors()


class HTTPPolicyTests(SynchronousTestCase):
    """
    C{cache_policy = "http"}: RFC 9111 shared-cache rules.
    """

    def test_freshness_sources(self) -> None:
        """
        s-maxage, max-age, Expires and heuristics set the lifetime.
        """
        h = Harness(HTTP)
        now = h.clock.seconds()
        h.serve("/smax", cache_control="max-age=5, s-maxage=50")
        h.serve("/max", cache_control="max-age=5")
        h.serve("/exp", expires=datetimeToString(now + 20).decode())
        h.serve("/heur", last_modified=datetimeToString(now - 1000).decode())
        for path in ("/smax", "/max", "/exp", "/heur"):
            h.get(path)
        h.clock.advance(10)
        self.assertEqual(h.get("/smax")[2], "phantom-frame; hit; ttl=40")
        self.assertEqual(h.get("/exp")[2], "phantom-frame; hit; ttl=10")
        self.assertIn("fwd=stale", h.get("/max")[2])
        self.assertEqual(h.get("/heur")[2], "phantom-frame; hit; ttl=90")

    def test_heuristic_lifetime(self) -> None:
        """
        Without explicit freshness, 10% of the age of Last-Modified.
        """
        h = Harness(HTTP)
        h.serve("/h", last_modified=datetimeToString(h.clock.seconds() - 1000).decode())
        h.get("/h")
        h.clock.advance(99)
        self.assertEqual(h.get("/h")[2], "phantom-frame; hit; ttl=1")

    def test_not_stored_without_freshness_or_validator(self) -> None:
        """
        A response with neither freshness nor a validator is not stored.
        """
        h = Harness(HTTP)
        h.serve("/x")
        h.get("/x")
        self.assertEqual(h.get("/x")[2], "phantom-frame; fwd=uri-miss; detail=no-freshness")
        self.assertEqual(h.origin.hits("/x"), 2)

    def test_no_cache_response(self) -> None:
        """
        A no-cache response is stored but revalidated before every use.
        """
        h = Harness(HTTP)
        h.serve("/nc", cache_control="no-cache", etag='"n"')
        h.get("/nc")
        h.origin.answers["/nc"] = lambda headers: (304, {"etag": '"n"'}, b"")
        response, body, status = h.get("/nc")
        self.assertEqual((body, status), (b"body", "phantom-frame; fwd=stale; fwd-status=304"))
        self.assertEqual(h.get("/nc")[2], "phantom-frame; fwd=stale; fwd-status=304")

    def test_must_revalidate(self) -> None:
        """
        A stale must-revalidate entry is never served stale: with the
        origin down, the error is returned even with stale-if-error.
        """
        h = Harness(HTTP)
        h.serve("/mr", cache_control="max-age=5, must-revalidate, stale-if-error=100")
        h.get("/mr")
        h.clock.advance(10)
        h.switch.down = True
        self.assertEqual(h.get("/mr")[0].code, 502)
        self.assertEqual(h.get("/mr", cache_control="max-stale=100")[0].code, 502)
        self.flushLoggedErrors()

    def test_response_stale_directives(self) -> None:
        """
        stale-while-revalidate and stale-if-error from the response
        (RFC 5861).
        """
        h = Harness(HTTP)
        h.serve("/sw", cache_control="max-age=5, stale-while-revalidate=20, stale-if-error=60")
        h.get("/sw")
        h.clock.advance(10)
        self.assertEqual(h.get("/sw")[2], "phantom-frame; hit; detail=stale")
        h.clock.advance(40)
        h.switch.down = True
        self.assertEqual(h.get("/sw")[2], "phantom-frame; hit; detail=stale")
        self.flushLoggedErrors()

    def test_request_directives(self) -> None:
        """
        max-age, min-fresh, no-cache, Pragma: no-cache, max-stale,
        only-if-cached and no-store.
        """
        h = Harness(HTTP)
        h.serve("/d", cache_control="max-age=100", etag='"d"')
        h.get("/d")
        h.clock.advance(50)
        self.assertEqual(h.get("/d")[2], "phantom-frame; hit; ttl=50")
        self.assertIn("fwd=stale", h.get("/d", cache_control="max-age=10")[2])
        h.clock.advance(50 - 1)
        self.assertIn("fwd=stale", h.get("/d", cache_control="min-fresh=150")[2])
        self.assertIn("fwd=stale", h.get("/d", cache_control="no-cache")[2])
        self.assertIn("fwd=stale", h.get("/d", pragma="no-cache")[2])
        hits = h.origin.hits("/d")
        h.clock.advance(200)
        self.assertEqual(h.get("/d", cache_control="max-stale=500")[2], "phantom-frame; hit; detail=stale")
        self.assertEqual(h.origin.hits("/d"), hits)
        response, _, _ = h.get("/nothing", cache_control="only-if-cached")
        self.assertEqual(response.code, 504)
        self.assertEqual(h.get("/d", cache_control="only-if-cached, max-stale")[0].code, 200)
        h.serve("/ns", cache_control="max-age=100")
        h.get("/ns", cache_control="no-store")
        self.assertEqual(h.get("/ns")[2], "phantom-frame; fwd=uri-miss; stored")

    def test_authorization(self) -> None:
        """
        Responses to authorized requests are stored only when public,
        s-maxage or must-revalidate allow it.
        """
        h = Harness(HTTP)
        h.serve("/p", cache_control="max-age=60")
        h.get("/p", authorization="Bearer a")
        self.assertEqual(h.get("/p", authorization="Bearer b")[2], "phantom-frame; fwd=uri-miss; detail=authorization")
        h.serve("/q", cache_control="public, max-age=60")
        h.get("/q", authorization="Bearer a")
        self.assertEqual(h.get("/q", authorization="Bearer b")[2], "phantom-frame; hit; ttl=60")

    def test_unsafe_methods_invalidate(self) -> None:
        """
        A successful POST invalidates its target and same-origin Location
        and Content-Location; an error or another host does not.
        """
        h = Harness(HTTP)
        for path in ("/items", "/items/5", "/other"):
            h.serve(path, cache_control="max-age=600")
            h.get(path)
        h.origin.answers["/items"] = lambda headers: (
            (201, {"location": "/items/5", "content-location": "http://elsewhere.test/other"}, b"")
            if h.origin.requests[-1][0] == "POST" else (200, {"cache-control": "max-age=600"}, b"x")
        )
        response, _, _ = h.get("/items", method="POST")
        self.assertEqual(response.code, 201)
        self.assertEqual(h.get("/items")[2], "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(h.get("/items/5")[2], "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(h.get("/other")[2], "phantom-frame; hit; ttl=600")
        h.serve("/kept", cache_control="max-age=600")
        h.get("/kept")
        h.origin.answers["/kept"] = lambda headers: (500, {}, b"")
        h.get("/kept", method="DELETE")
        self.assertEqual(h.get("/kept")[2], "phantom-frame; hit; ttl=600")

    def test_cdn_cache_control(self) -> None:
        """
        CDN-Cache-Control takes precedence over Cache-Control.
        """
        h = Harness(HTTP)
        h.serve("/cdn", cache_control="no-cache", cdn_cache_control="max-age=60")
        h.get("/cdn")
        self.assertEqual(h.get("/cdn")[2], "phantom-frame; hit; ttl=60")

    def test_malformed(self) -> None:
        """
        Malformed directives, dates and Age values never break anything:
        invalid freshness is treated as stale, a bad Age is ignored.
        """
        h = Harness(HTTP)
        h.serve("/bad1", cache_control="max-age=abc", etag='"b"')
        h.serve("/bad2", cache_control="max-age=10, max-age=20", etag='"b"')
        h.serve("/bad3", expires="0", etag='"b"')
        h.serve("/bad4", cache_control="max-age=60", age="banana")
        h.serve("/bad5", cache_control=",, MAX-AGE=60 ,=,", date="garbage")
        for path in ("/bad1", "/bad2", "/bad3"):
            h.get(path)
            self.assertIn("fwd=stale", h.get(path)[2], path)
        for path in ("/bad4", "/bad5"):
            h.get(path)
            self.assertEqual(h.get(path)[2], "phantom-frame; hit; ttl=60", path)
