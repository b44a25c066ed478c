"""
Tests for L{phantom_frame.proxy.deadlines.Deadlines}.
"""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy.deadlines import Deadlines


class Watched:
    """
    Something watched: notes when it expired.
    """

    def __init__(self, clock: Clock, log: List[object]) -> None:
        """
        @param log: where expired objects are noted, in order.
        """
        self.clock = clock
        self.log = log
        self.at: List[float] = []

    def expired(self) -> None:
        """
        Note the time.
        """
        self.at.append(self.clock.seconds())
        self.log.append(self)


class DeadlinesTests(SynchronousTestCase):
    """
    Every watched object expires at its own deadline, on one timer.
    """

    def setUp(self) -> None:
        """
        Deadlines on a fake clock.
        """
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        self.log: List[object] = []

    def watched(self) -> Watched:
        """
        @return: a new L{Watched}.
        """
        return Watched(self.clock, self.log)

    def test_expires(self) -> None:
        """
        An object expires at its deadline, not before; the timer is then
        gone.
        """
        a = self.watched()
        self.deadlines.watch(a, 5)
        self.clock.advance(4.99)
        self.assertEqual(a.at, [])
        self.clock.advance(0.01)
        self.assertEqual(a.at, [5])
        self.assertEqual((len(self.deadlines), self.clock.getDelayedCalls()), (0, []))

    def test_oneTimer(self) -> None:
        """
        Many objects share one timer, and each expires at its deadline.
        """
        objects = [self.watched() for _ in range(10)]
        for i, watched in enumerate(objects):
            self.deadlines.watch(watched, 10 + i)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for _ in range(25):
            self.clock.advance(1)
        self.assertEqual([w.at for w in objects], [[10 + i] for i in range(10)])
        self.assertEqual(self.log, objects)

    def test_watchAgain(self) -> None:
        """
        Watching an object again moves its deadline later.
        """
        a = self.watched()
        self.deadlines.watch(a, 5)
        self.clock.advance(4)
        self.deadlines.watch(a, 5)
        self.clock.advance(4)
        self.assertEqual(a.at, [])
        self.clock.advance(1)
        self.assertEqual(a.at, [9])

    def test_earlier(self) -> None:
        """
        An object with a deadline earlier than every other one expires at
        its own.
        """
        a, b = self.watched(), self.watched()
        self.deadlines.watch(a, 30)
        self.deadlines.watch(b, 2)
        self.clock.advance(2)
        self.assertEqual((a.at, b.at), ([], [2]))
        self.clock.advance(28)
        self.assertEqual(a.at, [30])

    def test_forget(self) -> None:
        """
        A forgotten object never expires; once none is watched, no timer
        is left; forgetting one not watched does nothing.
        """
        a, b = self.watched(), self.watched()
        self.deadlines.watch(a, 5)
        self.deadlines.watch(b, 6)
        self.deadlines.forget(a)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.deadlines.forget(b)
        self.deadlines.forget(b)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.log, [])

    def test_watchWhileExpiring(self) -> None:
        """
        An object that expires may have another watched meanwhile.
        """
        later = self.watched()

        class Chaining(Watched):
            def expired(inner) -> None:
                """
                Expire, and watch another.
                """
                Watched.expired(inner)
                self.deadlines.watch(later, 3)

        first = Chaining(self.clock, self.log)
        self.deadlines.watch(first, 1)
        self.clock.advance(1)
        self.clock.advance(3)
        self.assertEqual((first.at, later.at), ([1], [4]))
        self.assertEqual(self.clock.getDelayedCalls(), [])
