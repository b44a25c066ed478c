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

from typing import Any, Coroutine, TypeVar, Union

from twisted.internet.defer import Deferred

__all__ = ["settle"]

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
