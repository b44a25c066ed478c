"""
Pre-generate (SSG) mode end to end: warm-up, serving, the snapshot API, and
the control routes that drive it.
"""

from __future__ import annotations

import json

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CreateProxyConfig
from phantom_frame.config.loader import parse_config
from phantom_frame.ops.control import ControlResource
from phantom_frame.proxy.snapshots import NotPreGenerated, SnapshotError
from phantom_frame.proxy.origin import UpstreamError

from tests.memory import Proxy
from tests.origin import PAGE, Origin, Running, header

SSG = CreateProxyConfig().with_proxy_mode("pre_generate")


class WarmUpTests(TestCase):
    """
    Warm-up at start fetches every listed path with bounded concurrency.
    """

    async def test_counts_and_concurrency(self) -> None:
        """
        Every path is fetched once, at most C{pre_generate_concurrency} at a
        time, and progress is logged.
        """
        paths = [f"/slowpage/{i}" for i in range(12)]
        config = SSG.with_pre_generate_paths(paths)
        config = config._with(pre_generate_concurrency=3)
        run = Running(self, config)
        results = await run.server.snapshots.warmed
        self.assertEqual(results, {p: None for p in paths})
        self.assertEqual(sum(run.origin.hits.values()), 12)
        self.assertLessEqual(run.origin.maxInFlight, 3)
        self.assertGreaterEqual(run.origin.maxInFlight, 2)
        for path in paths:
            response, body = await run.fetch("GET", path)
            self.assertEqual(body, b"slow page " + path.encode())
            self.assertEqual(header(response, "cache-status"), "phantom-frame; hit")
        self.assertEqual(sum(run.origin.hits.values()), 12)

    async def test_failures_reported(self) -> None:
        """
        A path whose origin answers an error status, or cannot be stored,
        fails with its reason and is not stored as a page.
        """
        run = Running(self, SSG.with_pre_generate_paths(["/page/ok", "/status/500", "/cookie"]))
        results = await run.server.snapshots.warmed
        self.assertIsNone(results["/page/ok"])
        self.assertIn("500", results["/status/500"])
        self.assertIn("set-cookie", results["/cookie"])
        response, _ = await run.fetch("GET", "/status/500")
        self.assertEqual(response.code, 404)
        self.flushLoggedErrors()


class WarmUpWaitTests(SynchronousTestCase):
    """
    Requests that arrive during the warm-up, in memory on a fake clock.
    """

    def test_request_during_warm_up_waits(self) -> None:
        """
        A request for a listed path that arrives while its fetch is in
        flight (or still queued) waits for it instead of getting 404.
        """
        origin = Origin()
        origin.gate = Deferred()
        config = parse_config(
            {
                "server": {
                    "site": {
                        "proxy_url": "http://origin.example",
                        "proxy_mode": "pre_generate",
                        "pre_generate_paths": ["/gated"],
                        "include_paths": [],
                    }
                }
            }
        )
        proxy = Proxy(self, config, origin)
        warmed = proxy.handle.server("site").snapshots.warm_up()
        proxy.settle()
        self.assertEqual(origin.hits["/gated"], 1)
        pending = proxy.client.get("http://proxy.example/gated")
        proxy.settle()
        self.assertNoResult(pending)
        self.assertNoResult(warmed)
        origin.gate.callback(None)
        proxy.settle()
        self.assertEqual(self.successResultOf(warmed), {"/gated": None})
        response = self.successResultOf(pending)
        body = treq.content(response)
        proxy.settle()
        self.assertEqual(response.code, 200)
        self.assertEqual(self.successResultOf(body), PAGE)
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; collapsed")
        self.assertEqual(origin.hits["/gated"], 1)


class ServingTests(TestCase):
    """
    How a pre_generate server answers.
    """

    async def test_pure_ssg_never_reaches_origin(self) -> None:
        """
        Without fallthrough, a miss is 404 whatever include/exclude say,
        other methods get 405, and the origin is never asked at request time.
        """
        config = SSG.with_pre_generate_paths(["/page/a"]).with_exclude_paths(["/page/*"])
        run = Running(self, config)
        await run.server.snapshots.warmed
        before = sum(run.origin.hits.values())
        response, body = await run.fetch("GET", "/page/a")
        self.assertEqual(response.code, 200)
        for method, path, code in (
            ("GET", "/page/b", 404),
            ("GET", "/echo", 404),
            ("POST", "/echo", 405),
            ("GET", "/page/a?x=1", 404),
        ):
            response, _ = await run.fetch(method, path)
            self.assertEqual(response.code, code, (method, path))
        response, body = await run.fetch("HEAD", "/page/a")
        self.assertEqual((response.code, body), (200, b""))
        response, _ = await run.fetch("GET", "/page/a", headers={"Authorization": "Bearer x"})
        self.assertEqual(response.code, 200)
        self.assertEqual(sum(run.origin.hits.values()), before)

    async def test_fallthrough(self) -> None:
        """
        With fallthrough, misses behave as in dynamic mode.
        """
        run = Running(self, SSG.with_pre_generate_paths(["/page/a"]).with_pre_generate_fallthrough(True))
        await run.server.snapshots.warmed
        response, _ = await run.fetch("GET", "/page/b")
        self.assertEqual(response.code, 200)
        await run.fetch("GET", "/page/b")
        self.assertEqual(run.origin.hits["/page/b"], 1)

    async def test_any_media_type(self) -> None:
        """
        Snapshots are stored whatever their media type, even under a
        strategy that would not store them.
        """
        config = SSG.with_pre_generate_paths(["/i.png"]).with_cache_strategy("only_html")
        run = Running(self, config)
        self.assertEqual(await run.server.snapshots.warmed, {"/i.png": None})
        response, body = await run.fetch("GET", "/i.png")
        self.assertTrue(body.startswith(b"\x89PNG"))

    async def test_snapshots_not_evicted(self) -> None:
        """
        Snapshots are kept outside the LRU bound: a tiny C{cache_max_bytes}
        does not evict them.
        """
        paths = [f"/page/{i}" for i in range(5)]
        run = Running(self, SSG.with_pre_generate_paths(paths).with_cache_max_bytes(10))
        await run.server.snapshots.warmed
        for path in paths:
            response, _ = await run.fetch("GET", path)
            self.assertEqual(response.code, 200)


class SnapshotAPITests(TestCase):
    """
    L{CacheHandle}'s snapshot operations.
    """

    async def test_add_refresh_remove(self) -> None:
        """
        C{add_snapshot} tracks and fetches a path (once, however often it is
        added); C{remove_snapshot} drops it; C{refresh_all_snapshots} fetches
        every tracked path again.
        """
        run = Running(self, SSG)
        await run.handle.add_snapshot("/page/n")
        await run.handle.add_snapshot("/page/n")
        self.assertEqual(run.handle.snapshots(), {"default": ["/page/n"]})
        self.assertEqual(run.origin.hits["/page/n"], 2)
        response, _ = await run.fetch("GET", "/page/n")
        self.assertEqual(response.code, 200)
        results = await run.handle.refresh_all_snapshots()
        self.assertEqual(results, {"default": {"/page/n": None}})
        self.assertEqual(run.origin.hits["/page/n"], 3)
        await run.handle.remove_snapshot("/page/n")
        response, _ = await run.fetch("GET", "/page/n")
        self.assertEqual(response.code, 404)
        self.assertEqual(run.handle.snapshots(), {"default": []})

    async def test_origin_failure(self) -> None:
        """
        Snapshot operations fail with a clear error when the origin fails or
        answers an error status.
        """
        run = Running(self, SSG)
        with self.assertRaises(SnapshotError) as caught:
            await run.handle.add_snapshot("/status/503")
        self.assertIn("503", str(caught.exception))
        await run.stopOrigin()
        with self.assertRaises(UpstreamError) as caught:
            await run.handle.refresh_snapshot("/page/x")
        self.assertIn("refused", str(caught.exception).lower())

    async def test_refresh_is_atomic(self) -> None:
        """
        While a refresh is in flight readers get the old page (never a 404);
        a failed refresh keeps it.
        """
        run = Running(self, SSG.with_pre_generate_paths(["/versioned"]))
        await run.server.snapshots.warmed
        run.origin.version = 2
        run.origin.gate = Deferred()
        refreshing = run.handle.refresh_snapshot("/versioned")
        response, body = await run.fetch("GET", "/versioned")
        self.assertEqual(body, b"version 1")
        run.origin.gate.callback(None)
        await refreshing
        _, body = await run.fetch("GET", "/versioned")
        self.assertEqual(body, b"version 2")
        run.origin.gate = None
        await run.stopOrigin()
        with self.assertRaises(UpstreamError):
            await run.handle.refresh_snapshot("/versioned")
        _, body = await run.fetch("GET", "/versioned")
        self.assertEqual(body, b"version 2")
        self.flushLoggedErrors()

    async def test_dynamic_server_refused(self) -> None:
        """
        Snapshot operations on a dynamic server fail with L{NotPreGenerated}.
        """
        run = Running(self)
        with self.assertRaises(NotPreGenerated):
            await run.handle.add_snapshot("/page/a")


class ControlSnapshotTests(TestCase):
    """
    The snapshot routes of the control site, over loopback.
    """

    def setUp(self) -> None:
        from twisted.web.server import Site

        self.run = Running(self, SSG.with_pre_generate_paths(["/page/a"]))
        control = Site(ControlResource(self.run.handle, "tok"))
        self.port = reactor.listenTCP(0, control, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.control = "http://127.0.0.1:%d" % self.port.getHost().port

    async def call(self, path: str, body=None, token: str = "tok", raw: bytes = None):
        from io import BytesIO

        from twisted.web.client import FileBodyProducer
        from twisted.web.http_headers import Headers
        import treq

        headers = Headers({b"authorization": [b"Bearer " + token.encode()]})
        data = raw if raw is not None else json.dumps(body or {}).encode()
        response = await self.run.client.request(
            b"POST", (self.control + path).encode(), headers, FileBodyProducer(BytesIO(data))
        )
        return response.code, json.loads(await treq.content(response))

    async def test_routes(self) -> None:
        """
        add, refresh, remove and their bulk forms, refresh_all: summaries
        with per-item results, 502 with the reason on origin failure.
        """
        await self.run.server.snapshots.warmed
        code, answer = await self.call("/add_snapshot", {"path": "/page/b"})
        self.assertEqual((code, answer["ok"]), (200, True))
        code, answer = await self.call("/refresh_snapshot", {"path": "/page/a", "server": "default"})
        self.assertEqual(code, 200)
        code, answer = await self.call("/add_snapshot", {"path": "/status/500"})
        self.assertEqual(code, 502)
        self.assertIn("500", answer["error"])
        code, answer = await self.call("/bulk_add_snapshot", {"paths": ["/page/c", "/status/404"]})
        self.assertEqual(code, 200)
        self.assertEqual((answer["requested"], answer["succeeded"], answer["failed"]), (2, 1, 1))
        self.assertEqual([r["ok"] for r in answer["results"]], [True, False])
        code, answer = await self.call("/refresh_all_snapshots")
        self.assertEqual(code, 200)
        # The paths whose first fetch failed are not tracked.
        self.assertEqual(answer["requested"], 3)
        self.assertEqual(self.run.handle.snapshots(), {"default": ["/page/a", "/page/b", "/page/c"]})
        code, answer = await self.call("/bulk_remove_snapshot", {"paths": ["/page/b", "/page/c"]})
        self.assertEqual((code, answer["succeeded"]), (200, 2))
        response, _ = await self.run.fetch("GET", "/page/b")
        self.assertEqual(response.code, 404)
        code, _ = await self.call("/remove_snapshot", {"path": "/page/a"})
        self.assertEqual(code, 200)
        self.flushLoggedErrors()

    async def test_errors(self) -> None:
        """
        401 before anything, then 400 for bad bodies, 404 for an unknown
        server, 400 for a snapshot call on a dynamic server.
        """
        code, _ = await self.call("/add_snapshot", raw=b"{bad", token="wrong")
        self.assertEqual(code, 401)
        for raw in (b"{bad", b'{"path": 3}', b'{"path": "no-slash"}', b'{"paths": "/x"}'):
            code, _ = await self.call("/add_snapshot" if b"paths" not in raw else "/bulk_add_snapshot", raw=raw)
            self.assertEqual(code, 400, raw)
        code, _ = await self.call("/add_snapshot", {"path": "/x", "server": "nope"})
        self.assertEqual(code, 404)
        from phantom_frame import create_proxy

        create_proxy(CreateProxyConfig("http://127.0.0.1:1"), reactor, name="dyn", handle=self.run.handle,
                     agent=self.run.agent)
        code, answer = await self.call("/add_snapshot", {"path": "/x", "server": "dyn"})
        self.assertEqual(code, 400)
        self.assertIn("pre_generate", answer["error"])
