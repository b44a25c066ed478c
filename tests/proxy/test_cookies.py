"""
Tests of C{cookie_policy} and C{ignore_cookies}: a request with a cookie is
private, answered from the cache and stored only for responses the origin
marked shareable, on the stock path and the channel's fast path alike.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore
from phantom_frame.config.loader import parse_config
from phantom_frame.proxy import decision as d
from phantom_frame.proxy.decision import Decider
from phantom_frame.proxy.settings import CookiePolicy, CreateProxyConfig

from tests.memory import Proxy
from tests.proxy import test_decision
from tests.proxy.test_scope import view


class NextLike(Resource):
    """
    An origin that answers as Next.js does: a route handler that reads the
    session cookie and says nothing about caching, pages with
    C{s-maxage}, immutable public assets, and responses marked for CDNs.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[str] = []
        self.held: List[Any] = []
        self.hold = False

    def render_GET(self, request) -> Any:
        path = request.path.decode()
        self.seen.append(path)
        cookies = request.getHeader(b"cookie") or b""
        session = None
        for pair in cookies.decode().split(";"):
            name, _, value = pair.strip().partition("=")
            if name == "session":
                session = value
        if path == "/api/whoami":
            request.setHeader(b"content-type", b"application/json")
            body = json.dumps({"user": session}).encode()
        elif path.startswith("/_next/static/"):
            request.setHeader(b"content-type", b"text/javascript")
            request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
            body = b"console.log(1)"
        elif path == "/cdn":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"cdn-cache-control", b"max-age=60")
            body = b"for cdns"
        elif path == "/surrogate":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"surrogate-control", b"max-age=60")
            body = b"for surrogates"
        else:
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"s-maxage=31536000, stale-while-revalidate")
            body = b"<html>page " + path.encode() + b"</html>"
        if self.hold:
            self.held.append((request, body))
            return NOT_DONE_YET
        return body

    def release(self) -> None:
        """
        Answer every held request.
        """
        held, self.held = self.held, []
        for request, body in held:
            request.write(body)
            request.finish()


def config(**site: Any) -> Any:
    """
    @return: a configuration with one C{"*"} server with C{site}'s keys.
    """
    return parse_config({"server": {"site": {"proxy_url": "http://origin.example", **site}}})


class CookieTests(SynchronousTestCase):
    """
    Private requests in front of a Next.js-like origin.
    """

    def setUp(self) -> None:
        self.origin = NextLike()

    def proxy(self, **site: Any) -> Proxy:
        self.running = Proxy(self, config(**site), self.origin)
        return self.running

    def get(self, path: str, cookie: Optional[str] = None) -> Tuple[bytes, bytes]:
        """
        @return: the body and C{Cache-Status} of C{GET path} with C{cookie}.
        """
        headers = {"Cookie": cookie} if cookie is not None else None
        response, body = self.running.get(self, path, headers=headers)
        return body, response.headers.getRawHeaders(b"cache-status")[0]

    def test_whoamiNeverShared(self) -> None:
        """
        A route that reads the session cookie without any C{Cache-Control}
        is not stored from alice's request and not served to bob or to
        anonymous visitors; an anonymous answer stored is not served to
        alice either.
        """
        self.proxy()
        self.assertEqual(self.get("/api/whoami", "session=alice"),
                         (b'{"user": "alice"}', b"phantom-frame; fwd=uri-miss; detail=cookie"))
        self.assertEqual(self.get("/api/whoami", "session=bob"),
                         (b'{"user": "bob"}', b"phantom-frame; fwd=uri-miss; detail=cookie"))
        self.assertEqual(self.get("/api/whoami"), (b'{"user": null}', b"phantom-frame; fwd=uri-miss; stored"))
        self.assertEqual(self.get("/api/whoami"), (b'{"user": null}', b"phantom-frame; hit"))
        self.assertEqual(self.get("/api/whoami", "session=alice"),
                         (b'{"user": "alice"}', b"phantom-frame; fwd=bypass; detail=cookie"))
        self.assertEqual(self.get("/api/whoami", "theme=dark; session=bob"),
                         (b'{"user": "bob"}', b"phantom-frame; fwd=bypass; detail=cookie"))
        self.assertEqual(self.origin.seen.count("/api/whoami"), 5)

    def test_pagesAndAssetsShared(self) -> None:
        """
        Pages with C{s-maxage}, public assets, and responses with a
        C{CDN-Cache-Control} or C{Surrogate-Control} lifetime are stored
        from a private request and served to everyone.
        """
        self.proxy()
        for path in ("/blog/1", "/_next/static/chunk.js", "/cdn", "/surrogate"):
            self.assertEqual(self.get(path, "session=alice")[1], b"phantom-frame; fwd=uri-miss; stored", path)
            for cookie in ("session=bob", None):
                self.assertEqual(self.get(path, cookie)[1], b"phantom-frame; hit", path)
            self.assertEqual(self.origin.seen.count(path), 1, path)

    def test_ignoredCookies(self) -> None:
        """
        Cookies named by C{ignore_cookies} leave a request public.
        """
        self.proxy(ignore_cookies=["_ga*", "_gid"])
        self.assertEqual(self.get("/api/whoami", "_ga=GA1.1; _gid=2")[1], b"phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.get("/api/whoami", "_ga_X=3")[1], b"phantom-frame; hit")
        self.assertEqual(self.get("/api/whoami", "_ga=GA1.1; session=bob"),
                         (b'{"user": "bob"}', b"phantom-frame; fwd=bypass; detail=cookie"))

    def test_ignorePolicy(self) -> None:
        """
        C{cookie_policy = "ignore"} keeps the original's behaviour: the
        first visitor's answer is everybody's.
        """
        self.proxy(cookie_policy="ignore")
        self.get("/api/whoami", "session=alice")
        self.assertEqual(self.get("/api/whoami", "session=bob"), (b'{"user": "alice"}', b"phantom-frame; hit"))

    def test_snapshotsForEveryone(self) -> None:
        """
        Snapshots are fetched without any visitor's cookies: they answer
        private requests, of any host; a path that is no snapshot is
        filled under the request's host, privately.
        """
        proxy = self.proxy(proxy_mode="pre_generate", pre_generate_fallthrough=True,
                           pre_generate_paths=["/api/whoami"])
        proxy.handle.server("site").snapshots.warm_up()
        proxy.settle()
        self.assertEqual(self.get("/api/whoami", "session=alice"), (b'{"user": null}', b"phantom-frame; hit"))
        self.assertEqual(self.origin.seen, ["/api/whoami"])
        self.assertEqual(self.get("/blog/2", "session=alice")[1], b"phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.get("/blog/2")[1], b"phantom-frame; hit")

    def test_concurrentPrivateRequests(self) -> None:
        """
        A private request does not wait for a fill in flight (its answer
        would be another's); a public request that waits for a private
        request's fill that turns out not shareable makes its own request.
        """
        proxy = self.proxy()
        self.origin.hold = True
        url = "http://proxy.example/api/whoami"
        alice = proxy.client.get(url, headers={"Cookie": "session=alice"})
        proxy.settle()
        bob = proxy.client.get(url, headers={"Cookie": "session=bob"})
        carol = proxy.client.get(url)
        proxy.settle()
        self.origin.release()
        proxy.settle()
        self.origin.release()
        proxy.settle()
        answers = {}
        for name, answer in (("alice", alice), ("bob", bob), ("carol", carol)):
            response = self.successResultOf(answer)
            body = self.successResultOf(response.content())
            answers[name] = (body, response.headers.getRawHeaders(b"cache-status")[0])
        self.assertEqual(answers, {
            "alice": (b'{"user": "alice"}', b"phantom-frame; fwd=uri-miss; detail=cookie"),
            "bob": (b'{"user": "bob"}', b"phantom-frame; fwd=bypass; detail=cookie"),
            "carol": (b'{"user": null}', b"phantom-frame; fwd=uri-miss; detail=not-shared"),
        })
        self.assertEqual(proxy.handle.stats()["site"]["entries"], 0)


class FastPathCookieTests(SynchronousTestCase):
    """
    The channel's fast path decides cookies as the stock path does.
    """

    def setUp(self) -> None:
        self.origin = NextLike()
        self.proxy = Proxy(self, config(), self.origin)

    def send(self, path: str, cookie: Optional[str] = None) -> Tuple[bytes, bytes]:
        """
        @return: the body and C{Cache-Status} of a raw C{GET path}.
        """
        lines = [f"GET {path} HTTP/1.1", "Host: proxy.example"]
        if cookie is not None:
            lines.append(f"Cookie: {cookie}")
        protocol = self.proxy.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.proxy.settle()
        protocol.connectionLost(None)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        fields: Dict[bytes, bytes] = dict(
            line.split(b": ", 1) for line in head.split(b"\r\n")[1:]  # type: ignore[misc]
        )
        return body, fields[b"Cache-Status"]

    @property
    def fast(self) -> int:
        return self.proxy.site.fastHit.answered

    def test_cookieHits(self) -> None:
        """
        A private request is answered by the fast path from a shareable
        entry; from an entry that is not, it goes to the origin on the
        stock path.
        """
        self.send("/blog/1")
        self.send("/api/whoami")
        before = self.fast
        self.assertEqual(self.send("/blog/1", "session=alice")[1], b"phantom-frame; hit")
        self.assertEqual(self.fast - before, 1)
        self.assertEqual(self.send("/api/whoami", "session=alice"),
                         (b'{"user": "alice"}', b"phantom-frame; fwd=bypass; detail=cookie"))
        self.assertEqual(self.fast - before, 1)
        self.assertEqual(self.send("/api/whoami")[1], b"phantom-frame; hit")
        self.assertEqual(self.fast - before, 2)


class PrivateDecisionTests(SynchronousTestCase):
    """
    The decisions for private requests.
    """

    setUp = test_decision.DeciderTests.setUp
    store = test_decision.DeciderTests.store

    def decider(self, config: Optional[CreateProxyConfig] = None) -> Decider:
        config = config or CreateProxyConfig("http://origin.test")
        self.cache = ResponseCache("t", MemoryStore(), self.clock, 1 << 20, 10)
        return Decider("t", config, self.cache, self.clock)

    def test_entries(self) -> None:
        """
        A private request meets a stored entry that is not shareable as a
        L{Bypass} (C{cookie}), a shareable one as a L{Hit}; a public
        request gets either.
        """
        decider = self.decider()
        self.store("GET:/p")
        self.store("GET:/s", shareable=True)
        self.assertEqual(decider.decide(view("/p", cookie="a=1")).reason, "cookie")
        self.assertIsInstance(decider.decide(view("/s", cookie="a=1")), d.Hit)
        self.assertIsInstance(decider.decide(view("/p")), d.Hit)

    def test_misses(self) -> None:
        """
        A private request's miss is a private L{Fill}, unless a fill is in
        flight (a L{Bypass}); a public one joins it.
        """
        decider = self.decider()
        fill = decider.decide(view(cookie="a=1"))
        self.assertEqual((type(fill), fill.private), (d.Fill, True))
        self.assertFalse(decider.decide(view()).private)
        self.cache.fill("GET:/p", Deferred)
        self.assertEqual(decider.decide(view(cookie="a=1")).reason, "cookie")
        self.assertIsInstance(decider.decide(view()), d.Fill)

    def test_noRefreshBehind(self) -> None:
        """
        A private request is answered from a stale shareable entry, but
        starts no background refresh with its cookies.
        """
        decider = self.decider()
        self.store(lifetime=10, stale_while_revalidate=30, shareable=True)
        self.clock.advance(20)
        self.assertFalse(decider.decide(view(cookie="a=1")).refresh)
        self.assertTrue(decider.decide(view()).refresh)

    def test_policies(self) -> None:
        """
        Under C{ignore}, and on a pure pre-generated server, cookies make
        no request private.
        """
        base = CreateProxyConfig("http://origin.test")
        for config in (base.with_cookie_policy("ignore"), base.with_proxy_mode("pre_generate")):
            decider = self.decider(config)
            self.store("GET:/p", pinned=True)
            self.assertIsInstance(decider.decide(view(cookie="a=1")), d.Hit)


class BuilderTests(SynchronousTestCase):
    """
    The library's builders for the keys of this module and of keys.
    """

    def test_builders(self) -> None:
        """
        C{with_ignore_query_params}, C{with_cookie_policy} and
        C{with_ignore_cookies} return new configs; the policy is strict by
        default and takes its names.
        """
        config = CreateProxyConfig("http://origin.test")
        built = (
            config.with_ignore_query_params(["utm_*"])
            .with_cookie_policy("ignore")
            .with_ignore_cookies(["_ga*", "_gid"])
        )
        self.assertEqual((config.cookie_policy, config.ignore_cookies, config.ignore_query_params),
                         (CookiePolicy.STRICT, (), ()))
        self.assertEqual((built.cookie_policy, built.ignore_cookies, built.ignore_query_params),
                         (CookiePolicy.IGNORE, ("_ga*", "_gid"), ("utm_*",)))
        self.assertRaises(ValueError, config.with_cookie_policy, "lax")
