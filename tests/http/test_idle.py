"""
Tests for the idle timeout of L{phantom_frame.http.guard.GuardedHTTPChannel},
kept lazily: activity is noted without moving the timer; when the timer
fires, it waits for what is left of the idle period since the last
activity.
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from tests.http.test_relay import RelayRig, parse, request


class IdleTimeoutTests(SynchronousTestCase):
    """
    A connection times out its idle period after its last activity, on
    both the channel's own path and the stock one, without a timer reset
    per request.
    """

    def rig(self, fast: bool) -> Any:
        """
        @return: a rig whose clock is at a whole second, the connection
            made on it, its transport and its idle period.
        """
        rig = RelayRig(fast)
        self.addCleanup(rig.handle.close)
        protocol, transport = rig.connect()
        return rig, protocol, transport, protocol.timeOut

    def timers(self, rig: Any) -> List[float]:
        """
        @return: when the clock's delayed calls are due.
        """
        return sorted(call.getTime() for call in rig.clock.getDelayedCalls())

    def check(self, fast: bool) -> None:
        """
        A request 10 seconds in: on the channel's own path the timer set at
        the connection stays where it was; when it fires the connection
        stays, until the idle period has passed since the answer.
        """
        rig, protocol, transport, period = self.rig(fast)
        self.assertGreater(period, 10)
        start = rig.clock.seconds()
        rig.clock.advance(10)
        protocol.dataReceived(request("/a"))
        rig.settle()
        self.assertEqual(parse(transport.value(), [False])[0][0], 200)
        self.assertEqual(rig.relayed(), int(fast))
        if fast:
            # Not moved by the request; twisted.web's own path stops the
            # timer while it answers, then sets it again.
            self.assertIn(start + period, self.timers(rig))
            rig.clock.advance(period - 10)
            self.assertFalse(transport.disconnecting)
        else:
            rig.clock.advance(period - 10)
        self.assertIn(start + 10 + period, self.timers(rig))
        rig.clock.advance(10 - 0.01)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(0.01)
        self.assertTrue(transport.disconnecting)

    def test_byte_path(self) -> None:
        """
        A request the channel passes through itself.
        """
        self.check(True)

    def test_stock_path(self) -> None:
        """
        A request twisted.web's channel reads.
        """
        self.check(False)

    def test_idle_from_start(self) -> None:
        """
        A connection that only sent a request and was answered times out
        its idle period after the answer; one that sent nothing gets the
        head timeout's 408 first.
        """
        rig, protocol, transport, period = self.rig(True)
        protocol.dataReceived(request("/a"))
        rig.settle()
        rig.clock.advance(period - 0.01)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(0.01)
        self.assertTrue(transport.disconnecting)
        rig, protocol, transport, period = self.rig(True)
        rig.clock.advance(period)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_stopped(self) -> None:
        """
        With the timeout stopped (C{setTimeout(None)}, as when the
        connection turns to HTTP/2 or a tunnel), activity arms nothing.
        """
        rig, protocol, transport, period = self.rig(True)
        protocol.dataReceived(request("/a"))
        rig.settle()
        protocol._channel.setTimeout(None)
        before = self.timers(rig)
        protocol.dataReceived(request("/b"))
        rig.settle()
        self.assertEqual(self.timers(rig), before)
        rig.clock.advance(period * 3)
        self.assertFalse(transport.disconnecting)


class SuspendedIdleTests(SynchronousTestCase):
    """
    While a request passed through waits for nothing from the client, its
    idle timeout is suspended without touching the timer.
    """

    def test_suspended(self) -> None:
        """
        Suspending and resuming make no timer; a timer firing while
        suspended waits a whole period again; once resumed the period
        counts from then.
        """
        rig = RelayRig(True)
        self.addCleanup(rig.handle.close)
        protocol, transport = rig.connect()
        channel = getattr(protocol, "_channel", protocol)
        protocol.dataReceived(request("/a"))
        rig.settle()
        self.assertEqual(parse(transport.value(), [False])[0][0], 200)
        period = channel.timeOut
        start = rig.clock.seconds()

        def idle_timers() -> List[Any]:
            return [c for c in rig.clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "__timedOut"]

        [timer] = idle_timers()
        channel._suspendIdle()
        channel._suspendIdle()
        channel._restoreIdle()
        channel._suspendIdle()
        self.assertEqual(idle_timers(), [timer])
        rig.clock.advance(period * 2.5)
        self.assertFalse(transport.disconnecting)
        resumed = rig.clock.seconds()
        channel._restoreIdle()
        rig.clock.advance(start + 3 * period - resumed)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(resumed + period - rig.clock.seconds() - 0.01)
        self.assertFalse(transport.disconnecting)
        rig.clock.advance(0.02)
        self.assertTrue(transport.disconnecting)
