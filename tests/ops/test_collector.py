"""
Tests for L{phantom_frame.ops.collector}.
"""

from __future__ import annotations

import gc

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.ops.collector import THRESHOLDS, tune_collector


class TuneCollectorTests(SynchronousTestCase):
    """
    L{tune_collector} sets the proxy's thresholds and freezes what start-up
    made once the reactor runs.
    """

    def setUp(self) -> None:
        if hasattr(gc, "get_threshold"):
            self.addCleanup(gc.set_threshold, *gc.get_threshold())
        if hasattr(gc, "unfreeze"):
            self.addCleanup(gc.unfreeze)

    def test_tuned(self) -> None:
        """
        The thresholds change at once; the freeze waits for the reactor.
        """
        reactor = MemoryReactor()
        if not hasattr(gc, "set_threshold"):  # PyPy
            self.assertFalse(tune_collector(reactor, enabled=True))
            return
        self.assertTrue(tune_collector(reactor, enabled=True))
        self.assertEqual(gc.get_threshold(), THRESHOLDS)
        frozen = gc.get_freeze_count()
        self.assertEqual(len(reactor.whenRunningHooks), 1)
        gc.collect()
        reactor.run()
        self.assertGreater(gc.get_freeze_count(), frozen)

    def test_off(self) -> None:
        """
        Turned off, nothing changes.
        """
        before = gc.get_threshold() if hasattr(gc, "get_threshold") else None
        reactor = MemoryReactor()
        self.assertFalse(tune_collector(reactor, enabled=False))
        if before is not None:
            self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(reactor.whenRunningHooks, [])
