"""
Tests for L{phantom_frame.cache.entry}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import ENTRY_OVERHEAD, CacheEntry
from phantom_frame.cache.store import StoredBody
from tests.cache.support import CacheTestMixin


class CacheEntryTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{CacheEntry}.
    """

    def test_size(self) -> None:
        """
        An entry's size is its body's size plus the bytes of its header
        names and values, plus its key, plus L{ENTRY_OVERHEAD}.
        """
        entry = self.makeEntry(
            "GET:/a",
            body=b"x" * 10,
            headers=((b"Content-Type", b"text/html"), (b"X-A", b"1")),
        )
        self.assertEqual(entry.size, 10 + (12 + 9) + (3 + 1) + 6 + ENTRY_OVERHEAD)

    def test_sizeOfStoredBody(self) -> None:
        """
        The body's part of the size is the L{StoredBody}'s C{size}, whether
        or not its bytes are in memory (filesystem mode).
        """
        entry = CacheEntry(
            key="k",
            status=200,
            phrase=b"OK",
            headers=(),
            coding="br",
            body=StoredBody(1000, None, "/somewhere"),
            identity_length=5000,
            stored_at=0.0,
        )
        self.assertEqual(entry.size, 1000 + 1 + ENTRY_OVERHEAD)


class AgeTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{CacheEntry.age}.
    """

    def test_residentTime(self) -> None:
        """
        An entry's age is its initial age plus the time since it was
        stored.
        """
        entry = self.makeEntry("GET:/a")
        entry.stored_at = 100.0
        entry.initial_age = 5.0
        self.assertEqual(entry.age(100.0), 5.0)
        self.assertEqual(entry.age(130.5), 35.5)

    def test_clockBehind(self) -> None:
        """
        A clock behind the entry's storage time does not make it younger
        than its initial age.
        """
        entry = self.makeEntry("GET:/a")
        entry.stored_at = 100.0
        entry.initial_age = 5.0
        self.assertEqual(entry.age(90.0), 5.0)


class ResizeTests(SynchronousTestCase, CacheTestMixin):
    """
    Tests for L{CacheEntry.resize}.
    """

    def test_headersChanged(self) -> None:
        """
        After its headers change, L{CacheEntry.resize} accounts the entry's
        size again from its new headers.
        """
        entry = self.makeEntry("GET:/a", body=b"x" * 10)
        self.assertEqual(entry.size, 10 + 6 + ENTRY_OVERHEAD)
        entry.headers = ((b"ETag", b'"1"'),)
        self.assertEqual(entry.size, 10 + 6 + ENTRY_OVERHEAD)
        entry.resize()
        self.assertEqual(entry.size, 10 + (4 + 3) + 6 + ENTRY_OVERHEAD)
