"""
L{settle}: run a coroutine whose awaits are usually answered at once, as a
plain call when they are, through a L{Deferred} when they are not.

A coroutine that awaits only L{Deferred}s that have fired (a body in
memory, a small body coded inline) runs to its end at once; making a
L{Deferred} of it with L{Deferred.fromCoroutine} would cost more than the
work. When it does wait, the L{Deferred} it waits for is awaited again from
where it stopped: awaiting a L{Deferred} that has not fired only ever
yields it, however often it is asked.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, TypeVar, Union

from twisted.internet.defer import Deferred

__all__ = ["Once", "is_deferred", "settle"]

_T = TypeVar("_T")


def settle(coroutine: Coroutine[Any, Any, _T]) -> Union[_T, Deferred[_T]]:
    """
    Run C{coroutine} (not started yet).

    @return: what it returned, when it ran to its end without waiting; else
        a L{Deferred} of it (cancelling it cancels what it waits for).
    @raise BaseException: what it raised before waiting.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    # It waits for a Deferred: Twisted drives it from there on.
    return Deferred.fromCoroutine(coroutine)


def is_deferred(value: Any) -> bool:
    """
    @return: C{isinstance(value, Deferred)}, read off C{value}'s class:
        L{Deferred} is an C{Awaitable} ABC, whose C{isinstance} runs a
        Python-level check for every value that is not one.
    """
    return Deferred in type(value).__mro__


class Once:
    """
    What stands in for a L{Deferred} fired once by whoever makes a result,
    when the one who waits for it is known beforehand: C{callback} and
    C{errback} call its functions, the first call only.

    @ivar called: whether it fired.
    """

    __slots__ = ("_callback", "_errback", "called")

    def __init__(self, callback: Callable[[Any], object], errback: Callable[[Any], object]) -> None:
        """
        @param callback: called with the result.
        @param errback: called with the exception (or L{Failure}) instead.
        """
        self._callback = callback
        self._errback = errback
        self.called = False

    def callback(self, result: Any) -> None:
        """
        Fire with C{result}, unless fired already.
        """
        if not self.called:
            call = self._fired()[0]
            call(result)

    def errback(self, error: Any) -> None:
        """
        Fail with C{error}, unless fired already.
        """
        if not self.called:
            call = self._fired()[1]
            call(error)

    def _fired(self) -> Any:
        """
        @return: the functions, let go of (what they refer to may refer
            back to this: nothing of it waits for the cycle collector).
        """
        self.called = True
        functions = self._callback, self._errback
        self._callback = self._errback = _nothing
        return functions


def _nothing(result: Any) -> None:
    """
    What a fired L{Once} calls no more.
    """
