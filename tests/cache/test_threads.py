"""
Tests for L{phantom_frame.cache.threads}.
"""

from __future__ import annotations

import os
import sys
import threading

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.cache.threads import SCHED_IDLE, ThreadRunner, runInline


class InlineTests(SynchronousTestCase):
    """
    L{runInline} runs at once.
    """

    def test_result_and_failure(self) -> None:
        """
        The result, or the exception as a failure, is in the fired Deferred.
        """
        self.assertEqual(self.successResultOf(runInline(lambda a, b: a + b, 1, 2)), 3)
        self.failureResultOf(runInline(lambda: 1 / 0), ZeroDivisionError)


class ThreadRunnerTests(TestCase):
    """
    L{ThreadRunner} runs work on its own threads, at the lowest priority.
    """

    async def test_background_thread(self) -> None:
        """
        Work runs off the reactor thread; on Linux at nice 19, while the
        reactor's thread keeps its priority.
        """
        runner = ThreadRunner(reactor)
        self.addCleanup(runner.stop)
        main = threading.get_ident()

        def probe():
            return threading.get_ident(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        ident, nice = await runner(probe)
        self.assertNotEqual(ident, main)
        if sys.platform.startswith("linux"):
            self.assertEqual(nice, 19)
            self.assertEqual(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), 0)

    async def test_background_runner_idle(self) -> None:
        """
        The C{background} runner's work runs on threads of its own, under
        C{SCHED_IDLE} on Linux, while the pool's own threads stay at nice 19
        under the normal policy and the reactor's thread keeps its policy.
        """
        runner = ThreadRunner(reactor)
        self.addCleanup(runner.stop)
        self.assertIs(runner.background, runner.background)

        def probe():
            return threading.current_thread().name, os.sched_getscheduler(0)

        name, policy = await runner.background(probe)
        own, own_policy = await runner(probe)
        self.assertIn("phantom-frame-idle", name)
        self.assertNotIn("-idle", own)
        if sys.platform.startswith("linux"):
            self.assertEqual(policy, SCHED_IDLE)
            self.assertEqual(own_policy, os.SCHED_OTHER)
            self.assertEqual(os.sched_getscheduler(0), os.SCHED_OTHER)
