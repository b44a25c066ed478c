"""
L{Deadlines}: the timeouts of every exchange in flight on one timer.

An origin request has a timeout that restarts whenever bytes move. One
C{callLater} per request, reset on every chunk, costs a L{DelayedCall} and
heap work per request; here a deadline is a number in a dict, and one
L{DelayedCall} waits for the earliest. Deadlines only move later as
exchanges progress, so the timer never fires late: when it fires, those
due expire and it waits again for the earliest left.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: How close to its deadline an exchange expires: the timer's own time is
#: the clock's sum, which may differ from the deadline in the last bits.
_SLACK = 1e-6

_NEVER = float("inf")


class Deadlines:
    """
    Deadlines of watched objects (each with an C{expired()} method), all on
    one timer of C{clock}. No timer is left once nothing is watched.
    """

    __slots__ = ("_clock", "_due", "_call", "_at")

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: gives the time and schedules the timer.
        """
        self._clock = clock
        self._due: Dict[Any, float] = {}
        self._call: Optional[IDelayedCall] = None
        self._at = _NEVER

    def __len__(self) -> int:
        """
        @return: how many objects are watched.
        """
        return len(self._due)

    def watch(self, watched: Any, seconds: float) -> None:
        """
        Have C{watched.expired()} called C{seconds} from now, unless watched
        again (which moves its deadline) or forgotten first.
        """
        at = self._clock.seconds() + seconds
        self._due[watched] = at
        if at < self._at:
            self._schedule(at)

    def forget(self, watched: Any) -> None:
        """
        Stop watching C{watched} (nothing happens if it is not watched).
        """
        due = self._due
        if due.pop(watched, None) is not None and not due:
            call, self._call = self._call, None
            self._at = _NEVER
            if call is not None:
                call.cancel()

    def _schedule(self, at: float) -> None:
        self._at = at
        delay = max(0.0, at - self._clock.seconds())
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._fire)
        else:
            call.reset(delay)

    def _fire(self) -> None:
        self._call = None
        self._at = _NEVER
        now = self._clock.seconds() + _SLACK
        due = self._due
        expired = [watched for watched, at in due.items() if at <= now]
        for watched in expired:
            del due[watched]
        if due:
            self._schedule(min(due.values()))
        for watched in expired:
            watched.expired()
