"""
Tests for the merging of worker answers in L{phantom_frame.ops.fanout}
when the workers share a Redis bus.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.ops.fanout import _bulk, _sum_invalidated


class NodesConfirmedTests(SynchronousTestCase):
    """
    C{nodes_confirmed} survives the merge: the fewest nodes any worker's
    change was confirmed by.
    """

    def test_invalidations(self) -> None:
        """
        Invalidations keep the smallest count, and none when no worker
        gave one.
        """
        merged = _sum_invalidated([
            {"ok": True, "invalidated": 2, "nodes_confirmed": 3},
            {"ok": True, "invalidated": 1, "nodes_confirmed": 2},
        ])
        self.assertEqual((merged["invalidated"], merged["nodes_confirmed"]), (3, 2))
        self.assertNotIn("nodes_confirmed", _sum_invalidated([{"invalidated": 1}, {"invalidated": 1}]))

    def test_bulk(self) -> None:
        """
        Bulk answers (snapshot and invalidation lists) keep it too.
        """
        item = {"ok": True}
        merged = _bulk([
            {"results": [item], "nodes_confirmed": 4},
            {"results": [item], "nodes_confirmed": 4},
        ])
        self.assertEqual((merged["succeeded"], merged["nodes_confirmed"]), (1, 4))
        self.assertNotIn("nodes_confirmed", _bulk([{"results": [item]}]))
