"""
Tests for L{phantom_frame.cache.store}.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Callable, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import FilesystemStore, MemoryStore, StoredBody
from phantom_frame.cache.threads import runInline


class MemoryStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryStore}.
    """

    def test_putRead(self) -> None:
        """
        A body put is read back at once.
        """
        store = MemoryStore()
        store.open()
        stored = self.successResultOf(store.put("GET:/", b"body"))
        self.assertEqual(stored, StoredBody(4, b"body", None))
        self.assertEqual(self.successResultOf(store.read(stored)), b"body")
        store.delete(stored)
        store.close()

    def test_putNow(self) -> None:
        """
        L{MemoryStore.put_now} holds a body at once, without a L{Deferred};
        through a cache, L{ResponseCache.put_body_now} gives it, and gives
        L{None} for a store that writes its bodies (which L{put_body} then
        writes).
        """
        store = MemoryStore()
        stored = store.put_now("GET:/", b"body")
        self.assertEqual(stored, StoredBody(4, b"body", None))
        self.assertEqual(self.successResultOf(store.read(stored)), b"body")
        cache = ResponseCache("site", store, Clock(), 1024, 16)
        self.assertEqual(cache.put_body_now("GET:/", b"x"), StoredBody(1, b"x", None))
        files = ResponseCache("site", FilesystemStore(self.mktemp(), "site", runInline), Clock(), 1024, 16)
        self.assertIsNone(files.put_body_now("GET:/", b"x"))


class FilesystemStoreTests(SynchronousTestCase):
    """
    Tests for L{FilesystemStore}.
    """

    def setUp(self) -> None:
        """
        Make an open store in a fresh directory.
        """
        self.directory = self.mktemp()
        self.store = FilesystemStore(self.directory, "site", runInline)
        self.store.open()
        self.bucket = os.path.join(self.directory, "site")

    def files(self) -> List[str]:
        """
        @return: the names in the bucket, sorted.
        """
        return sorted(os.listdir(self.bucket))

    def test_bucket(self) -> None:
        """
        The bucket is the server's subdirectory, created by C{open}.
        """
        self.assertEqual(self.store.path, self.bucket)
        self.assertTrue(os.path.isdir(self.bucket))
        self.assertEqual(self.files(), [])

    def test_badBucket(self) -> None:
        """
        A bucket name that is not a plain name is refused.
        """
        for bucket in ["", "..", "a/b", "a b", "../etc", "x\x00"]:
            self.assertRaises(ValueError, FilesystemStore, self.directory, bucket, runInline)

    def test_putReadDelete(self) -> None:
        """
        A body is written to a file, read back and deleted.
        """
        stored = self.successResultOf(self.store.put("GET:/page", b"contents"))
        self.assertEqual(stored.size, 8)
        self.assertIsNone(stored.data)
        with open(stored.path, "rb") as f:
            self.assertEqual(f.read(), b"contents")
        self.assertEqual(self.successResultOf(self.store.read(stored)), b"contents")
        self.store.delete(stored)
        self.assertFalse(os.path.exists(stored.path))
        self.assertEqual(self.files(), [])

    def test_atomicWrite(self) -> None:
        """
        After a write the bucket holds the final file only, with exactly the
        body: no temporary file is left behind.
        """
        body = bytes(range(256)) * 1000
        stored = self.successResultOf(self.store.put("GET:/big", body))
        self.assertEqual(self.files(), [os.path.basename(stored.path)])
        with open(stored.path, "rb") as f:
            self.assertEqual(f.read(), body)

    def test_hashedNames(self) -> None:
        """
        Files are named by the SHA-256 of the key, a token of the store and a
        counter; no request data reaches the path.
        """
        key = "GET:/../../etc/passwd?x=/y"
        stored = self.successResultOf(self.store.put(key, b"x"))
        self.assertEqual(os.path.dirname(stored.path), self.bucket)
        name = os.path.basename(stored.path)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        self.assertTrue(re.fullmatch(digest + r"-[0-9a-f]{8}-[0-9]+", name), name)

    def test_distinctFiles(self) -> None:
        """
        Two puts for one key give two files; deleting the first leaves the
        second.
        """
        first = self.successResultOf(self.store.put("GET:/", b"one"))
        second = self.successResultOf(self.store.put("GET:/", b"two"))
        self.assertNotEqual(first.path, second.path)
        self.store.delete(first)
        self.assertEqual(self.successResultOf(self.store.read(second)), b"two")

    def test_openEmpties(self) -> None:
        """
        Opening a bucket removes the entries and temporary files a previous
        run left, and leaves files it did not write alone.
        """
        old = self.successResultOf(self.store.put("GET:/", b"old"))
        temp = os.path.join(self.bucket, ".tmp-abc")
        with open(temp, "wb"):
            pass
        foreign = os.path.join(self.bucket, "notes.txt")
        with open(foreign, "wb"):
            pass
        self.store.close()
        with capturedLogs() as events:
            FilesystemStore(self.directory, "site", runInline).open()
        self.assertFalse(os.path.exists(old.path))
        self.assertFalse(os.path.exists(temp))
        self.assertEqual(self.files(), ["notes.txt"])
        self.assertEqual([e["count"] for e in events if "count" in e], [1])

    def test_bucketsSeparate(self) -> None:
        """
        Opening another server's bucket leaves this one alone.
        """
        stored = self.successResultOf(self.store.put("GET:/", b"mine"))
        FilesystemStore(self.directory, "other", runInline).open()
        self.assertTrue(os.path.exists(stored.path))

    def test_writeFailureFallsBack(self) -> None:
        """
        When the file cannot be written the body is kept in memory and a
        warning naming the key is logged; the put does not fail.
        """
        os.rmdir(self.bucket)
        with open(self.bucket, "wb"):
            pass  # a file where the bucket should be: every write fails
        with capturedLogs() as events:
            stored = self.successResultOf(self.store.put("GET:/fallback", b"kept"))
        self.assertEqual(stored, StoredBody(4, b"kept", None))
        self.assertEqual(self.successResultOf(self.store.read(stored)), b"kept")
        self.store.delete(stored)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["key"], "GET:/fallback")
        self.assertIsInstance(warnings[0]["error"], OSError)

    def test_deleteMissingQuiet(self) -> None:
        """
        Deleting a file that is already gone logs nothing.
        """
        stored = self.successResultOf(self.store.put("GET:/", b"x"))
        os.unlink(stored.path)
        with capturedLogs() as events:
            self.store.delete(stored)
        self.assertEqual(events, [])

    def test_deleteErrorLogged(self) -> None:
        """
        Another error removing a file is logged as a warning, not raised.
        """
        path = os.path.join(self.bucket, "dir")
        os.mkdir(path)
        with capturedLogs() as events:
            self.store.delete(StoredBody(1, None, path))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])

    def test_readMissingFails(self) -> None:
        """
        Reading a file that is gone fails with L{OSError}.
        """
        stored = self.successResultOf(self.store.put("GET:/", b"x"))
        os.unlink(stored.path)
        self.failureResultOf(self.store.read(stored), OSError)

    def test_deleteWaitsForReads(self) -> None:
        """
        A file is removed only after the reads of it under way are done.
        """
        pending: List[Deferred] = []

        def runner(f: Callable[..., Any], *args: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        store = FilesystemStore(self.directory, "slow", runner)
        store.open()
        stored = StoredBody(4, None, os.path.join(store.path, "f"))
        with open(stored.path, "wb") as f:
            f.write(b"data")
        first = store.read(stored)
        second = store.read(stored)
        store.delete(stored)
        self.assertEqual(len(pending), 2)
        pending[0].callback(None)
        self.assertEqual(self.successResultOf(first), b"data")
        self.assertEqual(len(pending), 2)
        pending[1].callback(None)
        self.assertEqual(self.successResultOf(second), b"data")
        self.assertEqual(len(pending), 3)
        pending[2].callback(None)
        self.assertFalse(os.path.exists(stored.path))

    def test_runsInRunner(self) -> None:
        """
        Writes, reads and deletes go through the runner.
        """
        calls: List[str] = []

        def runner(f: Callable[..., Any], *args: Any) -> Deferred:
            calls.append(f.__name__)
            return runInline(f, *args)

        store = FilesystemStore(self.directory, "counted", runner)
        store.open()
        stored = self.successResultOf(store.put("GET:/", b"x"))
        self.successResultOf(store.read(stored))
        store.delete(stored)
        self.assertEqual(calls, ["_write", "_read", "_unlink"])
