"""
Tests for requests that wait for a shared bucket store
(L{phantom_frame.proxy.ratelimit.admit_when_ready}), in memory: a store of
our own whose round trips the test answers.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from phantom_frame.cache.buckets import ISharedBucketStore, MemoryBucketStore
from phantom_frame.proxy.ratelimit import RateLimit
from phantom_frame.proxy.settings import CreateProxyConfig
from tests.http.rig import Rig, answers, request


@implementer(ISharedBucketStore)
class Gated(MemoryBucketStore):
    """
    Memory buckets that answer only once the test let a round trip end.

    @ivar trips: the round trips out, to fire.
    @ivar open: whether C{take} can answer without one.
    """

    def __init__(self, name: str, rate: float, burst: int) -> None:
        super().__init__(name, rate, burst)
        self.trips: List[Deferred[None]] = []
        self.open = False

    def answers(self, key: str, now: float) -> bool:
        return self.open

    def ready(self, key: str, now: float) -> Optional[Deferred[None]]:
        if self.open:
            return None
        trip: Deferred[None] = Deferred()
        self.trips.append(trip)
        return trip

    def done(self) -> None:
        """
        End every round trip out.
        """
        trips, self.trips = self.trips, []
        for trip in trips:
            trip.callback(None)


class WaitingTests(SynchronousTestCase):
    """
    A server whose only limit (1 a minute, burst 1) is in a L{Gated} store.
    """

    def setUp(self) -> None:
        config = CreateProxyConfig("http://origin.test").with_rate_limits([RateLimit("1/m", burst=1)])
        self.rig = Rig(self, config=config)
        self.stores: List[Gated] = []

        def stores(name: str, rate: float, burst: int) -> Gated:
            store = Gated(name, rate, burst)
            self.stores.append(store)
            return store

        decider = next(self.rig.handle.servers()).decider
        decider.limiter = decider.limiter.with_stores(stores)

    def test_waitsForTheRoundTrip(self) -> None:
        """
        A request is not answered (nor sent to the origin) until its store
        is ready; then it is admitted, and the next is refused with a
        C{429} even on a connection the channel could answer itself.
        """
        connection = self.rig.connect()
        self.assertEqual(connection.send(request()), b"")
        self.assertEqual(self.rig.origin.received, [])
        [store] = self.stores
        store.done()
        self.rig.agent.flush()
        self.assertEqual([a[0] for a in answers(connection.take())], [200])
        store.open = True
        self.assertEqual([a[0] for a in answers(connection.send(request()))], [429])
        self.assertEqual(self.rig.answered(), 0)

    def test_headRefusedAfterWaiting(self) -> None:
        """
        A C{HEAD} refused once its store is ready gets the 429's head with
        its C{Content-Length} and no body.
        """
        [store] = self.stores
        store.open = True
        self.rig.connect().send(request())
        store.open = False
        connection = self.rig.connect()
        self.assertEqual(connection.send(request(method="HEAD")), b"")
        store.done()
        written = connection.take()
        head, _, body = written.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 429 "), written)
        self.assertIn(b"Content-Length: ", head)
        self.assertEqual(body, b"")

    def test_clientLeftWhileWaiting(self) -> None:
        """
        A client that left while its request waited is not answered and
        takes no token: the next client gets it.
        """
        connection = self.rig.connect()
        connection.send(request())
        connection.lost = True
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        [store] = self.stores
        store.done()
        self.rig.agent.flush()
        self.assertEqual(self.rig.origin.received, [])
        store.open = True
        self.assertEqual([a[0] for a in answers(self.rig.connect().send(request()))], [200])
