"""
Tests for L{phantom_frame.cache.sentinel} and the C{redis+sentinel://}
form of C{redis_url}: the endpoint on fake connections and a fake clock,
then a node, proxies and C{phantom-frame check} against a real master,
replica and Sentinel, through a failover.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.bus import RedisNode
from phantom_frame.cache.redisurl import RedisAddress, parse_redis_url
from phantom_frame.cache.sentinel import NoMaster, ReplyError, SentinelEndpoint, WrongRole, encode, parse_reply
from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.check import check
from phantom_frame.config.redis_tier import eviction_warning
from phantom_frame.embed import default_agent
from tests.origin import Origin
from tests.redis_sentinel import NO_REDIS, SERVICE, SentinelGroup, command, eventually

MASTER = b"*2\r\n$8\r\n10.9.9.9\r\n$4\r\n6390\r\n"
ROLE_MASTER = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
ROLE_REPLICA = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:0\r\n"


class URLTests(SynchronousTestCase):
    """
    C{redis+sentinel://} URLs.
    """

    def test_sentinels(self) -> None:
        """
        Comma-separated Sentinels (26379 by default, IPv6 in brackets), the
        service, the database, the master's password and the Sentinels'.
        """
        self.assertEqual(
            parse_redis_url("redis+sentinel://:s%40cret@s1:26380,s2,[::1]:5/mymaster/3?sentinel_password=p"),
            RedisAddress(
                db=3, password="s@cret", sentinels=(("s1", 26380), ("s2", 26379), ("::1", 5)),
                service="mymaster", sentinel_password="p",
            ),
        )
        self.assertEqual(
            parse_redis_url("redis+sentinel://s1/mymaster"),
            RedisAddress(sentinels=(("s1", 26379),), service="mymaster"),
        )

    def test_bad(self) -> None:
        """
        A Sentinel URL without Sentinels or a service, with a bad port,
        an empty host, a bad database or an unknown parameter is refused.
        """
        for url in [
            "redis+sentinel://s1", "redis+sentinel://s1/", "redis+sentinel:///svc",
            "redis+sentinel://s1:x/svc", "redis+sentinel://s1:0/svc", "redis+sentinel://s1,/svc",
            "redis+sentinel://s1/svc/x", "redis+sentinel://s1/svc/1/2", "redis+sentinel://s1/svc?db=x",
            "redis+sentinel://s1/svc?master=x",
        ]:
            self.assertRaises(ValueError, parse_redis_url, url)

    def test_configError(self) -> None:
        """
        A bad Sentinel URL is a configuration error naming C{redis_url} and
        saying what is wrong; a good one is taken.
        """
        error = self.assertRaises(
            ConfigError, parse_config, {"redis_url": "redis+sentinel://s1:26379/", "server": {"api": {}}}, {}
        )
        self.assertIn("redis_url", error.errors[0])
        self.assertIn("no service name", error.errors[0])
        config = parse_config({"redis_url": "redis+sentinel://s1,s2/svc", "server": {"api": {}}}, {})
        self.assertEqual(config.redis_url, "redis+sentinel://s1,s2/svc")


class RESPTests(SynchronousTestCase):
    """
    L{encode} and L{parse_reply}.
    """

    def test_encode(self) -> None:
        """
        A command is an array of bulk strings.
        """
        self.assertEqual(encode("GET", b"k\xff"), b"*2\r\n$3\r\nGET\r\n$2\r\nk\xff\r\n")

    def test_replies(self) -> None:
        """
        Statuses, errors, integers, bulk strings, nils and nested arrays are
        read with where they end; an incomplete reply is L{None}.
        """
        data = b"+OK\r\n-ERR no\r\n:12\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:3\r\n"
        values, at = [], 0
        while at < len(data):
            value, at = parse_reply(data, at)  # type: ignore[misc]
            values.append(value)
        self.assertEqual([values[0], values[2], values[3], values[4]], ["OK", 12, None, [b"a", [3]]])
        self.assertIsInstance(values[1], ReplyError)
        self.assertIsNone(parse_reply(b"*2\r\n$1\r\na\r\n"))
        self.assertIsNone(parse_reply(b"$5\r\nab"))
        self.assertRaises(ValueError, parse_reply, b"?\r\n")


class Attempt:
    """
    One connection attempt through L{FakeNet}.
    """

    def __init__(self, host: str, port: int, factory: Any) -> None:
        self.host, self.port, self.factory = host, port, factory
        self.connected: Deferred[Any] = Deferred()
        self.protocol: Any = None
        self.lost = False
        self.transport = StringTransport()

    def accept(self) -> Any:
        """
        Connect the attempt to a L{StringTransport}.
        """
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.connected.callback(self.protocol)
        return self.protocol

    def lose(self) -> None:
        """
        The connection closes.
        """
        self.lost = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeNet:
    """
    The C{connect_to} of L{SentinelEndpoint}: records every attempt.
    """

    def __init__(self) -> None:
        self.attempts: List[Attempt] = []

    def __call__(self, host: str, port: int) -> Any:
        net = self

        @implementer(IStreamClientEndpoint)
        class Endpoint:
            """
            An endpoint to C{host:port} that records its attempts.
            """

            def connect(self, factory: Any) -> Deferred[Any]:
                """
                Record the attempt; it connects when the test says.
                """
                attempt = Attempt(host, port, factory)
                net.attempts.append(attempt)
                return attempt.connected

        return Endpoint()

    def to(self, host: str, port: int) -> List[Attempt]:
        """
        @return: the attempts to C{host:port}.
        """
        return [a for a in self.attempts if (a.host, a.port) == (host, port)]


class Client(Protocol):
    """
    The caller's protocol: records what it receives.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class EndpointTests(SynchronousTestCase):
    """
    L{SentinelEndpoint} on fake connections and a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeNet()
        self.endpoint = SentinelEndpoint(
            self.clock, [("s1", 1), ("s2", 2), ("s3", 3)], "svc", timeout=1.0, connect_to=self.net
        )
        self.client = Client()

    def tearDown(self) -> None:
        stopping = self.endpoint.stop()
        for attempt in self.net.attempts:
            if attempt.protocol is not None and attempt.transport.disconnecting and not attempt.lost:
                attempt.lose()
        self.successResultOf(stopping)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self) -> Deferred[Any]:
        return self.endpoint.connect(Factory.forProtocol(lambda: self.client))

    def master(self, answer: bytes = MASTER) -> Attempt:
        """
        Let the first Sentinel name the master; return the attempt to it.
        """
        sentinel = self.net.to("s1", 1)[-1]
        sentinel.accept()
        sentinel.protocol.dataReceived(answer)
        sentinel.lose()
        return self.net.to("10.9.9.9", 6390)[-1]

    def test_interface(self) -> None:
        """
        It is an L{IStreamClientEndpoint}.
        """
        self.assertTrue(verifyObject(IStreamClientEndpoint, self.endpoint))

    def test_asksInTurnThenChecksRole(self) -> None:
        """
        The Sentinels are asked in turn (a refused one, one that knows no
        such master, one that does not answer within the timeout), the
        master named is connected to and its C{ROLE} checked before the
        caller's protocol gets the connection.
        """
        connecting = self.connect()
        watch = self.net.attempts[0]
        self.assertEqual((watch.host, watch.port), ("s1", 1))
        self.net.attempts[1].connected.errback(Failure(ConnectionRefusedError()))
        s2 = self.net.to("s2", 2)[0]
        s2.accept()
        self.assertEqual(s2.transport.value(), encode("SENTINEL", "get-master-addr-by-name", "svc"))
        s2.protocol.dataReceived(b"*-1\r\n")
        s3 = self.net.to("s3", 3)[0]
        s3.accept()
        self.clock.advance(1.0)
        self.assertTrue(s3.transport.disconnecting)
        self.assertIsInstance(self.failureResultOf(connecting).value, NoMaster)

        connecting = self.connect()
        master = self.master()
        self.assertNoResult(connecting)
        master.accept()
        self.assertEqual(master.transport.value(), encode("ROLE"))
        master.protocol.dataReceived(ROLE_MASTER[:7])
        self.assertNoResult(connecting)
        master.protocol.dataReceived(ROLE_MASTER[7:] + b"+PONG\r\n")
        self.assertIs(self.successResultOf(connecting), self.client)
        self.assertIs(self.client.transport, master.transport)
        self.assertEqual(self.client.received, b"+PONG\r\n")
        self.assertEqual(self.endpoint.master, ("10.9.9.9", 6390))

    def test_replicaRefused(self) -> None:
        """
        A server named as the master whose role is another is hung up on,
        and the connection fails with L{WrongRole}.
        """
        connecting = self.connect()
        master = self.master()
        master.accept()
        master.protocol.dataReceived(ROLE_REPLICA)
        self.assertTrue(master.transport.disconnecting)
        self.assertIsInstance(self.failureResultOf(connecting).value, WrongRole)
        self.assertIsNone(self.client.transport)

    def test_password(self) -> None:
        """
        With passwords, each Sentinel is asked after C{AUTH} with the
        Sentinels' password, and the master's C{ROLE} after C{AUTH} with
        the master's.
        """
        self.endpoint = SentinelEndpoint(
            self.clock, [("s1", 1)], "svc", "m-pw", "s-pw", connect_to=self.net
        )
        connecting = self.connect()
        sentinel = self.net.attempts[1]
        sentinel.accept()
        self.assertEqual(
            sentinel.transport.value(),
            encode("AUTH", "s-pw") + encode("SENTINEL", "get-master-addr-by-name", "svc"),
        )
        sentinel.protocol.dataReceived(b"+OK\r\n" + MASTER)
        master = self.net.to("10.9.9.9", 6390)[0]
        master.accept()
        self.assertEqual(master.transport.value(), encode("AUTH", "m-pw") + encode("ROLE"))
        master.protocol.dataReceived(b"+OK\r\n" + ROLE_MASTER)
        self.assertIs(self.successResultOf(connecting), self.client)

    def test_switchMaster(self) -> None:
        """
        The watch connection subscribes to C{+switch-master}; when the
        Sentinel says the service moved, the connections to the old master
        are dropped (a message about another service changes nothing).
        """
        connecting = self.connect()
        watch = self.net.attempts[0]
        watch.accept()
        self.assertEqual(
            watch.transport.value(),
            encode("SENTINEL", "get-master-addr-by-name", "svc") + encode("SUBSCRIBE", "+switch-master"),
        )
        master = self.master()
        master.accept()
        master.protocol.dataReceived(ROLE_MASTER)
        self.successResultOf(connecting)
        watch.protocol.dataReceived(MASTER + b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n")
        message = b"other 10.9.9.9 6390 10.9.9.8 6390"
        watch.protocol.dataReceived(encode("message", "+switch-master", message))
        self.assertFalse(master.transport.disconnecting)
        message = b"svc 10.9.9.9 6390 10.9.9.8 6391"
        watch.protocol.dataReceived(encode("message", "+switch-master", message))
        self.assertTrue(master.transport.disconnecting)
        self.assertEqual(self.endpoint.master, ("10.9.9.8", 6391))
        master.lose()
        self.assertTrue(self.client.lost)

    def test_watchReconnects(self) -> None:
        """
        A lost watch connection is made again, to the next Sentinel, and
        L{SentinelEndpoint.stop} closes it.
        """
        connecting = self.connect()
        for index in (1, 2, 3):
            self.net.attempts[index].connected.errback(Failure(ConnectionRefusedError()))
        self.failureResultOf(connecting, NoMaster)
        self.assertEqual(len(self.net.attempts), 4)
        self.net.attempts[0].accept()
        self.net.attempts[0].lose()
        self.clock.advance(1.0)
        watch = self.net.attempts[-1]
        self.assertEqual((watch.host, watch.port), ("s2", 2))
        watch.accept()
        stopping = self.endpoint.stop()
        self.assertTrue(watch.transport.disconnecting)
        self.assertNoResult(stopping)
        watch.lose()
        self.successResultOf(stopping)
        before = len(self.net.attempts)
        self.clock.advance(10)
        self.assertEqual(len(self.net.attempts), before)

    def test_reset(self) -> None:
        """
        L{SentinelEndpoint.reset} drops every connection made through it.
        """
        connecting = self.connect()
        master = self.master()
        master.accept()
        master.protocol.dataReceived(ROLE_MASTER)
        self.successResultOf(connecting)
        self.endpoint.reset()
        self.assertTrue(master.transport.disconnecting)

    def test_readOnlyResets(self) -> None:
        """
        A node whose command meets C{READONLY} (its master became a replica)
        drops its connections through the Sentinel endpoint, to reconnect
        to the master named now; other errors do not.
        """
        node = RedisNode("redis+sentinel://s1:1/svc", self.clock)
        self.endpoint = node._endpoint()
        self.assertIsInstance(self.endpoint, SentinelEndpoint)
        self.endpoint._connectTo = self.net
        node._connector = self.endpoint
        connecting = self.connect()
        master = self.master()
        master.accept()
        master.protocol.dataReceived(ROLE_MASTER)
        self.successResultOf(connecting)
        self.failureResultOf(node._failed(Failure(ReplyError("ERR wrong number of arguments"))))
        self.assertFalse(master.transport.disconnecting)
        self.failureResultOf(node._failed(Failure(ReplyError("READONLY You can't write against a read only replica."))))
        self.assertTrue(master.transport.disconnecting)
        self.flushLoggedErrors()


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
