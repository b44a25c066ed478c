"""
Tests for L{phantom_frame.proxy.status}: one value gives the
C{Cache-Status} header and the metrics label.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy import status
from phantom_frame.proxy.status import RESULTS, CacheStatus, cache_status


class _Entry:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime


class CacheStatusTests(SynchronousTestCase):
    """
    Every kind of answer has its header and its label.
    """

    def test_kinds(self) -> None:
        """
        Hits, stale answers, stored and collapsed fills, bypasses, origin
        answers not stored and revalidations carry RFC 9211 parameters and
        the matching label.
        """
        cases = [
            (status.HIT, b"phantom-frame; hit", "hit"),
            (status.hit(_Entry(math.inf), 5), b"phantom-frame; hit", "hit"),
            (status.hit(_Entry(60), 15.5), b"phantom-frame; hit; ttl=44", "hit"),
            (status.STALE, b"phantom-frame; hit; detail=stale", "stale"),
            (status.STORED, b"phantom-frame; fwd=uri-miss; stored", "miss"),
            (status.COLLAPSED, b"phantom-frame; fwd=uri-miss; collapsed", "coalesced"),
            (status.bypass("authorization"), b"phantom-frame; fwd=bypass; detail=authorization", "bypass"),
            (status.forwarded("uri-miss", "set-cookie"), b"phantom-frame; fwd=uri-miss; detail=set-cookie", "miss"),
            (status.forwarded("stale", "origin-error"), b"phantom-frame; fwd=stale; detail=origin-error", "stale"),
            (status.revalidated(304), b"phantom-frame; fwd=stale; fwd-status=304", "stale"),
            (status.revalidated(200), b"phantom-frame; fwd=stale; fwd-status=200; stored", "stale"),
            (status.NONE, b"", "none"),
        ]
        for value, header, result in cases:
            self.assertEqual((value.header, value.result), (header, result))
            self.assertIn(value.result, RESULTS)

    def test_unknown_result(self) -> None:
        """
        A label outside L{RESULTS} is refused at once.
        """
        self.assertRaises(ValueError, cache_status, "great", "hit")

    def test_with_params(self) -> None:
        """
        Parameters can be added to a status; its label stays.
        """
        self.assertEqual(
            status.STORED.with_params("key=x"),
            CacheStatus("miss", b"phantom-frame; fwd=uri-miss; stored; key=x"),
        )
