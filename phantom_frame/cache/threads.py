"""
Running blocking work (compression, file I/O) away from the reactor thread.

Everything in L{phantom_frame.cache} that may block takes a I{runner}: a callable
C{runner(f, *args)} returning a L{Deferred} that fires with C{f(*args)}.
L{ThreadRunner} runs on a dedicated thread pool; L{runInline} runs at once
and is what the synchronous tests use.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


def runInline(f: Callable[..., Any], *args: Any) -> Deferred:
    """
    Call C{f(*args)} now.

    @return: a fired L{Deferred} with the result or the failure.
    """
    try:
        return succeed(f(*args))
    except BaseException:
        return fail(Failure())


_thread = threading.local()

#: Linux's C{SCHED_IDLE} policy (PyPy's C{os} lacks the constant).
SCHED_IDLE: Optional[int] = getattr(os, "SCHED_IDLE", 5 if sys.platform.startswith("linux") else None)


def _lower_priority(idle: bool) -> None:
    """
    Give the calling thread the lowest CPU priority the system allows: the
    C{SCHED_IDLE} policy when C{idle} (it runs only on a core nothing else
    wants), else C{nice 19}, or C{nice 19} where C{SCHED_IDLE} is refused.
    """
    tid = threading.get_native_id()
    if idle and SCHED_IDLE is not None:
        try:
            os.sched_setscheduler(tid, SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
            return
        except (AttributeError, OSError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: run at normal priority


def _background(idle: bool, f: Callable[..., Any], *args: Any) -> Any:
    """
    Run C{f(*args)} in a worker thread at a low CPU priority (set once per
    thread, see L{_lower_priority}): when the reactor shares a core with a
    large compression, the reactor wins, and hits stay fast.
    """
    if getattr(_thread, "idle", None) is not idle:
        _thread.idle = idle
        _lower_priority(idle)
    return f(*args)


class ThreadRunner:
    """
    A lazily started thread pool of its own, so compression never waits behind
    (or starves) the reactor's default pool used for DNS. Its threads run at
    C{nice 19}; those of its L{background} runner under C{SCHED_IDLE}.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        maxThreads: int = 2,
        name: str = "phantom-frame",
        idle: bool = False,
    ) -> None:
        """
        @param reactor: the reactor results are delivered to.
        @param maxThreads: the pool's size; compression is CPU-bound, so the
            number of cores is a sensible bound.
        @param name: the pool's name, shown in thread dumps.
        @param idle: run the work under the C{SCHED_IDLE} policy: only on
            CPU time nothing else wants, for work nobody waits for.
        """
        self._reactor = reactor
        self._maxThreads = maxThreads
        self._name = name
        self._idle = idle
        self._pool: Optional[ThreadPool] = None
        self._background: Optional[ThreadRunner] = None

    @property
    def background(self) -> "ThreadRunner":
        """
        A runner for work nobody waits for (compressing a stored body after
        its fill): a pool of its own, under C{SCHED_IDLE}, so that it never
        takes a core's time from the reactor or from work clients wait for.
        """
        if self._background is None:
            self._background = ThreadRunner(self._reactor, self._maxThreads, self._name + "-idle", idle=True)
        return self._background

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{f(*args)} in the pool.
        """
        if self._pool is None:
            self._pool = ThreadPool(0, self._maxThreads, self._name)
            self._pool.start()
            self._shutdownTrigger = self._reactor.addSystemEventTrigger(
                "during", "shutdown", self._stopAtShutdown
            )
        return deferToThreadPool(self._reactor, self._pool, _background, self._idle, f, *args)

    def _stopAtShutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def stop(self) -> None:
        """
        Stop the pool's threads, and those of its L{background} runner
        (waiting for running work to finish).
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            pool.stop()
        if self._background is not None:
            self._background.stop()
