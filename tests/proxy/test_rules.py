"""
Tests for L{phantom_frame.proxy.rules}: C{rewrite} rules, alone and through
a whole proxy built from a configuration in memory (stock and fast paths).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from phantom_frame.config import parse_config
from phantom_frame.proxy.rules import Rewrite, TemplateError, rewrite_path, rewrites
from phantom_frame.proxy.settings import CreateProxyConfig
from tests.memory import Proxy


class Origin(Resource):
    """
    Records the target and headers of each request; answers with the
    target, cacheable.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.targets: List[bytes] = []
        self.headers: List[Dict[bytes, List[bytes]]] = []

    def render(self, request: Any) -> bytes:
        self.targets.append(request.uri)
        self.headers.append({k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()})
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-origin", b"yes")
        return b"origin " + request.uri


def _proxy(testcase: SynchronousTestCase, origin: Origin, **server: Any) -> Proxy:
    """
    @return: a proxy in front of C{origin} with one C{"*"} server of the
        given keys.
    """
    block = dict({"proxy_url": "http://origin.test"}, **server)
    return Proxy(testcase, parse_config({"server": {"site": block}}, environ={}), origin)


def raw(proxy: Proxy, path: str, **headers: str) -> bytes:
    """
    @return: what the proxy's HTTP/1.1 channel writes for C{GET path} (the
        fast path may answer it).
    """
    lines = [f"GET {path} HTTP/1.1", "Host: proxy.example"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    protocol = proxy.site.buildProtocol(IPv4Address("TCP", "198.51.100.7", 4321))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    proxy.settle()
    return transport.value()


class RewritePathTests(SynchronousTestCase):
    """
    L{rewrite_path} applies the first matching rule.
    """

    def test_firstMatch(self) -> None:
        """
        The first rule whose regex is found wins and replaces the whole
        path; groups expand; the query is kept.
        """
        rules = rewrites([("^/old/(.*)$", r"/new/\1"), ("old", "/never")])
        self.assertEqual(rewrite_path(rules, b"/old/a/b", b"x=1"), (b"/new/a/b", b"x=1"))
        self.assertEqual(rewrite_path(rules, b"/very/old", b""), (b"/never", b""))
        self.assertIsNone(rewrite_path(rules, b"/other", b""))

    def test_search(self) -> None:
        """
        An unanchored regex is searched for anywhere in the path.
        """
        rules = rewrites([{"from": r"\.php$", "to": "/legacy"}])
        self.assertEqual(rewrite_path(rules, b"/a/index.php", b""), (b"/legacy", b""))

    def test_namedGroupsAndQuery(self) -> None:
        """
        C{\\g<name>} expands; a C{?} in the result starts the query, the
        request's own following after C{&}.
        """
        rules = rewrites([(r"^/u/(?P<id>\d+)$", r"/users?id=\g<id>")])
        self.assertEqual(rewrite_path(rules, b"/u/7", b"tab=2"), (b"/users", b"id=7&tab=2"))
        self.assertEqual(rewrite_path(rules, b"/u/7", b""), (b"/users", b"id=7"))

    def test_badTemplate(self) -> None:
        """
        A template naming a missing group, or not starting with C{/}, is
        refused when compiled; so is an invalid regex.
        """
        self.assertRaises(TemplateError, Rewrite.compile, "^/(a)$", r"/\2")
        self.assertRaises(TemplateError, Rewrite.compile, "^/(a)$", r"/\g<name>")
        self.assertRaises(TemplateError, Rewrite.compile, "^/(a)$", "relative")
        self.assertRaises(re.error, Rewrite.compile, "^/(a$", "/x")

    def test_settings(self) -> None:
        """
        L{CreateProxyConfig} compiles its C{rewrite} and compares equal for
        the same rules.
        """
        config = CreateProxyConfig(rewrite=[("^/a$", "/b")])
        self.assertEqual(config, CreateProxyConfig(rewrite=[{"from": "^/a$", "to": "/b"}]))
        self.assertIsInstance(config.rewrite[0], Rewrite)


class RewriteProxyTests(SynchronousTestCase):
    """
    Rewrites apply before keys, patterns and forwarding.
    """

    def setUp(self) -> None:
        self.origin = Origin()
        self.proxy = _proxy(
            self,
            self.origin,
            rewrite=[
                {"from": "^/old/(.*)$", "to": r"/new/\1"},
                {"from": "^/private-alias$", "to": "/private"},
            ],
            exclude_paths=["/private"],
        )

    def test_forwarded(self) -> None:
        """
        The origin gets the rewritten path with the query.
        """
        _, body = self.proxy.get(self, "/old/page?x=1")
        self.assertEqual(body, b"origin /new/page?x=1")
        self.assertEqual(self.origin.targets, [b"/new/page?x=1"])

    def test_keys(self) -> None:
        """
        The key is the rewritten path's: the old and new spellings share one
        entry, and the second is a hit.
        """
        self.proxy.get(self, "/old/page")
        response, body = self.proxy.get(self, "/new/page")
        self.assertEqual(body, b"origin /new/page")
        self.assertEqual(len(self.origin.targets), 1)
        self.assertIn("hit", response.headers.getRawHeaders("cache-status")[0])

    def test_patterns(self) -> None:
        """
        Exclusions see the rewritten path: the alias of an excluded path is
        not cached either.
        """
        self.proxy.get(self, "/private-alias")
        self.proxy.get(self, "/private-alias")
        self.assertEqual(self.origin.targets, [b"/private", b"/private"])

    def test_fastPath(self) -> None:
        """
        The channel's fast path rewrites too: a hit stored under the new
        path answers the old spelling there.
        """
        self.proxy.get(self, "/new/page")
        before = self.proxy.site.fastHit.answered
        written = raw(self.proxy, "/old/page")
        self.assertTrue(written.endswith(b"origin /new/page"), written[-80:])
        self.assertEqual(self.proxy.site.fastHit.answered, before + 1)
        self.assertEqual(len(self.origin.targets), 1)
