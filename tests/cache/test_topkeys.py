"""
Tests for L{phantom_frame.cache.topkeys}.
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.topkeys import TopKeys


class TopKeysTests(SynchronousTestCase):
    """
    L{TopKeys} counts hits exactly while it has room, and keeps the heavy
    hitters within its bound when it has not.
    """

    def test_exactWithRoom(self) -> None:
        """
        With fewer keys than its capacity, the counts are exact and L{top}
        gives the busiest first, ties by key.
        """
        top = TopKeys(10)
        for key, hits in (("a", 3), ("b", 5), ("c", 1), ("d", 3)):
            for _ in range(hits):
                top.hit(key)
        self.assertEqual(top.top(3), [("b", 5, 0), ("a", 3, 0), ("d", 3, 0)])
        self.assertEqual((top.count("c"), top.count("zzz"), top.total, len(top)), (1, 0, 12, 4))

    def test_bounded(self) -> None:
        """
        However many distinct keys are hit, at most C{capacity} are
        counted.
        """
        top = TopKeys(8)
        for index in range(1000):
            top.hit(f"key{index}")
        self.assertEqual(len(top), 8)
        self.assertEqual(top.total, 1000)
        self.assertEqual(len(top.top(100)), 8)

    def test_newcomerTakesLowest(self) -> None:
        """
        A key that is not counted, when the summary is full, replaces a key
        with the lowest count and starts from that count plus one, its
        error being that count.
        """
        top = TopKeys(2)
        for key in ("a", "a", "a", "b"):
            top.hit(key)
        top.hit("c")
        self.assertEqual(top.count("b"), 0)
        self.assertEqual((top.count("c"), top.error("c")), (2, 1))
        self.assertEqual(top.top(2), [("a", 3, 0), ("c", 2, 1)])

    def test_heavyHittersKept(self) -> None:
        """
        On a skewed stream with a long tail of one-off keys, every key hit
        more than C{total / capacity} times is kept, and each count is an
        over-estimate by at most its error.
        """
        rng = random.Random(7)
        truth: Counter = Counter()
        top = TopKeys(50)
        stream = [f"hot{rng.randrange(10)}" for _ in range(5000)]
        stream += [f"cold{index}" for index in range(5000)]
        rng.shuffle(stream)
        for key in stream:
            truth[key] += 1
            top.hit(key)
        threshold = len(stream) / 50
        heavy = {key for key, hits in truth.items() if hits > threshold}
        self.assertEqual(len(heavy), 10)
        self.assertEqual({key for key, _, _ in top.top(10)}, heavy)
        for key, count, error in top.top(50):
            self.assertGreaterEqual(count, truth[key])
            self.assertLessEqual(count - error, truth[key])

    def test_clear(self) -> None:
        """
        L{TopKeys.clear} forgets every count.
        """
        top = TopKeys(4)
        top.hit("a")
        top.clear()
        self.assertEqual((top.top(), top.total, len(top)), ([], 0, 0))

    def test_capacity(self) -> None:
        """
        A capacity below 1 is refused.
        """
        self.assertRaises(ValueError, TopKeys, 0)
