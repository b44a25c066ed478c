"""
Tests for L{phantom_frame.http.routes}: C{[static.NAME]} and
C{[redirect.NAME]} blocks, routed beside servers by longest prefix, through
a whole proxy site built from a configuration in memory.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

import treq

from phantom_frame.config import parse_config
from phantom_frame.http.site import ProxySite
from phantom_frame.http.routes import Redirect, redirect_location
from tests.memory import Proxy


class Origin(Resource):
    """
    An origin answering every path with its own path, cacheable.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: List[bytes] = []

    def render(self, request: Any) -> bytes:
        self.paths.append(request.uri)
        request.setHeader(b"content-type", b"text/plain")
        return b"origin " + request.uri


Answer = Tuple[int, Dict[bytes, List[bytes]], bytes]


def parse(data: bytes, head: bool = False) -> List[Answer]:
    """
    @param data: HTTP/1.1 responses, one after the other, with
        C{Content-Length} bodies.
    @param head: whether they answer C{HEAD}s (no bodies).
    @return: each response's code, headers and body.
    """
    answers = []
    while data:
        end = data.index(b"\r\n\r\n")
        lines = data[:end].split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        length = 0 if head or code == 304 else int(headers[b"content-length"][0])
        answers.append((code, headers, data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]
    return answers


class EdgeSite:
    """
    The proxy of a configuration in memory, spoken to in raw bytes.
    """

    def __init__(self, testcase: SynchronousTestCase, data: Dict[str, Any], base_dir: str = ".") -> None:
        self.config = parse_config(data, environ={}, base_dir=base_dir)
        self.origin = Origin()
        self.proxy = Proxy(testcase, self.config, self.origin)
        self.proxy.clock.advance(1_000_000)

    @property
    def fast_answers(self) -> int:
        """
        @return: how many requests the channel's fast path answered.
        """
        return self.proxy.site.fastHit.answered

    def send(self, path: str, method: str = "GET", **headers: str) -> Answer:
        """
        @return: the answer to C{method path} on a new connection.
        """
        lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        protocol = self.proxy.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.proxy.settle()
        for _ in range(100):
            # A file is sent by a pull producer: pull as a socket would.
            if transport.producer is None or transport.streaming:
                break
            transport.producer.resumeProducing()
        protocol.connectionLost(Failure(ConnectionDone()))
        [answer] = parse(transport.value(), head=method == "HEAD")
        return answer


class LoopbackEdge:
    """
    The routes of a configuration behind a L{ProxySite} on a loopback port
    of the real reactor: file bodies are sent by twisted.web's pull
    producers, which only a real reactor drives.
    """

    def __init__(self, testcase: TestCase, data: Dict[str, Any]) -> None:
        memory = EdgeSite(testcase, data)
        self.origin = memory.origin
        site = ProxySite(memory.proxy.site.resource, reactor=reactor, access_log=False)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        testcase.addCleanup(pool.closeCachedConnections)
        self._agent = Agent(reactor, pool=pool)
        self._base = "http://127.0.0.1:%d" % (self.port.getHost().port,)

    async def fetch(self, path: str, **headers: str) -> Tuple[int, Headers, bytes]:
        """
        @return: the code, headers and body of the answer to C{GET path}.
        """
        sent = Headers({k.replace("_", "-"): [v] for k, v in headers.items()})
        response = await self._agent.request(b"GET", (self._base + path).encode(), sent)
        body = await treq.content(response)
        return response.code, response.headers, body


def _tree(testcase: SynchronousTestCase) -> Tuple[str, str]:
    """
    @return: a directory to serve and a secret file beside it.
    """
    base = os.path.abspath(testcase.mktemp())
    root = os.path.join(base, "www")
    os.makedirs(os.path.join(root, "docs"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "index.html"), "wb") as f:
        f.write(b"<h1>home</h1>")
    with open(os.path.join(root, "docs", "index.html"), "wb") as f:
        f.write(b"<h1>docs</h1>")
    with open(os.path.join(root, "app.css"), "wb") as f:
        f.write(b"body { color: red }")
    secret = os.path.join(base, "secret.txt")
    with open(secret, "wb") as f:
        f.write(b"secret")
    return root, secret


def _static(root: str, **block: str) -> Dict[str, Any]:
    """
    @return: a configuration with a C{"*"} server and C{[static.assets]}
        at C{/assets} serving C{root}.
    """
    return {
        "server": {"site": {"bind_to": "*", "proxy_url": "http://origin.test"}},
        "static": {"assets": dict({"bind_to": "/assets", "root": root}, **block)},
    }


class StaticTests(SynchronousTestCase):
    """
    A C{[static.NAME]} block serves the files under its root at its prefix,
    and nothing else (answers without a body, in memory).
    """

    def setUp(self) -> None:
        self.root, self.secret = _tree(self)
        self.edge = EdgeSite(self, _static(self.root))

    def test_head(self) -> None:
        """
        C{HEAD} gets the file's type, length, C{Last-Modified}, a strong
        C{ETag} and C{Accept-Ranges}, without the body; the origin is not
        asked.
        """
        code, headers, body = self.edge.send("/assets/app.css", method="HEAD")
        self.assertEqual((code, body, headers[b"content-length"]), (200, b"", [b"19"]))
        self.assertEqual(headers[b"content-type"], [b"text/css"])
        self.assertEqual(headers[b"accept-ranges"], [b"bytes"])
        self.assertIn(b"last-modified", headers)
        self.assertRegex(headers[b"etag"][0], rb'^"[0-9a-f]+-[0-9a-f]+"$')
        self.assertEqual(self.edge.origin.paths, [])

    def test_otherPathsProxied(self) -> None:
        """
        Paths outside the prefix (C{/assetsx} too) go to the server.
        """
        code, _, body = self.edge.send("/assetsx/app.css")
        self.assertEqual((code, body), (200, b"origin /assetsx/app.css"))

    def test_directoryRedirect(self) -> None:
        """
        The prefix alone, or a directory without its slash, redirects (301)
        to it with a slash, the query kept.
        """
        code, headers, _ = self.edge.send("/assets?x=1")
        self.assertEqual((code, headers[b"location"]), (301, [b"/assets/?x=1"]))
        code, headers, _ = self.edge.send("/assets/docs")
        self.assertEqual((code, headers[b"location"]), (301, [b"/assets/docs/"]))

    def test_noListing(self) -> None:
        """
        A directory without an index file is 404: no listing.
        """
        code, _, body = self.edge.send("/assets/empty/")
        self.assertEqual(code, 404)
        self.assertNotIn(b"Directory listing", body)

    def test_notModified(self) -> None:
        """
        A matching C{If-None-Match} gets 304 without a body; a matching
        C{If-Modified-Since} too.
        """
        _, headers, _ = self.edge.send("/assets/app.css", method="HEAD")
        etag = headers[b"etag"][0].decode()
        modified = headers[b"last-modified"][0].decode()
        self.assertEqual(self.edge.send("/assets/app.css", if_none_match=etag)[:3:2], (304, b""))
        self.assertEqual(self.edge.send("/assets/app.css", if_modified_since=modified)[0], 304)

    def test_otherMethods(self) -> None:
        """
        Other methods get 405 with C{Allow: GET, HEAD}.
        """
        code, headers, _ = self.edge.send("/assets/app.css", method="POST", content_length="0")
        self.assertEqual((code, headers[b"allow"]), (405, [b"GET, HEAD"]))

    def test_traversal(self) -> None:
        """
        No spelling of C{..} reaches a file outside the root: plain,
        percent-encoded, with an encoded slash, an absolute path or a NUL.
        """
        for path in (
            "/assets/../secret.txt",
            "/assets/%2e%2e/secret.txt",
            "/assets/%2E%2E/secret.txt",
            "/assets/docs/%2e%2e%2f%2e%2e%2fsecret.txt",
            "/assets/..%2fsecret.txt",
            "/assets/%2f" + self.secret.lstrip("/"),
            "/assets/%00",
        ):
            code, _, body = self.edge.send(path, method="HEAD")
            self.assertIn(code, (400, 404), path)

    def test_symlinkOut(self) -> None:
        """
        A symbolic link under the root that points outside it is 404, to a
        file or through a directory.
        """
        os.symlink(self.secret, os.path.join(self.root, "out.txt"))
        os.symlink(os.path.dirname(self.secret), os.path.join(self.root, "up"))
        self.assertEqual(self.edge.send("/assets/out.txt", method="HEAD")[0], 404)
        self.assertEqual(self.edge.send("/assets/up/secret.txt", method="HEAD")[0], 404)

    def test_missing(self) -> None:
        """
        A missing file is 404.
        """
        self.assertEqual(self.edge.send("/assets/nope.css")[0], 404)

    def test_fastPathLeavesThem(self) -> None:
        """
        Requests for static files never take the channel's fast path, even
        when a server's hits do.
        """
        self.edge.send("/page")
        self.edge.send("/page")
        self.assertEqual(self.edge.fast_answers, 1)
        for _ in range(2):
            code, headers, _ = self.edge.send("/assets/app.css", method="HEAD")
            self.assertEqual((code, headers[b"content-type"]), (200, [b"text/css"]))
        self.assertEqual(self.edge.fast_answers, 1)


class StaticBodyTests(TestCase):
    """
    A C{[static.NAME]} block's file bodies, over loopback.
    """

    def setUp(self) -> None:
        self.root, self.secret = _tree(self)

    async def test_file(self) -> None:
        """
        A file is served whole with its type; the origin is not asked.
        """
        edge = LoopbackEdge(self, _static(self.root))
        code, headers, body = await edge.fetch("/assets/app.css")
        self.assertEqual((code, body), (200, b"body { color: red }"))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/css"])
        self.assertEqual(edge.origin.paths, [])

    async def test_index(self) -> None:
        """
        A directory with a slash answers with its index file.
        """
        edge = LoopbackEdge(self, _static(self.root))
        self.assertEqual((await edge.fetch("/assets/"))[2], b"<h1>home</h1>")
        self.assertEqual((await edge.fetch("/assets/docs/"))[2], b"<h1>docs</h1>")

    async def test_customIndex(self) -> None:
        """
        C{index} names the file answering for a directory.
        """
        with open(os.path.join(self.root, "docs", "start.html"), "wb") as f:
            f.write(b"start")
        edge = LoopbackEdge(self, _static(self.root, index="start.html"))
        self.assertEqual((await edge.fetch("/assets/docs/"))[2], b"start")

    async def test_range(self) -> None:
        """
        A range gets a 206 with that part of the file.
        """
        edge = LoopbackEdge(self, _static(self.root))
        code, headers, body = await edge.fetch("/assets/app.css", range="bytes=0-3")
        self.assertEqual((code, body), (206, b"body"))
        self.assertEqual(headers.getRawHeaders(b"content-range"), [b"bytes 0-3/19"])

    async def test_ifNoneMatchWins(self) -> None:
        """
        An C{If-None-Match} that does not match gets the file, even with a
        matching C{If-Modified-Since} (RFC 9110 §13.2.2).
        """
        edge = LoopbackEdge(self, _static(self.root))
        _, headers, _ = await edge.fetch("/assets/app.css")
        modified = headers.getRawHeaders(b"last-modified")[0].decode()
        code, _, body = await edge.fetch(
            "/assets/app.css", if_none_match='"other"', if_modified_since=modified
        )
        self.assertEqual((code, body), (200, b"body { color: red }"))

    async def test_symlinkIn(self) -> None:
        """
        A symbolic link that stays under the root is followed.
        """
        os.symlink(os.path.join(self.root, "app.css"), os.path.join(self.root, "in.css"))
        edge = LoopbackEdge(self, _static(self.root))
        self.assertEqual((await edge.fetch("/assets/in.css"))[2], b"body { color: red }")


class RedirectTests(SynchronousTestCase):
    """
    A C{[redirect.NAME]} block redirects with the rest of the path and the
    query appended.
    """

    def setUp(self) -> None:
        self.edge = EdgeSite(
            self,
            {
                "server": {"site": {"bind_to": "*", "proxy_url": "http://origin.test"}},
                "redirect": {
                    "old": {"bind_to": "/old", "to": "/new"},
                    "away": {"bind_to": "/away", "to": "https://example.com/", "status": 301},
                    "search": {"bind_to": "/s", "to": "https://search.test/q?lang=en", "status": 302},
                },
            },
        )

    def test_defaultStatus(self) -> None:
        """
        The default status is 308; the rest of the path and the query follow
        C{to}.
        """
        code, headers, body = self.edge.send("/old/a/b?x=1&y=%20")
        self.assertEqual(code, 308)
        self.assertEqual(headers[b"location"], [b"/new/a/b?x=1&y=%20"])
        self.assertIn(b"/new/a/b", body)

    def test_prefixAlone(self) -> None:
        """
        The prefix alone goes to C{to}; with a slash, to C{to} and a slash.
        """
        self.assertEqual(self.edge.send("/old")[1][b"location"], [b"/new"])
        self.assertEqual(self.edge.send("/old/")[1][b"location"], [b"/new/"])

    def test_absolute(self) -> None:
        """
        An absolute C{to} ending in C{/} gets the rest without a double
        slash, with the block's status.
        """
        code, headers, _ = self.edge.send("/away/docs?x")
        self.assertEqual((code, headers[b"location"]), (301, [b"https://example.com/docs?x"]))

    def test_queryJoined(self) -> None:
        """
        A C{to} with a query gets the request's query after C{&}.
        """
        code, headers, _ = self.edge.send("/s?term=a")
        self.assertEqual((code, headers[b"location"]), (302, [b"https://search.test/q?lang=en&term=a"]))

    def test_notProxied(self) -> None:
        """
        The origin is not asked; other paths still are.
        """
        self.edge.send("/old/x")
        self.assertEqual(self.edge.origin.paths, [])
        self.assertEqual(self.edge.send("/oldish")[2], b"origin /oldish")

    def test_location(self) -> None:
        """
        L{redirect_location} joins C{to}, the rest and the query.
        """
        self.assertEqual(redirect_location("/n", b"", b""), b"/n")
        self.assertEqual(redirect_location("/n/", b"/a", b"q=1"), b"/n/a?q=1")
        self.assertEqual(redirect_location("https://h/x?a=1", b"/y", b""), b"https://h/x/y?a=1")

    def test_badStatus(self) -> None:
        """
        L{Redirect} refuses a status that is not a redirect.
        """
        self.assertRaises(ValueError, Redirect, "/x", 200)


class RoutingTests(SynchronousTestCase):
    """
    Static and redirect blocks share the longest-prefix table with servers.
    """

    def test_longestPrefix(self) -> None:
        """
        A server under a static prefix wins for its own, longer, prefix.
        """
        root, _ = _tree(self)
        edge = EdgeSite(
            self,
            {
                "server": {"api": {"bind_to": "/assets/api", "proxy_url": "http://origin.test"}},
                "static": {"assets": {"bind_to": "/assets", "root": root}},
                "redirect": {"rest": {"bind_to": "*", "to": "https://elsewhere.test"}},
            },
        )
        self.assertEqual(edge.send("/assets/api/v1")[2], b"origin /v1")
        headers = edge.send("/assets/app.css", method="HEAD")[1]
        self.assertEqual(headers[b"content-type"], [b"text/css"])
        code, headers, _ = edge.send("/other?x")
        self.assertEqual((code, headers[b"location"]), (308, [b"https://elsewhere.test/other?x"]))

    def test_names(self) -> None:
        """
        Static and redirect routes are named C{static.NAME} and
        C{redirect.NAME} in the router (and so in logs and metrics).
        """
        root, _ = _tree(self)
        edge = EdgeSite(
            self,
            {
                "server": {"site": {"proxy_url": "http://origin.test"}},
                "static": {"a": {"bind_to": "/a", "root": root}},
                "redirect": {"b": {"bind_to": "/b", "to": "/"}},
            },
        )
        names = [name for _, _, name in edge.proxy.site.resource.routes]
        self.assertEqual(names, ["site", "static.a", "redirect.b"])
