"""
The Redis tier's byte bound, with real processes: a C{twistd -n
phantom-frame} proxy fills 2,000 distinct 100 KB pages into a redis-server
limited to C{maxmemory 64mb} with C{allkeys-lru}. Redis stays within its
bound by evicting, every request is answered, and the proxy's memory stays
near its L1 (C{redis_l1_bytes}) instead of growing with what went through.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from phantom_frame.cache.bus import RedisNode
from tests.redis_server import NO_REDIS, RedisServer
from tests.test_plugin import spawn_twistd

PAGES = 2000
PAGE_BYTES = 100_000
CONNECTIONS = 6
MiB = 1024 * 1024
MAXMEMORY = 64 * MiB

CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
access_log = false
redis_url = "{redis}"
redis_prefix = "bound"
redis_l1_bytes = "8MB"

[server.site]
proxy_url = "http://127.0.0.1:{origin}"
cache_storage_mode = "redis"
compress_strategy = "none"
"""


class Pages(Resource):
    """
    An origin of distinct, incompressible 100 KB pages, cacheable for an
    hour.

    @ivar served: how many pages it served.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    def render_GET(self, request: Any) -> bytes:
        """
        @return: C{PAGE_BYTES} random bytes.
        """
        self.served += 1
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return os.urandom(PAGE_BYTES)


def memory(pid: int) -> Dict[str, int]:
    """
    @return: the C{VmRSS} and C{VmHWM} (peak) of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return {
        name: int(re.search(rf"^{name}:\s+(\d+) kB", text, re.M).group(1)) * 1024  # type: ignore[union-attr]
        for name in ("VmRSS", "VmHWM")
    }


def info(text: Any) -> Dict[str, str]:
    """
    @return: the fields of a Redis C{INFO} answer (txredisapi may have
        parsed it already).
    """
    if isinstance(text, dict):
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in text.items()}
    if isinstance(text, bytes):
        text = text.decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


class ByteBoundTests(TestCase):
    """
    One proxy process on a Redis of 64 MB.
    """

    skip = NO_REDIS or (None if os.path.exists("/proc/self/status") else "no /proc to read memory from")

    async def test_boundedByRedisMaxmemory(self) -> None:
        """
        200 MB of distinct pages through the proxy: each answered 200 with
        its full body; Redis evicts to stay under C{maxmemory}; the proxy's
        peak memory stays far below what it would be holding the pages.
        """
        redis = RedisServer(self)
        await redis.start()
        node = RedisNode(redis.url, reactor, prefix="test")
        node.start()
        self.addCleanup(node.stop)
        for _ in range(400):
            if node.connected:
                break
            await deferLater(reactor, 0.025, lambda: None)
        await node.call("execute_command", "CONFIG", "SET", "maxmemory", str(MAXMEMORY))
        origin = Pages()
        site = Site(origin)
        site.noisy = False
        originPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        child = spawn_twistd(self, CONFIG.format(redis=redis.url, origin=originPort.getHost().port))
        http, _ = await child.ports()
        start = memory(child.transport.pid)
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = CONNECTIONS
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        codes: List[int] = []
        sizes: List[int] = []
        peaks: List[int] = []

        async def fetch(first: int) -> None:
            # One of CONNECTIONS clients, each on its keep-alive connection.
            for page in range(first, PAGES, CONNECTIONS):
                response = await agent.request(b"GET", b"http://127.0.0.1:%d/p/%d" % (http, page))
                body = await treq.content(response)
                codes.append(response.code)
                sizes.append(len(body))
                if page % 200 == 0:
                    peaks.append(int(info(await node.call("info", "memory"))["used_memory"]))

        await gatherResults([Deferred.fromCoroutine(fetch(i)) for i in range(CONNECTIONS)])
        end = memory(child.transport.pid)
        stats = info(await node.call("info", "all"))
        self.assertEqual(set(codes), {200})
        self.assertEqual((len(sizes), set(sizes)), (PAGES, {PAGE_BYTES}))
        self.assertEqual(origin.served, PAGES)
        used = int(stats["used_memory"])
        # Redis evicts before each write, so a sample taken just after one
        # may pass maxmemory by that write (a page and its head).
        self.assertLess(max(peaks + [used]), MAXMEMORY + 4 * PAGE_BYTES, (peaks, used))
        self.assertGreater(max(peaks), MAXMEMORY // 2)
        # It did have to evict: 200 MB do not fit.
        self.assertGreater(int(stats["evicted_keys"]), 0)
        # The proxy's peak grew by its L1 (8 MB) and buffers, not by the
        # 200 MB that went through it.
        grown = end["VmHWM"] - start["VmRSS"]
        self.assertLess(grown, 80 * MiB, (start, end))

