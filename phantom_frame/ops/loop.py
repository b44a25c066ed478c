"""
A leaner poll pass for the epoll reactor of a proxy process.

L{twisted.internet.epollreactor.EPollReactor.doPoll} dispatches each ready
socket through L{twisted.python.log.callWithLogger}, which copies the
legacy log context twice and pushes it for the call, so that legacy
C{log.msg} calls made meanwhile carry the socket's C{logPrefix} as their
C{system}. On a cache hit that dispatch is a tenth of the whole request's
CPU time. L{lean_poll} gives the reactor a poll pass that dispatches the
same events to the same C{_doReadOrWrite} in the same order, without that
context: legacy log lines written by Twisted while it handles a socket
read C{[-]} as their system instead of the connection's prefix, and
failures that escape C{_doReadOrWrite} (it catches those of C{doRead} and
C{doWrite} itself) are logged with the socket's prefix as before.

It replaces the reactor's C{doIteration} on the one reactor instance and
reads its private C{_poller} and C{_selectables} (pinned by
C{tests/ops/test_loop.py}); any other reactor class is left alone. Set
C{PHANTOM_FRAME_LEAN_POLL=0} to keep Twisted's own pass.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Optional

from twisted.logger import Logger

#: Whether L{lean_poll} changes anything.
ENABLED = os.environ.get("PHANTOM_FRAME_LEAN_POLL", "1") != "0"

log = Logger(namespace="phantom_frame.loop")


def lean_poll(reactor: Any) -> bool:
    """
    Give C{reactor}, when it is Twisted's epoll reactor, the lean poll pass.

    @return: whether it was given (or had it already).
    """
    if not ENABLED:
        return False
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # pragma: no cover (no epoll on this platform)
        return False
    if type(reactor) is not EPollReactor:
        return False
    if getattr(reactor.doIteration, "lean", False):
        return True
    reactor.doIteration = _LeanPoll(reactor)
    return True


class _LeanPoll:
    """
    C{doIteration} of one epoll reactor: wait for events, then hand each to
    the reactor's C{_doReadOrWrite}.
    """

    lean = True

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __call__(self, timeout: Optional[float]) -> None:
        """
        One pass: wait at most C{timeout} seconds (for ever when C{None}).
        """
        reactor = self._reactor
        selectables = reactor._selectables
        try:
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        dispatch = reactor._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.failure("event handling failed for {prefix}", prefix=_prefix(selectable))


def _prefix(selectable: Any) -> str:
    try:
        return str(selectable.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"
