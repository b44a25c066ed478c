"""
Pre-generated snapshots on several phantom-frame nodes sharing one real
Redis: warmed once for all, read from Redis by a node that starts later,
served without a gap through an invalidation on another node, and their
additions and removals followed by every node.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig
from tests.origin import Origin
from tests.test_redis_nodes import TWISTD_REDIS, two_hosts, Node as SharedNode
from tests.redis_server import NO_REDIS, RedisServer

PATHS = ["/versioned/a", "/versioned/b", "/page/c"]


def Node(testcase: TestCase, url: str, origin: str) -> SharedNode:
    """
    @return: one phantom-frame node with a pure pre_generate server of
        C{origin}: its Redis link, its proxy on loopback, its control site.
    """
    config = (
        CreateProxyConfig(origin)
        .with_cache_storage_mode("redis")
        .with_proxy_mode("pre_generate")
        .with_pre_generate_paths(PATHS)
        .with_upstream_timeout(5)
    )
    return SharedNode(testcase, url, origin, config=config)


class SnapshotNodesTests(TestCase):
    """
    Two nodes (two handles, two Redis links) on one real redis-server.
    """

    skip = NO_REDIS

    async def _start(self, nodes: int = 2) -> None:
        self.redisServer = RedisServer(self)
        await self.redisServer.start()
        self.origin = Origin()
        site = Site(self.origin)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.originURL = "http://127.0.0.1:%d" % port.getHost().port
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        self.client = Agent(reactor, pool=self.pool)
        self.nodes: List[Node] = []
        await self._add(nodes)

    async def _add(self, count: int) -> None:
        """
        Start C{count} more nodes at once and wait for their warm-ups.
        """
        added = [Node(self, self.redisServer.url, self.originURL) for _ in range(count)]
        self.nodes.extend(added)
        warmed = await gatherResults([n.server.snapshots.warmed for n in added])
        self.assertEqual(warmed, [{path: None for path in PATHS}] * count)

    async def get(self, node: Node, path: str) -> Tuple[int, bytes, bytes]:
        """
        @return: the code, C{Cache-Status} and body of C{GET path} on C{node}.
        """
        response = await self.client.request(
            b"GET", (node.base + path).encode(), headers=Headers({b"host": [b"www.example.com"]})
        )
        body = await treq.content(response)
        return response.code, response.headers.getRawHeaders(b"cache-status", [b""])[0], body

    async def control(self, node: Node, route: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """
        @return: the JSON answer (a 200) of C{POST route} on C{node}'s
            control site.
        """
        response = await treq.post(
            node.control + route, json.dumps(body).encode(), pool=self.pool,
            headers={b"content-type": [b"application/json"]},
        )
        answer = json.loads(await treq.content(response))
        self.assertEqual(response.code, 200, answer)
        return answer

    def test_warmedOnceForAll(self) -> Any:
        """
        Two nodes starting together on one Redis make one origin request
        per snapshot path; both then answer every snapshot from memory.
        """

        async def run() -> None:
            await self._start()
            self.assertEqual({p: self.origin.hits[p] for p in PATHS}, {p: 1 for p in PATHS})
            for node in self.nodes:
                for path in PATHS:
                    code, status, _ = await self.get(node, path)
                    self.assertEqual(code, 200)
                    self.assertIn(b"hit", status)
                self.assertTrue(all(node.server.snapshots.has(p) for p in PATHS))
            self.assertEqual({p: self.origin.hits[p] for p in PATHS}, {p: 1 for p in PATHS})

        return Deferred.fromCoroutine(run())

    def test_laterNodeReadsRedis(self) -> Any:
        """
        A node that starts after the others reads the snapshots from Redis
        instead of fetching them.
        """

        async def run() -> None:
            await self._start(nodes=1)
            await self._add(1)
            late = self.nodes[1]
            self.assertEqual({p: self.origin.hits[p] for p in PATHS}, {p: 1 for p in PATHS})
            self.assertEqual((await self.get(late, "/versioned/a"))[::2], (200, b"version 1"))

        return Deferred.fromCoroutine(run())

    def test_laterNodeFollowsChanges(self) -> Any:
        """
        A node that starts after snapshots were added and removed on
        another tracks the same paths: the added one read from Redis, the
        removed one dropped.
        """

        async def run() -> None:
            await self._start(nodes=1)
            a = self.nodes[0]
            await self.control(a, "/add_snapshot", {"path": "/page/new"})
            await self.control(a, "/remove_snapshot", {"path": "/page/c"})
            await self._add(1)
            late = self.nodes[1]
            for _ in range(100):
                if late.handle.snapshots() == a.handle.snapshots() and late.server.snapshots.has("/page/new"):
                    break
                await deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(late.handle.snapshots(), {"api": ["/versioned/a", "/versioned/b", "/page/new"]})
            self.assertEqual((await self.get(late, "/page/new"))[0], 200)
            self.assertEqual((await self.get(late, "/page/c"))[0], 404)
            self.assertEqual(self.origin.hits["/page/new"], 1)

        return Deferred.fromCoroutine(run())

    def test_noGapAfterPurge(self) -> Any:
        """
        A purge of a tracked page on one node: every node keeps answering
        200 with the old page while the refresh is slow, then every node
        answers the new page, fetched once.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            self.origin.gate = Deferred()
            self.origin.version = 2
            answer = await self.control(a, "/invalidate", {"pattern": "/versioned/*"})
            self.assertEqual(answer["nodes_confirmed"], 2)
            for _ in range(10):
                for node in (b, a):
                    self.assertEqual((await self.get(node, "/versioned/a"))[::2], (200, b"version 1"))
                await deferLater(reactor, 0.02, lambda: None)
            self.origin.gate.callback(None)
            seen: List[Optional[bytes]] = [None, None]
            for _ in range(200):
                for i, node in enumerate((a, b)):
                    code, _, seen[i] = await self.get(node, "/versioned/a")
                    self.assertEqual(code, 200)
                if seen == [b"version 2", b"version 2"]:
                    break
                await deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(seen, [b"version 2", b"version 2"])
            self.assertEqual((self.origin.hits["/versioned/a"], self.origin.hits["/versioned/b"]), (2, 2))
            self.assertEqual(self.origin.hits["/page/c"], 1)

        return Deferred.fromCoroutine(run())

    def test_addAndRemoveFollowed(self) -> Any:
        """
        A snapshot added on one node is tracked and served by the other
        (read from Redis, not fetched); one removed on the other is dropped
        by both; both calls say that both nodes confirmed.
        """

        async def run() -> None:
            await self._start()
            a, b = self.nodes
            answer = await self.control(a, "/add_snapshot", {"path": "/page/new"})
            self.assertEqual((answer["ok"], answer["nodes_confirmed"]), (True, 2))
            self.assertIn("/page/new", b.handle.snapshots()["api"])
            for _ in range(100):
                if b.server.snapshots.has("/page/new"):
                    break
                await deferLater(reactor, 0.01, lambda: None)
            code, status, _ = await self.get(b, "/page/new")
            self.assertEqual((code, self.origin.hits["/page/new"]), (200, 1))
            self.assertIn(b"hit", status)
            answer = await self.control(b, "/remove_snapshot", {"path": "/page/new"})
            self.assertEqual(answer["nodes_confirmed"], 2)
            self.assertNotIn("/page/new", a.handle.snapshots()["api"])
            self.assertEqual((await self.get(a, "/page/new"))[0], 404)
            self.assertEqual(self.origin.hits["/page/new"], 1)

        return Deferred.fromCoroutine(run())


#: Two C{twistd} processes ("two hosts") with one pre_generate server on
#: one Redis.
TWISTD_SNAPSHOTS = TWISTD_REDIS + """\
proxy_mode = "pre_generate"
pre_generate_paths = ["/versioned/a", "/versioned/b"]
"""


class TwoProcessesTests(TestCase):
    """
    Two real C{twistd} processes sharing their snapshots through one Redis.
    """

    skip = NO_REDIS

    async def test_snapshotsAcrossProcesses(self) -> None:
        """
        Both processes start with the same snapshot list: the origin gets
        one request per path. A purge on the first keeps the second
        answering 200 (the old page) while the refresh is slow; then both
        answer the new page.
        """
        origin = Origin()
        ports, agent, pool = await two_hosts(self, TWISTD_SNAPSHOTS, origin)
        self.addCleanup(lambda: origin.gate is None or origin.gate.called or origin.gate.callback(None))

        async def get(http: int, path: bytes) -> Tuple[int, bytes]:
            response = await agent.request(
                b"GET", b"http://127.0.0.1:%d%s" % (http, path), Headers({b"host": [b"www.example.com"]})
            )
            return response.code, await treq.content(response)

        for http, _ in ports:
            for path in (b"/versioned/a", b"/versioned/b"):
                # A request during the warm-up waits for its snapshot.
                self.assertEqual(await get(http, path), (200, b"version 1"))
        self.assertEqual((origin.hits["/versioned/a"], origin.hits["/versioned/b"]), (1, 1))
        origin.gate = Deferred()
        origin.version = 2
        response = await treq.post(
            "http://127.0.0.1:%d/invalidate" % ports[0][1], json.dumps({"pattern": "/versioned/a"}).encode(),
            pool=pool, headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(json.loads(await treq.content(response))["nodes_confirmed"], 2)
        for _ in range(10):
            self.assertEqual(await get(ports[1][0], b"/versioned/a"), (200, b"version 1"))
            await deferLater(reactor, 0.02, lambda: None)
        origin.gate.callback(None)
        seen: List[Tuple[int, bytes]] = []
        for _ in range(200):
            seen = [await get(http, b"/versioned/a") for http, _ in ports]
            self.assertEqual([code for code, _ in seen], [200, 200])
            if seen == [(200, b"version 2")] * 2:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(seen, [(200, b"version 2")] * 2)
        self.assertEqual((origin.hits["/versioned/a"], origin.hits["/versioned/b"]), (2, 1))
