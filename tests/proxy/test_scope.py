"""
Tests for L{phantom_frame.proxy.scope} and the keys the decision uses:
host-scoped keys, C{ignore_query_params}, custom key functions, snapshots
found for any host, malformed hosts.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from phantom_frame.cache.keys import RequestInfo
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore
from phantom_frame.config.loader import parse_config
from phantom_frame.proxy import decision as d
from phantom_frame.proxy.decision import Decider
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.view import RequestView, joined_headers

from tests.memory import Proxy
from tests.proxy import test_decision


def view(path: str = "/p", method: bytes = b"GET", secure: bool = False, **headers: str) -> RequestView:
    """
    @return: a request for C{path} (C{?query} allowed) with C{headers}
        (underscores become dashes), over TLS when C{secure}.
    """
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    target, _, query = path.encode().partition(b"?")
    return RequestView(method, target, query, joined_headers(raw), raw, "127.0.0.1", secure)


class KeyTests(SynchronousTestCase):
    """
    L{Decider.key}, L{Decider.key_of_target} and the keys decisions carry.
    """

    def decider(self, config: CreateProxyConfig = CreateProxyConfig("http://origin.test")) -> Decider:
        self.cache = ResponseCache("t", MemoryStore(), Clock(), 1 << 20, 10)
        return Decider("t", config, self.cache, Clock())

    def test_scopedByHost(self) -> None:
        """
        A request's key is scoped by its host, lower-cased and without the
        default port of its scheme: two hosts never share an entry.
        """
        decider = self.decider()
        for request, key in [
            (view(host="Evil.Example"), "GET://evil.example/p"),
            (view(host="shop.example:80"), "GET://shop.example/p"),
            (view(host="shop.example:443", secure=True), "GET://shop.example/p"),
            (view(host="shop.example:443"), "GET://shop.example:443/p"),
            (view("/p?q=1", b"HEAD", host="shop.example"), "GET://shop.example/p?q=1"),
            (view(), "GET:/p"),
        ]:
            self.assertEqual(decider.decide(request).key, key)

    def test_badHost(self) -> None:
        """
        A malformed C{Host} (two joined, a path, spaces) is 400, before
        anything else and in the decision itself.
        """
        decider = self.decider(CreateProxyConfig("http://origin.test").with_forward_get_only(True))
        for request in (
            view(host="a.example/admin"),
            view(host="a.example, b.example"),
            view(method=b"POST", host="a b"),
        ):
            self.assertIs(decider.admit(request, True), d.BAD_HOST)
            self.assertIs(decider.decide(request), d.BAD_HOST)
        self.assertEqual(d.BAD_HOST.code, 400)

    def test_ignoredQueryParameters(self) -> None:
        """
        C{ignore_query_params} are left out of the key, and only them.
        """
        config = CreateProxyConfig("http://origin.test").with_ignore_query_params(["utm_*", "fbclid", "_rsc"])
        decider = self.decider(config)
        key = lambda target: decider.decide(view(target, host="h.example")).key  # noqa: E731
        self.assertEqual(key("/p?utm_source=x&fbclid=1"), "GET://h.example/p")
        self.assertEqual(key("/p?_rsc=1&page=2&utm_medium=y"), "GET://h.example/p?page=2")
        self.assertEqual(key("/p?fbclidx=1"), "GET://h.example/p?fbclidx=1")
        self.assertEqual(decider.key_of_target(b"/p?utm_x=1&a=1"), "GET:/p?a=1")

    def test_keyOfTarget(self) -> None:
        """
        L{Decider.key_of_target} is host-less (snapshots), or scoped by the
        host of the request given; its path is normalised.
        """
        decider = self.decider()
        self.assertEqual(decider.key_of_target(b"/a/./b?x"), "GET:/a/b?x")
        self.assertEqual(decider.key_of_target(b"/a", view(host="H.example")), "GET://h.example/a")
        self.assertEqual(decider.key_of_target(b"/a%zz"), "GET:/a%zz")

    def test_customKeyFunction(self) -> None:
        """
        A custom key function gets the host and the query without the
        ignored parameters.
        """
        seen: List[RequestInfo] = []

        def key(info: RequestInfo) -> str:
            seen.append(info)
            return "custom"

        config = (
            CreateProxyConfig("http://origin.test").with_cache_key_fn(key).with_ignore_query_params(["utm_*"])
        )
        self.assertEqual(self.decider(config).decide(view("/p?a=1&utm_x=2", host="H.example:80")).key, "custom")
        self.assertEqual(seen, [RequestInfo("GET", "/p", "a=1", seen[0].headers, "h.example")])


class SnapshotKeyTests(SynchronousTestCase):
    """
    On a C{pre_generate} server, the host-less snapshot of a path answers
    every host; what is not a snapshot is keyed by host.
    """

    setUp = test_decision.DeciderTests.setUp
    decider = test_decision.DeciderTests.decider
    store = test_decision.DeciderTests.store

    def config(self, fallthrough: bool) -> CreateProxyConfig:
        return (
            CreateProxyConfig("http://origin.test")
            .with_proxy_mode("pre_generate")
            .with_pre_generate_fallthrough(fallthrough)
        )

    def test_snapshotForEveryHost(self) -> None:
        """
        A stored snapshot is a hit for a request of any host.
        """
        for fallthrough in (False, True):
            decider = self.decider(self.config(fallthrough))
            entry = self.store("GET:/p", pinned=True, shareable=True)
            for host in ("a.example", "B.example:8080"):
                hit = decider.decide(view(host=host))
                self.assertEqual((type(hit), hit.key, hit.entry), (d.Hit, "GET:/p", entry))

    def test_fetchedSnapshot(self) -> None:
        """
        While a snapshot is fetched, a request of any host waits for it.
        """
        decider = self.decider(self.config(False))
        self.cache.fill("GET:/p", Deferred)
        self.assertEqual(decider.decide(view(host="a.example")), d.Await("GET:/p"))
        decider = self.decider(self.config(True))
        self.cache.fill("GET:/p", Deferred)
        fill: Any = decider.decide(view(host="a.example"))
        self.assertEqual((type(fill), fill.key), (d.Fill, "GET:/p"))

    def test_otherPathsByHost(self) -> None:
        """
        With fallthrough, a path that is no snapshot, or a variant the
        snapshot lacks, is filled under the request's own host-scoped key;
        without, it is a 404.
        """
        decider = self.decider(self.config(True))
        self.assertEqual(decider.decide(view("/other", host="a.example")).key, "GET://a.example/other")
        self.store("GET:/p", vary=("accept-language",), variant=("fr",), pinned=True, shareable=True)
        self.assertIsInstance(decider.decide(view(host="a.example", accept_language="fr")), d.Hit)
        other = decider.decide(view(host="a.example", accept_language="de"))
        self.assertEqual((type(other), other.key), (d.Fill, "GET://a.example/p"))
        self.assertIs(self.decider(self.config(False)).decide(view("/other", host="a.example")), d.NOT_PRE_GENERATED)


class Reflecting(Resource):
    """
    An origin that puts the host it was asked for into its pages (as a
    framework building absolute links from C{X-Forwarded-Host} does), and
    varies C{/lang} on C{Accept-Language}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[bytes] = []

    def render_GET(self, request) -> bytes:
        self.seen.append(request.uri)
        host = request.getHeader(b"x-forwarded-host") or b"-"
        request.setHeader(b"content-type", b"text/html")
        if request.path == b"/lang":
            request.setHeader(b"vary", b"Accept-Language")
            host += b" " + (request.getHeader(b"accept-language") or b"-")
        return b'<a href="http://' + host + b'/login">log in</a>'


class HostScopeTests(SynchronousTestCase):
    """
    Entries of two hosts never mix, and invalidation reaches every host,
    query and variant unless the pattern says otherwise.
    """

    def setUp(self) -> None:
        self.origin = Reflecting()
        config = parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}})
        self.proxy = Proxy(self, config, self.origin)

    def get(self, target: str, host: str, **headers: str) -> Tuple[bytes, bytes]:
        """
        @return: the body and C{Cache-Status} of C{GET target} for C{host}.
        """
        headers = {"Host": host, **{k.replace("_", "-"): v for k, v in headers.items()}}
        response, body = self.proxy.get(self, target, headers=headers)
        return body, response.headers.getRawHeaders(b"cache-status")[0]

    def test_reflectedHostNotShared(self) -> None:
        """
        A page an attacker asked for under its own C{Host} is stored for
        that host only: everyone else gets the page of theirs.
        """
        body, status = self.get("/reflect", "evil.example")
        self.assertEqual((body, status), (b'<a href="http://evil.example/login">log in</a>',
                                          b"phantom-frame; fwd=uri-miss; stored"))
        body, status = self.get("/reflect", "shop.example")
        self.assertEqual((body, status), (b'<a href="http://shop.example/login">log in</a>',
                                          b"phantom-frame; fwd=uri-miss; stored"))
        for host in ("shop.example", "SHOP.example:80", "shop.example."):
            self.assertEqual(self.get("/reflect", host), (b'<a href="http://shop.example/login">log in</a>',
                                                         b"phantom-frame; hit"))
        self.assertEqual(self.get("/reflect", "evil.example")[1], b"phantom-frame; hit")
        self.assertEqual(len(self.origin.seen), 2)

    def test_invalidationEveryHostQueryAndVariant(self) -> None:
        """
        C{"/lang"} drops C{/lang} of every host, with any query, in every
        C{Vary} variant; other paths stay.
        """
        for host in ("a.example", "b.example"):
            for target in ("/lang", "/lang?_rsc=1"):
                for language in ("fr", "de"):
                    self.get(target, host, accept_language=language)
            self.get("/langs", host)
        stats = lambda: self.proxy.handle.stats()["site"]["entries"]  # noqa: E731
        self.assertEqual(stats(), 10)
        self.assertEqual(self.proxy.handle.invalidate("/lang?_rsc=*"), 4)
        self.assertEqual(self.proxy.handle.invalidate("/lang"), 4)
        self.assertEqual(stats(), 2)
        self.assertEqual(self.get("/lang", "a.example", accept_language="fr")[1],
                         b"phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.get("/langs", "a.example")[1], b"phantom-frame; hit")

    def test_invalidationOfOneHost(self) -> None:
        """
        C{"//HOST/..."} drops the entries of that host only.
        """
        for host in ("a.example", "b.example"):
            self.get("/reflect", host)
        self.assertEqual(self.proxy.handle.invalidate("//a.example/*"), 1)
        self.assertEqual(self.get("/reflect", "b.example")[1], b"phantom-frame; hit")
        self.assertEqual(self.get("/reflect", "a.example")[1], b"phantom-frame; fwd=uri-miss; stored")
