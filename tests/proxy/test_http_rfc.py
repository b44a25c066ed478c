"""
RFC 9111 details of reading origin responses, through the whole proxy in
memory (the L{Harness} of L{tests.proxy.test_http_semantics}): statuses and
freshness, an invalid C{Date}, C{CDN-Cache-Control}, C{must-understand},
C{If-Modified-Since} without C{Last-Modified}, a 5xx answering a
revalidation, bodies in a coding phantom-frame cannot undo, and POST
answers that may answer GETs.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from tests.proxy.test_http_semantics import HTTP, PRERENDER, Harness, header


class StatusFreshnessTests(SynchronousTestCase):
    """
    http policy: any final status with explicit freshness is stored;
    heuristics for RFC 9110 §15.1's statuses (501 included) and C{public}.
    """

    def test_explicit_any_status(self) -> None:
        """
        299, 4xx and 5xx answers with C{max-age} are stored and served
        from the cache.
        """
        h = Harness(HTTP)
        for code in (299, 400, 499, 500, 502, 503, 504, 599):
            path = "/s%d" % code
            h.serve(path, code=code, body=b"status", cache_control="max-age=100000")
            self.assertEqual(h.get(path)[0].code, code)
            response, body, status = h.get(path)
            self.assertEqual((response.code, body, status), (code, b"status", "phantom-frame; hit; ttl=100000"), code)
            self.assertEqual(h.origin.hits(path), 1, code)

    def test_heuristic(self) -> None:
        """
        A 501 with Last-Modified gets a heuristic lifetime; so does a 599
        marked C{public}.
        """
        h = Harness(HTTP)
        modified = datetimeToString(h.clock.seconds() - 1000).decode()
        h.serve("/h501", code=501, last_modified=modified)
        h.serve("/h599", code=599, last_modified=modified, cache_control="public")
        for path in ("/h501", "/h599"):
            h.get(path)
            self.assertEqual(h.get(path)[2], "phantom-frame; hit; ttl=100", path)

    def test_prerender_unchanged(self) -> None:
        """
        The prerender policy never stores a 5xx, whatever its freshness.
        """
        h = Harness(PRERENDER)
        h.serve("/p", code=503, cache_control="max-age=100000")
        h.get("/p")
        self.assertEqual(h.get("/p")[2], "phantom-frame; fwd=uri-miss; detail=status")

    def test_invalid_date(self) -> None:
        """
        An invalid C{Date} is the time the response was received: C{Expires}
        counts from it (never zero freshness).
        """
        h = Harness(HTTP)
        h.serve("/d", date="Thu, 18  Aug  2050 02:01:18 GMT", expires=datetimeToString(h.clock.seconds() + 100).decode())
        h.get("/d")
        h.clock.advance(40)
        self.assertEqual(h.get("/d")[2], "phantom-frame; hit; ttl=60")

    def test_5xx_never_replaces_on_revalidation(self) -> None:
        """
        A 5xx answering a revalidation is relayed, never stored over the
        page (RFC 9111 §4.3.3), even with explicit freshness.
        """
        h = Harness(HTTP)
        h.serve("/r", body=b"page", cache_control="max-age=10")
        h.get("/r")
        h.clock.advance(20)
        h.serve("/r", code=503, body=b"down", cache_control="max-age=100000")
        response, body, status = h.get("/r")
        self.assertEqual((response.code, body, status), (503, b"down", "phantom-frame; fwd=stale; detail=status"))
        h.serve("/r", body=b"back", cache_control="max-age=10")
        response, body, status = h.get("/r")
        self.assertEqual((response.code, body, status), (200, b"back", "phantom-frame; fwd=stale; fwd-status=200; stored"))


class DirectiveTests(SynchronousTestCase):
    """
    C{CDN-Cache-Control} (RFC 9213) and C{must-understand} (RFC 9111
    §5.2.2.3).
    """

    def test_cdn_cache_control_over_no_store(self) -> None:
        """
        C{Cache-Control: no-store} with C{CDN-Cache-Control: max-age=60} is
        stored for 60 s, in both policies.
        """
        for config in (HTTP, PRERENDER._with(cache_ttl=60)):
            h = Harness(config)
            h.serve("/cdn", cache_control="no-store", cdn_cache_control="max-age=60")
            h.get("/cdn")
            self.assertEqual(h.get("/cdn")[2], "phantom-frame; hit; ttl=60", config.cache_policy)
            h.clock.advance(61)
            self.assertIn("fwd=stale", h.get("/cdn")[2], config.cache_policy)

    def test_must_understand(self) -> None:
        """
        C{no-store, must-understand} on a 200 is storable.
        """
        h = Harness(HTTP)
        h.serve("/mu", cache_control="no-store, must-understand, max-age=60")
        h.get("/mu")
        self.assertEqual(h.get("/mu")[2], "phantom-frame; hit; ttl=60")


class IfModifiedSinceTests(SynchronousTestCase):
    """
    RFC 9111 §4.3.2: an entry without C{Last-Modified} is compared by its
    C{Date}, or by when it was received.
    """

    def test_by_date(self) -> None:
        """
        At or after the entry's Date: 304; before: 200.
        """
        h = Harness(PRERENDER)
        date = datetimeToString(h.clock.seconds()).decode()
        h.serve("/d")
        h.get("/d")
        h.clock.advance(50)
        self.assertEqual(h.get("/d", if_modified_since=date)[0].code, 304)
        earlier = datetimeToString(h.clock.seconds() - 100).decode()
        self.assertEqual(h.get("/d", if_modified_since=earlier)[0].code, 200)

    def test_by_time_received(self) -> None:
        """
        Without a valid Date either, the time the entry was received counts.
        """
        h = Harness(PRERENDER)
        h.serve("/n", date="garbage")
        h.get("/n")
        received = h.clock.seconds()
        h.clock.advance(50)
        self.assertEqual(h.get("/n", if_modified_since=datetimeToString(received + 10).decode())[0].code, 304)
        self.assertEqual(h.get("/n", if_modified_since=datetimeToString(received - 10).decode())[0].code, 200)


class OpaqueCodingTests(SynchronousTestCase):
    """
    A body in a coding phantom-frame cannot undo is the origin's
    representation: stored, never re-encoded, sent to everyone as it is.
    """

    def test_stored_as_is(self) -> None:
        """
        Under brotli storage, whatever the client accepts.
        """
        body = b"\x00opaque" * 1000
        for config in (PRERENDER, HTTP._with(cache_ttl=None)):
            h = Harness(config, compress="brotli")
            h.serve("/o", body=body, content_encoding="x-custom", cache_control="max-age=60")
            h.get("/o")
            for accept in ("br", "gzip", "identity", None):
                headers = {} if accept is None else {"accept_encoding": accept}
                response, received, status = h.get("/o", **headers)
                self.assertEqual(received, body, accept)
                self.assertEqual(header(response, "content-encoding"), "x-custom", accept)
                self.assertTrue(status.startswith("phantom-frame; hit"), (accept, status))
            self.assertEqual(h.origin.hits("/o"), 1)


class PostContentLocationTests(SynchronousTestCase):
    """
    RFC 9110 §9.3.3, RFC 9111 §4: a POST answer whose C{Content-Location} is
    its own target, with explicit freshness, may answer later GETs.
    """

    def post_answer(self, h: Harness, path: str, **headers: str) -> None:
        """
        Make the origin answer a POST of C{path} with these headers, and a
        GET with a page of its own.
        """
        posted = {"content-type": "text/plain"}
        posted.update({k.replace("_", "-"): v for k, v in headers.items()})

        def answer(request_headers):
            if h.origin.requests[-1][0] == "POST":
                return 200, posted, b"posted"
            return 200, {"content-type": "text/plain", "cache-control": "max-age=60"}, b"fetched"

        h.origin.answers[path] = answer

    def test_stored_for_get(self) -> None:
        """
        The GET is answered from the POST's answer, without the origin.
        """
        h = Harness(HTTP)
        self.post_answer(h, "/items/5", content_location="/items/5", cache_control="max-age=60")
        response, body, _ = h.get("/items/5", method="POST")
        self.assertEqual(body, b"posted")
        response, body, status = h.get("/items/5")
        self.assertEqual((body, status), (b"posted", "phantom-frame; hit; ttl=60"))
        self.assertEqual(h.origin.hits("/items/5"), 1)

    def test_not_stored(self) -> None:
        """
        Not with another Content-Location, without explicit freshness,
        with no-store, or under the prerender policy.
        """
        cases = [
            (HTTP, {"content_location": "/items/6", "cache_control": "max-age=60"}),
            (HTTP, {"content_location": "http://elsewhere.test/items/5", "cache_control": "max-age=60"}),
            (HTTP, {"content_location": "/items/5"}),
            (HTTP, {"content_location": "/items/5", "cache_control": "no-store, max-age=60"}),
            (PRERENDER, {"content_location": "/items/5", "cache_control": "max-age=60"}),
        ]
        for config, headers in cases:
            h = Harness(config)
            self.post_answer(h, "/items/5", **headers)
            h.get("/items/5", method="POST")
            response, body, status = h.get("/items/5")
            self.assertEqual((body, status), (b"fetched", "phantom-frame; fwd=uri-miss; stored"), headers)
