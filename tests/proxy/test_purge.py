"""
Tests for C{PURGE PATH} on the proxy listeners (C{purge_method}): decided by
L{phantom_frame.proxy.decision.Decider.admit} as a L{Purge}, rendered by the
server, over a whole proxy built from a configuration in memory.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from phantom_frame.config import parse_config
from phantom_frame.proxy.decision import Decider, Purge, Reject
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.view import RequestView
from tests.memory import Proxy

TOKEN = "s3cret-token"


class Origin(Resource):
    """
    Counts its requests; answers with the path and a version.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.methods = []

    def render(self, request: Any) -> bytes:
        self.requests += 1
        self.methods.append(request.method)
        request.setHeader(b"content-type", b"text/plain")
        return b"%s v%d" % (request.uri, self.requests)


def _proxy(testcase: SynchronousTestCase, control_auth: Optional[str] = TOKEN, **server: Any) -> Proxy:
    """
    @return: a proxy with one C{"*"} server of the given keys.
    """
    root: Dict[str, Any] = {} if control_auth is None else {"control_auth": control_auth}
    block = dict({"proxy_url": "http://origin.test"}, **server)
    config = parse_config(dict(root, server={"site": block}), environ={})
    return Proxy(testcase, config, Origin())


class PurgeTests(SynchronousTestCase):
    """
    C{PURGE} with C{purge_method = true}.
    """

    def setUp(self) -> None:
        self.proxy = _proxy(self, purge_method=True)
        self.server = self.proxy.handle.server("site")
        for path in ("/blog", "/blog?page=2", "/blog/post", "/other"):
            self.proxy.get(self, path)
        self.assertEqual(len(list(self.server.cache.entries())), 4)

    def purge(self, path: str, **headers: str):
        return self.proxy.get(self, path, method="PURGE", headers=headers)

    def test_pathAndQueries(self) -> None:
        """
        A path without a query drops it with every query form; the answer
        is 200 with C{{"purged": N}}; the origin is not asked.
        """
        before = self.proxy.origin_agent
        response, body = self.purge("/blog", Authorization=f"Bearer {TOKEN}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(json.loads(body), {"purged": 2})
        keys = sorted(e.key for e in self.server.cache.entries())
        self.assertEqual(len(keys), 2)
        self.assertTrue(all("/blog" not in k or "/blog/post" in k for k in keys), keys)
        self.assertIs(self.proxy.origin_agent, before)
        _, again = self.proxy.get(self, "/blog")
        self.assertEqual(again, b"/blog v5")

    def test_glob(self) -> None:
        """
        A glob purges everything it matches; the scheme is case-insensitive.
        """
        response, body = self.purge("/blog*", Authorization=f"bearer {TOKEN}")
        self.assertEqual((response.code, json.loads(body)), (200, {"purged": 3}))

    def test_noCredentials(self) -> None:
        """
        Without credentials: 401 with C{WWW-Authenticate: Bearer}, nothing
        dropped, nothing forwarded.
        """
        response, _ = self.purge("/blog")
        self.assertEqual(response.code, 401)
        self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ["Bearer"])
        self.assertEqual(len(list(self.server.cache.entries())), 4)

    def test_wrongToken(self) -> None:
        """
        A wrong token, or another scheme: 403, nothing dropped.
        """
        for value in ("Bearer nope", f"Basic {TOKEN}", "Bearer"):
            response, _ = self.purge("/blog", Authorization=value)
            self.assertEqual(response.code, 403, value)
        self.assertEqual(len(list(self.server.cache.entries())), 4)

    def test_reloadedToken(self) -> None:
        """
        The token is read at each C{PURGE}: a new C{control_auth} applies
        at once.
        """
        self.proxy.build.control_auth = lambda: "new-token"
        self.assertEqual(self.purge("/blog", Authorization=f"Bearer {TOKEN}")[0].code, 403)
        self.assertEqual(self.purge("/blog", Authorization="Bearer new-token")[0].code, 200)


class AllowTests(SynchronousTestCase):
    """
    C{purge_allow} lets listed client addresses purge without the token.
    """

    def test_allowedAddress(self) -> None:
        """
        The in-memory client (203.0.113.9) inside a listed network purges
        without a token.
        """
        proxy = _proxy(self, control_auth=None, purge_method=True, purge_allow=["203.0.113.0/24"])
        proxy.get(self, "/x")
        response, body = proxy.get(self, "/x", method="PURGE")
        self.assertEqual((response.code, json.loads(body)), (200, {"purged": 1}))

    def test_otherAddress(self) -> None:
        """
        A client outside every listed network still needs the token.
        """
        proxy = _proxy(self, purge_method=True, purge_allow=["10.0.0.0/8"])
        proxy.get(self, "/x")
        self.assertEqual(proxy.get(self, "/x", method="PURGE")[0].code, 401)
        self.assertEqual(proxy.get(self, "/x", method="PURGE", headers={"Authorization": "Bearer x"})[0].code, 403)
        self.assertEqual(
            proxy.get(self, "/x", method="PURGE", headers={"Authorization": f"Bearer {TOKEN}"})[0].code, 200
        )


class OffTests(SynchronousTestCase):
    """
    With C{purge_method = false}, C{PURGE} follows the server's method rules.
    """

    def test_forwardGetOnly(self) -> None:
        """
        With C{forward_get_only}, C{PURGE} is 405, even with the token.
        """
        proxy = _proxy(self, forward_get_only=True)
        proxy.get(self, "/x")
        response, _ = proxy.get(self, "/x", method="PURGE", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(response.code, 405)
        self.assertEqual(len(list(proxy.handle.server("site").cache.entries())), 1)

    def test_forwarded(self) -> None:
        """
        Otherwise C{PURGE} is an uncached method passed to the origin.
        """
        proxy = _proxy(self)
        origin = proxy.origin_agent
        proxy.get(self, "/x")
        response, body = proxy.get(self, "/x", method="PURGE")
        self.assertEqual((response.code, body), (200, b"/x v2"))
        self.assertEqual(len(list(proxy.handle.server("site").cache.entries())), 1)
        self.assertIsNotNone(origin)


class DecisionTests(SynchronousTestCase):
    """
    L{Decider.admit} decides C{PURGE}.
    """

    def decider(self, **config: Any) -> Decider:
        from twisted.internet.task import Clock

        return Decider("s", CreateProxyConfig(purge_method=True, **config), None, Clock())

    def view(self, client: str, path: bytes = b"/a", query: bytes = b"", **headers: str) -> RequestView:
        return RequestView(b"PURGE", path, query, dict(headers), None, client)

    def test_purge(self) -> None:
        """
        An allowed client gets a L{Purge} of the stripped path and query.
        """
        decider = self.decider(purge_allow=("::1", "127.0.0.0/8"))
        self.assertEqual(decider.admit(self.view("127.0.0.1", b"/a", b"x=1"), False), Purge("/a?x=1"))
        self.assertEqual(decider.admit(self.view("::1"), False), Purge("/a"))
        self.assertEqual(decider.admit(self.view("::ffff:127.0.0.2"), False), Purge("/a"))

    def test_refused(self) -> None:
        """
        Without a configured token, any C{Authorization} is 403; none, 401.
        """
        decider = self.decider()
        self.assertEqual(decider.admit(self.view("10.1.1.1"), False).code, 401)
        refused = decider.admit(self.view("10.1.1.1", authorization="Bearer "), False)
        self.assertIsInstance(refused, Reject)
        self.assertEqual(refused.code, 403)
