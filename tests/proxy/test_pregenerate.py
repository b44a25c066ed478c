"""
Pre-generate (SSG) mode in memory, on a fake clock: C{add_snapshot} tracks
only what it stored; invalidation never leaves a gap (a tracked snapshot's
page is replaced only by a successful fetch); snapshots that vary answer
every variant.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, List, Optional

import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.config.loader import parse_config
from phantom_frame.proxy.snapshots import SnapshotError

from tests.memory import Proxy
from tests.origin import header


class Pages(Resource):
    """
    An in-memory origin for snapshot tests: each page says its path and the
    origin's C{version}; C{/image...} varies on C{Accept} (WebP for a
    client that accepts it, PNG otherwise), as Next's image endpoint does.

    @ivar status: the status of every answer (an error makes snapshots
        fail).
    @ivar gate: when set, answers wait for it to fire.
    @ivar hits: requests per path.
    @ivar accepts: the C{Accept} of each image request.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.version = 1
        self.status = 200
        self.gate: Optional[Deferred[None]] = None
        self.hits: Counter = Counter()
        self.accepts: List[Optional[bytes]] = []

    def render(self, request: Any) -> Any:
        """
        Answer now, or when L{gate} fires.
        """
        path = request.path.decode()
        self.hits[path] += 1
        if path.startswith("/image"):
            accept = request.getHeader(b"accept")
            self.accepts.append(accept)
            kind = b"webp" if accept is not None and b"image/webp" in accept else b"png"
            request.setHeader(b"vary", b"Accept")
            request.setHeader(b"content-type", b"image/" + kind)
            body = kind
        else:
            request.setHeader(b"content-type", b"text/html")
            body = b"%s version %d" % (path.encode(), self.version)
        status = self.status

        def answer(_: Any = None) -> None:
            request.setResponseCode(status)
            request.write(body)
            request.finish()

        if self.gate is None:
            request.setResponseCode(status)
            return body
        self.gate.addCallback(answer)
        return NOT_DONE_YET


def ssg(paths: List[str], fallthrough: bool = False) -> Any:
    """
    @return: a configuration with one pre_generate server, C{site}.
    """
    return parse_config(
        {
            "server": {
                "site": {
                    "proxy_url": "http://origin.example",
                    "proxy_mode": "pre_generate",
                    "pre_generate_paths": paths,
                    "pre_generate_fallthrough": fallthrough,
                }
            }
        }
    )


class MemorySnapshots:
    """
    A pre_generate proxy before L{Pages}, in memory, warmed up.
    """

    def __init__(self, testcase: SynchronousTestCase, paths: List[str], fallthrough: bool = False) -> None:
        self.testcase = testcase
        self.origin = Pages()
        self.proxy = Proxy(testcase, ssg(paths, fallthrough), self.origin)
        self.handle = self.proxy.handle
        self.snapshots = self.handle.server("site").snapshots
        self.snapshots.warm_up()
        self.proxy.settle()

    def get(self, path: str, **headers: str) -> Any:
        """
        @return: the status, body and C{Cache-Status} of C{GET path}.
        """
        response, body = self.proxy.get(self.testcase, path, headers=headers or None)
        return response.code, body, header(response, "cache-status")

    def result(self, d: Deferred) -> Any:
        """
        @return: the result of C{d}, once everything has run.
        """
        self.proxy.settle()
        return self.testcase.successResultOf(d)

    def failure(self, d: Deferred) -> Any:
        """
        @return: the failure of C{d}, once everything has run.
        """
        self.proxy.settle()
        return self.testcase.failureResultOf(d)


class AddSnapshotTests(SynchronousTestCase):
    """
    C{add_snapshot} tracks a path only once its page is stored.
    """

    def test_failed_first_fetch_not_tracked(self) -> None:
        """
        A path whose first fetch fails is not tracked: it is not in the
        list, and C{refresh_all_snapshots} does not fetch it again. Once
        tracked, a failed refresh keeps it tracked, with its page.
        """
        ssg = MemorySnapshots(self, [])
        ssg.origin.status = 500
        failure = ssg.failure(ssg.handle.add_snapshot("/broken"))
        failure.trap(SnapshotError)
        self.assertEqual(ssg.handle.snapshots(), {"site": []})
        self.assertEqual(ssg.result(ssg.handle.refresh_all_snapshots()), {"site": {}})
        self.assertEqual(ssg.origin.hits["/broken"], 1)
        ssg.origin.status = 200
        self.assertIsNone(ssg.result(ssg.handle.add_snapshot("/broken")))
        self.assertEqual(ssg.handle.snapshots(), {"site": ["/broken"]})
        # Adding it again refreshes it: a failure then keeps it, and its page.
        ssg.origin.status, ssg.origin.version = 500, 2
        ssg.failure(ssg.handle.add_snapshot("/broken")).trap(SnapshotError)
        self.assertEqual(ssg.handle.snapshots(), {"site": ["/broken"]})
        self.assertEqual(ssg.get("/broken")[:2], (200, b"/broken version 1"))

    def test_removed_while_fetching(self) -> None:
        """
        A path removed while its first fetch is in flight is neither tracked
        nor served when the fetch lands.
        """
        ssg = MemorySnapshots(self, [])
        ssg.origin.gate = Deferred()
        adding = ssg.handle.add_snapshot("/late")
        ssg.proxy.settle()
        ssg.result(ssg.handle.remove_snapshot("/late"))
        ssg.origin.gate.callback(None)
        ssg.result(adding)
        self.assertEqual(ssg.handle.snapshots(), {"site": []})
        ssg.origin.gate = None
        self.assertEqual(ssg.get("/late")[0], 404)


class WaitTests(SynchronousTestCase):
    """
    Requests that wait for a snapshot's first fetch (pure SSG).
    """

    def test_failed_fetch(self) -> None:
        """
        When the fetch a request waits for cannot be stored (the origin
        answered an error), the request gets the 404 of a path without a
        snapshot.
        """
        origin = Pages()
        origin.gate = Deferred()
        origin.status = 500
        proxy = Proxy(self, ssg(["/a"]), origin)
        warmed = proxy.handle.server("site").snapshots.warm_up()
        proxy.settle()
        pending = proxy.client.get("http://proxy.example/a")
        proxy.settle()
        self.assertNoResult(pending)
        origin.gate.callback(None)
        proxy.settle()
        self.assertIn("500", self.successResultOf(warmed)["/a"])
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 404)
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; detail=not-pre-generated")
        self.assertEqual(origin.hits["/a"], 1)


    def test_failed_fetch_fallthrough(self) -> None:
        """
        With fallthrough, a request that waited for a snapshot fetch that
        could not be stored asks the origin itself, and relays its answer.
        """
        origin = Pages()
        origin.gate = Deferred()
        origin.status = 500
        proxy = Proxy(self, ssg(["/a"], fallthrough=True), origin)
        proxy.handle.server("site").snapshots.warm_up()
        proxy.settle()
        pending = proxy.client.get("http://proxy.example/a")
        proxy.settle()
        origin.gate, gate = None, origin.gate
        gate.callback(None)
        proxy.settle()
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 500)
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; detail=not-shared")
        self.assertEqual(origin.hits["/a"], 2)


class InvalidationTests(SynchronousTestCase):
    """
    In pre_generate mode an invalidation never leaves a gap: a tracked
    snapshot's page is replaced only by a successful fetch.
    """

    def test_invalidate_refetches(self) -> None:
        """
        Invalidating a tracked path fetches it again; the old page is served
        until the new one is stored.
        """
        ssg = MemorySnapshots(self, ["/a", "/b"])
        ssg.origin.version = 2
        ssg.origin.gate = Deferred()
        self.assertEqual(ssg.handle.invalidate("/a"), 1)
        ssg.proxy.settle()
        self.assertEqual(ssg.origin.hits, Counter({"/a": 2, "/b": 1}))
        self.assertEqual(ssg.get("/a"), (200, b"/a version 1", "phantom-frame; hit"))
        ssg.origin.gate.callback(None)
        ssg.proxy.settle()
        self.assertEqual(ssg.get("/a")[:2], (200, b"/a version 2"))
        self.assertEqual(ssg.get("/b")[:2], (200, b"/b version 1"))
        self.assertEqual(ssg.handle.snapshots(), {"site": ["/a", "/b"]})

    def test_origin_down(self) -> None:
        """
        With the origin failing, C{/refresh-cache} and C{/invalidate} keep
        every page (each failure logged), and the pages are still served.
        """
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ssg = MemorySnapshots(self, ["/a", "/b"])
        ssg.origin.status = 503
        control = StubTreq(ssg.proxy.control)
        for path in ("/refresh-cache", "/invalidate"):
            d = control.post("http://control" + path, data=json.dumps({"pattern": "*"}).encode())
            response = ssg.result(d)
            self.assertEqual(response.code, 200)
            answer = json.loads(ssg.result(response.content()))
            self.assertEqual(answer["invalidated"], 2)
            ssg.proxy.settle()
            for page in ("/a", "/b"):
                self.assertEqual(ssg.get(page), (200, page.encode() + b" version 1", "phantom-frame; hit"))
        self.assertEqual(ssg.origin.hits, Counter({"/a": 3, "/b": 3}))
        failed = [e for e in events if "snapshot {path} failed" in e.get("log_format", "")]
        self.assertEqual(sorted(e["path"] for e in failed), ["/a", "/a", "/b", "/b"])

    def test_fallthrough_fills_dropped(self) -> None:
        """
        With fallthrough, what misses stored (untracked entries) is dropped
        as usual, while the snapshots stay.
        """
        ssg = MemorySnapshots(self, ["/a"], fallthrough=True)
        self.assertEqual(ssg.get("/other")[2], "phantom-frame; fwd=uri-miss; stored")
        ssg.origin.status = 503
        self.assertEqual(ssg.handle.invalidate_all(), 2)
        ssg.proxy.settle()
        self.assertEqual(ssg.get("/a"), (200, b"/a version 1", "phantom-frame; hit"))
        self.assertEqual(ssg.get("/other")[0], 503)

    def test_reload_drops(self) -> None:
        """
        L{ProxyServer.invalidate_all} without C{keep_snapshots} (a reload
        that lost the filesystem bucket) drops the pages, and fetches them
        again.
        """
        ssg = MemorySnapshots(self, ["/a"])
        server = ssg.handle.server("site")
        ssg.origin.gate = Deferred()
        self.assertEqual(server.invalidate_all(keep_snapshots=False), 1)
        pending = ssg.proxy.client.get("http://proxy.example/a")
        ssg.proxy.settle()
        self.assertNoResult(pending)
        ssg.origin.version = 2
        ssg.origin.gate.callback(None)
        response = ssg.result(pending)
        self.assertEqual(ssg.result(treq.content(response)), b"/a version 1")


class VaryTests(SynchronousTestCase):
    """
    Snapshots that vary (C{Vary: Accept}) answer every browser.
    """

    BROWSER = "image/avif,image/webp,image/*,*/*;q=0.8"

    def test_pure_ssg(self) -> None:
        """
        Without fallthrough, a request of another variant gets the
        snapshot's own variant; the origin is never asked.
        """
        ssg = MemorySnapshots(self, ["/image?url=a"])
        self.assertEqual(ssg.get("/image?url=a"), (200, b"png", "phantom-frame; hit"))
        self.assertEqual(ssg.get("/image?url=a", Accept=self.BROWSER), (200, b"png", "phantom-frame; hit"))
        self.assertEqual(ssg.origin.accepts, [None])

    def test_fallthrough(self) -> None:
        """
        With fallthrough, a request whose variant is missing is fetched and
        stored as another variant of the snapshot, and survives neither an
        invalidation nor a failed fetch, while the snapshot itself is kept;
        a request without C{Accept} still gets the snapshot.
        """
        ssg = MemorySnapshots(self, ["/image?url=a"], fallthrough=True)
        fetched = (200, b"webp", "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(ssg.get("/image?url=a", Accept=self.BROWSER), fetched)
        self.assertEqual(ssg.get("/image?url=a", Accept=self.BROWSER), (200, b"webp", "phantom-frame; hit"))
        self.assertEqual(ssg.get("/image?url=a"), (200, b"png", "phantom-frame; hit"))
        self.assertEqual(ssg.handle.invalidate("/image*"), 2)
        ssg.proxy.settle()
        self.assertEqual(ssg.get("/image?url=a", Accept=self.BROWSER), fetched)
        ssg.origin.status = 503
        self.assertEqual(ssg.handle.invalidate("/image*"), 2)
        ssg.proxy.settle()
        self.assertEqual(ssg.get("/image?url=a"), (200, b"png", "phantom-frame; hit"))
        self.assertEqual(ssg.origin.accepts, [None, self.BROWSER.encode(), None, self.BROWSER.encode(), None])

    def test_pure_ssg_waits(self) -> None:
        """
        Without fallthrough, a request of another variant that arrives
        during the snapshot's first fetch waits for it and gets it.
        """
        origin = Pages()
        origin.gate = Deferred()
        proxy = Proxy(self, ssg(["/image?url=a"]), origin)
        warmed = proxy.handle.server("site").snapshots.warm_up()
        proxy.settle()
        pending = proxy.client.get("http://proxy.example/image?url=a", headers={"Accept": self.BROWSER})
        proxy.settle()
        self.assertNoResult(pending)
        origin.gate.callback(None)
        proxy.settle()
        self.successResultOf(warmed)
        response = self.successResultOf(pending)
        body = treq.content(response)
        proxy.settle()
        self.assertEqual((response.code, self.successResultOf(body)), (200, b"png"))
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; collapsed")
        self.assertEqual(origin.accepts, [None])

