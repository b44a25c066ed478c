"""
Tests for L{phantom_frame.http.routing}: longest-prefix dispatch on segment
boundaries, prefix stripping and the C{"*"} fallback.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from phantom_frame.proxy.answers import stripped_path
from phantom_frame.http.routing import Router, current_request


class Recorder(Resource):
    """
    Records the stripped path of what it renders.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.seen = []

    def render(self, request):
        raw = request.phantomTarget[0]
        self.seen.append(stripped_path(request, raw))
        return self.name.encode()


def render(router: Router, uri: bytes):
    """
    Render C{uri} through C{router} as twisted.web's L{Site} would set it up.
    """
    path = uri.split(b"?", 1)[0]
    request = DummyRequest([])
    request.uri = uri
    request.path = path
    request.postpath = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
    return request, router.render(request)


class RouterTests(SynchronousTestCase):
    """
    L{Router} picks the longest matching prefix.
    """

    def setUp(self) -> None:
        self.api = Recorder("api")
        self.v2 = Recorder("v2")
        self.site = Recorder("site")
        self.router = Router([("/api", self.api), ("/api/v2", self.v2), ("*", self.site)])

    def test_longest_prefix_wins(self) -> None:
        """
        C{/api/v2/x} goes to the C{/api/v2} server, C{/api/x} to C{/api}.
        """
        self.assertEqual(render(self.router, b"/api/v2/x")[1], b"v2")
        self.assertEqual(render(self.router, b"/api/x")[1], b"api")
        self.assertEqual(self.v2.seen, [b"/x"])
        self.assertEqual(self.api.seen, [b"/x"])

    def test_segment_boundaries(self) -> None:
        """
        C{/api} takes C{/api}, C{/api/} and C{/api/x}, but not C{/apix}.
        """
        for uri, name, _stripped in (
            (b"/api", b"api", b"/"),
            (b"/api/", b"api", b"/"),
            (b"/api/users?x=1", b"api", b"/users"),
            (b"/apix", b"site", b"/apix"),
            (b"/", b"site", b"/"),
        ):
            self.assertEqual(render(self.router, uri)[1], name, uri)
        self.assertEqual(self.api.seen, [b"/", b"/", b"/users"])
        self.assertEqual(self.site.seen, [b"/apix", b"/"])

    def test_encoded_segments_stay_raw(self) -> None:
        """
        Matching uses decoded segments, but the stripped path keeps the raw
        bytes the client sent (an encoded slash stays encoded).
        """
        _, body = render(self.router, b"/%61pi/a%2Fb/c")
        self.assertEqual(body, b"api")
        self.assertEqual(self.api.seen, [b"/a%2Fb/c"])

    def test_normalised_before_routing(self) -> None:
        """
        The path is normalised before it is routed: the route, the stripped
        path and C{phantomTarget} all come from the normal path.
        """
        for uri, name, target in (
            (b"//api//v2/./x", b"v2", (b"/api/v2/x", b"")),
            (b"/other/../api/x?q=%2e", b"api", (b"/api/x", b"q=%2e")),
            (b"/api/x/../v2/y", b"v2", (b"/api/v2/y", b"")),
            (b"/%7Eme/", b"site", (b"/~me/", b"")),
        ):
            request, body = render(self.router, uri)
            self.assertEqual(body, name, uri)
            self.assertEqual(request.phantomTarget, target, uri)
        self.assertEqual(self.v2.seen, [b"/x", b"/y"])
        self.assertEqual(self.api.seen, [b"/x"])

    def test_climbing_out_is_400(self) -> None:
        """
        A path that climbs above the root, or out of the prefix it was
        addressed to, or hides a dot segment, gets 400 and reaches no
        server.
        """
        for uri in (b"/..", b"/api/../x", b"/api/v2/../x", b"/api/v2/../../x", b"/a/..%2F..%2Fb", b"/bad%"):
            request, _ = render(self.router, uri)
            self.assertEqual(request.responseCode, 400, uri)
        self.assertEqual((self.api.seen, self.v2.seen, self.site.seen), ([], [], []))

    def test_no_fallback_is_404(self) -> None:
        """
        Without a C{"*"} server, unmatched requests get 404.
        """
        router = Router([("/api", self.api)])
        request, body = render(router, b"/other")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(body, b"Not Found\n")

    def test_malformed_target(self) -> None:
        """
        A target that is not origin- or absolute-form gets 400.
        """
        request = DummyRequest([])
        request.uri = b"nonsense"
        self.router.render(request)
        self.assertEqual(request.responseCode, 400)

    def test_bad_tables(self) -> None:
        """
        Duplicate prefixes, two C{"*"} and malformed prefixes are refused.
        """
        self.assertRaises(ValueError, Router, [("/a", self.api), ("/a", self.v2)])
        self.assertRaises(ValueError, Router, [("*", self.api), ("*", self.v2)])
        self.assertRaises(ValueError, Router, [("/a/", self.api)])
        self.assertRaises(ValueError, Router, [("a", self.api)])


class Named(Recorder):
    """
    A recorder that notes the server name and current request it sees.
    """

    def render(self, request):
        """
        Note the server name and the current request, then record.
        """
        self.noted = (request.phantomServer, current_request.get())
        return super().render(request)


class Server:
    """
    Stands for a L{phantom_frame.proxy.server.ProxyServer}: only its name.
    """

    def __init__(self, name: str) -> None:
        self.name = name


class NameTests(SynchronousTestCase):
    """
    L{Router} names the server that takes each request.
    """

    def test_names(self) -> None:
        """
        Each request carries the name of its route as C{phantomServer}, and
        is the L{current_request} while its server renders it (and only
        then).
        """
        api, site = Named("api"), Named("site")
        router = Router([("/api", api, "api-server"), ("*", site, "site-server")])
        request, _ = render(router, b"/api/x")
        self.assertEqual(api.noted, ("api-server", request))
        request, _ = render(router, b"/x")
        self.assertEqual(site.noted, ("site-server", request))
        self.assertIsNone(current_request.get())
        self.assertEqual(
            [(prefix, name) for prefix, _, name in router.routes], [("/api", "api-server"), ("*", "site-server")]
        )

    def test_pairs(self) -> None:
        """
        A C{(bind_to, resource)} route takes its name from the resource's
        C{server}, when it has one; a request no route takes has none.
        """
        api, site = Named("api"), Named("site")
        api.proxy_server = Server("from-resource")
        router = Router([("/api", api), ("*", site)])
        render(router, b"/api")
        render(router, b"/")
        self.assertEqual((api.noted[0], site.noted[0]), ("from-resource", None))
        request, _ = render(Router([("/api", api)]), b"/other")
        self.assertFalse(hasattr(request, "phantomServer"))
