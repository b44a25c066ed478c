"""
Tests for L{phantom_frame.cache.recoding}: entries stored in identity are
compressed once served again, once each, and replaced in place.
"""

from __future__ import annotations

import random
from typing import Any, Callable, List, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.codec import Codec, decode
from phantom_frame.cache.entry import NOT_YET_COMPRESSED, CacheEntry
from phantom_frame.cache.recoding import Recoder
from phantom_frame.cache.threads import runInline
from tests.cache.support import NO_HEADERS, CacheTestMixin, ids

PAGE = b"<html>" + b"compress me later " * 400 + b"</html>"


class HeldRunner:
    """
    A runner whose work runs only when the test says so.

    @ivar calls: the work waiting, in order: its L{Deferred}, function and
        arguments.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[Deferred[Any], Callable[..., Any], Tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        @return: a L{Deferred} fired by L{run}.
        """
        d: Deferred[Any] = Deferred()
        self.calls.append((d, f, args))
        return d

    def run(self) -> None:
        """
        Run the oldest waiting work.
        """
        d, f, args = self.calls.pop(0)
        runInline(f, *args).chainDeferred(d)


class RecoderTests(SynchronousTestCase, CacheTestMixin):
    """
    L{Recoder.served} compresses a waiting entry once, off the reactor
    thread, and the cache replaces its body in place.
    """

    def setUp(self) -> None:
        self.cache = self.makeCache()
        self.runner = HeldRunner()
        self.recoder = Recoder(self.cache, Codec(self.runner, threshold=0), "br", limit=2)

    def waiting(self, key: str = "GET:/p", body: bytes = PAGE) -> CacheEntry:
        """
        @return: a held entry of C{key} whose identity C{body} waits to be
            compressed.
        """
        entry = self.makeEntry(key, body)
        entry.alternates = NOT_YET_COMPRESSED
        self.put(self.cache, entry)
        return entry

    def test_compressed_in_place(self) -> None:
        """
        The body is compressed on the runner; meanwhile the entry stays in
        identity (waiting); then its body is the compressed one, the
        identity body is deleted, the accounted bytes shrink, and the
        change is counted for what was derived from the entry.
        """
        entry = self.waiting()
        identity, before, changes = entry.body, self.cache.bytes, self.cache.changes
        entry.wire = {"identity": object()}
        self.recoder.served(entry)
        self.assertEqual((entry.coding, entry.compress_pending, self.recoder.running), ("identity", True, 1))
        self.runner.run()
        self.assertEqual((entry.coding, entry.compress_pending, self.recoder.running), ("br", False, 0))
        self.assertEqual(decode(entry.body.data, "br"), PAGE)
        self.assertIsNone(entry.wire)
        self.assertEqual(ids(self.store.deleted), ids([identity]))
        self.assertEqual(self.cache.bytes, before - (len(PAGE) - entry.body.size))
        self.assertEqual(self.cache.bytes, entry.size)
        self.assertEqual((self.cache.compressions, self.cache.changes), (1, changes + 1))
        self.assertIs(self.cache.lookup("GET:/p", NO_HEADERS), entry)

    def test_once(self) -> None:
        """
        However often the entry is served while it is compressed, and after,
        it is compressed once.
        """
        entry = self.waiting()
        for _ in range(3):
            self.recoder.served(entry)
        self.assertEqual(len(self.runner.calls), 1)
        self.runner.run()
        self.recoder.served(entry)
        self.assertEqual((len(self.runner.calls), self.cache.compressions), (0, 1))

    def test_not_waiting(self) -> None:
        """
        An entry that does not wait to be compressed (stored compressed, or
        in identity for good) is left alone.
        """
        entry = self.waiting()
        entry.alternates = None
        self.recoder.served(entry)
        self.assertEqual(self.runner.calls, [])

    def test_bounded(self) -> None:
        """
        At most C{limit} compressions are under way; an entry served
        meanwhile is compressed when it is served again later.
        """
        entries = [self.waiting(f"GET:/{n}") for n in range(3)]
        for entry in entries:
            self.recoder.served(entry)
        self.assertEqual(len(self.runner.calls), 2)
        self.runner.run()
        self.recoder.served(entries[2])
        self.runner.run()
        self.runner.run()
        self.assertEqual([entry.coding for entry in entries], ["br"] * 3)

    def test_does_not_shrink(self) -> None:
        """
        A body that does not shrink stays in identity, for good: it is not
        compressed again.
        """
        entry = self.waiting(body=random.Random(7).randbytes(300))
        self.recoder.served(entry)
        self.runner.run()
        self.assertEqual((entry.coding, entry.compress_pending, self.cache.compressions), ("identity", False, 0))
        self.assertEqual(self.store.deleted, [])
        self.recoder.served(entry)
        self.assertEqual(self.runner.calls, [])

    def test_gone_meanwhile(self) -> None:
        """
        An entry invalidated while its body is compressed is not changed,
        and the compressed body is deleted at once.
        """
        entry = self.waiting()
        self.recoder.served(entry)
        self.cache.invalidate_all()
        self.runner.run()
        self.assertEqual(entry.coding, "identity")
        self.assertEqual(len(self.store.deleted), 2)  # the identity body, then the compressed one
        self.assertEqual((self.cache.bytes, self.cache.compressions, self.recoder.running), (0, 0, 0))

    def test_failure(self) -> None:
        """
        A compression that fails is logged, and the entry stays in identity
        for good.
        """
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        recoder = Recoder(self.cache, Codec(self.runner, threshold=0), "zstd")
        entry = self.waiting()
        recoder.served(entry)
        self.runner.run()
        self.assertEqual((entry.coding, entry.compress_pending, recoder.running), ("identity", False, 0))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIn("GET:/p", [e.get("key") for e in events])

    def test_snapshot(self) -> None:
        """
        A snapshot waiting to be compressed is compressed in place too, and
        its bytes are accounted among the snapshots'.
        """
        entry = self.waiting()
        self.cache.pin(entry)
        self.recoder.served(entry)
        self.runner.run()
        self.assertEqual(entry.coding, "br")
        self.assertEqual(self.cache.bytes, entry.size)
