"""
Tests for L{phantom_frame.cache.sentinel} and the C{redis+sentinel://}
form of C{redis_url}: the URLs, RESP, and the endpoint on fake connections
and a fake clock (against real processes: C{test_sentinel_failover}).
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from phantom_frame.cache.bus import RedisNode
from phantom_frame.cache.redisurl import RedisAddress, parse_redis_url
from phantom_frame.cache.sentinel import NoMaster, ReplyError, SentinelEndpoint, WrongRole, encode, parse_reply
from phantom_frame.config import ConfigError, parse_config

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
