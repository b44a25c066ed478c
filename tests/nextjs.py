"""
A Next.js-like origin made of twisted.web resources, for tests of the proxy
in front of an App Router site (C{next start}): the headers and caching
behaviour of Next.js, with none of its rendering.

What it answers, on a clock the test drives:

  - Pages (L{STATIC_PAGES}, prerendered at build time): HTML, or the page's
    React Server Components payload (C{text/x-component}) when the request
    carries C{rsc: 1}, on the same URL (the client router asks for
    C{/about?_rsc=3k9x1} with C{rsc: 1}; the same URL without it gets
    HTML). Every page and payload says C{Vary: rsc, next-router-state-tree,
    next-router-prefetch, next-router-segment-prefetch, Accept-Encoding}
    and C{x-nextjs-cache}. Prerendered pages are
    C{Cache-Control: s-maxage=31536000} and always C{x-nextjs-cache: HIT}.
  - ISR pages (C{/isr/NAME}, C{export const revalidate = 10}):
    C{Cache-Control: s-maxage=10, stale-while-revalidate} (the spelling of
    Next.js 14; L{NextApp.isr_cache_control} sets another, such as Next.js
    15's C{s-maxage=10, stale-while-revalidate=31535990}). Next.js keeps
    its own ISR cache: the first request renders (C{MISS}); within 10 s of
    a rendering a request gets it again (C{HIT}); later, it gets the old
    rendering (C{STALE}) while a new one is made for the next request. Each
    rendering counts (L{NextApp.renders}), so each gives a new body.
  - C{/_next/static/...}: build assets, C{public, max-age=31536000,
    immutable}; unknown ones are 404.
  - C{/api/whoami}: a route handler that reads the C{user} cookie and
    answers C{{"user": VALUE}} (C{null} without it), with no
    C{Cache-Control} at all, as a dynamic route handler does.
  - C{/_next/image?url=...&w=...&q=...}: the image optimiser, C{Vary:
    Accept}, WebP for clients that accept it, PNG otherwise,
    C{public, max-age=60, must-revalidate}.
  - Anything else: the not-found page, 404, C{private, no-cache, no-store,
    max-age=0, must-revalidate}.

Next.js's server closes idle keep-alive connections after 5 seconds
(Node's C{keepAliveTimeout}), so a proxy's pooled connection may be closed
under it just as it sends; that matters on real sockets only, never in
memory, where the proxy reaches this origin through a
L{treq.testing.RequestTraversalAgent} without connections.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: The C{Vary} of every page and RSC payload.
PAGE_VARY = "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch, Accept-Encoding"

#: Prerendered pages: path to title.
STATIC_PAGES = {"/": "Home", "/about": "About", "/blog/hello": "Hello"}

#: Build assets: path to content type and body.
ASSETS = {
    "/_next/static/chunks/app-4f1c.js": ("application/javascript; charset=UTF-8", b"(self.webpackChunk=[]).push([4])"),
    "/_next/static/css/7a2e.css": ("text/css; charset=UTF-8", b"body{margin:0}"),
}

#: How long an ISR rendering is fresh for Next.js itself, in seconds.
REVALIDATE = 10


class NextApp(Resource):
    """
    The Next.js-like origin (see the module's docstring).

    @ivar requests: every request: method, path with query, lower-cased
        headers (repeated ones joined with C{", "}).
    @ivar renders: how many times each ISR page was rendered.
    @ivar isr_cache_control: the C{Cache-Control} of ISR pages.
    @ivar clock: gives C{Date} and ages ISR renderings (a test in front of
        which a proxy builds its own clock sets it to that).
    @ivar holding: whether requests are held, unanswered, until
        L{release}: a slow origin, to catch the proxy with a request in
        flight.
    """

    isLeaf = True

    def __init__(
        self, clock: Optional[IReactorTime] = None, isr_cache_control: str = "s-maxage=10, stale-while-revalidate"
    ) -> None:
        """
        @param clock: gives C{Date} and ages ISR renderings.
        @param isr_cache_control: the C{Cache-Control} of ISR pages.
        """
        super().__init__()
        self.clock = clock
        self.isr_cache_control = isr_cache_control
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        self.renders: Dict[str, int] = {}
        self._isr: Dict[str, Tuple[float, int]] = {}
        self.holding = False
        self._held: List[Any] = []

    def hits(self, path: str) -> int:
        """
        @param path: a path with its query, if any.
        @return: how many requests for it the origin got.
        """
        return sum(1 for _, p, _ in self.requests if p == path)

    def release(self) -> int:
        """
        Stop holding requests, and answer those held, in order.

        @return: how many were held.
        """
        self.holding = False
        held, self._held = self._held, []
        for request in held:
            request.write(self._answer(request))
            request.finish()
        return len(held)

    def _gone(self, reason: Any, request: Any) -> None:
        """
        Forget a held request whose client went away.
        """
        if request in self._held:
            self._held.remove(request)

    def render(self, request: Any) -> Any:
        """
        Note the request; answer it as Next.js would (see the module's
        docstring), or hold it.
        """
        headers = request_headers(request)
        self.requests.append((request.method.decode("ascii"), request.uri.decode("latin-1"), headers))
        if self.holding:
            self._held.append(request)
            request.notifyFinish().addErrback(self._gone, request)
            return NOT_DONE_YET
        return self._answer(request)

    def _answer(self, request: Any) -> bytes:
        """
        @return: the body of the answer to C{request}, its code and headers
            set.
        """
        headers = request_headers(request)
        request.defaultContentType = None
        request.setHeader(b"date", datetimeToString(self.clock.seconds()))
        request.setHeader(b"x-powered-by", b"Next.js")
        path = request.path.decode("latin-1")
        if path in STATIC_PAGES:
            return self._page(request, headers, STATIC_PAGES[path], "HIT", "s-maxage=31536000")
        if path.startswith("/isr/") and len(path) > 5:
            state, number = self._regenerate(path)
            return self._page(request, headers, "%s #%d" % (path[5:], number), state, self.isr_cache_control)
        if path.startswith("/_next/static/") and path in ASSETS:
            kind, body = ASSETS[path]
            request.setHeader(b"content-type", kind.encode("ascii"))
            request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
            return body
        if path == "/api/whoami":
            user = request.getCookie(b"user")
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"user": None if user is None else user.decode("latin-1")}).encode("ascii")
        if path == "/_next/image":
            return self._image(request, headers)
        request.setResponseCode(404)
        request.setHeader(b"cache-control", b"private, no-cache, no-store, max-age=0, must-revalidate")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b"<!DOCTYPE html><html><body><h1>404</h1>This page could not be found.</body></html>"

    def _regenerate(self, path: str) -> Tuple[str, int]:
        """
        Next.js's own ISR cache for C{path}.

        @return: C{x-nextjs-cache} and the number of the rendering served.
        """
        now = self.clock.seconds()
        held = self._isr.get(path)
        if held is not None and now - held[0] < REVALIDATE:
            return "HIT", held[1]
        number = self.renders[path] = self.renders.get(path, 0) + 1
        self._isr[path] = (now, number)
        if held is None:
            return "MISS", number
        return "STALE", held[1]

    def _page(self, request: Any, headers: Dict[str, str], title: str, state: str, cache_control: str) -> bytes:
        """
        @return: the page's HTML, or its RSC payload for a request with
            C{rsc: 1} (a prefetch one with C{next-router-prefetch: 1}).
        """
        request.setHeader(b"vary", PAGE_VARY.encode("ascii"))
        request.setHeader(b"x-nextjs-cache", state.encode("ascii"))
        request.setHeader(b"cache-control", cache_control.encode("ascii"))
        if headers.get("rsc") == "1":
            request.setHeader(b"content-type", b"text/x-component")
            kind = "prefetch" if headers.get("next-router-prefetch") == "1" else "full"
            return rsc_payload(title, kind)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return html_page(title)

    def _image(self, request: Any, headers: Dict[str, str]) -> bytes:
        """
        @return: the optimised image, WebP when the client accepts it.
        """
        url = request.args.get(b"url", [b""])[0]
        if not url.startswith(b"/"):
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain")
            return b'"url" parameter is required'
        webp = "image/webp" in headers.get("accept", "")
        request.setHeader(b"vary", b"Accept")
        request.setHeader(b"cache-control", b"public, max-age=60, must-revalidate")
        request.setHeader(b"x-nextjs-cache", b"MISS")
        request.setHeader(b"content-type", b"image/webp" if webp else b"image/png")
        return (b"RIFF....WEBP " if webp else b"\x89PNG\r\n\x1a\n ") + url


def request_headers(request: Any) -> Dict[str, str]:
    """
    @return: the request's headers by lower-cased name, repeated ones
        joined with C{", "}.
    """
    return {
        k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
        for k, v in request.requestHeaders.getAllRawHeaders()
    }


def html_page(title: str) -> bytes:
    """
    @return: the HTML of the page titled C{title}.
    """
    return (
        "<!DOCTYPE html><html><head><title>%s</title>"
        '<script src="/_next/static/chunks/app-4f1c.js" async=""></script></head>'
        "<body><main>%s</main></body></html>" % (title, title)
    ).encode("utf-8")


def rsc_payload(title: str, kind: str = "full") -> bytes:
    """
    @param kind: C{"full"}, or C{"prefetch"} for a prefetch's partial one.
    @return: the RSC payload of the page titled C{title}.
    """
    return (
        '0:{"b":"build-1","f":[["%s"]],"k":"%s"}\n1:["$","main",null,{"children":"%s"}]\n'
        % (title, kind, title)
    ).encode("utf-8")


def whoami(user: Optional[str]) -> bytes:
    """
    @return: what C{/api/whoami} answers to C{user}'s cookie.
    """
    return json.dumps({"user": user}).encode("ascii")
