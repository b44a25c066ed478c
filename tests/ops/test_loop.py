"""
Tests for L{phantom_frame.ops.loop}: the lean poll pass of the epoll
reactor.
"""

from __future__ import annotations

import socket
from typing import Any, List

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from phantom_frame.ops import loop


def _epoll_reactor(testcase: SynchronousTestCase) -> Any:
    """
    @return: a new epoll reactor of its own (not the global one), closed
        after the test.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # pragma: no cover
        raise SkipTest("no epoll here")
    reactor = EPollReactor()

    def close() -> None:
        reactor.removeAll()
        reactor.waker.connectionLost(None)
        reactor._poller.close()

    testcase.addCleanup(close)
    return reactor


class _Reader:
    """
    A selectable reading one end of a socket pair.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.read: List[bytes] = []
        self.then: Any = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "reader"

    def doRead(self) -> None:
        self.read.append(self.sock.recv(100))
        if self.then is not None:
            self.then()

    def connectionLost(self, reason: Any) -> None:
        pass


class LeanPollTests(SynchronousTestCase):
    """
    L{loop.lean_poll} replaces the epoll reactor's poll pass with one that
    dispatches the same events.
    """

    def pair(self) -> Any:
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.setblocking(False)
        return a, b

    def test_dispatches_events(self) -> None:
        """
        A ready socket's C{doRead} is called by the lean pass, which the
        reactor now uses; giving it twice changes nothing.
        """
        reactor = _epoll_reactor(self)
        self.assertTrue(loop.lean_poll(reactor))
        lean = reactor.doIteration
        self.assertTrue(lean.lean)
        self.assertTrue(loop.lean_poll(reactor))
        self.assertIs(reactor.doIteration, lean)
        a, b = self.pair()
        reader = _Reader(a)
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)
        reactor.doIteration(0)
        self.assertEqual(reader.read, [])
        b.send(b"ping")
        reactor.doIteration(0)
        self.assertEqual(reader.read, [b"ping"])
        # The reactor's own loop runs it too (stopped by the read; the
        # delayed stop only ends a failing test).
        reader.then = reactor.stop
        b.send(b"pong")
        give_up = reactor.callLater(10, reactor.stop)
        reactor.run(installSignalHandlers=False)
        self.assertTrue(give_up.active())
        give_up.cancel()
        self.assertEqual(reader.read, [b"ping", b"pong"])

    def test_failure_logged(self) -> None:
        """
        A failure escaping the dispatch is logged with the socket's prefix,
        and the pass goes on.
        """
        reactor = _epoll_reactor(self)
        loop.lean_poll(reactor)
        a, b = self.pair()
        reader = _Reader(a)
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)

        def broken(selectable: Any, fd: int, event: int) -> None:
            raise RuntimeError("boom")

        reactor._doReadOrWrite = broken
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        b.send(b"x")
        reactor.doIteration(0)
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["prefix"], "reader")
        self.flushLoggedErrors(RuntimeError)

    def test_other_reactors(self) -> None:
        """
        Any other reactor is left alone, and so is the epoll reactor when
        the switch is off.
        """
        memory = MemoryReactorClock()
        self.assertFalse(loop.lean_poll(memory))
        reactor = _epoll_reactor(self)
        self.patch(loop, "ENABLED", False)
        before = reactor.doIteration
        self.assertFalse(loop.lean_poll(reactor))
        self.assertEqual(reactor.doIteration, before)
