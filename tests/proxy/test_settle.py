"""
Tests for L{phantom_frame.proxy.settle.settle} and L{is_deferred}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy.settle import is_deferred, settle


async def _add(first: Deferred, second: Deferred) -> int:
    """
    @return: the sum of what C{first} and C{second} give.
    """
    return (await first) + (await second)


async def _fails(waited: Deferred) -> None:
    """
    Fail once C{waited} has fired.
    """
    await waited
    raise ValueError("broken")


class SettleTests(SynchronousTestCase):
    """
    L{settle} runs a coroutine as a plain call when nothing it awaits
    waits, and through a L{Deferred} otherwise.
    """

    def test_atOnce(self) -> None:
        """
        A coroutine whose awaits have all fired gives its result itself,
        no L{Deferred}.
        """
        self.assertEqual(settle(_add(succeed(1), succeed(2))), 3)

    def test_raisesAtOnce(self) -> None:
        """
        What it raises before waiting is raised.
        """
        self.assertRaises(ValueError, settle, _fails(succeed(None)))

    def test_waits(self) -> None:
        """
        A coroutine that waits gives a L{Deferred} of its result, which
        fires once what it waits for has.
        """
        second: Deferred = Deferred()
        result = settle(_add(succeed(1), second))
        self.assertIsInstance(result, Deferred)
        self.assertNoResult(result)
        second.callback(2)
        self.assertEqual(self.successResultOf(result), 3)

    def test_failsLater(self) -> None:
        """
        What it raises after waiting fails the L{Deferred}.
        """
        waited: Deferred = Deferred()
        result = settle(_fails(waited))
        waited.callback(None)
        self.failureResultOf(result, ValueError)

    def test_cancel(self) -> None:
        """
        Cancelling the L{Deferred} cancels what the coroutine waits for.
        """
        cancelled = []
        second: Deferred = Deferred(cancelled.append)
        result = settle(_add(succeed(1), second))
        result.cancel()
        self.assertEqual(cancelled, [second])
        self.failureResultOf(result, CancelledError)


class IsDeferredTests(SynchronousTestCase):
    """
    L{is_deferred} answers as C{isinstance(value, Deferred)}.
    """

    def test_values(self) -> None:
        """
        A L{Deferred} and an instance of a subclass are; anything else
        (an awaitable too) is not.
        """

        class Sub(Deferred):
            pass

        async def coroutine() -> None:
            pass

        waiting = coroutine()
        self.addCleanup(waiting.close)
        for value in (Deferred(), Sub(), succeed(1)):
            self.assertTrue(is_deferred(value))
        for value in (None, 1, "d", Deferred, waiting, object()):
            self.assertFalse(is_deferred(value))
