"""
Tests for how a L{phantom_frame.http.relay.ByteRelay} times its origin
request for a L{phantom_frame.ops.timing.TimingClient}: the relay notes
when the head came (or the failure before it) and tells the timing client
once, with nothing between the origin's client and the relay.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame import create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.relay import ByteRelay
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.ops.timing import TimingClient
from tests.http.test_relay import PASSTHROUGH, Scripted, parse, request
from tests.memory import MemoryOrigin


class TimedRig:
    """
    A byte-path proxy site over a L{Scripted} origin in memory, its origin
    client timed.

    @ivar observed: the upstream durations recorded.
    @ivar failed: how many origin requests failed before their head.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.scripted = Scripted()
        self.origin = MemoryOrigin(self.scripted, self.clock)
        self.observed: List[float] = []
        self.failed = 0
        client = TimingClient(self.origin.client_for(PASSTHROUGH), self.clock, self.observed.append, self._failed)
        resource, handle = create_proxy(PASSTHROUGH, self.clock, agent=object(), client=client, runner=runInline)
        testcase.addCleanup(handle.close)
        self.site = ProxySite(Router([("*", resource)]), reactor=self.clock, access_log=False, fast_path=True)
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4321))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4321))
        self.protocol.makeConnection(self.transport)

    def _failed(self) -> None:
        self.failed += 1

    def send(self, path: str) -> None:
        """
        Send a request for C{path} and move the bytes to the origin.
        """
        self.protocol.dataReceived(request(path))
        self.origin.flush()

    def relay(self) -> Any:
        """
        @return: the relay in flight.
        """
        relay = self.protocol._channel._relay
        assert relay.__class__ is ByteRelay
        return relay


class RelayTimingTests(SynchronousTestCase):
    """
    The relay reports its upstream time to the timing client.
    """

    def test_head(self) -> None:
        """
        The time from the request to the origin's head is recorded once;
        the relay is the timing client's receiver itself.
        """
        rig = TimedRig(self)
        rig.send("/slow")
        relay = rig.relay()
        self.assertIs(relay.timing.__class__, TimingClient)
        rig.clock.advance(3)
        origin_request = rig.scripted.waiting.pop()
        origin_request.write(b"late")
        rig.origin.flush()
        self.assertEqual((rig.observed, rig.failed, relay.upstream), ([3.0], 0, 3.0))
        self.assertIsNone(relay.timing)
        origin_request.finish()
        rig.origin.flush()
        rig.clock.advance(0)
        self.assertEqual(parse(rig.transport.value(), [False])[0][2], b"late")
        self.assertEqual((rig.observed, rig.failed), ([3.0], 0))

    def test_unreachable(self) -> None:
        """
        An origin that cannot be reached: the time to the failure is
        recorded and counted as failed, once.
        """
        rig = TimedRig(self)
        rig.origin.down = True
        rig.send("/p")
        rig.clock.advance(0)
        self.assertEqual(parse(rig.transport.value(), [False])[0][0], 502)
        self.assertEqual((rig.observed, rig.failed), ([0.0], 1))
        self.flushLoggedErrors()

    def test_client_gone(self) -> None:
        """
        A client that goes away before the origin's head: the time so far
        is recorded, as a failure.
        """
        rig = TimedRig(self)
        rig.send("/slow")
        relay = rig.relay()
        rig.clock.advance(2)
        rig.protocol.connectionLost(None)
        self.assertIsNone(relay.timing)
        self.assertEqual((rig.observed, rig.failed), ([2.0], 1))
        rig.origin.flush()
        self.assertEqual((rig.observed, rig.failed), ([2.0], 1))
