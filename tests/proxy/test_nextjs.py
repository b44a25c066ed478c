"""
The proxy in front of a Next.js-like origin (L{tests.nextjs}), end to end in
memory on a L{task.Clock}, under the C{http} cache policy (RFC 9111): RSC
payloads and HTML on one URL, build assets, ISR pages served stale with one
background refresh, per-user JSON, and images varying on C{Accept}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config
from tests.memory import Proxy
from tests.nextjs import ASSETS, PAGE_VARY, NextApp, html_page, rsc_payload, whoami

#: Next.js 15's C{Cache-Control} for C{revalidate = 10} (C{expireTime}
#: of a year).
ISR_15 = "s-maxage=10, stale-while-revalidate=31535990"


def header(response: Any, name: str) -> Optional[str]:
    """
    @return: the response header's first value, decoded, or L{None}.
    """
    values = response.headers.getRawHeaders(name.encode("latin-1"))
    return values[0].decode("latin-1") if values else None


class NextTests(SynchronousTestCase):
    """
    The proxy, with C{cache_policy = "http"}, in front of L{NextApp}.
    """

    #: The C{Cache-Control} of ISR pages (Next.js 15's spelling).
    isr = ISR_15

    def setUp(self) -> None:
        self.origin = NextApp(isr_cache_control=self.isr)
        config = parse_config(
            {"server": {"site": {"proxy_url": "http://next.example", "cache_policy": "http"}}}
        )
        self.proxy = Proxy(self, config, self.origin)
        self.origin.clock = self.proxy.clock
        self.proxy.clock.advance(1_700_000_000)

    def get(self, path: str, **headers: str) -> Tuple[Any, bytes, str]:
        """
        @param headers: request headers, C{_} for C{-}.
        @return: the response, its body and its C{Cache-Status}.
        """
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        response, body = self.proxy.get(self, path, headers=named)
        return response, body, header(response, "cache-status") or ""

    def test_rscAndHtmlNeverMixed(self) -> None:
        """
        On one C{?_rsc=} URL the client router's request (C{rsc: 1}) gets the
        RSC payload and a browser's gets HTML, each stored as its own
        variant and each served again only to its own kind; a prefetch and
        another router state are variants of their own too. The origin's
        C{Vary} reaches clients as it sent it.
        """
        url = "/about?_rsc=3k9x1"
        for _ in range(2):
            response, body, _ = self.get(url, rsc="1")
            self.assertEqual(header(response, "content-type"), "text/x-component")
            self.assertEqual(body, rsc_payload("About"))
            response, body, _ = self.get(url)
            self.assertEqual(header(response, "content-type"), "text/html; charset=utf-8")
            self.assertEqual(body, html_page("About"))
        self.assertIn("hit", self.get(url, rsc="1")[2])
        self.assertIn("hit", self.get(url)[2])
        self.assertEqual(self.origin.hits(url), 2)
        response, body, _ = self.get(url, rsc="1", next_router_prefetch="1")
        self.assertEqual(body, rsc_payload("About", "prefetch"))
        self.assertEqual(self.get(url, rsc="1")[1], rsc_payload("About"))
        self.get(url, rsc="1", next_router_state_tree="%5B%22%22%2C%7B%7D%5D")
        self.assertEqual(self.origin.hits(url), 4)
        sent = {name.strip().lower() for name in header(response, "vary").split(",")}
        self.assertLessEqual({name.strip().lower() for name in PAGE_VARY.split(",")}, sent)

    def test_prerenderedPage(self) -> None:
        """
        A prerendered page (C{s-maxage=31536000}) is stored once and served
        from the cache a year on.
        """
        _, body, status = self.get("/blog/hello")
        self.assertIn("stored", status)
        self.proxy.clock.advance(364 * 86400)
        response, again, status = self.get("/blog/hello")
        self.assertEqual(again, body)
        self.assertIn("hit", status)
        self.assertEqual(header(response, "x-nextjs-cache"), "HIT")
        self.assertEqual(self.origin.hits("/blog/hello"), 1)

    def test_staticAssets(self) -> None:
        """
        Build assets (C{public, max-age=31536000, immutable}) are stored on
        first use and then hit, with the origin's C{Cache-Control} passed on.
        """
        for path, (kind, content) in ASSETS.items():
            first, body, status = self.get(path)
            self.assertIn("stored", status)
            for _ in range(3):
                response, again, status = self.get(path)
                self.assertIn("hit", status)
                self.assertEqual(again, content)
            self.assertEqual(header(response, "cache-control"), "public, max-age=31536000, immutable")
            self.assertEqual(header(response, "content-type"), kind)
            self.assertEqual(self.origin.hits(path), 1)

    def test_isrStaleWhileRevalidate(self) -> None:
        """
        An ISR page is fresh for 10 s; then every request gets the stored
        page at once, stale, while one background request refreshes it; the
        page the refresh brings is served from then on. (Next.js's own ISR
        cache answers that refresh with its previous rendering, C{STALE},
        while it renders the next, so the proxy's copy trails it by one.)
        """
        self.assertIn("stored", self.get("/isr/news")[2])
        self.proxy.clock.advance(5)
        self.assertIn("hit", self.get("/isr/news")[2])
        self.assertEqual(self.origin.hits("/isr/news"), 1)
        self.proxy.clock.advance(6)
        self.origin.holding = True
        for _ in range(3):
            response, body, status = self.get("/isr/news")
            self.assertEqual(status, "phantom-frame; hit; detail=stale")
            self.assertEqual(header(response, "x-nextjs-cache"), "MISS")
            self.assertIn(b"<title>news #1</title>", body)
        self.assertEqual(self.origin.hits("/isr/news"), 2)
        self.assertEqual(self.origin.release(), 1)
        self.proxy.settle()
        response, body, status = self.get("/isr/news")
        self.assertIn("hit", status)
        self.assertEqual(header(response, "x-nextjs-cache"), "STALE")
        self.assertEqual(self.origin.renders["/isr/news"], 2)
        self.proxy.clock.advance(11)
        _, stale, status = self.get("/isr/news")
        self.assertEqual(status, "phantom-frame; hit; detail=stale")
        self.assertEqual(stale, body)
        self.assertEqual(self.origin.hits("/isr/news"), 3)
        response, fresh, status = self.get("/isr/news")
        self.assertIn("hit", status)
        self.assertIn(b"<title>news #2</title>", fresh)
        self.assertEqual(self.origin.renders["/isr/news"], 3)

    def test_whoamiNeverShared(self) -> None:
        """
        A route that reads a cookie and sends no C{Cache-Control} is never
        stored: each visitor gets their own answer, from the origin.
        """
        visitors: List[Optional[str]] = ["alice", "bob", None, "alice"]
        for user in visitors:
            headers: Dict[str, str] = {} if user is None else {"cookie": "user=" + user}
            _, body, status = self.get("/api/whoami", **headers)
            self.assertEqual(body, whoami(user))
            self.assertNotIn("hit", status)
            self.assertNotIn("stored", status)
        self.assertEqual(self.origin.hits("/api/whoami"), len(visitors))

    def test_imagesVaryOnAccept(self) -> None:
        """
        The image optimiser's answers (C{Vary: Accept}) are stored per
        C{Accept}: a WebP browser and a PNG-only client each get their own,
        and equivalent C{Accept} values (case, spaces, q spelling) share
        one.
        """
        url = "/_next/image?url=%2Fhero.png&w=640&q=75"
        webp = "image/avif,image/webp,*/*;q=0.8"
        response, body, status = self.get(url, accept=webp)
        self.assertEqual(header(response, "content-type"), "image/webp")
        self.assertIn("stored", status)
        response, body, status = self.get(url, accept="*/*;q=0.8")
        self.assertEqual(header(response, "content-type"), "image/png")
        self.assertIn("stored", status)
        for same in ["image/avif, image/webp, */*;q=0.80", "Image/AVIF,image/webp, */*; Q=0.8"]:
            response, _, status = self.get(url, accept=same)
            self.assertIn("hit", status, same)
            self.assertEqual(header(response, "content-type"), "image/webp")
        self.assertEqual(self.origin.hits(url), 2)


class Next14Tests(NextTests):
    """
    The same with Next.js 14's ISR header: a bare C{stale-while-revalidate}
    (no seconds) serves stale with one background refresh too.
    """

    isr = "s-maxage=10, stale-while-revalidate"

