"""
Origins that break: bodies cut short or malformed, connections closed or
reset, answers that never come -- over raw sockets, since only the wire
shows them. What the client gets (a 502 before anything was sent, a cut
connection after), what is logged (one warning, never a traceback), what
is stored (nothing), and when a stale page stands in for the failure.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from phantom_frame import CacheStrategy, CreateProxyConfig

from tests.proxy.raw import RawProxy, hold, reset, response

PRERENDER = CreateProxyConfig("http://unused.test")
HTTP = PRERENDER._with(cache_policy="http")

GOOD = response("200 OK", b"good page", "Content-Type: text/html")

#: Content-Length: 1000, then 100 bytes, then the connection closes.
TRUNCATED = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100
#: Content-Length: 1000, then nothing.
NO_BODY = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n"
_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
#: A chunk size that is not a number, before any chunk.
MALFORMED = _CHUNKED + b"zz\r\n"
#: One chunk, then the connection closes.
CUT_CHUNKED = _CHUNKED + b"5\r\nhello\r\n"
#: One chunk, then garbage.
MALFORMED_LATER = _CHUNKED + b"5\r\nhello\r\nzz\r\n"

#: Faults that break the body before its first byte.
EARLY = {"no body": NO_BODY, "malformed chunks": MALFORMED}
#: Faults that break it after some bytes.
LATE = {"truncated": TRUNCATED, "cut chunks": CUT_CHUNKED, "malformed later": MALFORMED_LATER}
BODY_FAULTS = {**EARLY, **LATE}


def with_headers(fault: bytes, *headers: str) -> bytes:
    """
    @return: C{fault} with more headers in its head.
    """
    extra = "".join(h + "\r\n" for h in headers).encode("latin-1")
    return fault.replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\n" + extra, 1)


class FillFaultTests(TestCase):
    """
    A fill buffers the body before storing it: a broken body is a 502,
    never stored, never a 500.
    """

    async def test_broken_body_is_502(self) -> None:
        """
        A body cut short (Content-Length not reached, last chunk missing)
        or malformed (a chunk size that is not one) gives the client a 502
        with C{detail=origin-error}, one warning naming the fault, no
        traceback; nothing is stored, so the next request fills again.
        """
        for name, fault in BODY_FAULTS.items():
            proxy = RawProxy(self, PRERENDER, [fault, GOOD])
            answer = await proxy.get()
            self.assertEqual(answer.code, 502, name)
            self.assertTrue(answer.clean, name)
            self.assertEqual(answer.headers["cache-status"], "phantom-frame; fwd=uri-miss; detail=origin-error", name)
            warnings = proxy.warnings()
            self.assertEqual(len(warnings), 1, (name, warnings))
            self.assertIn("body cut short", warnings[0], name)
            self.assertEqual(proxy.tracebacks(), [], name)
            answer = await proxy.get()
            self.assertEqual((answer.code, answer.body), (200, b"good page"), name)
            self.assertEqual(answer.headers["cache-status"], "phantom-frame; fwd=uri-miss; stored", name)
            self.assertEqual(len(proxy.origin.heads), 2, name)

    async def test_http_policy(self) -> None:
        """
        The same under the http policy, for a response it would store.
        """
        proxy = RawProxy(self, HTTP, [with_headers(TRUNCATED, "Cache-Control: max-age=60"), GOOD])
        answer = await proxy.get()
        self.assertEqual(answer.code, 502)
        self.assertEqual(len(proxy.warnings()), 1)


class PassthroughFaultTests(TestCase):
    """
    Pass-through streams: a body that breaks before its first byte is a
    502; after, the client's connection is cut short.
    """

    configs = {
        "strategy none": PRERENDER.with_cache_strategy(CacheStrategy.NONE),
        "excluded": PRERENDER.with_exclude_paths(["/page"]),
    }

    async def test_broken_before_first_byte(self) -> None:
        """
        Nothing was sent to the client yet: it gets a 502 with
        C{fwd=bypass; detail=origin-error}, and one warning is logged.
        """
        for label, config in self.configs.items():
            for name, fault in EARLY.items():
                proxy = RawProxy(self, config, [fault])
                answer = await proxy.get()
                self.assertEqual(answer.code, 502, (label, name))
                self.assertEqual(
                    answer.headers["cache-status"], "phantom-frame; fwd=bypass; detail=origin-error", (label, name)
                )
                self.assertEqual(len(proxy.warnings()), 1, (label, name))
                self.assertEqual(proxy.tracebacks(), [], (label, name))

    async def test_broken_mid_body(self) -> None:
        """
        The head went out with the first bytes: the client's connection is
        aborted (never a 500, never a clean end that would pass for a whole
        body), and one warning is logged.
        """
        for label, config in self.configs.items():
            for name, fault in LATE.items():
                proxy = RawProxy(self, config, [fault])
                answer = await proxy.get()
                self.assertFalse(answer.clean, (label, name))
                self.assertIn(answer.code, (None, 200), (label, name))
                warnings = proxy.warnings()
                self.assertEqual(len(warnings), 1, (label, name, warnings))
                self.assertIn("mid-body", warnings[0], (label, name))
                self.assertEqual(proxy.tracebacks(), [], (label, name))

    async def test_not_storable_fill(self) -> None:
        """
        A fill whose answer turns out not storable streams it like a
        pass-through, and breaks the same way.
        """
        proxy = RawProxy(self, PRERENDER, [with_headers(NO_BODY, "Set-Cookie: a=1")])
        answer = await proxy.get()
        self.assertEqual(answer.code, 502)
        self.assertEqual(answer.headers["cache-status"], "phantom-frame; fwd=uri-miss; detail=origin-error")
        proxy = RawProxy(self, PRERENDER, [with_headers(TRUNCATED, "Set-Cookie: a=1")])
        answer = await proxy.get()
        self.assertFalse(answer.clean)
        self.assertEqual(len(proxy.warnings()), 1)


class StaleOnBrokenRefreshTests(TestCase):
    """
    A broken answer to the refresh of a stale entry is an error for
    C{stale_if_error} / C{stale-if-error}: the stale page is served, as
    nginx's C{proxy_cache_use_stale} does.
    """

    STALE = "phantom-frame; hit; detail=stale"

    async def stale_after(self, config: CreateProxyConfig, first: bytes, fault: bytes, label: str) -> RawProxy:
        """
        Store C{first}, let it go stale, and ask again while the origin
        answers with C{fault}: the stale page must come back.
        """
        proxy = RawProxy(self, config, [first, fault])
        self.assertEqual((await proxy.get()).code, 200, label)
        proxy.clock.advance(20)
        answer = await proxy.get()
        self.assertEqual((answer.code, answer.body), (200, b"good page"), label)
        self.assertEqual(answer.headers["cache-status"], self.STALE, label)
        self.assertEqual(proxy.tracebacks(), [], label)
        self.assertEqual(len(proxy.origin.heads), 2, label)
        return proxy

    async def test_prerender(self) -> None:
        """
        Prerender policy with C{cache_ttl} and C{stale_if_error}.
        """
        config = PRERENDER._with(cache_ttl=10, stale_if_error=100)
        for name, fault in BODY_FAULTS.items():
            await self.stale_after(config, GOOD, fault, name)

    async def test_http_policy(self) -> None:
        """
        http policy with the response's C{stale-if-error}: whether the
        broken answer would have been stored or not.
        """
        first = response("200 OK", b"good page", "Content-Type: text/html", "Cache-Control: max-age=10, stale-if-error=100")
        for name, fault in BODY_FAULTS.items():
            await self.stale_after(HTTP, first, with_headers(fault, "Cache-Control: max-age=10"), name + " storable")
            await self.stale_after(HTTP, first, fault, name + " not storable")


#: Revalidation failures that are not a broken body.
CLOSED = {
    "closed": b"",
    "reset": reset,
    "closed mid-head": b"HTTP/1.1 200 OK\r\nContent-Ty",
    "5xx": response("503 Service Unavailable", b"down", "Content-Type: text/plain"),
}


class RevalidationErrorTests(TestCase):
    """
    RFC 9111 §4.2.4 and RFC 5861: an origin that closes or resets the
    connection, or never answers, during a revalidation is an error for
    C{stale-if-error} and C{max-stale}; C{must-revalidate},
    C{proxy-revalidate}, C{no-cache} and C{s-maxage} still forbid serving
    stale.
    """

    async def revalidate(self, cache_control: str, fault, *request: str):
        """
        Store a page with C{cache_control}, let it go stale, and ask again
        (with C{request} headers) while the origin answers with C{fault}.

        @return: the proxy and the answer.
        """
        proxy = RawProxy(
            self,
            HTTP,
            [response("200 OK", b"good page", "Content-Type: text/html", 'ETag: "g"', "Cache-Control: " + cache_control), fault],
        )
        await proxy.get()
        proxy.clock.advance(20)
        return proxy, await proxy.get("/page", *request)

    async def test_stale_if_error(self) -> None:
        """
        With C{stale-if-error}, each failure gives the stale page.
        """
        for name, fault in CLOSED.items():
            proxy, answer = await self.revalidate("max-age=10, stale-if-error=100", fault)
            self.assertEqual((answer.code, answer.body), (200, b"good page"), name)
            self.assertEqual(answer.headers["cache-status"], "phantom-frame; hit; detail=stale", name)

    async def test_max_stale(self) -> None:
        """
        The client's C{max-stale} allows the same.
        """
        for name, fault in CLOSED.items():
            proxy, answer = await self.revalidate("max-age=10", fault, "Cache-Control: max-stale=100")
            self.assertEqual((answer.code, answer.body), (200, b"good page"), name)

    async def test_timeout(self) -> None:
        """
        An origin that does not answer within C{upstream_timeout} is an
        error too.
        """
        proxy = RawProxy(
            self,
            HTTP,
            [response("200 OK", b"good page", "Content-Type: text/html", "Cache-Control: max-age=10, stale-if-error=100"), hold],
        )
        await proxy.get()
        proxy.clock.advance(20)
        received = proxy.origin.received()
        pending = proxy.get()
        await received
        proxy.clock.advance(30)
        answer = await pending
        self.assertEqual((answer.code, answer.body), (200, b"good page"))

    async def test_forbidden(self) -> None:
        """
        C{must-revalidate}, C{proxy-revalidate}, C{no-cache} and C{s-maxage}
        (which implies C{proxy-revalidate} for a shared cache) make the
        failure a 502, whatever C{stale-if-error} and C{max-stale} say.
        """
        for directive in ("must-revalidate", "proxy-revalidate", "no-cache"):
            for name, fault in CLOSED.items():
                if name == "5xx":
                    continue
                cache_control = f"max-age=10, {directive}, stale-if-error=100"
                proxy, answer = await self.revalidate(cache_control, fault, "Cache-Control: max-stale=100")
                self.assertEqual(answer.code, 502, (directive, name))
                self.assertEqual(
                    answer.headers["cache-status"], "phantom-frame; fwd=stale; detail=origin-error", (directive, name)
                )
        for name, fault in CLOSED.items():
            if name == "5xx":
                continue
            proxy, answer = await self.revalidate("s-maxage=10, stale-if-error=100", fault, "Cache-Control: max-stale=100")
            self.assertEqual(answer.code, 502, ("s-maxage", name))

    async def test_s_maxage_with_stale_while_revalidate(self) -> None:
        """
        A response that grants C{stale-while-revalidate} beside
        C{s-maxage} keeps it (Next.js sends both): the stale page is served
        while one refresh runs.
        """
        proxy = RawProxy(
            self,
            HTTP,
            [
                response("200 OK", b"good page", "Content-Type: text/html", "Cache-Control: s-maxage=10, stale-while-revalidate=100"),
                response("200 OK", b"new page", "Content-Type: text/html", "Cache-Control: s-maxage=10"),
            ],
        )
        await proxy.get()
        proxy.clock.advance(20)
        received = proxy.origin.received()
        answer = await proxy.get()
        self.assertEqual((answer.body, answer.headers["cache-status"]), (b"good page", "phantom-frame; hit; detail=stale"))
        await received

