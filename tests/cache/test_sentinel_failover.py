"""
Tests for the C{redis+sentinel://} form of C{redis_url} against a real
master, replica and Sentinel: nodes, proxies and C{phantom-frame check}
through the Sentinel, a failover and a switchover.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.bus import RedisNode
from phantom_frame.config.check import check
from phantom_frame.config.redis_tier import eviction_warning
from phantom_frame.embed import default_agent
from tests.origin import Origin
from tests.redis_sentinel import NO_REDIS, SERVICE, SentinelGroup, command, eventually


class SentinelTests(TestCase):
    """
    Against a real master, replica and Sentinel.
    """

    skip = NO_REDIS
    timeout = 120

    async def _start(self, policy: str = "allkeys-lru") -> None:
        self.group = SentinelGroup(self, policy=policy)
        await self.group.start()

    def _node(self) -> RedisNode:
        node = RedisNode(self.group.url, reactor, prefix="test")
        node.start()
        self.addCleanup(node.stop)
        return node

    def _proxy(self, node: RedisNode, origin: str) -> str:
        """
        @return: the base URL of a proxy sharing its cache through C{node}.
        """
        agent, pool = default_agent(reactor)
        self.addCleanup(pool.closeCachedConnections)
        config = CreateProxyConfig(origin).with_cache_storage_mode("redis").with_upstream_timeout(5)
        resource, handle = create_proxy(config, reactor, agent=agent, name="api", redis=node)
        self.addCleanup(handle.close)
        site = Site(resource)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return "http://127.0.0.1:%d" % port.getHost().port

    def _origin(self) -> str:
        site = Site(Origin())
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.client = Agent(reactor, pool=pool)
        return "http://127.0.0.1:%d" % port.getHost().port

    async def get(self, base: str, path: str) -> Tuple[int, bytes]:
        """
        @return: the status and C{Cache-Status} of C{GET path}.
        """
        response = await self.client.request(
            b"GET", (base + path).encode(), headers=Headers({b"host": [b"www.example.com"]})
        )
        await treq.content(response)
        return response.code, response.headers.getRawHeaders(b"cache-status", [b""])[0]

    async def test_sharesThroughSentinel(self) -> None:
        """
        Nodes find the master through the Sentinel: what one proxy stores
        is in the master and a hit on another.
        """
        await self._start()
        origin = self._origin()
        nodes = [self._node(), self._node()]
        self.assertTrue(all([await node.ready(10) for node in nodes]))
        a, b = (self._proxy(node, origin) for node in nodes)
        code, status = await self.get(a, "/page/one")
        self.assertEqual((code, b"stored" in status), (200, True))
        code, status = await self.get(b, "/page/one")
        self.assertEqual((code, b"hit" in status), (200, True))
        stored = await command(self.group.master.port, "DBSIZE")
        self.assertGreater(stored, 0)

        async def replicated() -> bool:
            return await command(self.group.replica.port, "DBSIZE") == stored

        await eventually(replicated, 10, "the replica holds the entries")

    async def test_failover(self) -> None:
        """
        The master dies: while the Sentinel promotes the replica, the
        proxies answer from L1 and the origin (never a 5xx) and count the
        failed Redis commands; then the nodes follow the new master and
        sharing resumes there.
        """
        await self._start()
        origin = self._origin()
        nodes = [self._node(), self._node()]
        self.assertTrue(all([await node.ready(10) for node in nodes]))
        a, b = (self._proxy(node, origin) for node in nodes)
        self.assertEqual((await self.get(a, "/page/before"))[0], 200)
        replica = ("127.0.0.1", self.group.replica.port)
        await self.group.master.kill()
        turn = [0]

        async def shared() -> bool:
            turn[0] += 1
            path = f"/page/during-{turn[0]}"
            for base in (a, b, a):
                code, status = await self.get(base, "/page/before")
                self.assertLess(code, 500)
            code, _ = await self.get(a, path)
            self.assertLess(code, 500)
            code, status = await self.get(b, path)
            self.assertLess(code, 500)
            return b"hit" in status

        # A failed assertion must end the test, not be polled again.
        failures: List[Any] = []

        async def guarded() -> bool:
            try:
                return await shared()
            except AssertionError as e:
                failures.append(e)
                return True

        await eventually(guarded, 60, "sharing resumed on the new master", interval=0.1)
        if failures:
            raise failures[0]
        self.assertEqual(await self.group.named(), replica)
        self.assertEqual(nodes[0]._connector.master, replica)
        role = await command(self.group.replica.port, "ROLE")
        self.assertEqual(role[0], b"master")
        self.assertGreater(await command(self.group.replica.port, "DBSIZE"), 0)
        self.assertGreater(nodes[0].errors + nodes[1].errors, 0)

    async def test_checkThroughSentinel(self) -> None:
        """
        C{phantom-frame check} reads the master's C{maxmemory-policy}
        through the Sentinel and warns about one that does not evict.
        """
        await self._start(policy="noeviction")
        warning = eviction_warning(self.group.url)
        self.assertIsNotNone(warning)
        self.assertIn("noeviction", warning)
        self.assertIsNone(eviction_warning(f"redis+sentinel://127.0.0.1:{self.group.master.port}/{SERVICE}"))
        fd, path = tempfile.mkstemp(suffix=".toml")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(f'redis_url = "{self.group.url}"\n\n[server.api]\nproxy_url = "http://127.0.0.1:1"\n')
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check(path, out, err), 0, err.getvalue())
        self.assertIn("maxmemory-policy is 'noeviction'", out.getvalue())

    async def test_switchover(self) -> None:
        """
        A failover asked of the Sentinel (the old master lives on): once
        the Sentinel names the new master, the nodes' command and bus
        connections follow it at once (the Sentinel publishes
        C{+switch-master}; the old master is still a writable master then,
        until the Sentinel turns it into a replica some 8 s later), and
        sharing goes on there.
        """
        await self._start()
        origin = self._origin()
        nodes = [self._node(), self._node()]
        self.assertTrue(all([await node.ready(10) for node in nodes]))
        a, b = (self._proxy(node, origin) for node in nodes)
        old, new = self.group.master.port, self.group.replica.port
        self.assertEqual(await command(self.group.sentinel.port, "SENTINEL", "FAILOVER", SERVICE), "OK")

        async def followed() -> bool:
            listening = [(await command(port, "CLIENT", "LIST")).count(b"cmd=psubscribe") for port in (old, new)]
            return listening == [0, 2] and all(node.connected and node.listening for node in nodes)

        async def switched() -> bool:
            return await self.group.named() == ("127.0.0.1", new)

        await eventually(switched, 30, "the Sentinel names the new master", interval=0.05)
        await eventually(followed, 6, "the bus connections moved to the new master", interval=0.1)

        async def shared() -> bool:
            path = f"/page/after-{os.urandom(4).hex()}"
            code, status = await self.get(a, path)
            self.assertEqual(code, 200)
            code, status = await self.get(b, path)
            return b"hit" in status

        await eventually(shared, 10, "sharing goes on on the new master", interval=0.1)
