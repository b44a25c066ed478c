"""
Tests for the header rules of a server (C{[server.NAME.headers]}): set and
removed on what is forwarded, and on every answer, from the cache or not,
on every path.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.proxy.rules import HeaderRules, variables_of
from phantom_frame.proxy.view import RequestView
from tests.memory import Proxy

RULES = {
    "request_set": {"X-Real-IP": "$remote_addr", "X-Site": "shop"},
    "request_remove": ["X-Debug"],
    "response_set": {"X-Frame-Options": "DENY", "X-Served-Host": "$host", "X-Id": "$request_id"},
    "response_remove": ["X-Powered-By"],
}


class Echo(Resource):
    """
    An origin that answers with the request headers it got, as JSON, and
    an C{X-Powered-By}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[Dict[str, str]] = []

    def render(self, request) -> bytes:
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append(headers)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-powered-by", b"Express")
        return json.dumps(headers).encode()


def raw(proxy: Proxy, path: str, **headers: str) -> Dict[bytes, bytes]:
    """
    @return: the headers of the answer the HTTP/1.1 channel writes for
        C{GET path}.
    """
    lines = [f"GET {path} HTTP/1.1", "Host: shop.example"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    client = IPv4Address("TCP", "198.51.100.7", 4321)
    protocol = proxy.site.buildProtocol(client)
    transport = StringTransport(peerAddress=client)
    protocol.makeConnection(transport)
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    proxy.settle()
    head = transport.value().split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {n.lower(): v for n, _, v in (line.partition(b": ") for line in head)}


class HeaderRuleTests(SynchronousTestCase):
    """
    Request rules reach the origin; response rules reach every answer.
    """

    def setUp(self) -> None:
        self.origin = Echo()
        config = parse_config(
            {"server": {"site": {"proxy_url": "http://origin.test", "headers": RULES}}}, environ={}
        )
        self.proxy = Proxy(self, config, self.origin)

    def test_forwarded(self) -> None:
        """
        The origin gets the set headers (with the client's address) and
        not the removed ones; a client's own copy of a set header is
        replaced.
        """
        raw(self.proxy, "/a", x_debug="1", x_site="evil")
        [seen] = self.origin.seen
        self.assertEqual((seen["x-real-ip"], seen["x-site"]), ("198.51.100.7", "shop"))
        self.assertNotIn("x-debug", seen)

    def test_answers(self) -> None:
        """
        A miss and the hits after it (fast path and stock path alike) carry
        the set headers, per request, and not the removed one; the stored
        entry carries neither.
        """
        first = raw(self.proxy, "/b", x_request_id="req-1")
        second = raw(self.proxy, "/b", x_request_id="req-2")
        third = raw(self.proxy, "/b", if_match='"x"', x_request_id="req-3")
        for answer, rid in ((first, b"req-1"), (second, b"req-2"), (third, b"req-3")):
            self.assertEqual(answer[b"x-frame-options"], b"DENY")
            self.assertEqual(answer[b"x-served-host"], b"shop.example")
            self.assertEqual(answer[b"x-id"], rid)
            self.assertNotIn(b"x-powered-by", answer)
        self.assertIn(b"stored", first[b"cache-status"])
        self.assertIn(b"hit", second[b"cache-status"])
        self.assertEqual(len(self.origin.seen), 1)
        [entry] = list(self.proxy.handle.server("site").cache.entries())
        names = {n.lower() for n, _ in entry.headers}
        self.assertNotIn(b"x-id", names)
        self.assertNotIn(b"x-frame-options", names)

    def test_passed_through(self) -> None:
        """
        An answer passed through (a bypass) gets the rules too.
        """
        answer = raw(self.proxy, "/c", authorization="Bearer x")
        self.assertIn(b"bypass", answer[b"cache-status"])
        self.assertEqual(answer[b"x-frame-options"], b"DENY")
        self.assertNotIn(b"x-powered-by", answer)


class RuleValueTests(SynchronousTestCase):
    """
    L{HeaderRules} alone, and their configuration.
    """

    def test_request(self) -> None:
        """
        Set headers replace the client's and expand variables; removed ones
        go.
        """
        rules = HeaderRules(((b"X-A", "$host/$remote_addr"),), frozenset({b"x-b"}))
        view = RequestView(b"GET", b"/", b"", {"host": "h.example"}, None, "192.0.2.1")
        pairs = rules.request([(b"X-A", b"old"), (b"X-B", b"gone"), (b"X-C", b"kept")], variables_of(view))
        self.assertEqual(pairs, [(b"X-C", b"kept"), (b"X-A", b"h.example/192.0.2.1")])

    def test_refused(self) -> None:
        """
        Unknown variables, framing headers and malformed tables are
        configuration errors naming the key.
        """
        for headers, key in (
            ({"response_set": {"X-A": "$nope"}}, "server.s.headers.response_set.X-A"),
            ({"request_set": {"Host": "x"}}, "server.s.headers.request_set.Host"),
            ({"response_remove": ["Content-Length"]}, "server.s.headers.response_remove[0]"),
            ({"response_remove": "Server"}, "server.s.headers.response_remove"),
            ({"request_sett": {}}, "server.s.headers.request_sett"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_config({"server": {"s": {"proxy_url": "http://o", "headers": headers}}}, environ={})
            self.assertTrue(caught.exception.errors[0].startswith(key + ":"), caught.exception.errors)
