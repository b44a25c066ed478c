"""
Running blocking work (compression, file I/O) away from the reactor thread.

Everything in L{phantom_frame.cache} that may block takes a I{runner}: a callable
C{runner(f, *args)} returning a L{Deferred} that fires with C{f(*args)}.
L{ThreadRunner} runs on a dedicated thread pool; L{runInline} runs at once
and is what the synchronous tests use.
"""

from __future__ import annotations

import os
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


def _background(f: Callable[..., Any], *args: Any) -> Any:
    """
    Run C{f(*args)} in a worker thread at the lowest CPU priority (once per
    thread, where the system allows it): when the reactor shares a core
    with a large compression, the reactor wins, and hits stay fast.
    """
    if not getattr(_thread, "niced", False):
        _thread.niced = True
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass  # not Linux, or not allowed: run at normal priority
    return f(*args)


class ThreadRunner:
    """
    A lazily started thread pool of its own, so compression never waits behind
    (or starves) the reactor's default pool used for DNS.
    """

    def __init__(
        self, reactor: IReactorFromThreads, maxThreads: int = 2, name: str = "phantom-frame"
    ) -> None:
        """
        @param reactor: the reactor results are delivered to.
        @param maxThreads: the pool's size; compression is CPU-bound, so the
            number of cores is a sensible bound.
        @param name: the pool's name, shown in thread dumps.
        """
        self._reactor = reactor
        self._maxThreads = maxThreads
        self._name = name
        self._pool: Optional[ThreadPool] = None

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
        return deferToThreadPool(self._reactor, self._pool, _background, f, *args)

    def _stopAtShutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def stop(self) -> None:
        """
        Stop the pool's threads (waiting for running work to finish).
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            pool.stop()
