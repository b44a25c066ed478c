"""
Webhooks end to end: a real webhook server, the proxy and its origin on
loopback.
"""

from __future__ import annotations

import json
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from phantom_frame import CreateProxyConfig, Webhook, WebhookType

from tests.origin import Running, header, until


class Hooks(Resource):
    """
    The webhook server: the path chooses the answer; every call is recorded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Any] = []
        self.pending: List[Any] = []
        self.called = Deferred()

    def render_POST(self, request) -> Any:
        path = request.path.decode()
        self.calls.append((path, json.loads(request.content.read())))
        if not self.called.called:
            self.called.callback(None)
        if path == "/allow":
            return b""
        if path == "/redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"https://login.example/")
            return b""
        if path == "/deny":
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain")
            return b"go away"
        if path == "/fail":
            request.setResponseCode(500)
            return b"broken"
        if path == "/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        if path == "/key-json":
            return json.dumps({"cache_key": "tenant:" + request.getHeader(b"x-ignored").decode()
                               if request.getHeader(b"x-ignored") else "fixed-key"}).encode()
        if path == "/key-text":
            payload = self.calls[-1][1]
            return ("by-agent:" + payload["headers"].get("user-agent", "")).encode()
        return b""


class WebhookTests(TestCase):
    """
    Each webhook type, against a real webhook server.
    """

    def setUp(self) -> None:
        self.hooks = Hooks()
        self.port = reactor.listenTCP(0, Site(self.hooks), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self._finishPending)

    def _finishPending(self) -> None:
        for request in self.hooks.pending:
            if not request._disconnected:
                request.finish()

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port.getHost().port, path)

    def proxy(self, *hooks: Webhook) -> Running:
        return Running(self, CreateProxyConfig()._with(webhooks=hooks))

    async def test_blocking_allows(self) -> None:
        """
        A 2xx from a blocking webhook lets the request through; the webhook
        gets the request's method, stripped path, query and headers.
        """
        run = self.proxy(Webhook(self.url("/allow"), WebhookType.BLOCKING))
        response, body = await run.fetch("GET", "/page/a?x=1", headers={"User-Agent": "t"})
        self.assertEqual(response.code, 200)
        path, payload = self.hooks.calls[0]
        self.assertEqual(
            (payload["method"], payload["path"], payload["query"], payload["headers"]["user-agent"]),
            ("GET", "/page/a", "x=1", "t"),
        )
        self.assertEqual(payload["server"], "default")

    async def test_blocking_relays(self) -> None:
        """
        A 3xx is relayed with its C{Location}; another status with its body;
        an error or a timeout gives 503. The origin is never asked.
        """
        cases = [
            ("/redirect", 302, b""),
            ("/deny", 403, b"go away"),
            ("/fail", 500, b"broken"),
            ("/nowhere-port", 503, b"Service Unavailable\n"),
            ("/slow", 503, b"Service Unavailable\n"),
        ]
        for path, code, body in cases:
            url = self.url(path) if path != "/nowhere-port" else "http://127.0.0.1:1/"
            run = self.proxy(Webhook(url, WebhookType.BLOCKING, timeout_ms=200))
            response, received = await run.fetch("GET", "/page/a")
            self.assertEqual((response.code, received), (code, body), path)
            if code == 302:
                self.assertEqual(header(response, "location"), "https://login.example/")
            self.assertEqual(run.origin.hits["/page/a"], 0)

    async def test_blocking_gates_upgrades(self) -> None:
        """
        Blocking webhooks apply to upgrade requests too.
        """
        run = self.proxy(Webhook(self.url("/deny"), WebhookType.BLOCKING))
        response, body = await run.fetch(
            "GET", "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"}
        )
        self.assertEqual((response.code, body), (403, b"go away"))
        self.assertEqual(self.hooks.calls[0][1]["path"], "/ws")

    async def test_notify_does_not_wait(self) -> None:
        """
        A notify webhook is called without the request waiting for it, and
        its failure does not affect the request.
        """
        run = self.proxy(Webhook(self.url("/slow"), WebhookType.NOTIFY, timeout_ms=200))
        response, _ = await run.fetch("GET", "/page/n")
        self.assertEqual(response.code, 200)
        await self.hooks.called
        self.assertEqual(self.hooks.calls[0][1]["path"], "/page/n")
        webhooks = run.server.webhooks
        self.assertEqual(webhooks.notifying, 1)
        await until(lambda: webhooks.notifying == 0)
        self.flushLoggedErrors()

    async def test_cache_key(self) -> None:
        """
        A cache_key webhook's answer (plain text or JSON) is the request's
        cache key; a failing one leaves the default key.
        """
        run = self.proxy(Webhook(self.url("/key-text"), WebhookType.CACHE_KEY))
        await run.fetch("GET", "/page/k1", headers={"User-Agent": "bot"})
        await run.fetch("GET", "/page/k2", headers={"User-Agent": "bot"})
        self.assertEqual(run.origin.hits["/page/k2"], 0, "both share the key by-agent:bot")
        self.assertEqual(run.handle.invalidate("by-agent:bot"), 1)
        run = self.proxy(Webhook(self.url("/key-json"), WebhookType.CACHE_KEY))
        await run.fetch("GET", "/page/j1")
        _, body = await run.fetch("GET", "/page/j2")
        self.assertIn(b"/page/j1", body)
        run = self.proxy(Webhook("http://127.0.0.1:1/", WebhookType.CACHE_KEY, timeout_ms=200))
        await run.fetch("GET", "/page/d")
        self.assertEqual(run.handle.invalidate("GET:/page/d"), 1)
        self.flushLoggedErrors()
